#!/usr/bin/env bash
# scripts/k8s/down.sh [--purge] — stops the test cluster started by scripts/k8s/up.sh and undoes
# what it did to the host, as far as possible:
#   - stops kubelet, kube-proxy, scheduler, controller-manager, apiserver, containerd, etcd (pid files);
#   - kills and removes all pod containers and sandboxes (ctr, namespace k8s.io), their network
#     namespaces, the CNI bridge, IPAM and CNI cache entries, and unmounts volumes under the state dir;
#   - deletes the iptables/ip6tables chains KUBE-* and CNI-* and the rules jumping to them (unless such
#     chains were already there before the first up.sh), and up.sh's FORWARD rule for pod-to-pod
#     traffic; removes the kubepods cgroups;
#   - restores the sysctls recorded by up.sh (kernel.panic, kernel.panic_on_oops, vm.overcommit_memory,
#     net.ipv4.conf.all.route_localnet; net.ipv4.ip_forward only when Docker is not running).
# Kept (so the next up.sh is a warm start): binaries, PKI, kubeconfig, etcd data (the API objects:
# deployments come back on the next up), containerd's image store.
# --purge also deletes etcd data, containerd storage, PKI, configs and kubeconfig, and /var/log/pods.
# Time: ~3-10 s (pods are killed, not drained). Safe to run when nothing runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require_root
T0=$EPOCHREALTIME
PURGE=0
[ "${1:-}" = --purge ] && PURGE=1

mkdir -p "$K"
exec 9>"$K/updown.lock"
flock 9

# unmount_all_under DIR: lazily unmounts every mount point below DIR, deepest first.
unmount_all_under() {
    local m
    findmnt -rn -o TARGET | { grep "^$1/" || true; } | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
}

# 0. Pods already being deleted are removed from the API now (force, grace 0): down kills their
#    containers anyway, and a kubelet 1.20 that finds them at the next start would first restart
#    them and only then finish the deletion (keeping their namespace Terminating meanwhile).
if pid_alive "$RUN/kube-apiserver.pid" kube-apiserver && [ -s "$KUBECONFIG" ]; then
    "$KUBECTL" --request-timeout=5s get pods -A -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}' 2>/dev/null |
        while read -r ns pod; do
            "$KUBECTL" --request-timeout=5s -n "$ns" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1 || true
        done || true
fi

# 1. The node agents and the control plane, in parallel (kubelet included: nothing recreates pods
#    once it is gone; the apiserver outliving it by a second does not matter).
for name in kubelet kube-proxy kube-scheduler kube-controller-manager kube-apiserver; do
    stop_pid "$RUN/$name.pid" "$name" 20 &
done
wait

# 2. Pod containers and sandboxes, while containerd still runs.
CTR=(ctr --address "$CTRD_SOCK" --namespace k8s.io)
NETNS=()
if pid_alive "$RUN/containerd.pid" containerd && "${CTR[@]}" version >/dev/null 2>&1; then
    tasks=$("${CTR[@]}" tasks ls -q 2>/dev/null || true)
    for id in $tasks; do "${CTR[@]}" tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $tasks; do "${CTR[@]}" tasks delete --force "$id" >/dev/null 2>&1 || true; done
    containers=$("${CTR[@]}" containers ls -q 2>/dev/null || true)
    for id in $containers; do
        ns=$("${CTR[@]}" containers info "$id" 2>/dev/null |
            jq -r '.Spec.linux.namespaces[]? | select(.type == "network") | .path // empty' || true)
        [ -n "$ns" ] && NETNS+=("$ns")
    done
    # shellcheck disable=SC2086
    [ -z "$containers" ] || "${CTR[@]}" containers delete $containers >/dev/null 2>&1 || true
    log "removed $(echo "$containers" | wc -w) pod containers/sandboxes"
fi
stop_pid "$RUN/containerd.pid" containerd 20
stop_pid "$RUN/etcd.pid" etcd 20

# Shims of our containerd (normally gone with their tasks): found by our socket path, ended by pid.
for d in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null | grep -q -- "containerd-shim.* -address $CTRD_SOCK"; then
        log "killing leftover shim ${d#/proc/}"
        kill -KILL "${d#/proc/}" 2>/dev/null || true
    fi
done

# 3. Network namespaces, bridge, IPAM, CNI cache, mounts under the state dir.
for ns in "${NETNS[@]}"; do
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
done
if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then ip link delete "$CNI_BRIDGE"; fi
rm -rf "${DATA:?}/cni-ipam/$CNI_NETWORK" /var/lib/cni/results/"$CNI_NETWORK"-*
for id in ${containers:-}; do rm -f /var/lib/cni/results/cni-loopback-"$id"-lo; done
# kubelet 1.20 puts its device-plugin socket under /var/lib/kubelet whatever --root-dir says
rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/DEPRECATION
rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/lib/cni/results /var/lib/cni 2>/dev/null || true
unmount_all_under "$K"
rm -rf "${DATA:?}/kubelet/pods" "$DATA/containerd/root/io.containerd.grpc.v1.cri/sandboxes" \
    "$DATA/containerd/root/io.containerd.grpc.v1.cri/containers" "$DATA/containerd/state"

# 4. iptables chains and rules, kubepods cgroups.
preexisting=$(sed -n 's/^iptables.preexisting=//p' "$HOST_SETTINGS" 2>/dev/null || echo 0)
if [ "${preexisting:-0}" != 0 ]; then
    log "KUBE-*/CNI-* iptables chains existed before the first up.sh: left alone"
else
    for ipt in iptables ip6tables; do
        for t in filter nat mangle raw; do
            "$ipt-save" -t "$t" >/dev/null 2>&1 || continue
            # rules of the built-in chains that jump to our chains (iptables-save quoting is shell-safe)
            "$ipt-save" -t "$t" | { grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|CNI-)' || true; } |
                while read -r rule; do eval "$ipt -w -t $t -D ${rule#-A }" || true; done
            chains=$("$ipt-save" -t "$t" | sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p')
            for c in $chains; do "$ipt" -w -t "$t" -F "$c"; done
            for c in $chains; do "$ipt" -w -t "$t" -X "$c" || true; done
        done
    done
    log "removed KUBE-*/CNI-* iptables chains"
fi
while iptables -w -D FORWARD -s "$CLUSTER_CIDR" -d "$CLUSTER_CIDR" -m comment --comment "$POD_FORWARD_RULE" -j ACCEPT 2>/dev/null; do
    log "removed the FORWARD rule for pod-to-pod traffic"
done
for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    if [ -d "$cg" ]; then find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
done

# 5. sysctls back to what they were before the first up.sh.
if [ -s "$HOST_SETTINGS" ]; then
    restored=()
    while IFS='=' read -r key value; do
        case "$key" in
        iptables.*) continue ;;
        net.ipv4.ip_forward)
            if docker info >/dev/null 2>&1; then continue; fi # Docker needs forwarding
            ;;
        esac
        if [ "$(sysctl -n "$key")" != "$value" ]; then
            sysctl -q -w "$key=$value"
            restored+=("$key=$value")
        fi
    done <"$HOST_SETTINGS"
    rm -f "$HOST_SETTINGS"
    [ ${#restored[@]} -eq 0 ] || log "restored ${restored[*]}"
fi

if [ "$PURGE" = 1 ]; then
    log "purging etcd data, containerd storage, PKI, configs, kubeconfig, /var/log/pods"
    unmount_all_under "$K"
    rm -rf "${DATA:?}" "${PKI:?}" "${ETC:?}" "$KUBECONFIG" /var/log/pods/* /var/log/containers/*
fi
log "down in $(since "$T0")"
