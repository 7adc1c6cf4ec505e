"""A free TCP port on 127.0.0.1 for a server that binds it later (seconds later: a Prefect server
binds after its imports and migrations, a container after its start).

Not ``bind(0)``: that hands out a port of the kernel's ephemeral range, the range every outgoing
connection takes its local port from, so on a busy machine another process's connection can hold
the port by the time the server binds it ("address already in use"). The port is drawn from below
that range instead, where only servers bind, and checked free; ``lane`` of ``lanes`` splits the
range so that processes started side by side (test workers) never draw the same port."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_FLOOR = 10000  # below: well-known and registered ports of common services
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(lane: int = 0, lanes: int = 1) -> int:
    """A port no server listens on and no connection holds, not handed out before by this process."""
    top = _ephemeral_start()
    width = (top - _FLOOR) // max(1, lanes)
    if width < 64:  # the ephemeral range starts too low to leave room: the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    start = _FLOOR + lane % max(1, lanes) * width
    candidates = list(range(start, start + width))
    random.shuffle(candidates)
    for port in candidates:
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port on 127.0.0.1 in {start}-{start + width - 1}")
