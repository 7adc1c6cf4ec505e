"""The server's listener accepts every queued connection at once (serving.workers.Listener).

uvloop's own server accepts one connection per turn of the event loop: on a busy server, clients
that connect together waited one turn each for their first answer (the latency tail of
BENCHMARKS.md). What the launcher does after the model load is checked on a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvloop

from serving.workers import Listener, steer_to_successor

Server = Any
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"uvloop": uvloop.new_event_loop,
                                                            "asyncio": asyncio.new_event_loop}  # fmt: skip


def _queued(n: int) -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket with ``n`` connections the kernel has completed and queued, none accepted."""
    listening = socket.create_server(("127.0.0.1", 0), backlog=n)
    clients = [socket.create_connection(listening.getsockname()) for _ in range(n)]
    return listening, clients


def _accepted_in_one_turn(loop_factory: Callable[[], asyncio.AbstractEventLoop], n: int, burst: int) -> int:
    listening, clients = _queued(n)
    made: list[asyncio.BaseTransport] = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    async def one_turn() -> int:
        listener = Listener(listening, Protocol, burst)
        asyncio.get_running_loop().remove_reader(listening.fileno())  # no event but the one below
        listener._accept()  # one readiness event of the listening socket
        for _ in range(3):  # the connections' set-up runs in the next turns
            await asyncio.sleep(0)
        listener.close()
        for transport in made:
            transport.close()
        return len(made)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(one_turn())
    finally:
        for client in clients:
            client.close()
        with contextlib.suppress(OSError):
            listening.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_one_readiness_event_accepts_every_queued_connection(loop: str) -> None:
    assert _accepted_in_one_turn(LOOPS[loop], 64, burst=2048) == 64


def test_workers_sharing_a_socket_accept_a_few_per_turn() -> None:
    assert _accepted_in_one_turn(uvloop.new_event_loop, 64, burst=16) == 16


def test_the_loaded_model_is_out_of_the_collectors_sight(server: Server) -> None:
    """The launcher freezes what the load left (gc.freeze): full collections walk only what serving allocates."""
    metrics = httpx.get(f"{server.url}/metrics", headers=server.headers, timeout=10).text
    frozen = next(line for line in metrics.splitlines() if line.startswith("python_gc_frozen_objects "))
    assert int(frozen.split()[1]) > 50_000  # numpy, scikit-learn, the model, uvicorn


def _reuseport_listener(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _landed(listeners: list[socket.socket], port: int, n: int = 60) -> list[int]:
    """How many of ``n`` new connections to ``port`` each listener got."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    counts = []
    for sock in listeners:
        got = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.accept()[0].close()
                got += 1
        counts.append(got)
    for client in clients:
        client.close()
    return counts


def test_a_retiring_listener_steers_every_new_connection_to_the_one_promoted_beside_it() -> None:
    """The hand-over of kind: local: the old release's listener, then the candidate's on the same port.
    Steered, the old one gets no new connection (none can be reset by its close), and once it is
    gone the next release beside the survivor takes them all at once in turn."""
    old = _reuseport_listener()
    port = old.getsockname()[1]
    new = _reuseport_listener(port)
    try:
        assert all(_landed([old, new], port))  # the kernel spreads them over both
        assert steer_to_successor(old)
        assert _landed([old, new], port) == [0, 60]
        old.close()
        assert _landed([new], port) == [60]
        third = _reuseport_listener(port)
        assert _landed([new, third], port) == [0, 60]
        third.close()
    finally:
        new.close()


def test_a_listener_alone_or_without_reuseport_keeps_its_connections() -> None:
    alone = _reuseport_listener()
    plain = socket.create_server(("127.0.0.1", 0))
    plain.setblocking(False)
    try:
        assert steer_to_successor(alone) and _landed([alone], alone.getsockname()[1]) == [60]
        assert not steer_to_successor(plain) and _landed([plain], plain.getsockname()[1]) == [60]
    finally:
        alone.close()
        plain.close()
