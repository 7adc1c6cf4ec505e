#!/usr/bin/env bash
# scripts/images/base.sh [TAG] — the local Python base image (default slipway/python-base:bookworm),
# made without any image pull: debootstrap (minbase + python3, python3-venv, python3-pip,
# ca-certificates, curl) of Debian bookworm, then `docker import`. Also pushes it to the local
# registry as 127.0.0.1:5000/TAG. Needs `scripts/services/docker.sh up`.
#
# The rootfs tarball is cached in /var/tmp/slipway/base/, so after a docker restart with empty
# storage the image is re-imported from it instead of re-running debootstrap.
# Time (measured, 2 cores): 2-4 min cold (debootstrap; 2m11s with the cores busy with other work);
# ~5 s from the cached tarball; ~0.3 s when the image exists (then only the push is re-checked). Python in the image: 3.11 (same minor as the host).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"
require_root

TAG=${1:-slipway/python-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
INCLUDE=python3,python3-venv,python3-pip,ca-certificates,curl
B=$SLIPWAY_VAR/base
NAME=$(echo "$TAG" | tr '/:' '__')
TARBALL=$B/$NAME.tar
STAMP=$TARBALL.recipe # what the tarball was made from: a different recipe means rebuild
RECIPE="debootstrap --variant=minbase --include=$INCLUDE $SUITE $MIRROR"
T0=$EPOCHREALTIME

docker info >/dev/null 2>&1 || die "docker engine not answering: run scripts/services/docker.sh up"
mkdir -p "$B"
exec 9>"$B/$NAME.lock"
flock 9

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "$TAG already present: not rebuilt"
else
    if [ -s "$TARBALL" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$RECIPE" ]; then
        log "importing $TAG from cached $TARBALL"
    else
        ensure_pkgs debootstrap debian-archive-keyring
        ROOTFS=$B/$NAME.rootfs
        rm -rf "$ROOTFS" "$TARBALL.tmp"
        log "debootstrap $SUITE into $ROOTFS (log: $B/$NAME.debootstrap.log; ~1 min)"
        # shellcheck disable=SC2086
        if ! debootstrap --variant=minbase --include=$INCLUDE $SUITE "$ROOTFS" "$MIRROR" \
            >"$B/$NAME.debootstrap.log" 2>&1; then
            tail -n 20 "$B/$NAME.debootstrap.log" >&2
            die "debootstrap failed (log: $B/$NAME.debootstrap.log)"
        fi
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log
        tar -C "$ROOTFS" --numeric-owner -cf "$TARBALL.tmp" .
        mv "$TARBALL.tmp" "$TARBALL"
        echo "$RECIPE" >"$STAMP"
        rm -rf "$ROOTFS"
        log "rootfs tarball: $TARBALL ($(du -h "$TARBALL" | cut -f1)) after $(since "$T0")"
    fi
    docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' \
        -m "slipway base: $RECIPE" - "$TAG" <"$TARBALL" >/dev/null
    log "imported $TAG: $(docker run --rm --network none "$TAG" python3 --version)"
fi

push_local "$TAG"
log "done in $(since "$T0")"
