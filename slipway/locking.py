"""One run per service at a time. Each ledger holds its own kind of lock (``Ledger.lock``); this
module has the single-machine one, an ``flock`` on a file beside the SQLite ledger, and what every
kind says while it waits and when it gives up.

The kernel drops an ``flock`` when the holder dies, so a killed run never leaves a stale lock. The
holder writes who it is into the file so that a waiting deploy can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from slipway.errors import DeployLocked
from slipway.release import now

POLL_S = 0.2


def holder_info(purpose: str) -> dict[str, Any]:
    """Who holds a lock, as the holder records it."""
    return {"purpose": purpose, "host": socket.gethostname(), "pid": os.getpid(), "since": now()}


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "deploy"
    host = f"on {info['host']}, " if info.get("host") else ""
    return f"{info.get('purpose', 'deploy')} ({host}pid {info.get('pid')}, since {info.get('since')})"


def wait_for(try_lock: Callable[[], bool], holder: Callable[[], str], service: str, timeout_s: float) -> None:
    """Call ``try_lock`` until it returns True; past ``timeout_s``, fail naming the holder."""
    deadline = time.monotonic() + timeout_s
    while not try_lock():
        if time.monotonic() >= deadline:
            raise DeployLocked(
                f"another {holder()} of service {service!r} is running",
                hint="wait for it to finish (see `slipway status`), or retry with a longer wait "
                "(SLIPWAY_LOCK_TIMEOUT_S)",
            )
        time.sleep(POLL_S)


@contextmanager
def service_lock(lock_dir: Path, service: str, *, timeout_s: float, purpose: str) -> Iterator[None]:
    """Hold the flock of ``service`` for the block; wait up to ``timeout_s`` for it, then fail clearly."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{service}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_lock() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        wait_for(try_lock, lambda: describe(_read(path)), service, timeout_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info(purpose)).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
