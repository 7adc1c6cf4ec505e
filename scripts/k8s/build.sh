#!/usr/bin/env bash
# scripts/k8s/build.sh — builds Kubernetes v1.20.2 from Debian bookworm's `kubernetes` SOURCE package
# with Debian's Go 1.19: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl, plus the static `pause` binary (build/pause/linux/pause.c of the same tree), into the fixed
# directory /var/tmp/slipway/k8s/bin.
#
# Time: 11-17 minutes on 2 cores when it really builds (16m27s measured with other work running;
# 1.4 GB peak memory, ~4 GB of disk during the build, freed afterwards unless KEEP_BUILD_TREE=1).
# Under a second when the binaries are already there: then it does nothing at all. `--force` rebuilds.
# Output of apt/make goes to /var/tmp/slipway/k8s/build.log; the terminal gets progress lines and
# the elapsed time. Run it in the background when your shell cuts commands at 10 minutes:
#   nohup scripts/k8s/build.sh >/dev/null 2>&1 &  tail -f /var/tmp/slipway/k8s/build.log
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"
require_root

K=$SLIPWAY_VAR/k8s
BIN=$K/bin
SRC=$K/src
LOG=$K/build.log
K8S_VERSION=v1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1  # bookworm's kubernetes source package (1.20.2 inside)
COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56 # upstream v1.20.2
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause)

built() {
    local b
    for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
    grep -qx "$K8S_VERSION" "$BIN/VERSION" 2>/dev/null
}

mkdir -p "$K"
exec 9>"$K/build.lock"
if ! flock -n 9; then
    log "another build.sh is running; waiting for it"
    flock 9
fi

if [ "${1:-}" != --force ] && built; then
    log "Kubernetes $K8S_VERSION binaries already in $BIN: nothing to do"
    exit 0
fi

START=$EPOCHREALTIME
: >"$LOG"
fail() {
    log "build failed; last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    exit 1
}
trap fail ERR
log "building Kubernetes $K8S_VERSION into $BIN (log: $LOG)"

# gcc + libc6-dev (static libc) for pause; rsync is used by the Kubernetes make rules.
ensure_pkgs golang-1.19-go golang-github-modern-go-reflect2-dev rsync make gcc libc6-dev

# 1. The Debian source package, through a private deb-src list (system apt configuration untouched).
mkdir -p "$SRC/apt/lists/partial" "$SRC/apt/cache/archives/partial"
cd "$SRC"
ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
if [ ! -s "$ORIG" ]; then
    printf '%s\n' 'deb-src http://deb.debian.org/debian bookworm main' \
        'deb-src http://deb.debian.org/debian-security bookworm-security main' >apt/sources.list
    A=(-o "Dir::Etc::SourceList=$SRC/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$SRC/apt/lists" -o "Dir::Cache=$SRC/apt/cache")
    log "downloading Debian source package kubernetes=$DEB_VERSION"
    apt-get "${A[@]}" update -qq >>"$LOG" 2>&1
    if ! apt-get "${A[@]}" source --download-only "kubernetes=$DEB_VERSION" >>"$LOG" 2>&1; then
        log "kubernetes=$DEB_VERSION is gone from the archive; taking bookworm's current kubernetes source"
        apt-get "${A[@]}" source --download-only kubernetes >>"$LOG" 2>&1
    fi
    [ -s "$ORIG" ] || die "no $ORIG after apt-get source (see $LOG)"
fi

# 2. A fresh tree. The vendored reflect2 v1.0.1 crashes on Go >= 1.18: use Debian's v1.0.2.
log "unpacking the source tree"
rm -rf kubernetes-1.20.2
tar xzf "$ORIG"
cd kubernetes-1.20.2
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod

# 3. make (the long part: ~11 min on 2 cores).
export PATH=/usr/lib/go-1.19/bin:$PATH HOME=$SRC/home
export KUBE_GIT_VERSION=$K8S_VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean KUBE_GIT_COMMIT=$COMMIT
mkdir -p "$HOME"
log "make (go $(go version | awk '{print $3}')): this takes ~11 minutes on 2 cores"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy cmd/kubectl" \
    GOLDFLAGS="-s -w" >>"$LOG" 2>&1
log "make done after $(since "$START")"

# 4. pause, static, from the same tree.
gcc -Os -static -DVERSION=v3.4.1-slipway -o _output/bin/pause build/pause/linux/pause.c >>"$LOG" 2>&1
strip _output/bin/pause

# 5. Install atomically into the fixed directory.
rm -rf "$BIN.new"
mkdir -p "$BIN.new"
for b in "${BINARIES[@]}"; do cp "_output/bin/$b" "$BIN.new/"; done
echo "$K8S_VERSION" >"$BIN.new/VERSION"
"$BIN.new/kubelet" --version >>"$LOG" 2>&1
rm -rf "$BIN"
mv "$BIN.new" "$BIN"

cd "$SRC"
if [ "${KEEP_BUILD_TREE:-0}" != 1 ]; then
    log "removing the build tree and Go cache (KEEP_BUILD_TREE=1 keeps them)"
    chmod -R u+w home 2>/dev/null || true
    rm -rf kubernetes-1.20.2 home
fi
trap - ERR
log "built $(cd "$BIN" && echo "${BINARIES[*]}") in $BIN ($(du -sh "$BIN" | cut -f1)) in $(since "$START")"
