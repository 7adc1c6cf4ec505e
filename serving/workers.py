"""Run uvicorn on pre-bound sockets: in this process, or in N forked workers under a small supervisor.

Workers are forked after the model is loaded, so they share its memory copy-on-write and start in
milliseconds. The supervisor restarts a worker that dies (at most 5 per worker a minute), forwards
SIGTERM/SIGINT to the workers for uvicorn's graceful shutdown, and exits 0 once they are gone.

A *held* socket (``--hold``) is bound but not served until SIGUSR1 (forwarded to the workers too):
a release started beside a live one on the same port takes no connection until it is promoted.

Listening sockets are served by ``Listener``, which accepts every connection the kernel has queued
each time the socket is readable. uvloop's own server (libuv) accepts one connection per turn of the
event loop (strace: one ``accept4`` per ``epoll_pwait``), and under load a turn answers every
request waiting on the open connections first: 64 clients connecting to a busy server at once
waited up to 64 turns for their first answer (0.4-1.1 s at 64 connections on one core; BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import uvicorn

from serving import SERVER_NAME
from serving.app import SlipwayApp

DRAIN_SECONDS = 0.5
_SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # Linux >= 4.5
_STEERED_SETTLE_S = 0.05  # handshakes already under way when steered land in our queue within this
SERVE_HELD = signal.SIGUSR1
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_STARTUP_TIMEOUT = 120.0
_ACCEPT_BURST = 2048  # connections accepted per readiness event at most: all (the listen backlog)
# With workers sharing a socket, each accepts a few per turn: the first to wake would take a whole
# burst of keep-alive clients, and keep them.
_WORKER_ACCEPT_BURST = 16
_ACCEPT_PAUSE_S = 1.0  # out of file descriptors: stop accepting this long, as asyncio does
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Listener:
    """Serves a listening socket: accepts every queued connection at once, hands each to the loop.

    Stands in for the ``asyncio.Server`` uvicorn keeps in ``Server.servers``: ``close`` stops
    accepting and closes the socket; ``wait_closed`` returns at once (connections are uvicorn's).
    """

    def __init__(
        self, sock: socket.socket, protocol: Callable[[], asyncio.Protocol], burst: int = _ACCEPT_BURST
    ) -> None:
        self.sock = sock
        self._protocol = protocol
        self._burst = burst
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[object]] = set()
        self._closed = False
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        loop = self._loop
        for _ in range(self._burst):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while queued
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                _say(f"warning: cannot accept connections ({exc.strerror}); retrying in {_ACCEPT_PAUSE_S:g} s")
                loop.remove_reader(self.sock.fileno())
                loop.call_later(_ACCEPT_PAUSE_S, self._resume)
                return
            task: asyncio.Task[object] = loop.create_task(loop.connect_accepted_socket(self._protocol, conn))
            self._pending.add(task)
            task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a client that left before its connection started is not an error

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError, OSError):  # a socket closed already has no fileno
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def wait_closed(self) -> None:
        return None


class _Server(uvicorn.Server):
    """uvicorn's server, plus: a callback once it accepts, and a drain before uvicorn's shutdown.

    On SIGTERM: /ready answers 503 and responses carry ``Connection: close``; new connections are
    steered to the release that joined the port after this one (``steer_to_successor``); the
    connections the kernel has already queued on our listeners are accepted and the listeners closed
    in one go (no await in between), so none sit in a closing accept queue (the kernel resets those);
    then ``DRAIN_SECONDS`` for just-accepted and keep-alive clients to get their answers; then
    uvicorn's shutdown (idle connections closed, in-flight requests finished).
    """

    def __init__(
        self, config: uvicorn.Config, app: SlipwayApp, on_started: Callable[[], None], held: Held | None = None,
        burst: int = _ACCEPT_BURST,
    ) -> None:  # fmt: skip
        super().__init__(config)
        self._burst = burst
        self._app = app
        self._on_started = on_started
        self._held = held
        self._late: list[socket.socket] = []  # held sockets served since: drained at shutdown like the rest

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # uvicorn's start-up without its servers: ours accept (Listener)
        if self.started and not self.should_exit:
            for sock in sockets or []:
                self.servers.append(Listener(sock, self._protocol, self._burst))  # type: ignore[arg-type]
        if self.started and not self.should_exit:
            if self._held is not None:
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(SERVE_HELD, lambda: loop.create_task(self._serve_held()))
            self._on_started()

    def _protocol(self) -> asyncio.Protocol:
        config = self.config
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state,
            _loop=asyncio.get_running_loop(),
        )  # fmt: skip

    async def _serve_held(self) -> None:
        """Start accepting on the held socket (once), then say so."""
        held, self._held = self._held, None
        if held is None or self.should_exit:
            return
        held.sock.listen(self.config.backlog)
        self.servers.append(Listener(held.sock, self._protocol, self._burst))  # type: ignore[arg-type]
        self._late.append(held.sock)
        held.on_serving()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.ready = False
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._app.ready = False
        try:
            await self._drain([*(sockets or []), *self._late])
        except Exception as exc:  # best effort: uvicorn's own shutdown still runs
            _say(f"warning: draining the listeners failed ({type(exc).__name__}: {exc})")
        await super().shutdown(sockets=sockets)

    async def _drain(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        accepted: list[socket.socket] = []
        if [sock for sock in sockets if sock.fileno() >= 0 and steer_to_successor(sock)]:
            await asyncio.sleep(_STEERED_SETTLE_S)
        for sock in sockets:
            if sock.fileno() < 0:
                continue
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while True:
                    accepted.append(sock.accept()[0])
        for server in self.servers:
            server.close()  # closes the listening sockets
        for conn in accepted:
            await loop.connect_accepted_socket(self._protocol, conn)
        await asyncio.sleep(DRAIN_SECONDS)


def steer_to_successor(sock: socket.socket) -> bool:
    """Send the port's new connections to the listener that joined its SO_REUSEPORT group after this
    one: the release promoted beside it (a classic BPF program on the group that picks its socket 1).

    The kernel otherwise spreads them over both until this listener closes, and resets the ones
    whose handshake completes between its last accept and its close (Linux's tcp_migrate_req would
    move them, but it is off by default). With no listener after this one the index is out of range
    and the kernel spreads as before. True once steered; False where the socket is no SO_REUSEPORT
    listener or the kernel refuses."""
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return False
        ret_1 = ctypes.create_string_buffer(struct.pack("@HBBI", 0x06, 0, 0, 1), 8)  # BPF_RET|BPF_K, k = 1
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, struct.pack("@HP", 1, ctypes.addressof(ret_1)))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Held:
    """A bound socket served only from SIGUSR1 on; ``on_serving`` runs once it accepts."""

    sock: socket.socket
    on_serving: Callable[[], None]


def serve(
    app: SlipwayApp,
    config: uvicorn.Config,
    sockets: list[socket.socket],
    on_started: Callable[[], None],
    held: Held | None = None,
    burst: int = _ACCEPT_BURST,
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully (uvicorn's) and return; ``burst``
    connections accepted per turn of the loop at most."""
    server = _Server(config, app, on_started, held, burst)
    # uvicorn installs its handlers only inside serve() and, on the way out, restores these and
    # re-raises the signal it caught: with these a signal means "shut down" before, during and after.
    for sig in _SIGNALS:
        signal.signal(sig, server.handle_exit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    server.run(sockets=sockets)


def _say(message: str) -> None:
    print(f"{SERVER_NAME}: {message}", file=sys.stderr, flush=True)


def run_workers(
    n: int,
    make_config: Callable[[], uvicorn.Config],
    app: SlipwayApp,
    sockets: list[socket.socket],
    on_ready: Callable[[], None],
    held: Held | None = None,
) -> int:
    """Fork ``n`` workers serving ``sockets`` (and ``held`` from SIGUSR1 on); call ``on_ready`` once all
    accept; supervise them. SIGUSR1 to the supervisor is passed on to every worker."""
    read_fd, write_fd = os.pipe()
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        app.ready = False
        for sock in [*sockets, *([held.sock] if held else [])]:  # once the workers close theirs, no listener is left
            sock.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def serve_held(signum: int, frame: FrameType | None) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, SERVE_HELD)

    def spawn(index: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # no signal between fork and handlers
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 0

            def started() -> None:
                os.write(write_fd, b"r")

            try:
                os.close(read_fd)
                signal.signal(SERVE_HELD, signal.SIG_IGN)  # until the worker's own handler: no early death
                serve(app, make_config(), sockets, on_started=started, held=held, burst=_WORKER_ACCEPT_BURST)
            except BaseException as exc:
                _say(f"error: worker {index} (pid {os.getpid()}) failed: {type(exc).__name__}: {exc}")
                code = 1
            finally:
                os._exit(code)
        children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    for sig in _SIGNALS:
        signal.signal(sig, stop)
    signal.signal(SERVE_HELD, serve_held)
    for index in range(n):
        spawn(index)

    ready, deadline = 0, time.monotonic() + _STARTUP_TIMEOUT
    while ready < n and not stopping:
        if select.select([read_fd], [], [], 0.2)[0]:
            ready += len(os.read(read_fd, 64))
        pid, status = os.waitpid(-1, os.WNOHANG)
        failure = None
        if pid:
            children.pop(pid, None)
            failure = f"worker pid {pid} exited during startup ({os.waitstatus_to_exitcode(status)})"
        elif time.monotonic() > deadline:
            failure = f"workers did not start within {_STARTUP_TIMEOUT:.0f} s"
        if failure:
            stop()
            _reap(children)
            _say(f"error: {failure}; stopping")
            return 1
    if not stopping:
        try:
            on_ready()
        except BaseException:
            stop()
            _reap(children)
            raise
    return _supervise(children, spawn, stop, lambda: stopping, n)


def _supervise(
    children: dict[int, int],
    spawn: Callable[[int], None],
    stop: Callable[[], None],
    stopping: Callable[[], bool],
    n: int,
) -> int:
    exit_code, restarts = 0, list[float]()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None or stopping():
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60.0] + [now]
        if len(restarts) > 5 * n:
            _say("error: workers keep exiting (more than 5 per worker in a minute); stopping")
            exit_code = 1
            stop()
            continue
        _say(f"worker {index} (pid {pid}) exited ({os.waitstatus_to_exitcode(status)}); starting a new one")
        spawn(index)
    return exit_code


def _reap(children: dict[int, int]) -> None:
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        children.pop(pid, None)
