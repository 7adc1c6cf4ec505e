#!/usr/bin/env bash
# scripts/services/prefect.sh up|down|status — a real Prefect server for Slipway's flows on this
# machine: `prefect server start` (SQLite), the `slipway` process work pool, prefect.yaml applied,
# and a worker that runs the flows. Idempotent; not root; no systemd.
#
#   up      starts the server unless it answers, creates the work pool unless it exists, applies
#           prefect.yaml (`prefect deploy --all`) and starts a worker unless one runs from here.
#   down    stops the worker and the server started by this script (pid files).
#   status  exit 0 when the server answers and the worker runs.
#
# Environment (defaults in brackets):
#   SLIPWAY_PREFECT_DIR [$SLIPWAY_VAR/prefect]  PREFECT_HOME (SQLite database), pid and log files
#   SLIPWAY_PREFECT_PORT [4200]                 the API and UI on 127.0.0.1
#   SLIPWAY_SPEC [examples/iris/slipway-registry.yaml]  spec of the deployments (absolute path)
#   SLIPWAY_POOL [slipway]                      work pool of the worker
#   SLIPWAY_WORKER [1]                          0: start no worker here (a team's workers run on other machines)
#   PREFECT_API_DATABASE_CONNECTION_URL         Postgres for a team (postgresql+asyncpg://...); SQLite if unset
# The worker (so every flow run) inherits this environment: SLIPWAY_STATE_DIR, SLIPWAY_API_KEY,
# MLFLOW_TRACKING_URI, ... must be set here. Time (measured, 2 cores): up ~25-40 s, down ~2-5 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$REPO/.venv/bin
DIR=${SLIPWAY_PREFECT_DIR:-$SLIPWAY_VAR/prefect}
PORT=${SLIPWAY_PREFECT_PORT:-4200}
POOL=${SLIPWAY_POOL:-slipway}
export SLIPWAY_SPEC=${SLIPWAY_SPEC:-$REPO/examples/iris/slipway-registry.yaml}
export PREFECT_HOME=$DIR/home PREFECT_API_URL=http://127.0.0.1:$PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_CLI_PROMPT=false
# A run waiting for its model's slot (deployment concurrency limit) retries every N s [30].
export PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS=${PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS:-3}
# How often the worker asks for runs [10]: the floor of a trigger's latency.
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-2}
SERVER_PID=$DIR/server.pid SERVER_LOG=$DIR/server.log
WORKER_PID=$DIR/worker.pid WORKER_LOG=$DIR/worker.log

healthy() { curl -sf -o /dev/null "$PREFECT_API_URL/health"; }

up() {
    local t0=$EPOCHREALTIME
    mkdir -p "$DIR/home"
    if healthy; then
        log "prefect server $PREFECT_API_URL: already answering"
    else
        pid_alive "$SERVER_PID" prefect || {
            log "starting prefect server on $PREFECT_API_URL (log: $SERVER_LOG)"
            start_daemon "$SERVER_PID" "$SERVER_LOG" "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
        }
        local end=$((SECONDS + 180))
        until healthy; do
            pid_alive "$SERVER_PID" prefect ||
                { tail -n 30 "$SERVER_LOG" >&2; die "prefect server exited before answering (log: $SERVER_LOG)"; }
            [ "$SECONDS" -lt "$end" ] || { tail -n 30 "$SERVER_LOG" >&2; die "prefect server not healthy within 180 s"; }
            sleep 0.5
        done
        log "prefect server healthy ($(since "$t0"))"
    fi
    "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1 ||
        "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    export SLIPWAY_MODEL
    SLIPWAY_MODEL=$("$BIN/python" -c 'import sys; from slipway.spec import load_spec; print(load_spec(sys.argv[1]).model.name)' "$SLIPWAY_SPEC") ||
        die "cannot read the spec $SLIPWAY_SPEC (set SLIPWAY_SPEC to the release spec of the deployments)"
    log "applying prefect.yaml for $SLIPWAY_SPEC (model $SLIPWAY_MODEL)"
    (cd "$REPO" && "$BIN/prefect" --no-prompt deploy --all >>"$DIR/deploy.log" 2>&1) ||
        { tail -n 30 "$DIR/deploy.log" >&2; die "prefect deploy failed (log: $DIR/deploy.log)"; }
    if [ "${SLIPWAY_WORKER:-1}" = 0 ]; then
        log "no worker started here (SLIPWAY_WORKER=0): start them with prefect worker start --pool $POOL"
    elif pid_alive "$WORKER_PID" worker; then
        log "worker (pid $(cat "$WORKER_PID")): already running"
    else
        log "starting a worker on pool $POOL (log: $WORKER_LOG)"
        (cd "$REPO" && start_daemon "$WORKER_PID" "$WORKER_LOG" "$BIN/prefect" worker start --pool "$POOL" --type process)
    fi
    log "up ($(since "$t0")): UI and API at http://127.0.0.1:$PORT"
}

down() {
    [ -e "$WORKER_PID" ] && stop_pid "$WORKER_PID" worker 8
    [ -e "$SERVER_PID" ] && stop_pid "$SERVER_PID" prefect 20
    return 0
}

status() {
    local ok=0
    if healthy; then echo "prefect server $PREFECT_API_URL: healthy"; else echo "prefect server $PREFECT_API_URL: not answering"; ok=1; fi
    if [ "${SLIPWAY_WORKER:-1}" = 0 ]; then
        log "no worker started here (SLIPWAY_WORKER=0): start them with prefect worker start --pool $POOL"
    elif pid_alive "$WORKER_PID" worker; then echo "worker: pid $(cat "$WORKER_PID") (log $WORKER_LOG)"; else echo "worker: not running"; ok=1; fi
    return $ok
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
