#!/usr/bin/env bash
# The local stack: moto server (DynamoDB, SQS, ...) and kube-sim (a simulated Kubernetes
# API server over HTTPS), both on loopback ports chosen at random, both started here and
# stopped here by the PIDs this script started.
#
#   tests/stack.sh run -- CMD...   start the stack, run CMD with its endpoints in the
#                                  environment, stop the stack, exit with CMD's code
#   tests/stack.sh up              start the stack, print the `export` lines for a shell,
#                                  wait for Ctrl-C
#
# Works on a fresh clone: it creates .venv from tests/requirements.txt when needed and
# builds kube-sim. Logs and the kubeconfig go to .stack/ (gitignored). Respects
# CARGO_TARGET_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK_DIR=$ROOT/.stack
VENV=$ROOT/.venv
REQUIREMENTS=tests/requirements.txt
KUBECONFIG_PATH=$STACK_DIR/kubeconfig
MOTO_LOG=$STACK_DIR/moto.log
SIM_LOG=$STACK_DIR/kube-sim.log
PIDFILE=$STACK_DIR/stack.pid
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
STARTUP_TIMEOUT=30 # seconds each service gets to come up once started

MOTO_PID=
SIM_PID=

log() { printf 'stack: %s\n' "$*" >&2; }

# shellcheck source=tests/venv.sh
source "$ROOT/tests/venv.sh"

die() {
  log "error: $*"
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: tests/stack.sh run -- CMD...   run CMD against a fresh local stack
       tests/stack.sh up              start the stack and wait for Ctrl-C
EOF
  exit 2
}

# Fails with the reason and the end of the service's log, so CI output says why.
die_with_log() {
  local reason=$1 logfile=$2
  log "error: $reason"
  if [[ -f $logfile ]]; then
    log "last lines of $logfile:"
    tail -n 40 "$logfile" >&2
  fi
  exit 1
}

# shellcheck disable=SC2317 # called from the EXIT trap, which shellcheck cannot follow
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$SIM_PID"
  stop_pid "$MOTO_PID"
  # A kubeconfig left behind would name a server that is gone.
  [[ -z $SIM_PID ]] || rm -f "$KUBECONFIG_PATH"
  if [[ -f $PIDFILE && $(cat "$PIDFILE" 2>/dev/null) == "$$" ]]; then
    rm -f "$PIDFILE"
  fi
  exit "$rc"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

moto_answers() {
  "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$1/moto-api/" 2>/dev/null
}

start_stack() {
  mkdir -p "$STACK_DIR"
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    die "another stack (tests/stack.sh, PID $(cat "$PIDFILE")) is running from this checkout; stop it first"
  fi
  printf '%s\n' "$$" >"$PIDFILE"

  ensure_venv "$VENV" "$REQUIREMENTS" moto_server
  log "building kube-sim"
  cargo build -p kube-sim --bin kube-sim
  local sim_bin=$TARGET_DIR/debug/kube-sim
  [[ -x $sim_bin ]] || die "cargo built kube-sim but $sim_bin is missing (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-unset})"

  MOTO_PORT=$(free_port)
  log "starting moto server on 127.0.0.1:$MOTO_PORT (log: .stack/moto.log)"
  # tests/moto_server.py: moto with its DynamoDB requests serialized (see the file).
  "$VENV/bin/python" tests/moto_server.py 127.0.0.1 "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!

  # A stale kubeconfig would look like a ready kube-sim: remove it before starting.
  rm -f "$KUBECONFIG_PATH"
  log "starting kube-sim (log: .stack/kube-sim.log)"
  "$sim_bin" --listen 127.0.0.1:0 --kubeconfig "$KUBECONFIG_PATH" >"$SIM_LOG" 2>&1 &
  SIM_PID=$!

  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until moto_answers "$MOTO_PORT"; do
    kill -0 "$MOTO_PID" 2>/dev/null || die_with_log "moto server exited during startup" "$MOTO_LOG"
    ((SECONDS < deadline)) || die_with_log "moto server did not answer on port $MOTO_PORT within ${STARTUP_TIMEOUT}s" "$MOTO_LOG"
    sleep 0.2
  done

  # kube-sim writes the kubeconfig (atomically) only once it accepts connections.
  deadline=$((SECONDS + STARTUP_TIMEOUT))
  until [[ -s $KUBECONFIG_PATH ]]; do
    kill -0 "$SIM_PID" 2>/dev/null || die_with_log "kube-sim exited during startup" "$SIM_LOG"
    ((SECONDS < deadline)) || die_with_log "kube-sim wrote no kubeconfig at $KUBECONFIG_PATH within ${STARTUP_TIMEOUT}s" "$SIM_LOG"
    sleep 0.2
  done

  # Only the stack's endpoints and dummy credentials: nothing here may reach real AWS.
  unset AWS_PROFILE AWS_SESSION_TOKEN
  while read -r var; do unset "$var"; done < <(compgen -e | grep '^AWS_ENDPOINT_URL_' || true)
  export KUBECONFIG=$KUBECONFIG_PATH
  export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
  export AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=testing
  export AWS_SECRET_ACCESS_KEY=testing
  export PODBRIDGE_STACK=1
  log "stack is up: AWS at $AWS_ENDPOINT_URL, Kubernetes via .stack/kubeconfig"
}

print_exports() {
  local var
  for var in KUBECONFIG AWS_ENDPOINT_URL AWS_REGION AWS_DEFAULT_REGION AWS_ACCESS_KEY_ID \
    AWS_SECRET_ACCESS_KEY PODBRIDGE_STACK; do
    printf 'export %s=%q\n' "$var" "${!var}"
  done
}

main() {
  [[ $# -ge 1 ]] || usage
  local mode=$1
  shift
  case $mode in
    run)
      [[ ${1:-} == -- ]] && shift
      [[ $# -ge 1 ]] || usage
      ;;
    up) [[ $# -eq 0 ]] || usage ;;
    *) usage ;;
  esac

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  start_stack

  if [[ $mode == up ]]; then
    print_exports
    log "paste the lines above into another shell; Ctrl-C here stops the stack"
    # Returns when a service dies (or on Ctrl-C, through the INT trap).
    wait -n "$MOTO_PID" "$SIM_PID" || true
    die "a service of the stack exited; see .stack/moto.log and .stack/kube-sim.log"
  fi

  # CMD runs in the foreground so that Ctrl-C reaches it with the rest of the process
  # group; a TERM sent to this script alone takes effect once CMD has exited.
  local rc=0
  "$@" || rc=$?
  if ((rc != 0)); then
    log "command failed (exit $rc); service logs: .stack/moto.log .stack/kube-sim.log"
  fi
  exit "$rc"
}

main "$@"
