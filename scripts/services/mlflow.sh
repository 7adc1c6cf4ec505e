#!/usr/bin/env bash
# scripts/services/mlflow.sh up|down|status — an MLflow tracking server with its model registry on
# a SQL backend (SQLite), Slipway's webhook receiver, and the MLflow webhook that posts to it.
# Idempotent; not root; no systemd.
#
#   up      starts `mlflow server` unless it answers, `slipway webhooks serve` unless it answers,
#           and registers the webhook (model_version.created, model_version_alias.created) once.
#   down    stops the receiver and the MLflow server started by this script (pid files).
#   status  exit 0 when both answer.
#
# Environment (defaults in brackets):
#   SLIPWAY_WEBHOOK_SECRET (required)        HMAC secret shared by MLflow's webhook and the receiver
#   SLIPWAY_MLFLOW_DIR [$SLIPWAY_VAR/mlflow] database, artifacts, pid and log files
#   SLIPWAY_MLFLOW_PORT [5500]               MLflow on 127.0.0.1
#   SLIPWAY_WEBHOOK_PORT [8787]              the receiver on 127.0.0.1
#   PREFECT_API_URL [http://127.0.0.1:${SLIPWAY_PREFECT_PORT:-4200}/api]  where events go
#   SLIPWAY_STATE_DIR                        the receiver's deduplication table (triggers.sqlite)
# The receiver here is plain http on loopback, so MLflow runs with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=
# http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true; in production put the receiver behind https
# and drop both. Time (measured, 2 cores): up ~15-25 s, down ~2 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$REPO/.venv/bin
DIR=${SLIPWAY_MLFLOW_DIR:-$SLIPWAY_VAR/mlflow}
PORT=${SLIPWAY_MLFLOW_PORT:-5500}
RPORT=${SLIPWAY_WEBHOOK_PORT:-8787}
export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:${SLIPWAY_PREFECT_PORT:-4200}/api}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
MLFLOW_PID=$DIR/mlflow.pid MLFLOW_LOG=$DIR/mlflow.log
RECEIVER_PID=$DIR/receiver.pid RECEIVER_LOG=$DIR/receiver.log

mlflow_up() { curl -sf -o /dev/null "$MLFLOW_TRACKING_URI/health"; }
receiver_up() { curl -sf -o /dev/null "http://127.0.0.1:$RPORT/health"; }

up() {
    local t0=$EPOCHREALTIME
    [ "${#SLIPWAY_WEBHOOK_SECRET}" -ge 16 ] ||
        die "SLIPWAY_WEBHOOK_SECRET must be set (16+ characters): export SLIPWAY_WEBHOOK_SECRET=\$(openssl rand -hex 24)"
    mkdir -p "$DIR/artifacts"
    if mlflow_up; then
        log "mlflow $MLFLOW_TRACKING_URI: already answering"
    elif ! pid_alive "$MLFLOW_PID" mlflow; then
        log "starting mlflow on $MLFLOW_TRACKING_URI (log: $MLFLOW_LOG)"
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true MLFLOW_WEBHOOK_CACHE_TTL=5 \
            start_daemon "$MLFLOW_PID" "$MLFLOW_LOG" "$BIN/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
            --backend-store-uri "sqlite:///$DIR/mlflow.db" --artifacts-destination "$DIR/artifacts"
    fi
    if receiver_up; then
        log "webhook receiver on $RPORT: already answering"
    elif ! pid_alive "$RECEIVER_PID" webhooks; then
        log "starting the webhook receiver on 127.0.0.1:$RPORT (log: $RECEIVER_LOG)"
        start_daemon "$RECEIVER_PID" "$RECEIVER_LOG" "$BIN/slipway" webhooks serve --host 127.0.0.1 --port "$RPORT"
    fi
    wait_until 180 mlflow_up || { tail -n 30 "$MLFLOW_LOG" >&2; die "mlflow not healthy within 180 s"; }
    wait_until 60 receiver_up || { tail -n 30 "$RECEIVER_LOG" >&2; die "receiver not answering within 60 s"; }
    "$BIN/slipway" webhooks register "http://127.0.0.1:$RPORT/mlflow" >&2
    log "up ($(since "$t0")): MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI"
}

down() {
    [ -e "$RECEIVER_PID" ] && stop_pid "$RECEIVER_PID" webhooks 10
    [ -e "$MLFLOW_PID" ] && stop_pid "$MLFLOW_PID" mlflow 20
    return 0
}

status() {
    local ok=0
    if mlflow_up; then echo "mlflow $MLFLOW_TRACKING_URI: healthy"; else echo "mlflow $MLFLOW_TRACKING_URI: not answering"; ok=1; fi
    if receiver_up; then echo "webhook receiver http://127.0.0.1:$RPORT/mlflow: answering"; else echo "webhook receiver: not answering"; ok=1; fi
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
