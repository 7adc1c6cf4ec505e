#!/usr/bin/env bash
# scripts/services/netns.sh up|down|exec NAME [N] [CMD...] — a network namespace that stands in for
# another machine of a team: its own loopback and interfaces, reaching this host's services (Prefect,
# PostgreSQL, the registry, published container ports) at the addresses a worker is configured
# with, 127.0.0.1:PORT, as if they ran beside it. Root; iptables; no state outside the kernel.
#
#   up NAME N    creates namespace slipway-NAME with a veth pair on 10.231.N.0/30 (N 1-250): the
#                host side 10.231.N.1, the namespace side 10.231.N.2. Inside, TCP to 127.0.0.1 is
#                sent to the host (DNAT + SNAT); on the host, what arrives from the pair is delivered
#                to 127.0.0.1 (DNAT, route_localnet), so services bound to loopback answer. Clients
#                arrive from 10.231.N.2: PostgreSQL must allow that network (postgres.sh allow).
#   down NAME    removes the namespace, the pair and the host rule.
#   exec NAME CMD...  runs CMD inside (as `ip netns exec`).
# Time (measured, 2 cores): up ~0.2 s, down ~0.1 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

up() {
    local name=$1 n=$2 ns=slipway-$1 host=sw$1h peer=sw$1n
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "N must be 1-250, not '$n'"
    [ ${#host} -le 15 ] || die "name '$name' too long for an interface name (at most 12 characters)"
    ip netns list | grep -qw "$ns" && { log "namespace $ns: already there"; return 0; }
    ip netns add "$ns"
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip addr add "10.231.$n.1/30" dev "$host"
    ip link set "$host" up
    sysctl -qw "net.ipv4.conf.$host.route_localnet=1"
    iptables -t nat -I PREROUTING -i "$host" -p tcp -j DNAT --to-destination 127.0.0.1
    ip netns exec "$ns" bash -euc "
        ip link set lo up
        ip addr add 10.231.$n.2/30 dev $peer
        ip link set $peer up
        ip route add default via 10.231.$n.1
        sysctl -qw net.ipv4.conf.all.route_localnet=1
        iptables -t nat -A OUTPUT -d 127.0.0.1/32 -p tcp -j DNAT --to-destination 10.231.$n.1
        iptables -t nat -A POSTROUTING -d 10.231.$n.1/32 -j SNAT --to-source 10.231.$n.2"
    log "namespace $ns up: 10.231.$n.2, loopback TCP reaches this host's 127.0.0.1"
}

down() {
    local name=$1 ns=slipway-$1 host=sw$1h
    while iptables -t nat -D PREROUTING -i "$host" -p tcp -j DNAT --to-destination 127.0.0.1 2>/dev/null; do :; done
    ip link del "$host" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}

case "${1:-}" in
up) require_root; [ $# -eq 3 ] || die "usage: $0 up NAME N"; up "$2" "$3" ;;
down) require_root; [ $# -eq 2 ] || die "usage: $0 down NAME"; down "$2" ;;
exec) require_root; [ $# -ge 3 ] || die "usage: $0 exec NAME CMD..."; ns=slipway-$2; shift 2; exec ip netns exec "$ns" "$@" ;;
*) die "usage: $0 up NAME N | down NAME | exec NAME CMD..." ;;
esac
