#!/usr/bin/env bash
# scripts/services/docker.sh up|down|status — the Docker Engine and a local image registry for the
# project's tests, on this host (no systemd: processes started by hand, pid files kept).
#
#   up      installs Debian's docker.io, docker-registry and debootstrap when missing; starts dockerd
#           when `docker info` fails (log, pid: /var/tmp/slipway/docker/); starts the distribution
#           registry on 127.0.0.1:5000 when it does not answer (config, storage, log, pid:
#           /var/tmp/slipway/registry/). dockerd gets --ip=127.0.0.1, so a published port binds
#           loopback unless told otherwise; containers stay on the default bridge.
#   down    stops the registry and dockerd, if this script started them (pid files); an engine
#           started by someone else is left alone. Images and registry storage stay on disk.
#   status  prints what runs; exit 0 when both engine and registry answer, 1 otherwise.
#
# Time (measured): `up` with everything running: ~0.3 s; starting engine + registry, packages present:
# ~1.5 s; installing the packages adds ~15-30 s. `down`: ~1-5 s (up to 60 s while containers stop).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$SLIPWAY_VAR/docker
R=$SLIPWAY_VAR/registry
DOCKERD_PID=$D/dockerd.pid
DOCKERD_LOG=$D/dockerd.log
REG_PID=$R/registry.pid
REG_LOG=$R/registry.log
REG_CONF=$R/config.yml

engine_up() { docker info >/dev/null 2>&1; }

lock() {
    mkdir -p "$SLIPWAY_VAR"
    exec 8>"$SLIPWAY_VAR/docker.lock"
    flock 8
}

up() {
    require_root
    local t0=$EPOCHREALTIME
    lock
    ensure_pkgs docker.io docker-registry debootstrap debian-archive-keyring curl iptables
    mkdir -p "$D" "$R/storage"

    if engine_up; then
        log "docker engine: already running"
    else
        if pid_alive "$DOCKERD_PID" dockerd; then
            log "dockerd (pid $(cat "$DOCKERD_PID")) runs but does not answer yet; waiting"
        else
            log "starting dockerd (log: $DOCKERD_LOG)"
            start_daemon "$DOCKERD_PID" "$DOCKERD_LOG" dockerd --ip=127.0.0.1
        fi
        if ! wait_until 60 engine_up; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within 60 s (log: $DOCKERD_LOG)"
        fi
        log "docker engine up: $(docker info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup v{{.CgroupVersion}}')"
    fi

    if registry_up; then
        log "registry $SLIPWAY_REGISTRY: already answering"
    else
        if ss -Hltn "sport = :${SLIPWAY_REGISTRY##*:}" | grep -q .; then
            die "port ${SLIPWAY_REGISTRY##*:} is taken by something that is not a registry: $(ss -Hltnp "sport = :${SLIPWAY_REGISTRY##*:}")"
        fi
        cat >"$REG_CONF" <<EOF
# written by scripts/services/docker.sh
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $R/storage
  delete:
    enabled: true
http:
  addr: $SLIPWAY_REGISTRY
EOF
        log "starting registry on $SLIPWAY_REGISTRY (log: $REG_LOG)"
        start_daemon "$REG_PID" "$REG_LOG" docker-registry serve "$REG_CONF"
        if ! wait_until 20 registry_up; then
            tail -n 30 "$REG_LOG" >&2 || true
            die "registry did not answer on $SLIPWAY_REGISTRY within 20 s (log: $REG_LOG)"
        fi
    fi
    log "up ($(since "$t0"))"
}

down() {
    require_root
    lock
    if [ -e "$REG_PID" ]; then stop_pid "$REG_PID" docker-registry 10; fi
    if [ -e "$DOCKERD_PID" ]; then
        # dockerd stops its containers (10 s grace each, in parallel) before it exits.
        stop_pid "$DOCKERD_PID" dockerd 60
    elif engine_up; then
        log "docker engine runs but was not started by this script: left alone"
    fi
}

status() {
    local ok=0
    if engine_up; then
        local who="not started by docker.sh"
        pid_alive "$DOCKERD_PID" dockerd && who="pid $(cat "$DOCKERD_PID"), started by docker.sh, log $DOCKERD_LOG"
        echo "docker engine: running ($who): $(docker info --format '{{.ServerVersion}}, {{.Containers}} containers ({{.ContainersRunning}} running), {{.Images}} images')"
    else
        echo "docker engine: not answering"
        ok=1
    fi
    if registry_up; then
        local who="not started by docker.sh"
        pid_alive "$REG_PID" docker-registry && who="pid $(cat "$REG_PID"), started by docker.sh, storage $R/storage"
        echo "registry $SLIPWAY_REGISTRY: running ($who)"
        echo "  repositories: $(curl -sf "http://$SLIPWAY_REGISTRY/v2/_catalog" | tr -d '\n')"
    else
        echo "registry $SLIPWAY_REGISTRY: not answering"
        ok=1
    fi
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
