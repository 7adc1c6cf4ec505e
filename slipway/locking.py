"""One run per service at a time, across processes: an ``flock`` on a file in the state directory.

The kernel drops the lock when the holder dies, so a killed run never leaves a stale lock. The
holder writes who it is into the file so that a waiting deploy can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slipway.errors import DeployLocked
from slipway.ledger import now


@contextmanager
def service_lock(lock_dir: Path, service: str, *, timeout_s: float, purpose: str) -> Iterator[None]:
    """Hold the lock of ``service`` for the block; wait up to ``timeout_s`` for it, then fail clearly."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{service}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DeployLocked(
                        f"another {_holder(path)} of service {service!r} is running",
                        hint="wait for it to finish (see `slipway status`), or retry with a longer wait "
                        "(SLIPWAY_LOCK_TIMEOUT_S)",
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "purpose": purpose, "since": now()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "deploy"
    if not info:
        return "deploy"
    return f"{info.get('purpose', 'deploy')} (pid {info.get('pid')}, since {info.get('since')})"
