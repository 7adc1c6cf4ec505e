#!/usr/bin/env bash
# scripts/k8s/up.sh — starts a real single-node Kubernetes v1.20.2 on this host, with no image pulls
# from outside: etcd, a private containerd with CRI, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy, all as plain processes. Pods pull from the local registry
# 127.0.0.1:5000 (plain HTTP, configured in containerd's certs.d).
#
# Needs: scripts/k8s/build.sh (binaries in /var/tmp/slipway/k8s/bin) and
#        scripts/services/docker.sh up (registry; docker is used once, to push the pause image).
# Writes:  kubeconfig  /var/tmp/slipway/k8s/kubeconfig (admin, server https://127.0.0.1:6443)
#          logs + pids /var/tmp/slipway/k8s/run/        configs /var/tmp/slipway/k8s/etc/
#          PKI         /var/tmp/slipway/k8s/pki/        data    /var/tmp/slipway/k8s/data/
#          original host settings (sysctls) /var/tmp/slipway/k8s/host-settings.orig (for down.sh)
# Idempotent: components already running are left alone; only missing ones are started.
# Time (measured, 2 cores): ~30 s from empty state (PKI, fresh etcd, first pull of pause), +~11 s when
# etcd-server/containernetworking-plugins must be installed; ~10-15 s warm (after down.sh); ~1 s when up.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require_root
T0=$EPOCHREALTIME

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run scripts/k8s/build.sh first (~11 min)"
done
registry_up || die "registry $SLIPWAY_REGISTRY not answering: run scripts/services/docker.sh up first"
ensure_pkgs etcd-server containerd runc containernetworking-plugins iptables conntrack jq iproute2 openssl curl

mkdir -p "$RUN" "$ETC" "$DATA"
exec 9>"$K/updown.lock"
flock 9

NODE=$(hostname | tr '[:upper:]' '[:lower:]')
IP=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$IP" ] || IP=$(ip -4 -o addr show scope global | awk '{sub("/.*", "", $4); print $4; exit}')
[ -n "$IP" ] || die "no non-loopback IPv4 address for the node"

