#!/usr/bin/env bash
# `make demo`: podbridge doing its whole job on this machine, with no AWS account.
#
# Starts the local stack (`podbridge dev`: moto for DynamoDB, SQS and EventBridge, a
# simulated cluster, the functions' own handlers), sends the jobs of examples/demo/ to
# the queue through the CLI (one succeeds; one exits non-zero, is retried and fails; one
# is OOM-killed and retried with twice the memory; one has an image that cannot be
# pulled; one runs past its timeout; one is cancelled while running; one is delivered
# twice; one is invalid), shows their state changes as they happen, prints the final
# table, checks every job ended as it should; then fills a queue limited to two jobs with
# six, shows them waiting in order with their positions and admitted as room frees, and
# stops everything it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
DIR=$ROOT/.podbridge-demo
DEMO=examples/demo

log() { printf '\n== %s\n' "$*" >&2; }

# shellcheck source=tests/venv.sh
source "$ROOT/tests/venv.sh"
ensure_venv "$ROOT/.venv" "$ROOT/tests/requirements.txt" moto_server
log "building podbridge"
# The same selection as `make test` builds, so that after the tests nothing is rebuilt
# (a narrower selection resolves the dependencies' features differently).
cargo build --quiet --workspace --tests --bin podbridge
# Where cargo put it: target/ unless CARGO_TARGET_DIR (or a cargo config) says otherwise.
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
PODBRIDGE=$TARGET_DIR/debug/podbridge
[[ -x $PODBRIDGE ]] || { echo "cargo built podbridge but $PODBRIDGE is missing" >&2; exit 1; }
podbridge() { "$PODBRIDGE" "$@"; }

# The guardrails the example jobs are checked against (demo-invalid breaks them). The
# reconcile thresholds are podbridge dev's local ones (`podbridge dev --help`): a stuck
# job fails in seconds, not the deployment's minutes.
export PODBRIDGE_NAMESPACES=podbridge-jobs
export PODBRIDGE_IMAGE_PREFIXES=registry.example.com/

rm -rf "$DIR"
mkdir -p "$DIR"
log "starting the local stack (podbridge dev); its log of job state changes follows"
# The binary itself in the background (not the shell function), so that $! is its PID
# and the signal that stops it reaches it.
# The console on any free port unless DEMO_CONSOLE_PORT names one; its URL is printed below.
"$PODBRIDGE" dev --dir "$DIR" --moto "$ROOT/.venv/bin/moto_server" --reconcile-every 3 \
  --console-port "${DEMO_CONSOLE_PORT:-0}" >"$DIR/exports" &
DEV=$!
stop() {
  kill -TERM "$DEV" 2>/dev/null || true
  wait "$DEV" 2>/dev/null || true
  # podbridge dev stops its moto on the way out; make sure nothing outlives the demo.
  if kill -0 "$DEV" 2>/dev/null; then kill -KILL "$DEV" 2>/dev/null || true; fi
}
trap stop EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 300); do
  [[ -f $DIR/env ]] && break
  kill -0 "$DEV" 2>/dev/null || { echo "podbridge dev stopped before it was ready" >&2; exit 1; }
  sleep 0.2
done
[[ -f $DIR/env ]] || { echo "podbridge dev was not ready within a minute" >&2; exit 1; }
# shellcheck source=/dev/null
source "$DIR/env"
log "the console (podbridge console) shows it all while the demo runs: $PODBRIDGE_CONSOLE_URL"

log "sending the example jobs to the queue"
podbridge submit "$DEMO"/0[1-8]-*.json
log "delivering demo-duplicate a second time"
podbridge submit "$DEMO/07-duplicate.json"

