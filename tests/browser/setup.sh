#!/usr/bin/env bash
# Prepares the browser tests of the web console (tests/browser/console.test.mjs):
#   - Debian's Chromium (apt-get package `chromium`), unless $CHROMIUM names another binary;
#   - node_modules (playwright-core, pinned by package-lock.json) through `npm ci`.
# Idempotent and silent when there is nothing to do; one line per thing it installs.
# Playwright never downloads a browser here: the tests drive /usr/bin/chromium.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { echo "tests/browser/setup.sh: $*"; }
die() { echo "tests/browser/setup.sh: error: $*" >&2; exit 1; }

# Runs a noisy command quietly; shows its output only if it fails.
quiet() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    die "failed: $*"
  fi
  rm -f "$log"
}

# --- Chromium -------------------------------------------------------------------------------
if [[ -n "${CHROMIUM:-}" ]]; then
  [[ -x "$CHROMIUM" ]] || die "CHROMIUM=$CHROMIUM is not an executable file"
elif [[ ! -x /usr/bin/chromium ]]; then
  if [[ "$(id -u)" -eq 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    die "Chromium is missing and this is not root (no sudo either): install Debian's 'chromium' package (apt-get install chromium) as root, or set CHROMIUM to a Chromium binary"
  fi
  command -v apt-get >/dev/null 2>&1 \
    || die "Chromium is missing and apt-get is not available: install Chromium (Debian package 'chromium') or set CHROMIUM to a Chromium binary"
  say "installing chromium (apt-get install chromium)"
  quiet "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  quiet "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  [[ -x /usr/bin/chromium ]] || die "apt-get installed chromium but /usr/bin/chromium is missing"
fi

# --- Node and the npm packages -----------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node is missing: install Node.js 20 or newer (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm is missing: install npm (Debian: apt-get install npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 20 ]] || die "node $(node --version) is too old: the browser tests need Node.js 20 or newer"

lock="$here/package-lock.json"
stamp="$here/node_modules/.podbridge-lock.sha256"
[[ -f "$lock" ]] || die "$lock is missing"
want="$(sha256sum "$lock" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ ! -d "$here/node_modules" || "$have" != "$want" ]]; then
  say "installing npm packages (npm ci: playwright-core $(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$here/package.json"))"
  quiet env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
