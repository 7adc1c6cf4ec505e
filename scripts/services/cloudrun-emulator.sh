#!/usr/bin/env bash
# scripts/services/cloudrun-emulator.sh up|down|status — the test-side Cloud Run emulator
# (tests/targets/cloudrun: Admin API v2, Secret Manager, Logging, tokens; revisions run on the local
# Docker Engine) as a background process for `make demo TARGET=cloudrun`. Idempotent; no systemd.
#
#   up      starts it unless it answers; its deployer key file is $DIR/deployer.json
#   down    stops it (its revisions' containers and routers go with it)
#   status  exit 0 when it answers
#
# Environment (defaults in brackets):
#   SLIPWAY_CLOUDRUN_DIR [$SLIPWAY_VAR/cloudrun-emulator]  key file, pid and log
#   SLIPWAY_CLOUDRUN_PORT [8790]                            the API on 127.0.0.1
# The emulator holds its state in memory: a restart forgets every service (and writes a new key).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${SLIPWAY_CLOUDRUN_DIR:-$SLIPWAY_VAR/cloudrun-emulator}
PORT=${SLIPWAY_CLOUDRUN_PORT:-8790}
PID=$DIR/emulator.pid LOG=$DIR/emulator.log

answers() { curl -sf -o /dev/null "http://127.0.0.1:$PORT/emulator/health"; }

up() {
    local t0=$EPOCHREALTIME
    if answers && [ -s "$DIR/deployer.json" ]; then log "Cloud Run emulator answers on 127.0.0.1:$PORT"; return 0; fi
    rm -f "$DIR/deployer.json"
    (cd "$REPO" && start_daemon "$PID" "$LOG" "$REPO/.venv/bin/python" -m tests.targets.cloudrun.serve \
        --port "$PORT" --dir "$DIR" --project slipway-demo)
    wait_until 60 answers || { tail -n 20 "$LOG" >&2; die "the Cloud Run emulator did not answer (log: $LOG)"; }
    wait_until 10 test -s "$DIR/deployer.json" || die "the Cloud Run emulator wrote no key file (log: $LOG)"
    log "Cloud Run emulator on http://127.0.0.1:$PORT (key file $DIR/deployer.json) in $(since "$t0")"
}

case ${1:-} in
    up) up ;;
    down) stop_pid "$PID" tests.targets.cloudrun.serve 30 ;;
    status) answers ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