log "waiting for demo-cancelled to run, then cancelling it"
for _ in $(seq 1 150); do
  state=$(podbridge get demo-cancelled --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' || true)
  [[ $state == executing ]] && break
  sleep 0.2
done
podbridge cancel demo-cancelled --reason "cancelled by the demo while running"

log "waiting for every job to end"
jobs=(demo-succeeds demo-exit-retried demo-oom demo-image-pull demo-timeout demo-cancelled demo-duplicate demo-invalid)
deadline=$((SECONDS + 180))
while :; do
  done_count=0
  for job in "${jobs[@]}"; do
    state=$(podbridge get "$job" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' || echo missing)
    case $state in succeeded | failed | cancelled | rejected) done_count=$((done_count + 1)) ;; esac
  done
  printf '   %d of %d jobs ended\n' "$done_count" "${#jobs[@]}" >&2
  ((done_count == ${#jobs[@]})) && break
  if ((SECONDS > deadline)); then
    echo "not every job ended within 3 minutes" >&2
    podbridge list --state all >&2
    exit 1
  fi
  sleep 3
done

log "a queue at its limit: demo-batch runs two jobs at once; six arrive (demo-queued-6 first: priority 10)"
podbridge queues set demo-batch --jobs 2
podbridge submit "$DEMO/09-queued.jsonl"
queued=(demo-queued-1 demo-queued-2 demo-queued-3 demo-queued-4 demo-queued-5 demo-queued-6)
for _ in $(seq 1 100); do
  waiting=$(podbridge list --queue demo-batch --json 2>/dev/null |
    python3 -c 'import json,sys; print(sum(1 for j in json.load(sys.stdin) if j.get("position")))' || echo 0)
  ((waiting >= 4)) && break
  sleep 0.2
done
podbridge queues
podbridge list --queue demo-batch
log "room frees as jobs end: the waiting ones are admitted in order"
deadline=$((SECONDS + 120))
while :; do
  done_count=0
  for job in "${queued[@]}"; do
    state=$(podbridge get "$job" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' || echo missing)
    [[ $state == succeeded ]] && done_count=$((done_count + 1))
  done
  printf '   %d of %d queued jobs succeeded\n' "$done_count" "${#queued[@]}" >&2
  ((done_count == ${#queued[@]})) && break
  if ((SECONDS > deadline)); then
    echo "the queued jobs did not all succeed within 2 minutes" >&2
    podbridge list --queue demo-batch --state all >&2
    exit 1
  fi
  sleep 3
done
podbridge queues get demo-batch

log "every job"
podbridge list --state all

log "checking each job ended as it should"
failures=0
expect() {
  local job=$1 want=$2
  local got
  got=$(podbridge get "$job" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
history = r.get("history", [])
# A pod is recorded as created by whoever created it, or as found by the reconciler
# when its watch saw the pod before the creator wrote the record.
pods = sum(1 for t in history if t.get("reason") in ("PodCreated", "PodFound"))
print(r["state"], r.get("failure_class") or "-", "attempt=%d" % r["attempt"], "pods=%d" % pods)')
  if [[ $got == "$want" ]]; then
    printf '   ok    %-18s %s\n' "$job" "$got"
  else
    printf '   WRONG %-18s %s (expected %s)\n' "$job" "$got" "$want"
    failures=$((failures + 1))
  fi
}
expect demo-succeeds "succeeded - attempt=1 pods=1"
expect demo-exit-retried "failed exit_code attempt=2 pods=2"
expect demo-oom "failed oom_killed attempt=2 pods=2"
expect demo-image-pull "failed image_pull attempt=1 pods=1"
expect demo-timeout "failed deadline_exceeded attempt=1 pods=1"
expect demo-cancelled "cancelled - attempt=1 pods=1"
expect demo-duplicate "succeeded - attempt=1 pods=1"
expect demo-invalid "rejected - attempt=1 pods=0"
podbridge get demo-invalid | tail -n 3
for job in "${queued[@]}"; do expect "$job" "succeeded - attempt=1 pods=1"; done
# Waited, then admitted: the job of priority 10 went first of those that waited.
waited=$(for job in "${queued[@]}"; do
  podbridge get "$job" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
h = r.get("history", [])
waited = [t["at"] for t in h if t.get("reason") == "Waiting"]
admitted = [t["at"] for t in h if t.get("reason") in ("PodCreated", "PodFound")]
if waited: print(admitted[0], r["job_id"])'
done | sort | head -n 1)
six_waited=$(podbridge get demo-queued-6 --json |
  python3 -c 'import json,sys; print(any(t.get("reason") == "Waiting" for t in json.load(sys.stdin).get("history", [])))')
if [[ $six_waited != True || $waited == *demo-queued-6 ]]; then
  printf '   ok    %-18s %s\n' "demo-batch" "of the jobs that waited, the one of priority 10 (if it waited) went first"
else
  printf '   WRONG %-18s %s\n' "demo-batch" "first admitted of those that waited: ${waited:-none}"
  failures=$((failures + 1))
fi

stop
trap - EXIT
if ((failures > 0)); then
  echo "demo: $failures job(s) did not end as expected" >&2
  exit 1
fi
echo
echo "demo: every job ended as expected. Try it yourself: \`$PODBRIDGE dev\`, then in another shell"
echo "      \`source .podbridge-dev/env\` and \`$PODBRIDGE submit examples/job-minimal.json\`."
