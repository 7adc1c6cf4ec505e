"""The local Prefect server the CLI starts on first use and then reuses (``slipway server``).

Without one, every CLI call that runs a flow starts and stops Prefect's temporary server: 7-20 s
before the first step (BENCHMARKS.md §3). So ``slipway deploy|rollback|teardown`` start a
``prefect server start`` on 127.0.0.1 the first time and leave it running for the next call; its
UI shows every run. It lives under ``<state_dir>/prefect-server`` (or ``SLIPWAY_PREFECT_SERVER_DIR``):
``home`` (PREFECT_HOME: its SQLite database), ``server.json`` (pid, port, URL) and ``server.log``.
``slipway server status`` finds it, ``slipway server stop`` stops it.

It is never started behind the user's back where a server is meant to be chosen: when Prefect's
API URL is set (the environment, the profile), under CI (``CI`` set), or with
``SLIPWAY_PREFECT_SERVER=temporary`` (Prefect's temporary server per call, as before). It gets no
credentials: its environment is ``plain_environment()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from slipway.errors import At, ConfigError, OperationError
from slipway.http import tls
from slipway.ports import free_port
from slipway.settings import get_settings, plain_environment

MODE_ENV = "SLIPWAY_PREFECT_SERVER"  # auto (default) | temporary
START_TIMEOUT_S = 180.0  # a first start creates the database: ~35 s on a loaded 2-core machine
_STOP_TIMEOUT_S = 15.0
_BIND_ATTEMPTS = 3  # a port free when drawn can be bound by another program before the server binds it


@dataclass(frozen=True)
class Running:
    pid: int
    port: int
    url: str  # the API: http://127.0.0.1:PORT/api; the UI is at http://127.0.0.1:PORT
    started_at: float

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")


def folder() -> Path:
    settings = get_settings()
    return settings.prefect_server_dir or settings.path("prefect-server")


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a flow command should use (and if need be start) the local server."""
    mode = environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "temporary"):
        raise ConfigError(f"{MODE_ENV}={mode!r} is not auto or temporary",
                          hint="auto: the CLI's own long-lived server; temporary: Prefect's, per call")  # fmt: skip
    if mode == "temporary" or environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    from prefect.settings import PREFECT_API_URL

    return not PREFECT_API_URL.value()


def status() -> Running | None:
    """The server this machine's CLI started, if it runs and answers."""
    found = _recorded()
    return found if found is not None and _alive(found.pid) and _healthy(found.url) else None


def ensure(progress: Callable[[str], None]) -> Running:
    """The running server, started first if there is none (one at a time: a lock)."""
    with _locked():
        found = _recorded()
        if found is not None and _alive(found.pid):
            if _healthy(found.url) or _wait_healthy(found, 30.0):
                return found
            _terminate(found.pid)  # alive but not answering: replaced, not left behind
        return _start(progress)


def stop() -> Running | None:
    """Stop the server (and forget it); the one stopped, or None if none ran."""
    with _locked():
        found = _recorded()
        (folder() / "server.json").unlink(missing_ok=True)
        if found is None or not _alive(found.pid):
            return None
        _terminate(found.pid)
        return found


def _start(progress: Callable[[str], None]) -> Running:
    here = folder()
    (here / "home").mkdir(parents=True, exist_ok=True)
    env = plain_environment() | {
        "PREFECT_HOME": str(here / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "HOME": str(here / "home"),
    }  # fmt: skip
    log = here / "server.log"
    for _attempt in range(_BIND_ATTEMPTS):
        port = free_port()
        url = f"http://127.0.0.1:{port}/api"
        progress(f"starting the local Prefect server on {url.removesuffix('/api')} (its UI; `slipway server stop` "
                 "stops it)")  # fmt: skip
        start = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=here,
                start_new_session=True,  # outlives this command: the next one reuses it
            )  # fmt: skip
        running = Running(proc.pid, port, url, time.time())
        if _wait_healthy(running, START_TIMEOUT_S, proc):
            (here / "server.json").write_text(json.dumps(asdict(running)))
            progress(f"local Prefect server ready after {time.time() - running.started_at:.1f} s")
            return running
        exited = proc.poll()
        _terminate(proc.pid)
        with log.open("rb") as read:
            read.seek(start)
            output = read.read().decode(errors="replace")
        if "already in use" not in output:  # taken before the start (prefect checks) or before its bind
            break
        progress(f"port {port} was taken while the server started: another port")
    tail = "\n".join(output.splitlines()[-15:])
    what = (f"exited (code {exited}) before answering {url}/health" if exited is not None
            else f"did not answer {url}/health within {START_TIMEOUT_S:.0f} s")  # fmt: skip
    raise OperationError(
        f"{what}:\n{tail}",
        at=At("prefect", "start", "the local server"),
        hint=f"read {log}; or set PREFECT_API_URL to a Prefect server, or {MODE_ENV}=temporary",
    )


def _wait_healthy(running: Running, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if _healthy(running.url):
            return True
        time.sleep(0.25)
    return False


def _recorded() -> Running | None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        return Running(**json.loads((folder() / "server.json").read_text()))
    return None


def _alive(pid: int) -> bool:
    """A running process of a Prefect server (not another program that got the pid since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in cmdline and b"server" in cmdline


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2, verify=tls()).status_code == 200
    except httpx.HTTPError:
        return False


def _terminate(pid: int) -> None:
    """SIGTERM the server's process group (uvicorn and its services), SIGKILL after a while."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped here when this process started it
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    folder().mkdir(parents=True, exist_ok=True)
    with (folder() / "lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