fail() {
    log "ERROR: $*"
    local f
    for f in "$RUN"/*.log; do
        echo "----- last lines of $f" >&2
        tail -n 12 "$f" >&2
    done
    die "$* (logs: $RUN)"
}

# 1. Host settings that kubelet / kube-proxy / the CNI bridge change: record them once (down.sh
#    restores them and then removes the record).
if [ ! -s "$HOST_SETTINGS" ]; then
    {
        for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done
        # chains of ours already there (from someone else) => down.sh must not delete them
        echo "iptables.preexisting=$( (iptables-save; ip6tables-save) 2>/dev/null | grep -cE '^:(KUBE-|CNI-)' || true)"
    } >"$HOST_SETTINGS.tmp"
    mv "$HOST_SETTINGS.tmp" "$HOST_SETTINGS"
    log "recorded original host settings in $HOST_SETTINGS"
fi

# 1b. Pods reach each other, and Services (DNAT'ed to a pod before FORWARD), across the bridge:
#    with bridge-nf-call-iptables on, bridged frames go through FORWARD, whose policy Docker sets
#    to DROP. One rule, pod network to pod network only (down.sh removes it).
if ! iptables -w -C FORWARD -s "$CLUSTER_CIDR" -d "$CLUSTER_CIDR" -m comment --comment "$POD_FORWARD_RULE" -j ACCEPT 2>/dev/null; then
    iptables -w -I FORWARD -s "$CLUSTER_CIDR" -d "$CLUSTER_CIDR" -m comment --comment "$POD_FORWARD_RULE" -j ACCEPT
    log "FORWARD accepts pod-to-pod traffic ($CLUSTER_CIDR)"
fi

# 2. The pause (sandbox) image, from the static pause binary: no pull from outside.
if ! registry_has slipway/pause "$PAUSE_TAG"; then
    docker info >/dev/null 2>&1 || die "pause image missing in the registry and docker not answering: scripts/services/docker.sh up"
    log "pushing $PAUSE_IMAGE"
    tmp=$(mktemp -d)
    cp "$BIN/pause" "$tmp/pause"
    tar -C "$tmp" -c pause | docker import -c 'ENTRYPOINT ["/pause"]' -c 'USER 65535:65535' - "$PAUSE_IMAGE" >/dev/null
    docker push -q "$PAUSE_IMAGE" >/dev/null
    rm -rf "$tmp"
fi

# 3. Configuration files (rewritten every time: cheap, and keeps them in step with this script).
mkdir -p "$ETC/certs.d/$SLIPWAY_REGISTRY" "$ETC/cni" "$DATA/containerd" "$DATA/etcd" "$DATA/kubelet" "$DATA/cni-ipam"
cat >"$ETC/containerd.toml" <<EOF
# written by scripts/k8s/up.sh: private containerd for the test cluster (Docker's has CRI disabled)
version = 2
root = "$DATA/containerd/root"
state = "$DATA/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DATA/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  # no CAP_SYS_RESOURCE here: without this every sandbox fails ("can't get final child's PID from pipe")
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$ETC/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$ETC/certs.d"
EOF
cat >"$ETC/certs.d/$SLIPWAY_REGISTRY/hosts.toml" <<EOF
server = "http://$SLIPWAY_REGISTRY"
[host."http://$SLIPWAY_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$ETC/cni/10-slipway.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$DATA/cni-ipam",
              "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# 4. PKI, once (again if the node name/IP changed or a certificate is about to expire).
if [ "$(cat "$PKI/node" 2>/dev/null)" != "$NODE $IP" ] ||
    ! openssl x509 -checkend 86400 -noout -in "$PKI/apiserver.crt" >/dev/null 2>&1; then
    pid_alive "$RUN/kube-apiserver.pid" kube-apiserver && die "PKI must be regenerated but the cluster runs: scripts/k8s/down.sh first"
    log "generating the PKI in $PKI (node $NODE, ip $IP)"
    "$(dirname "${BASH_SOURCE[0]}")/pki.sh" "$PKI" "$NODE" "$IP"
fi
b64() { base64 -w0 <"$1"; }
cat >"$KUBECONFIG.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slipway
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: slipway-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: slipway
  context: {cluster: slipway, user: slipway-admin, namespace: default}
current-context: slipway
EOF
chmod 600 "$KUBECONFIG.tmp"
mv "$KUBECONFIG.tmp" "$KUBECONFIG"

# start_component NAME CMD...: starts NAME unless its pid file names a live NAME process.
STARTED=()
start_component() {
    local name=$1; shift
    if pid_alive "$RUN/$name.pid" "$name"; then return 0; fi
    local port
    for port in ${PORTS[$name]:-}; do
        if ss -Hltn "sport = :$port" | grep -q .; then
            fail "port $port needed by $name is taken: $(ss -Hltnp "sport = :$port" | head -1)"
        fi
    done
    start_daemon "$RUN/$name.pid" "$RUN/$name.log" "$@"
    STARTED+=("$name")
}
declare -A PORTS=([etcd]="2379 2380" [kube-apiserver]="6443" [kube-controller-manager]="10257"
    [kube-scheduler]="10259" [kubelet]="10250 10248" [kube-proxy]="10249 10256")

# 5. etcd and containerd.
start_component etcd etcd --name slipway --data-dir "$DATA/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster slipway=http://127.0.0.1:2380 --logger=zap --log-level=warn
start_component containerd containerd --config "$ETC/containerd.toml"
wait_until 30 curl -sf http://127.0.0.1:2379/health || fail "etcd not healthy after 30 s"
wait_until 30 ctr --address "$CTRD_SOCK" version || fail "containerd not answering after 30 s"

# 6. Control plane.
P=$PKI
start_component kube-apiserver "$BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --advertise-address="$IP" --secure-port=6443 --insecure-port=0 \
    --allow-privileged=true --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --client-ca-file="$P/ca.crt" --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
apiserver_ready() {
    curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" https://127.0.0.1:6443/readyz
}
wait_until 120 apiserver_ready || fail "kube-apiserver not ready after 120 s"
log "kube-apiserver ready ($(since "$T0"))"

start_component kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$P/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$P/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --service-cluster-ip-range="$SERVICE_CIDR"
start_component kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$P/scheduler.kubeconfig" \
    --authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false

# 7. Node: kubelet (on the private containerd) and kube-proxy (iptables mode).
cat >"$ETC/kubelet.yaml" <<EOF
# written by scripts/k8s/up.sh
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
clusterDomain: cluster.local
failSwapOn: false
tlsCertFile: $P/kubelet.crt
tlsPrivateKeyFile: $P/kubelet.key
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
EOF
KUBELET_T0=$(date +%s)
pid_alive "$RUN/kubelet.pid" kubelet && KUBELET_T0=0
start_component kubelet "$BIN/kubelet" --config="$ETC/kubelet.yaml" --kubeconfig="$P/kubelet.kubeconfig" \
    --root-dir="$DATA/kubelet" --hostname-override="$NODE" --node-ip="$IP" \
    --container-runtime=remote --container-runtime-endpoint="unix://$CTRD_SOCK" --v=1
start_component kube-proxy "$BIN/kube-proxy" --kubeconfig="$P/kube-proxy.kubeconfig" \
    --hostname-override="$NODE" --cluster-cidr="$CLUSTER_CIDR" --proxy-mode=iptables \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256

# 8. Wait for a Ready node (with a heartbeat from this kubelet, not a stale status from before a
#    restart) and for the default service account (pods cannot be created before it exists).
node_ready() {
    local out
    out=$("$KUBECTL" get node "$NODE" -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}') || return 1
    [ "${out%% *}" = True ] && [ "$(date -d "${out#* }" +%s)" -ge "$KUBELET_T0" ]
}
wait_until 120 node_ready || fail "node $NODE not Ready after 120 s"
wait_until 60 "$KUBECTL" -n default get serviceaccount default || fail "no default service account after 60 s"
for name in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    pid_alive "$RUN/$name.pid" "$name" || fail "$name is not running"
done

if [ ${#STARTED[@]} -eq 0 ]; then log "already up: nothing started"; else log "started: ${STARTED[*]}"; fi
log "node $NODE Ready, $("$KUBECTL" version --short 2>/dev/null | tail -1), up in $(since "$T0")"
echo "export KUBECONFIG=$KUBECONFIG   # kubectl v1.20: $KUBECTL"
