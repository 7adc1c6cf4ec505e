"""``kind: docker`` — the VM pattern: the image runs on any Docker Engine the SDK reaches.

The engine is the local one or a remote one (``host: ssh://user@host``). Every container gets the
API key as an environment variable (never baked into the image), resource limits, a restart
policy and rotated json-file logs, and carries labels naming model, stage and release, so
``teardown`` finds everything by label.

* **staging** — one container publishing the server on ``bind_address:port``; a new release
  replaces it.
* **production** — blue/green behind a stable endpoint: an nginx container (``targets._proxy``)
  publishes ``bind_address:port`` and forwards to the live container over a per-stage network.
  A candidate runs next to the live one on an ephemeral port; only once it answers ``/ready`` is
  the proxy's upstream switched, with a graceful reload, so no request fails. The previous
  container is kept ``keep_previous_s`` seconds, so a rollback is a switch back.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container
from docker.types import LogConfig

from slipway.errors import ConfigError, SlipwayError, TargetError
from slipway.spec import DockerTarget as DockerConfig
from targets import _proxy
from targets._engine import connect, map_error, port_answers, ssh_hostname
from targets._registry import resolve_credentials
from targets.base import Capabilities, Deployment, Endpoint, Release, Stage, StageStatus, TargetContext, put_live

_SERVER_PORT = 8000
_SWITCH_TIMEOUT_S = 30.0  # for the proxy to answer only from the new configuration after a reload
_EXIT_REASONS = {2: "no API key or bad configuration", 3: "the package failed its start-up check", 4: "bind failed"}


class DockerHostTarget:
    kind = "docker"

    def __init__(self, config: DockerConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.capabilities = Capabilities(needs_image=True, zero_downtime_promotion=ctx.stage is Stage.PRODUCTION)
        self.prefix = f"slipway-{ctx.model}-{ctx.stage.value}"
        self.labels = {"io.slipway.model": ctx.model, "io.slipway.stage": ctx.stage.value}
        self.host_name = config.public_host or ssh_hostname(config.host) or "127.0.0.1"
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.config.host, target=self.kind, operation="connect")
        return self._client

    # --- lifecycle -------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        if release.image is None:
            raise ConfigError(
                f"release {release.id} has no image; the docker target runs images",
                hint="release through the flow (it builds and pushes the image) or deploy a release that has one",
            )
        production = self.stage is Stage.PRODUCTION
        with self._op("deploy", release.id):
            if production:
                self._check_port(self._proxy() is not None)
                self._network()
            else:
                for old in self._containers(role="release"):
                    old.remove(force=True)  # staging is replaced, not switched
                self._check_port(False)
            self._ensure_image(release)
            name = _container_name(self.prefix, release.id)
            container = self._run(release, name, None if production else self.config.port)
            container.reload()
            port = _host_port(container)
        url = f"http://{self.host_name}:{port}"
        handle = {"container": name, "container_id": str(container.id), "port": str(port), "image": str(release.image)}
        return Deployment(release, self.stage, Endpoint(url, self.ctx.requires_auth), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        name, rid = deployment.handle["container"], deployment.release.id
        deadline = time.monotonic() + timeout_s
        while True:
            with self._op("wait_ready", name):
                container = self.client.containers.get(name)
                state = container.attrs["State"]
                if state["Status"] in ("exited", "dead", "restarting") or container.attrs.get("RestartCount", 0):
                    code = int(state.get("ExitCode", -1))
                    reason = _EXIT_REASONS.get(code, f"exit code {code}")
                    raise TargetError(
                        f"release {rid} exited at start ({reason}):\n{_tail(container)}", target=self.kind,
                        operation="wait_ready", resource=name,
                        hint="read the container's output above; fix and deploy again",
                    )  # fmt: skip
            if _answers(deployment.endpoint.url + "/ready"):
                return deployment
            if time.monotonic() > deadline:
                with self._op("wait_ready", name):
                    tail = _tail(self.client.containers.get(name))
                raise TargetError(
                    f"release {rid} was not ready after {timeout_s:.0f} s:\n{tail}", target=self.kind,
                    operation="wait_ready", resource=name,
                    hint=f"raise {self.stage.value}.ready_timeout_s in the spec if the model loads slowly",
                )  # fmt: skip
            time.sleep(0.1)

    def promote(self, deployment: Deployment) -> Deployment:
        if self.stage is Stage.PRODUCTION:
            with self._op("promote", deployment.handle["container"]):
                self._switch(deployment.handle["container"], deployment.release.id)
        return Deployment(deployment.release, self.stage, self._stable(), deployment.handle)

    def discard(self, deployment: Deployment) -> None:
        with self._op("discard", deployment.handle["container"]), contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(deployment.handle["container"]).remove(force=True)

    def rollback(self, release: Release, timeout_s: float) -> Deployment:
        if self.stage is Stage.PRODUCTION:
            with self._op("rollback", release.id):
                proxy = self._proxy()
                kept = [p for p in (_proxy.read_state(proxy).get("previous", []) if proxy else [])
                        if p["release_id"] == release.id]  # fmt: skip
                for entry in kept:
                    with contextlib.suppress(docker.errors.NotFound):
                        container = self.client.containers.get(entry["container"])
                        port = _host_port(container)
                        if container.status == "running" and _answers(f"http://{self.host_name}:{port}/ready"):
                            self._switch(entry["container"], release.id)
                            handle = {"container": entry["container"], "port": str(port)}
                            return Deployment(release, self.stage, self._stable(), handle)
        return put_live(self, release, timeout_s)

    def endpoint(self) -> Endpoint | None:
        return self._stable() if self._live() else None

    def teardown(self) -> None:
        with self._op("teardown", self.prefix):
            for container in self.client.containers.list(all=True, filters={"label": _filters(self.labels)}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True)
            for net in self.client.networks.list(names=[self.prefix]):
                with contextlib.suppress(docker.errors.NotFound):
                    net.remove()

    def describe(self) -> StageStatus:
        live = self._live()
        if live is None:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        healthy = _answers(self._stable().url + "/health")
        detail = f"container {live['container']} on {self.config.host or 'local engine'}, since {live['since']}"
        return StageStatus(self.stage, self.kind, live["release_id"], self._stable(), healthy, detail)

    # --- helpers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _op(self, operation: str, resource: str) -> Iterator[None]:
        try:
            yield
        except SlipwayError:
            raise
        except (docker.errors.DockerException, httpx.HTTPError, OSError) as exc:
            raise map_error(exc, target=self.kind, operation=operation, resource=resource) from exc
        except Exception as exc:  # requests / paramiko transport errors
            raise map_error(exc, target=self.kind, operation=operation, resource=resource) from exc

    def _stable(self) -> Endpoint:
        return Endpoint(f"http://{self.host_name}:{self.config.port}", self.ctx.requires_auth)

    def _containers(self, **labels: str) -> list[Container]:
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": _filters({**self.labels, **{f"io.slipway.{k}": v for k, v in labels.items()}})}
        )
        return found

    def _proxy(self) -> Container | None:
        found = self._containers(role="proxy")
        return found[0] if found else None

    def _live(self) -> dict[str, Any] | None:
        with self._op("describe", self.prefix):
            if self.stage is Stage.PRODUCTION:
                proxy = self._proxy()
                live = _proxy.read_state(proxy).get("live") if proxy and proxy.status == "running" else None
                return dict(live) if live else None
            running = [c for c in self._containers(role="release") if c.status == "running"]
        if not running:
            return None
        c = running[0]
        return {"container": c.name, "release_id": c.labels.get("io.slipway.release"), "since": c.attrs["Created"]}

    def _check_port(self, ours: bool) -> None:
        if not ours and port_answers(self.host_name, self.config.port):
            raise ConfigError(
                f"port {self.config.port} on {self.host_name} is taken by something that is not this stage",
                hint=f"stop that program or give {self.stage.value}.port another value in the spec",
            )

    def _network(self) -> None:
        if not self.client.networks.list(names=[self.prefix]):
            self.client.networks.create(self.prefix, driver="bridge", labels=self.labels)

    def _ensure_image(self, release: Release) -> None:
        ref = str(release.image)
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            assert release.image is not None
            creds = resolve_credentials(self.config.registry_credentials)
            self.client.images.pull(release.image.repository, tag=release.image.digest,
                                    auth_config=creds.auth_config() if creds else None)  # fmt: skip

    def _run(self, release: Release, name: str, host_port: int | None) -> Container:
        key = self.ctx.key_for_deploy()
        command = ["--workers", str(self.config.workers)] + ([] if key else ["--no-auth"])
        policy: dict[str, Any] = {"Name": self.config.restart_policy}
        if self.config.restart_policy == "on-failure":
            policy["MaximumRetryCount"] = 3
        try:
            settings: dict[str, Any] = dict(
                command=command, name=name,
                environment={"SLIPWAY_API_KEY": key.get_secret_value()} if key else {},
                ports={f"{_SERVER_PORT}/tcp": (self.config.bind_address, host_port)},
                network=self.prefix if self.stage is Stage.PRODUCTION else None,
                labels={**self.labels, "io.slipway.role": "release", "io.slipway.release": release.id},
                mem_limit=self.config.memory, nano_cpus=int(self.config.cpus * 1e9), pids_limit=512,
                restart_policy=policy, security_opt=["no-new-privileges"], cap_drop=["ALL"],
                read_only=True, tmpfs={"/tmp": "size=64m"},
                log_config=LogConfig(type="json-file", config={
                    "max-size": self.config.log_max_size, "max-file": str(self.config.log_max_files)}),
            )  # fmt: skip
            container = self.client.containers.run(str(release.image), detach=True, **settings)
        except docker.errors.APIError:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.containers.get(name).remove(force=True)  # created but not started: nothing half-done
            raise
        return container

    def _switch(self, container: str, release_id: str) -> None:
        """Point the proxy at ``container`` (creating the proxy on first use) and retire the previous."""
        proxy = self._proxy()
        state: dict[str, Any] = _proxy.read_state(proxy) if proxy else {}
        now = time.time()
        previous = [p for p in state.get("previous", []) if p["container"] != container]
        if state.get("live") and state["live"]["container"] != container:
            previous.insert(0, {**state["live"], "retired_at": now})
        new_state = {"live": {"container": container, "release_id": release_id, "since": _iso(now)},
                     "previous": previous}  # fmt: skip
        conf = _proxy.render(self.ctx.model, container, _SERVER_PORT, release_id)
        if proxy is None:
            proxy = self._start_proxy(conf, new_state)
        else:
            _proxy.write_files(proxy, conf, new_state)
            problem = _proxy.reload(proxy)
            if problem:
                _proxy.write_files(proxy, _proxy.render(self.ctx.model, state["live"]["container"], _SERVER_PORT,
                                                        state["live"]["release_id"]), state)  # fmt: skip
                raise TargetError(f"the proxy refused the new configuration: {problem}", target=self.kind,
                                  operation="promote", resource=proxy.name or "",
                                  hint="production is unchanged")  # fmt: skip
        if not _proxy.wait_serving(self._stable().url, release_id, _SWITCH_TIMEOUT_S):
            raise TargetError(f"the proxy did not switch to release {release_id} within {_SWITCH_TIMEOUT_S:g} s:"
                              f"\n{_tail(proxy)}",
                              target=self.kind, operation="promote", resource=proxy.name or "")  # fmt: skip
        if self._retire(new_state, now):
            _proxy.write_files(proxy, conf, new_state)

    def _start_proxy(self, conf: str, state: dict[str, Any]) -> Container:
        self._ensure_proxy_image()
        proxy: Container = self.client.containers.create(
            self.config.proxy_image, command=_proxy.COMMAND, name=f"{self.prefix}-proxy", network=self.prefix,
            ports={f"{_proxy.PROXY_PORT}/tcp": (self.config.bind_address, self.config.port)},
            labels={**self.labels, "io.slipway.role": "proxy"}, mem_limit="128m",
            restart_policy={"Name": "unless-stopped"},  # type: ignore[arg-type]
            log_config=LogConfig(type="json-file", config={"max-size": self.config.log_max_size, "max-file": "2"}),
        )  # fmt: skip
        _proxy.write_files(proxy, conf, state)
        try:
            proxy.start()
        except docker.errors.APIError:
            proxy.remove(force=True)
            raise
        return proxy

    def _ensure_proxy_image(self) -> None:
        try:
            self.client.images.get(self.config.proxy_image)
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"the proxy image {self.config.proxy_image!r} is not on the Docker Engine",
                hint="build it with scripts/images/nginx.sh, or set production.proxy_image to an nginx image",
            ) from None

    def _retire(self, state: dict[str, Any], now: float) -> bool:
        """Remove previous containers older than the rollback window (after a drain for the reload)."""
        before = len(state["previous"])
        for entry in list(state["previous"]):
            if now - entry["retired_at"] >= self.config.keep_previous_s:
                if self.config.keep_previous_s == 0:
                    time.sleep(1.0)  # the old nginx workers finish their in-flight requests
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.containers.get(entry["container"]).remove(force=True)
                state["previous"].remove(entry)
        live = state["live"]["container"]
        keep = {live} | {p["container"] for p in state["previous"]}
        for c in self._containers(role="release"):
            if c.name not in keep and c.status != "running":
                c.remove(force=True)
        return len(state["previous"]) != before


def _container_name(prefix: str, release_id: str) -> str:
    """A unique container name that is also a DNS label (at most 63 characters): the proxy reaches the
    production container by name through the engine's DNS, which refuses longer names."""
    suffix = f"-{release_id}-{secrets.token_hex(2)}"
    return prefix[: 63 - len(suffix)].rstrip("-") + suffix


def _host_port(container: Container) -> int:
    published: Any = container.ports[f"{_SERVER_PORT}/tcp"]
    return int(published[0]["HostPort"])


def _filters(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0, headers={"Connection": "close"}).status_code == 200
    except httpx.HTTPError:
        return False


def _tail(container: Container, lines: int = 12) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip().splitlines()
    except docker.errors.DockerException:
        return "  (no logs)"
    return "\n".join(f"  | {line}" for line in text) or "  (no output)"
