"""``kind: docker`` — the VM pattern: the image runs on any Docker Engine the SDK reaches.

The engine is the local one or a remote one (``host: ssh://user@host``). Every container gets the
API key as an environment variable (never baked into the image), resource limits, a restart
policy and rotated json-file logs, and carries labels naming service, model, stage and release, so
``teardown`` finds everything by label.

Each stage is blue/green behind a stable endpoint: an nginx container (``targets._proxy``)
publishes ``bind_address:port`` and forwards to the live container over the stage's own network.
A candidate runs next to the live one on an ephemeral port. ``shift`` gives it a share of the
requests through nginx upstream weights; ``promote`` — only once it answers its readiness route —
switches the upstream to it alone, with a graceful reload, so no request fails. The previous
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

from serving.contract import PORT, exit_reason
from slipway.costs import Usage
from slipway.errors import At, ConfigError, SlipwayError, TargetError
from slipway.http import answers
from slipway.release import Endpoint, Release
from slipway.spec import DockerTarget as DockerConfig
from slipway.spec import Timeouts
from targets import _proxy
from targets.base import IMAGE, Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, put_live
from targets.containers import connect, map_error, port_answers, resolve_credentials, ssh_hostname

_SETTLE_S = 30.0  # at least this long for the proxy to answer only from a new configuration


class DockerHostTarget:
    kind = "docker"
    capabilities = Capabilities(artifacts=IMAGE, traffic_split=True)

    def __init__(self, config: DockerConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.prefix = f"slipway-{ctx.service}-{ctx.stage.value}"
        self.labels = {"io.slipway.service": ctx.service, "io.slipway.stage": ctx.stage.value}
        self.host_name = config.public_host or ssh_hostname(config.host) or "127.0.0.1"
        self.location = f"docker {config.host or 'local engine'} port {config.port}"
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.config.host, at=At(self.kind, "connect", self.config.host or "local engine"))
        return self._client

    # --- lifecycle -------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        image = release.require_image()
        with self._op("deploy", release.id):
            self._check_port(self._proxy() is not None)
            self._network()
            self._ensure_image(release)
            name = _container_name(self.prefix, release.id)
            container = self._run(release, name)
            container.reload()
            port = _host_port(container)
        url = f"http://{self.host_name}:{port}"
        handle = {"container": name, "container_id": str(container.id), "port": str(port), "image": str(image)}
        return Deployment(release, self.stage, Endpoint(url, self.ctx.auth), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        name, rid = deployment.handle["container"], deployment.release.id
        deadline = time.monotonic() + timeout_s
        while True:
            with self._op("wait_ready", name):
                container = self.client.containers.get(name)
                state = container.attrs["State"]
                if state["Status"] in ("exited", "dead", "restarting") or container.attrs.get("RestartCount", 0):
                    raise TargetError(
                        f"release {rid} exited at start ({exit_reason(int(state.get('ExitCode', -1)))}):"
                        f"\n{_tail(container)}",
                        at=At(self.kind, "wait_ready", name),
                        hint="read the container's output above; fix and deploy again",
                    )  # fmt: skip
            if answers(deployment.endpoint, deployment.endpoint.routes.ready):
                return deployment
            if time.monotonic() > deadline:
                with self._op("wait_ready", name):
                    tail = _tail(self.client.containers.get(name))
                raise TargetError(
                    f"release {rid} was not ready after {timeout_s:.0f} s:\n{tail}",
                    at=At(self.kind, "wait_ready", name),
                    hint=f"raise {self.stage.value}.ready_timeout_s in the spec if the model loads slowly",
                )  # fmt: skip
            time.sleep(0.1)

    def shift(self, deployment: Deployment, weight: float) -> None:
        """Route ``weight`` of the requests to the candidate through the proxy's upstream weights
        (in hundredths: a non-zero weight is at least 1 %); 0 routes everything to the live one."""
        if not 0 <= weight <= 1:
            raise ConfigError(
                f"a traffic weight is between 0 and 1, not {weight}", at=At(self.kind, "shift", self.prefix)
            )
        name = deployment.handle["container"]
        with self._op("shift", name):
            proxy = self._proxy()
            state: dict[str, Any] = _proxy.read_state(proxy) if proxy else {}
            if proxy is None or not state.get("live"):
                raise ConfigError(
                    f"nothing is live on {self.stage.value} to split traffic with",
                    at=At(self.kind, "shift", self.prefix),
                    hint="promote the first release all at once",
                )
            share = 0 if weight == 0 else min(_proxy.WEIGHTS, max(1, round(weight * _proxy.WEIGHTS)))
            canary = {"container": name, "release_id": deployment.release.id, "weight": share}
            new_state = {k: v for k, v in state.items() if k != "canary"} | ({"canary": canary} if share else {})
            self._apply(proxy, new_state, "shift", f"{share}% of the requests to release {deployment.release.id}")

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        with self._op("promote", deployment.handle["container"]):
            self._switch(deployment.handle["container"], deployment.release.id, timeout_s)
        return Deployment(deployment.release, self.stage, self._stable(), deployment.handle)

    def discard(self, deployment: Deployment) -> None:
        name = deployment.handle["container"]
        with self._op("discard", name):
            proxy = self._proxy()
            state: dict[str, Any] = _proxy.read_state(proxy) if proxy else {}
            if (state.get("live") or {}).get("container") == name:
                return  # it went live: not a candidate any more
            if proxy is not None and (state.get("canary") or {}).get("container") == name:
                back = {k: v for k, v in state.items() if k != "canary"}
                self._apply(proxy, back, "discard", "all requests back to the live release")
            with contextlib.suppress(docker.errors.NotFound):
                self.client.containers.get(name).remove(force=True)

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        with self._op("rollback", release.id):
            proxy = self._proxy()
            kept = [p for p in (_proxy.read_state(proxy).get("previous", []) if proxy else [])
                    if p["release_id"] == release.id]  # fmt: skip
            for entry in kept:
                with contextlib.suppress(docker.errors.NotFound):
                    container = self.client.containers.get(entry["container"])
                    port = _host_port(container)
                    candidate = Endpoint(f"http://{self.host_name}:{port}", self.ctx.auth)
                    if container.status == "running" and answers(candidate, candidate.routes.ready):
                        self._switch(entry["container"], release.id, timeouts.promote_s)
                        handle = {"container": entry["container"], "port": str(port)}
                        return Deployment(release, self.stage, self._stable(), handle)
        return put_live(self, release, timeouts)

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
        stable = self._stable()
        detail = f"container {live['container']} on {self.config.host or 'local engine'}, since {live['since']}"
        if live.get("canary"):
            detail += f"; {live['canary']['weight']}% of requests to release {live['canary']['release_id']}"
        return StageStatus(
            self.stage, self.kind, live["release_id"], stable, answers(stable, stable.routes.health), detail
        )

    def facts(self) -> Facts:
        public = self.config.bind_address not in ("127.0.0.1", "localhost", "::1")
        monitoring = ("/metrics", "the image's HEALTHCHECK", f"restart policy {self.config.restart_policy}")
        usage = Usage(hourly={"docker.host_hour": 1.0})  # the Docker host: its price is the user's to give
        return Facts(1, 1, "", False, None, False, monitoring, tls=False, public=public, at_rest=(), usage=usage)

    def changes(self) -> list[Change]:
        live = self._live()
        out = [Change("create", f"container {self.prefix}-<release>", f"the image by digest, {self.config.memory}, "
                      f"{self.config.cpus:g} CPU, on network {self.prefix}")]  # fmt: skip
        if live is None:
            out += [Change("create", f"network {self.prefix}"),
                    Change("create", f"proxy container {self.prefix}-proxy", f"nginx on {self.config.bind_address}:"
                           f"{self.config.port}")]  # fmt: skip
        else:
            out += [Change("change", f"proxy container {self.prefix}-proxy", "upstream to the new container"),
                    Change("delete", f"container {live['container']} (release {live['release_id']})",
                           f"after {self.config.keep_previous_s:g} s kept for rollback")]  # fmt: skip
        return out

    # --- helpers ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _op(self, operation: str, resource: str) -> Iterator[None]:
        try:
            yield
        except SlipwayError:
            raise
        except (docker.errors.DockerException, httpx.HTTPError, OSError) as exc:
            raise map_error(exc, at=At(self.kind, operation, resource)) from exc
        except Exception as exc:  # requests / paramiko transport errors
            raise map_error(exc, at=At(self.kind, operation, resource)) from exc

    def _stable(self) -> Endpoint:
        return Endpoint(f"http://{self.host_name}:{self.config.port}", self.ctx.auth)

    def _containers(self, **labels: str) -> list[Container]:
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": _filters({**self.labels, **{f"io.slipway.{k}": v for k, v in labels.items()}})}
        )
        return found

    def _proxy(self) -> Container | None:
        found = self._containers(role="proxy")
        return found[0] if found else None

    def _live(self) -> dict[str, Any] | None:
        """The live container, release and since (and the canary, during a split), from the proxy."""
        with self._op("describe", self.prefix):
            proxy = self._proxy()
            state = _proxy.read_state(proxy) if proxy and proxy.status == "running" else {}
        return {**state["live"], "canary": state.get("canary")} if state.get("live") else None

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
        image = release.require_image()
        try:
            self.client.images.get(str(image))
        except docker.errors.ImageNotFound:
            creds = resolve_credentials(self.config.registry_credentials)
            self.client.images.pull(image.repository, tag=image.digest,
                                    auth_config=creds.auth_config() if creds else None)  # fmt: skip

    def _run(self, release: Release, name: str) -> Container:
        key = self.ctx.key_for_deploy()
        command = ["--workers", str(self.config.workers), *self.ctx.server_args] + ([] if key else ["--no-auth"])
        policy: dict[str, Any] = {"Name": self.config.restart_policy}
        if self.config.restart_policy == "on-failure":
            policy["MaximumRetryCount"] = 3
        try:
            settings: dict[str, Any] = dict(
                command=command, name=name,
                environment={"SLIPWAY_API_KEY": key.get_secret_value()} if key else {},
                ports={f"{PORT}/tcp": (self.config.bind_address, None)}, network=self.prefix,
                labels={**self.labels, "io.slipway.model": self.ctx.model, "io.slipway.role": "release",
                        "io.slipway.release": release.id},
                mem_limit=self.config.memory, nano_cpus=int(self.config.cpus * 1e9), pids_limit=512,
                restart_policy=policy, security_opt=["no-new-privileges"], cap_drop=["ALL"],
                read_only=True, tmpfs={"/tmp": "size=64m"},
                log_config=LogConfig(type="json-file", config={
                    "max-size": self.config.log_max_size, "max-file": str(self.config.log_max_files)}),
            )  # fmt: skip
            container = self.client.containers.run(str(release.require_image()), detach=True, **settings)
        except docker.errors.APIError:
            with contextlib.suppress(docker.errors.DockerException):
                self.client.containers.get(name).remove(force=True)  # created but not started: nothing half-done
            raise
        return container

    def _switch(self, container: str, release_id: str, timeout_s: float) -> None:
        """Route the stage to ``container`` alone (creating the proxy on first use) and retire the previous."""
        proxy = self._proxy()
        state: dict[str, Any] = _proxy.read_state(proxy) if proxy else {}
        now = time.time()
        previous = [p for p in state.get("previous", []) if p["container"] != container]
        if state.get("live") and state["live"]["container"] != container:
            previous.insert(0, {**state["live"], "retired_at": now})
        new_state = {"live": {"container": container, "release_id": release_id, "since": _iso(now)},
                     "previous": previous}  # fmt: skip
        proxy, conf = self._apply(proxy, new_state, "promote", f"release {release_id}", timeout_s)
        if self._retire(new_state, now):
            _proxy.write_files(proxy, conf, new_state)

    def _apply(
        self, proxy: Container | None, state: dict[str, Any], operation: str, what: str, timeout_s: float = _SETTLE_S
    ) -> tuple[Container, str]:
        """Write ``state``'s routing into the proxy (starting it on first use), reload, and wait until fresh
        connections get it; a configuration nginx refuses is put back as it was and nothing changes.
        Returns the proxy and the configuration written."""
        token = secrets.token_hex(6)
        conf = _proxy.render(self.ctx.service, self.stage.value, _proxy.upstreams(state), PORT, token)
        if proxy is None:
            proxy = self._start_proxy(conf, state)
        else:
            before = (_proxy.read_file(proxy, "nginx.conf"), _proxy.read_state(proxy))
            _proxy.write_files(proxy, conf, state)
            problem = _proxy.reload(proxy)
            if problem:
                _proxy.write_files(proxy, *before)
                raise TargetError(f"the proxy refused the new configuration: {problem}",
                                  at=At(self.kind, operation, proxy.name or ""),
                                  hint=f"{self.stage.value} is unchanged")  # fmt: skip
        self.ctx.progress(f"{self.stage.value} proxy: {what}")
        if not _proxy.wait_serving(self._stable().url, token, max(timeout_s, _SETTLE_S)):
            raise TargetError(f"the proxy did not take the new configuration ({what}) within "
                              f"{max(timeout_s, _SETTLE_S):g} s:\n{_tail(proxy)}",
                              at=At(self.kind, operation, proxy.name or ""))  # fmt: skip
        return proxy, conf

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
                hint=f"build it with scripts/images/nginx.sh, or set {self.stage.value}.proxy_image to an nginx image",
            ) from None

    def _retire(self, state: dict[str, Any], now: float) -> bool:
        """Remove previous containers older than the rollback window (after a drain for the reload), and
        every other release container: runs of a stage are serialized, so one that is neither live nor
        kept is what a killed run left (its candidate, never routed to once this switch is applied)."""
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
            if c.name not in keep:
                with contextlib.suppress(docker.errors.NotFound):
                    c.remove(force=True)
        return len(state["previous"]) != before


def _container_name(prefix: str, release_id: str) -> str:
    """A unique container name that is also a DNS label (at most 63 characters): the proxy reaches the
    production container by name through the engine's DNS, which refuses longer names."""
    suffix = f"-{release_id}-{secrets.token_hex(2)}"
    return prefix[: 63 - len(suffix)].rstrip("-") + suffix


def _host_port(container: Container) -> int:
    published: Any = container.ports[f"{PORT}/tcp"]
    return int(published[0]["HostPort"])


def _filters(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tail(container: Container, lines: int = 12) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip().splitlines()
    except docker.errors.DockerException:
        return "  (no logs)"
    return "\n".join(f"  | {line}" for line in text) or "  (no output)"
