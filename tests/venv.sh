# shellcheck shell=bash
# A Python venv kept in step with a pinned requirements file. Sourced by tests/stack.sh
# and infra/tools/run.sh, which each define `log`.

# ensure_venv VENV REQUIREMENTS EXECUTABLE
# (Re)creates VENV only when REQUIREMENTS changed since the last install, or when the
# venv is broken (no EXECUTABLE in it, or its Python does not start); a fresh venv each
# time guarantees no leftovers of older pins.
ensure_venv() {
  local venv=$1 requirements=$2 executable=$3
  local stamp=$venv/.requirements.sha256 want
  want=$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
    "$requirements")
  if [[ -x $venv/bin/$executable && -f $stamp && $(cat "$stamp") == "$want" ]] &&
    "$venv/bin/python" -c '' 2>/dev/null; then
    return 0
  fi
  log "installing $requirements into ${venv#"$PWD"/} (once per change of that file)"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  printf '%s\n' "$want" >"$stamp"
}
