#!/usr/bin/env bash
# scripts/services/lambda-standin.sh up|down|status — the test-side Lambda stand-in
# (tests/targets/lambda: moto's control plane behind the front, each published version under the
# Runtime Interface Emulator on the local Docker Engine) as a background process for
# `make demo TARGET=lambda`. Idempotent; no systemd.
#
#   up      starts it unless it answers (the Lambda API on $PORT, moto's own on $MOTO_PORT)
#   down    stops it (its versions' containers go with it)
#   status  exit 0 when it answers
#
# Environment (defaults in brackets):
#   SLIPWAY_LAMBDA_DIR [$SLIPWAY_VAR/lambda-standin]  pid and log
#   SLIPWAY_LAMBDA_PORT [8791]                       the Lambda API (the front) on 127.0.0.1
#   SLIPWAY_LAMBDA_MOTO_PORT [8792]                  moto (IAM, ECR, S3, ...) on 127.0.0.1
# The stand-in holds its state in memory: a restart forgets every function.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${SLIPWAY_LAMBDA_DIR:-$SLIPWAY_VAR/lambda-standin}
PORT=${SLIPWAY_LAMBDA_PORT:-8791}
MOTO_PORT=${SLIPWAY_LAMBDA_MOTO_PORT:-8792}
PID=$DIR/standin.pid LOG=$DIR/standin.log

answers() { curl -s -o /dev/null "http://127.0.0.1:$PORT/2015-03-31/functions/" && curl -s -o /dev/null "http://127.0.0.1:$MOTO_PORT/"; }

up() {
    local t0=$EPOCHREALTIME
    if answers; then log "Lambda stand-in answers on 127.0.0.1:$PORT"; return 0; fi
    "$REPO/scripts/images/lambda-rie.sh"
    (cd "$REPO" && start_daemon "$PID" "$LOG" "$REPO/.venv/bin/python" -m tests.targets.lambda.serve \
        --port "$PORT" --moto-port "$MOTO_PORT")
    wait_until 60 answers || { tail -n 20 "$LOG" >&2; die "the Lambda stand-in did not answer (log: $LOG)"; }
    log "Lambda stand-in on http://127.0.0.1:$PORT (moto on http://127.0.0.1:$MOTO_PORT) in $(since "$t0")"
}

case ${1:-} in
    up) up ;;
    down) stop_pid "$PID" tests.targets.lambda.serve 30 ;;
    status) answers ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
