"""``kind: local`` — the embedded default: the model server as a detached process on this machine.

Each stage serves on its own port on 127.0.0.1. A process is started in its own session, so it
outlives the CLI or flow run that started it; it is tracked through files under
``<state_dir>/local/<service>/<stage>/``:

    live.json             the live deployment: release id, pid, port, control port, package
    <release>.ready       written by the server once its model is loaded and its sockets listen
    <release>.log         the server's stdout and stderr

Promotion never leaves the stage down, and a candidate takes no traffic before it: the candidate
binds the same port with SO_REUSEPORT but holds it (``--hold``: bound, not listening) and is checked
on its own control port (``/ready`` there answers for that process only). ``promote`` tells it to
serve the port (SIGUSR1), waits until its ready file says it does, and only then stops the old
process; for that moment the kernel spreads new connections over both releases.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from serving.contract import EXIT_CONFIG, exit_reason
from slipway.errors import At, ConfigError, TargetError
from slipway.http import answers
from slipway.release import Endpoint, Release
from slipway.settings import plain_environment
from slipway.spec import LocalTarget as LocalConfig
from slipway.spec import Timeouts
from targets.base import (
    PACKAGE,
    Capabilities,
    Change,
    Deployment,
    Facts,
    StageStatus,
    TargetContext,
    no_shift,
    put_live,
)

_STOP_GRACE_S = 10.0


class LocalProcessTarget:
    kind = "local"
    capabilities = Capabilities(artifacts=PACKAGE)

    def __init__(self, config: LocalConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.location = f"local 127.0.0.1:{config.port}"
        self.dir = ctx.state_dir / "local" / ctx.service / ctx.stage.value

    # --- lifecycle -------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        self._check_port_free_or_ours()
        live = self._live()
        # Deploys of a model are serialized by its lock: a server of this stage that is not live is a
        # candidate a killed run left behind, answering on the port next to the live one. Retire it.
        self._stop_all_but(live["pid"] if live else None)
        self.dir.mkdir(parents=True, exist_ok=True)
        ready_file = self.dir / f"{release.id}.ready"
        ready_file.unlink(missing_ok=True)
        log_path = self.dir / f"{release.id}.log"
        cmd = [
            sys.executable, "-m", "serving",
            "--package", str(release.package_dir),
            "--host", "127.0.0.1",
            "--port", str(self.config.port),
            "--control-port", "0",
            "--ready-file", str(ready_file),
            "--workers", str(self.config.workers),
            "--hold",
            *self.ctx.server_args,
        ]  # fmt: skip
        env = plain_environment() | {"PYTHONPATH": str(release.package_dir / "server")}  # no credential but its key
        key = self.ctx.key_for_deploy()
        if key is None:
            cmd.append("--no-auth")
        else:
            env["SLIPWAY_API_KEY"] = key.get_secret_value()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=self.dir, start_new_session=True,
            )  # fmt: skip
        return Deployment(
            release=release,
            stage=self.stage,
            endpoint=self._endpoint(),
            handle={"pid": str(proc.pid), "ready_file": str(ready_file), "log": str(log_path)},
        )

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        pid = int(deployment.handle["pid"])
        ready_file = Path(deployment.handle["ready_file"])
        log = Path(deployment.handle["log"])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = _exit_code(pid)
            if code is not None:
                raise self._error(
                    f"release {deployment.release.id} exited at start ({exit_reason(code)}):\n{_tail(log)}",
                    "wait_ready",
                    hint=f"read {log}; fix the cause and deploy again",
                    config=code == EXIT_CONFIG,
                )
            if ready_file.exists():
                info = json.loads(ready_file.read_text())
                control = Endpoint(f"http://127.0.0.1:{info['control_port']}", self.ctx.auth)
                if answers(control, control.routes.ready):
                    handle = {**deployment.handle, "control_port": str(info["control_port"])}
                    return Deployment(deployment.release, self.stage, control, handle)
            time.sleep(0.1)
        raise self._error(
            f"release {deployment.release.id} was not ready after {timeout_s:.0f} s:\n{_tail(log)}",
            "wait_ready",
            hint=f"read {log}; raise {self.stage.value}.ready_timeout_s in the spec if the model loads slowly",
        )

    def shift(self, deployment: Deployment, weight: float) -> None:
        raise no_shift(self)

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        """The candidate serves the stage's port beside the live process, then the live one stops."""
        self._serve_port(deployment, timeout_s)
        live = {
            "release_id": deployment.release.id,
            "pid": int(deployment.handle["pid"]),
            "port": self.config.port,
            "control_port": int(deployment.handle["control_port"]),
            "package_dir": str(deployment.release.package_dir),
            "package_sha256": deployment.release.package_sha256,
            "version": deployment.release.version,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_json(self.dir / "live.json", live)
        self._stop_all_but(int(deployment.handle["pid"]))  # the previous release
        return Deployment(deployment.release, self.stage, self._endpoint(), deployment.handle)

    def _serve_port(self, deployment: Deployment, timeout_s: float) -> None:
        """Tell the held candidate to serve the port (SIGUSR1); wait until its ready file says it does."""
        pid, ready_file = int(deployment.handle["pid"]), Path(deployment.handle["ready_file"])
        if not _is_our_server(pid, self.config.port):
            raise self._error(f"release {deployment.release.id} (pid {pid}) is gone before it could serve:\n"
                              f"{_tail(Path(deployment.handle['log']))}", "promote",
                              hint="production is unchanged; deploy again")  # fmt: skip
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not json.loads(ready_file.read_text()).get("serving"):
            if time.monotonic() > deadline or _exit_code(pid) is not None:
                raise self._error(
                    f"release {deployment.release.id} did not start serving port {self.config.port} within "
                    f"{timeout_s:g} s:\n{_tail(Path(deployment.handle['log']))}", "promote",
                    hint=f"production is unchanged; raise {self.stage.value}.promote_timeout_s on a busy machine",
                )  # fmt: skip
            time.sleep(0.02)

    def discard(self, deployment: Deployment) -> None:
        live = self._live()
        if live and live["pid"] == int(deployment.handle["pid"]):
            return  # it went live: not a candidate any more
        _stop(int(deployment.handle["pid"]), self.config.port)
        Path(deployment.handle["ready_file"]).unlink(missing_ok=True)

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        if not (release.package_dir / "package.json").exists():
            raise self._error(
                f"the package of release {release.id} is gone from {release.package_dir}",
                "rollback",
                hint="deploy that model version again instead (slipway deploy)",
                config=True,
            )
        return put_live(self, release, timeouts)

    def endpoint(self) -> Endpoint | None:
        return self._endpoint() if self._live() else None

    def teardown(self) -> None:
        self._stop_all_but(None)
        (self.dir / "live.json").unlink(missing_ok=True)
        for ready in self.dir.glob("*.ready"):
            ready.unlink(missing_ok=True)

    def describe(self) -> StageStatus:
        live = self._live()
        if not live:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        alive = _is_our_server(live["pid"], self.config.port)
        healthy = alive and answers(self._endpoint(), self._endpoint().routes.health)
        detail = f"pid {live['pid']}, version {live['version']}, since {live['since']}"
        if not alive:
            detail = f"process {live['pid']} is gone: redeploy or roll back"
        strays = [pid for pid in self._servers() if pid != live["pid"]]
        if strays:
            detail += f"; {len(strays)} other server(s) of this stage still run (pids {strays}): a run was killed"
        return StageStatus(self.stage, self.kind, live["release_id"], self._endpoint(), healthy, detail)

    def facts(self) -> Facts:
        monitoring = ("/metrics", "/health", "slipway status (process alive, answering)")
        return Facts(1, 1, "", False, None, False, monitoring, tls=False, public=False, at_rest=(), usage=None)

    def changes(self) -> list[Change]:
        new = f"server process of the new release on 127.0.0.1:{self.config.port}"
        out = [Change("create", new, "holds the port until promoted (--hold)"),
               Change("change", f"{self.dir}/live.json", "names the new release")]  # fmt: skip
        if live := self._live():
            out.append(Change("delete", f"server process {live['pid']} (release {live['release_id']})", "stopped"))
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _endpoint(self) -> Endpoint:
        return Endpoint(f"http://127.0.0.1:{self.config.port}", self.ctx.auth)

    def _live(self) -> dict[str, Any] | None:
        try:
            live: dict[str, Any] = json.loads((self.dir / "live.json").read_text())
        except FileNotFoundError:
            return None
        return live

    def _stop_all_but(self, keep: int | None) -> None:
        for pid in self._servers():
            if pid != keep:
                _stop(pid, self.config.port)

    def _servers(self) -> list[int]:
        """Pids of every server process this stage started (found by their ready-file argument)."""
        marker = str(self.dir) + os.sep
        found = []
        for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "serving" in cmdline and any(arg.startswith(marker) for arg in cmdline):
                found.append((proc.info["pid"], proc.info["ppid"]))
        pids = {pid for pid, _ in found}
        return sorted(pid for pid, ppid in found if ppid not in pids)  # group leaders, not their workers

    def _check_port_free_or_ours(self) -> None:
        port = self.config.port
        live = self._live()
        if live and _is_our_server(live["pid"], port):
            return
        with socket.socket() as probe:
            probe.settimeout(0.5)
            in_use = probe.connect_ex(("127.0.0.1", port)) == 0
        if in_use:
            raise self._error(
                f"port {port} on 127.0.0.1 is in use by another program{_owner(port)}",
                "deploy",
                hint=f"stop that program or give {self.stage.value}.port another value in the spec",
                config=True,
            )

    def _error(self, message: str, operation: str, *, hint: str, config: bool = False) -> Exception:
        at = At(self.kind, operation, self.stage.value)
        return ConfigError(message, at=at, hint=hint) if config else TargetError(message, at=at, hint=hint)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _exit_code(pid: int) -> int | None:
    """The exit code of a dead server (reaped if it is our child), None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: ask the process table
        return None if psutil.pid_exists(pid) else -1
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def _is_our_server(pid: int, port: int) -> bool:
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        return proc.status() != psutil.STATUS_ZOMBIE and "serving" in cmdline and str(port) in cmdline
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _stop(pid: int, port: int) -> None:
    """SIGTERM the server's process group (its workers too), then SIGKILL after a grace period.

    Only a process that is still our server on ``port`` is signalled: a pid from a state file may
    have been reused by an unrelated program since.
    """
    if not _is_our_server(pid, port):
        _exit_code(pid)  # reap it if it is our dead child
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_S
    while time.monotonic() < deadline:
        if _exit_code(pid) is not None or not psutil.pid_exists(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _owner(port: int) -> str:
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" (pid {conn.pid}: {' '.join(psutil.Process(conn.pid).cmdline())[:80]})"
    return ""


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text[-lines:])
