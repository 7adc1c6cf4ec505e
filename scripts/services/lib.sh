# shellcheck shell=bash
# scripts/services/lib.sh — small helpers shared by scripts/services, scripts/images and scripts/k8s.
# Sourced, never run. Takes no time. All state of these scripts lives under $SLIPWAY_VAR
# (default /var/tmp/slipway), never in the work tree.

SLIPWAY_VAR=${SLIPWAY_VAR:-/var/tmp/slipway}
SLIPWAY_REGISTRY=${SLIPWAY_REGISTRY:-127.0.0.1:5000}
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

require_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# since T0: time elapsed since T0 (an $EPOCHREALTIME value), as "4.2 s" or "2m11s".
since() {
    awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { d = e - s;
        if (d < 60) printf "%.1f s", d; else printf "%dm%02ds", d / 60, d % 60 }'
}

# Installs the given Debian packages that are not installed yet. Runs `apt-get update` once per
# process, and only when something has to be installed. Service starts by maintainer scripts are
# blocked (there is no init system here; we start what we need ourselves, with our own flags).
_SLIPWAY_APT_UPDATED=0
ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600) alog=$SLIPWAY_VAR/apt.log
    mkdir -p "$SLIPWAY_VAR"
    if [ "$_SLIPWAY_APT_UPDATED" = 0 ]; then
        "${apt[@]}" update >>"$alog" 2>&1 || { tail -n 20 "$alog" >&2; die "apt-get update failed (log: $alog)"; }
        _SLIPWAY_APT_UPDATED=1
    fi
    # policy-rc.d exit 101 = "do not start services" (docker.io, etcd-server, containerd and
    # docker-registry would otherwise try to start their system instances at install time).
    local policy=/usr/sbin/policy-rc.d created=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, written by slipway scripts/services/lib.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created=1
    fi
    "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$alog" 2>&1 || rc=$?
    [ "$created" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || { tail -n 20 "$alog" >&2; die "apt-get install ${missing[*]} failed (exit $rc, log: $alog)"; }
}

# pid_alive PIDFILE [NAME]: the process in PIDFILE runs (and its command line mentions NAME).
pid_alive() {
    local f=$1 name=${2:-} pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -z "$name" ] || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# start_daemon PIDFILE LOGFILE CMD...: runs CMD detached (own session, stdin closed), appends
# its output to LOGFILE and writes its pid to PIDFILE.
start_daemon() {
    local pidf=$1 logf=$2; shift 2
    mkdir -p "$(dirname "$pidf")" "$(dirname "$logf")"
    printf '\n===== %s start: %s\n' "$(date -Is)" "$*" >>"$logf"
    rm -f "$pidf"
    # The child writes its own pid, then execs CMD: right whether or not setsid has to fork.
    # fds 3-9 are closed so that a daemon never inherits one of our flock locks.
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidf" "$@" >>"$logf" 2>&1 </dev/null \
        3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    local i
    for ((i = 0; i < 50; i++)); do [ -s "$pidf" ] && break; sleep 0.1; done
}

# stop_pid PIDFILE [NAME] [TIMEOUT]: SIGTERM the process of PIDFILE (if it still is NAME), wait up
# to TIMEOUT seconds (default 20), then SIGKILL. Removes PIDFILE.
stop_pid() {
    local f=$1 name=${2:-} timeout=${3:-20} pid i
    if pid_alive "$f" "$name"; then
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 5; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$(basename "$f" .pid) (pid $pid) still running after ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        log "stopped $(basename "$f" .pid) (pid $pid)"
    fi
    rm -f "$f"
}

# wait_until TIMEOUT CMD...: retries CMD every 0.5 s until it succeeds; fails after TIMEOUT seconds.
wait_until() {
    local timeout=$1 end; shift
    end=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.5
    done
}

# registry_has REPO TAG: the local registry serves that manifest.
registry_has() {
    curl -sf -o /dev/null -I \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$SLIPWAY_REGISTRY/v2/$1/manifests/$2"
}

registry_up() { curl -sf -o /dev/null "http://$SLIPWAY_REGISTRY/v2/"; }

# build_offline TAG CONTEXT LOG: `docker build --network none` of CONTEXT as TAG, its output in LOG
# (the last lines shown when it fails).
build_offline() {
    log "docker build $1 (network none)"
    if ! DOCKER_BUILDKIT=0 docker build --network none -t "$1" "$2" >"$3" 2>&1; then
        tail -n 30 "$3" >&2
        die "docker build failed (log: $3)"
    fi
}

# push_local TAG: tags TAG into the local registry and pushes it (layers already there: no upload).
push_local() {
    registry_up || die "registry $SLIPWAY_REGISTRY not answering (scripts/services/docker.sh up): $1 built but not pushed"
    docker tag "$1" "$SLIPWAY_REGISTRY/$1"
    docker push -q "$SLIPWAY_REGISTRY/$1" >/dev/null
    log "pushed $SLIPWAY_REGISTRY/$1"
}
