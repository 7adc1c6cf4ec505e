"""slipway.ports: ports for servers that bind them later, drawn where no outgoing connection takes
its local port from (below the kernel's ephemeral range), free, never handed out twice, and in
disjoint lanes for processes that draw side by side."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from slipway import ports


def _ephemeral() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_a_port_is_below_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    low, _ = _ephemeral()
    drawn = [ports.free_port() for _ in range(200)]
    assert len(set(drawn)) == 200 and all(10000 <= p < low for p in drawn)
    for port in drawn[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing listens there


def test_lanes_never_overlap() -> None:
    first = {ports.free_port(0, 2) for _ in range(100)}
    second = {ports.free_port(1, 2) for _ in range(100)}
    assert max(first) < min(second)


def test_a_port_that_is_listened_on_is_never_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports.free_port()))
        held.listen()
        port = int(held.getsockname()[1])
        monkeypatch.setattr(ports, "_handed_out", set())  # as if drawn by another process
        monkeypatch.setattr(ports.random, "shuffle", lambda seq: seq.sort(key=lambda p: p != port))  # drawn first
        assert ports.free_port() not in (port, 0)
