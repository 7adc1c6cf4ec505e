# shellcheck shell=bash disable=SC2034
# scripts/k8s/env.sh — where the test cluster keeps everything; sourced by up.sh and down.sh.
# Also handy in a shell:  . scripts/k8s/env.sh && "$KUBECTL" get nodes   (exports KUBECONFIG)
SLIPWAY_VAR=${SLIPWAY_VAR:-/var/tmp/slipway}
SLIPWAY_REGISTRY=${SLIPWAY_REGISTRY:-127.0.0.1:5000}
K=$SLIPWAY_VAR/k8s
BIN=$K/bin                # built by build.sh
RUN=$K/run                # logs and pid files of all components, containerd socket
ETC=$K/etc                # containerd, CNI and kubelet configuration
DATA=$K/data              # etcd, containerd, kubelet and IPAM state
PKI=$K/pki                # CA, certificates, component kubeconfigs
export KUBECONFIG=$K/kubeconfig # admin, https://127.0.0.1:6443, certificates embedded
KUBECTL=$BIN/kubectl      # v1.20.2, same as the cluster (the machine's kubectl may be far newer)
CTRD_SOCK=$RUN/containerd.sock
HOST_SETTINGS=$K/host-settings.orig
PAUSE_TAG=3.4.1
PAUSE_IMAGE=$SLIPWAY_REGISTRY/slipway/pause:$PAUSE_TAG
CNI_NETWORK=slipway-pods
CNI_BRIDGE=slipway-cni0
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
POD_FORWARD_RULE="slipway-k8s: pods reach pods and Services"
SERVICE_CIDR=10.96.0.0/16
# Host settings changed by kubelet (panic, overcommit), kube-proxy (route_localnet) and the CNI
# bridge plugin (ip_forward); up.sh records them before the first start, down.sh restores them.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.conf.all.route_localnet net.ipv4.ip_forward)
