"""The Cloud Run emulator's data plane: each revision's image runs for real on the Docker Engine, and the
service's URL and each tag's URL are served by a router on 127.0.0.1 that checks IAM at the edge.

* **Instances.** A revision gets one container (Cloud Run's contract: ``PORT=8080`` injected with
  ``K_SERVICE``, ``K_REVISION``, ``K_CONFIGURATION``; the template's env, Secret Manager references
  resolved to their values, args and command; its CPU and memory limits), published on an ephemeral
  port of 127.0.0.1. It is ready when the startup probe's HTTP GET answers 200 within the probe's
  budget (period × failure threshold); a container that exits first, or a probe that never answers,
  fails the revision with Cloud Run's message. A revision keeps its instance while the traffic names
  it (a percent or a tag) and loses it a few seconds after it stops being named (scale to zero,
  approximated: no request-driven autoscaling, one instance per revision).
* **Logs.** Each container's output is kept, with timestamps, for the Logging API (``entries:list``),
  also after the container is gone.
* **Routers.** One per URL (the service's and each tag's), an ASGI app on uvicorn that forwards to
  the instance of a revision chosen by the traffic's percents (a tag: its revision). Unless the
  service's IAM policy lets ``allUsers`` invoke it, a request needs ``Authorization: Bearer`` with a
  Google ID token whose audience is one of the service's URLs and whose email may invoke (the
  service's or the project's policy): no token is 403, a bad one 401, no invoker role 403, as
  Cloud Run answers. The token's signature is replaced before it reaches the container, as Cloud Run does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import httpx
import uvicorn

from slipway.http import tls

LABEL = "slipway-test.cloudrun-emulator"  # value: the emulator's id
CONTAINER_PORT = 8080
IDLE_STOP_S = 3.0
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}


@dataclass
class Instance:
    revision: str
    container: str
    port: int = 0
    started: float = field(default_factory=time.time)


@dataclass
class Route:
    """What one URL serves: revisions by percent (a tag: one revision at 100)."""

    service: str  # full name
    weights: list[tuple[str, int]]  # (revision short name, percent)


EdgeCheck = Callable[[str, str, str], tuple[int, str]]  # (service, url, authorization) → (status or 0, why)
# why is "id_token" when a verified ID token let the request in


class DataPlane:
    def __init__(self, emulator_id: str, resolve_secret: Callable[[str, str, str], bytes | None]) -> None:
        self.id = emulator_id
        self.docker = docker.from_env()
        self.resolve_secret = resolve_secret  # (project, secret, version) → value
        self.instances: dict[str, Instance] = {}  # revision full name → instance
        self.logs: dict[str, list[tuple[str, str]]] = {}  # revision full name → (timestamp, line)
        self.routers: dict[str, Router] = {}  # url → router
        self.lock = threading.RLock()
        self._idle: dict[str, float] = {}  # revision → when it stopped being named by traffic

    # --- instances ----------------------------------------------------------------------------

    def start(self, revision: Any, service_id: str, project: str) -> tuple[bool, str]:
        """Run the revision's container and probe it; (True, '') when ready, else (False, Cloud Run's reason)."""
        name = revision.name
        short = name.rpartition("/")[2]
        with self.lock:
            if name in self.instances and self._running(self.instances[name]):
                self._idle.pop(name, None)
                return True, ""
        c = revision.containers[0]
        env = {"PORT": str(CONTAINER_PORT), "K_SERVICE": service_id, "K_REVISION": short, "K_CONFIGURATION": service_id}
        for var in c.env:
            if var.value_source and var.value_source.secret_key_ref.secret:
                ref = var.value_source.secret_key_ref
                value = self.resolve_secret(project, ref.secret, ref.version or "latest")
                if value is None:
                    return False, (
                        f"spec.template.spec.containers[0].env.valueFrom.secretKeyRef.name: Secret "
                        f"projects/{project}/secrets/{ref.secret}/versions/{ref.version or 'latest'} "
                        f"was not found"
                    )
                env[var.name] = value.decode()
            else:
                env[var.name] = var.value
        limits = dict(c.resources.limits)
        cpus = _cpus(limits.get("cpu", "1"))
        container_name = f"crun-{self.id}-{short}"[:120]
        with contextlib.suppress(docker.errors.NotFound):
            self._keep_logs(name, self.docker.containers.get(container_name))
            self.docker.containers.get(container_name).remove(force=True)
        try:
            container = self.docker.containers.run(
                c.image,
                command=list(c.args) or None,
                entrypoint=list(c.command) or None,
                detach=True,
                name=container_name,
                environment=env,
                ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", None)},
                mem_limit=_memory(limits.get("memory", "512Mi")),
                nano_cpus=int(cpus * 1e9),
                labels={LABEL: self.id, f"{LABEL}.revision": name},
            )
        except docker.errors.ImageNotFound:
            return False, f"Image '{c.image}' not found."
        except docker.errors.APIError as exc:
            return False, f"the container could not be started: {exc.explanation or exc}"
        instance = Instance(name, container_name, 0)  # its port once Docker publishes it (never, if it exits first)
        with self.lock:
            self.instances[name] = instance
        probe = c.startup_probe
        http_probe = "http_get" in probe  # else Cloud Run's default: a TCP probe of the port, 240 s
        path = probe.http_get.path or "/"
        period = max(1, probe.period_seconds or 240)
        budget = period * max(1, probe.failure_threshold or 1) + (probe.initial_delay_seconds or 0)
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            container.reload()
            published = (container.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []
            if published and not instance.port:
                instance.port = int(published[0]["HostPort"])
            if container.status in ("exited", "dead"):
                self._keep_logs(name, container)
                code = container.attrs["State"].get("ExitCode")
                self.stop(name, graceful=False)
                return False, (
                    f"The user-provided container failed to start and listen on the port defined provided "
                    f"by the PORT={CONTAINER_PORT} environment variable within the allocated timeout "
                    f"(it exited with code {code}). Logs for this revision might contain more "
                    "information."
                )
            if not instance.port:
                pass
            elif http_probe:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{instance.port}{path}", timeout=1, verify=tls()).status_code == 200:
                        return True, ""
            elif _accepts(instance.port):
                return True, ""
            time.sleep(min(0.2, period))
        self._keep_logs(name, container)
        self.stop(name, graceful=False)  # it never served: no drain
        return False, (
            f"The user-provided container failed the configured startup probe checks: HTTP startup probe "
            f"on port {CONTAINER_PORT} path {path} failed for {budget:g} s. Logs for this revision might "
            "contain more information."
        )

    def address(self, revision: str) -> int | None:
        instance = self.instances.get(revision)
        return instance.port if instance and instance.port else None

    def stop(self, revision: str, *, graceful: bool = True) -> None:
        with self.lock:
            instance = self.instances.pop(revision, None)
            self._idle.pop(revision, None)
        if instance is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            container = self.docker.containers.get(instance.container)
            if graceful:
                container.stop(timeout=10)  # SIGTERM, then 10 s, as Cloud Run
            self._keep_logs(revision, container)
            container.remove(force=True)

    def named(self, service: str, revisions: set[str]) -> None:
        """The revisions of ``service`` its traffic names now; its others lose their instance after ``IDLE_STOP_S``."""
        now = time.monotonic()
        with self.lock:
            for name in [n for n in self.instances if n.startswith(service + "/revisions/")]:
                if name in revisions:
                    self._idle.pop(name, None)
                else:
                    self._idle.setdefault(name, now)

    def reap(self) -> None:
        with self.lock:
            due = [r for r, since in self._idle.items() if time.monotonic() - since >= IDLE_STOP_S]
        for revision in due:
            self.stop(revision)

    def _running(self, instance: Instance) -> bool:
        try:
            return str(self.docker.containers.get(instance.container).status) == "running"
        except docker.errors.NotFound:
            return False

    def _keep_logs(self, revision: str, container: Any) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            raw = container.logs(timestamps=True).decode(errors="replace").splitlines()
            lines = [(line.partition(" ")[0], line.partition(" ")[2]) for line in raw]
            with self.lock:
                known = self.logs.setdefault(revision, [])
                known.extend(entry for entry in lines if entry not in known)

    def log_entries(self, revision: str) -> list[tuple[str, str]]:
        with self.lock:
            instance = self.instances.get(revision)
        if instance is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._keep_logs(revision, self.docker.containers.get(instance.container))
        with self.lock:
            return list(self.logs.get(revision, []))

    # --- routers ------------------------------------------------------------------------------

    def router(self, key: str, check: EdgeCheck) -> Router:
        with self.lock:
            if key not in self.routers:
                self.routers[key] = Router(self, check).start()
            return self.routers[key]

    def close_router(self, key: str, *, wait: bool = False) -> None:
        """Stop serving a URL: at once for new connections, in-flight requests get 2 s (in the background
        unless ``wait``)."""
        with self.lock:
            router = self.routers.pop(key, None)
        if router is not None:
            if wait:
                router.stop()
            else:
                threading.Thread(target=router.stop, daemon=True).start()

    def close(self) -> None:
        for key in list(self.routers):
            self.close_router(key, wait=True)
        for revision in list(self.instances):
            self.stop(revision)
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"}):
            container.remove(force=True)

    def containers(self) -> list[str]:
        return [str(c.name) for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"})]


class Router:
    """One URL of a service: an ASGI reverse proxy on its own port of 127.0.0.1."""

    def __init__(self, plane: DataPlane, check: EdgeCheck) -> None:
        self.plane, self.check = plane, check
        self.route: Route | None = None
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._client: httpx.AsyncClient | None = None

    def start(self) -> Router:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=5,
            interface="asgi3",
            timeout_graceful_shutdown=2,  # clients that keep connections open do not hold a closing URL
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "a router of the Cloud Run emulator did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    async def _reply(self, send: Any, status: int, body: bytes, ctype: bytes = b"text/html; charset=UTF-8") -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        route = self.route
        if route is None or not route.weights:
            await self._reply(send, 404, b"<h1>Error: Page not found</h1>")
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        authorization = headers.get(b"authorization", b"").decode()
        status, why = self.check(route.service, self.url, authorization)
        if status:
            text = {401: "Unauthorized", 403: "Forbidden"}.get(status, "Error")
            await self._reply(send, status, f"<h1>Error: {text}</h1><p>{why}</p>".encode())
            return
        revisions = [r for r, w in route.weights if w > 0]
        revision = random.choices(revisions, weights=[w for _, w in route.weights if w > 0])[0] if revisions else ""
        port = self.plane.address(f"{route.service}/revisions/{revision}")
        if port is None:
            await self._reply(send, 503, b"<h1>Error: Service Unavailable</h1>")
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        out = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        if why == "id_token":  # Cloud Run passes the verified token on without its signature
            out = [
                (k, v.rpartition(b".")[0] + b".SIGNATURE_REMOVED_BY_GOOGLE" if k.lower() == b"authorization" else v)
                for k, v in out
            ]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_keepalive_connections=32))
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = f"http://127.0.0.1:{port}{path.decode()}" + (f"?{query.decode()}" if query else "")
        for attempt in range(2):  # a pooled connection to an instance that just went away: once more, fresh
            try:
                resp = await self._client.request(scope["method"], url, headers=out, content=body)
                break
            except httpx.TransportError:
                if attempt:
                    await self._reply(send, 503, b"<h1>Error: Service Unavailable</h1>")
                    return
                await asyncio.sleep(0.05)
        resp_headers = [(k.encode(), v.encode()) for k, v in resp.headers.items() if k.encode() not in _HOP]
        resp_headers.append((b"content-length", b"%d" % len(resp.content)))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": resp_headers})
        await send({"type": "http.response.body", "body": resp.content})


def _accepts(port: int) -> bool:
    """A TCP probe: the container's port accepts a connection (through Docker's proxy: it must also answer)."""
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1, verify=tls())
    except httpx.HTTPError:
        return False
    return True


def _cpus(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _memory(value: str) -> str:
    number, unit = value[:-2], value[-2:]
    return f"{number}{'m' if unit == 'Mi' else 'g'}"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
