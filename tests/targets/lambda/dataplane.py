"""The data plane moto does not have for Lambda: each published version's image really runs, under the
Runtime Interface Emulator, one container per execution environment.

moto stores image functions, versions and aliases but cannot invoke an image function. Here every
version gets a pool of execution environments, started on demand as Lambda starts them:

* **An environment** is a container of the version's exact image (``ImageUri``, by digest) with the
  RIE (scripts/images/lambda-rie.sh) as its entry point and the image's own entry point and command
  as the runtime to start, under Lambda's environment (``AWS_LAMBDA_FUNCTION_*``, ``AWS_REGION``, the
  role's credentials, the version's variables), its memory as the container's limit with CPU in
  proportion (1,769 MB = 1 vCPU), a read-only root file system with ``/tmp`` a tmpfs of the
  ephemeral-storage size, and the function's timeout. The RIE starts the runtime at the first
  invoke, so the first request of an environment really is its cold start (the runtime's init,
  the model's load and self-check).
* **Concurrency.** A request takes an idle environment of its version; with none idle a new one is
  started, unless the function already runs as many as its reserved concurrency, when the request
  is throttled (``Throttled``: Lambda's 429). Beyond ``max_environments`` per version (this machine's
  budget; Lambda would go on to its account limit) requests queue for an idle environment instead.
  Environments idle for ``idle_s`` are stopped; ``recycle`` stops them at once (the next request is
  cold). ``provision`` starts and initializes environments ahead (provisioned concurrency).
* **Answers.** The RIE answers 200 with the handler's result, also when the handler raised (its
  ``errorType`` body) and 502 with no body when the runtime exited; both are reported as a function
  error (``Unhandled``), as Lambda does. Each invocation's log lines are kept; the tail is written as
  Lambda writes it: the function's output and ``START``/``END``/``REPORT`` lines, the ``REPORT`` of a
  cold start carrying the ``Init Duration`` (the RIE logs its init apart and reports 0 there).
* **AWS from inside.** The environments are on an internal bridge network of their own; a relay on
  its gateway address forwards to the moto server (``AWS_ENDPOINT_URL``), so the S3 model and the
  API key are read from moto's S3, Secrets Manager and SSM.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import httpx

from slipway.http import tls

RIE = Path("/var/tmp/slipway/lambda-rie/aws-lambda-rie")
LABEL = "slipway-test.lambda-dataplane"  # value: the pid of the session
INVOKE = "/2015-03-31/functions/function/invocations"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_ERROR_KEYS = {"errorMessage", "errorType", "stackTrace", "requestId", "cause"}
_MB_PER_VCPU = 1769


class Throttled(Exception):
    """Lambda's 429: the function runs as many environments as its reserved concurrency allows."""


@dataclass
class Answer:
    status: int  # 200, or what Invoke itself answers (429 throttled)
    payload: bytes
    function_error: str  # "Unhandled" or ""
    log: str  # Lambda's tail of this invocation's log
    version: str
    cold: bool
    init_ms: float | None


@dataclass
class Environment:
    name: str
    container: Any = None
    address: str = ""
    busy: bool = True
    fresh: bool = True  # never invoked: the next invoke is its cold start
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Version:
    function: str
    version: str
    image: str
    command: list[str]
    env: dict[str, str]
    memory_mb: int
    timeout_s: int
    ephemeral_mb: int
    environments: list[Environment] = field(default_factory=list)


class Relay:
    """A TCP forwarder on the network's gateway address to the moto server on 127.0.0.1."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.sock = socket.create_server((listen, 0))
        self.url = f"http://{listen}:{self.sock.getsockname()[1]}"
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe_pair, args=(client,), daemon=True).start()

    def _pipe_pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.sock.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class LambdaDataPlane:
    def __init__(self, moto_url: str, network: str, gateway: str, *, max_environments: int = 2,
                 idle_s: float = 120.0) -> None:  # fmt: skip
        host, port = moto_url.removeprefix("http://").split(":")
        self.moto_url = moto_url
        self.network, self.gateway = network, gateway
        self.relay = Relay(gateway, (host, int(port)))
        self.docker = docker.from_env()
        self.max_environments, self.idle_s = max_environments, idle_s
        self.versions: dict[tuple[str, str, str], Version] = {}  # (region, function, version) → its pool
        self.reserved: dict[tuple[str, str], int | None] = {}  # (region, function) → reserved concurrency
        self.started: list[tuple[str, str, str]] = []  # every environment started: (function, version, name)
        self.lock = threading.Condition()
        self._label = {LABEL: str(_pid())}
        self._stop = threading.Event()
        threading.Thread(target=self._reaper, daemon=True).start()

    def lam(self, region: str) -> Any:
        return boto3.client("lambda", endpoint_url=self.moto_url, region_name=region, **CREDENTIALS)

    # --- pools ------------------------------------------------------------------------------------

    def _version(self, region: str, function: str, version: str) -> Version:
        key = (region, function, version)
        with self.lock:
            if key in self.versions:
                return self.versions[key]
        qualifier = {} if version == "$LATEST" else {"Qualifier": version}
        found = self.lam(region).get_function(FunctionName=function, **qualifier)
        config, image = found["Configuration"], found["Code"]["ImageUri"]
        inspected = self.docker.api.inspect_image(image) if self._has(image) else self._pull(image)
        overrides = (config.get("ImageConfigResponse") or {}).get("ImageConfig") or {}  # as Lambda: they replace
        command = [*(overrides.get("EntryPoint") or inspected["Config"].get("Entrypoint") or []),  # the image's
                   *(overrides.get("Command") or inspected["Config"].get("Cmd") or [])]  # fmt: skip
        variables = dict((config.get("Environment") or {}).get("Variables") or {})
        made = Version(function, version, image, command, variables,
                       int(config.get("MemorySize", 128)), int(config.get("Timeout", 3)),
                       int((config.get("EphemeralStorage") or {}).get("Size", 512)))  # fmt: skip
        with self.lock:
            return self.versions.setdefault(key, made)

    def _has(self, image: str) -> bool:
        try:
            self.docker.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def _pull(self, image: str) -> Any:
        self.docker.images.pull(image)  # from the local registry the image was pushed to
        return self.docker.api.inspect_image(image)

    def reserved_concurrency(self, region: str, function: str) -> int | None:
        key = (region, function)
        if key not in self.reserved:
            answer = self.lam(region).get_function_concurrency(FunctionName=function)
            self.reserved[key] = answer.get("ReservedConcurrentExecutions")
        return self.reserved[key]

    def _acquire(self, region: str, v: Version) -> tuple[Environment, bool]:
        """An environment for one request (True: it must be started); raises Throttled."""
        limit = self.reserved_concurrency(region, v.function)
        deadline = time.monotonic() + max(60.0, v.timeout_s + 30.0)
        with self.lock:
            while True:
                idle = next((e for e in v.environments if not e.busy and e.container is not None), None)
                if idle is not None:
                    idle.busy = True
                    return idle, False
                running = sum(len(p.environments) for k, p in self.versions.items()
                              if k[0] == region and k[1] == v.function)  # fmt: skip
                if limit is not None and running >= limit:
                    raise Throttled(f"reserved concurrency {limit} of {v.function} in use")
                if len(v.environments) < self.max_environments:
                    env = Environment(f"lambda-{v.function}-{v.version}-{uuid.uuid4().hex[:6]}"[:120])
                    v.environments.append(env)
                    return env, True
                if not self.lock.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise Throttled(f"no environment of {v.function}:{v.version} became free")

    def _release(self, env: Environment) -> None:
        with self.lock:
            env.busy, env.last_used = False, time.monotonic()
            self.lock.notify_all()

    def _start(self, region: str, v: Version, env: Environment) -> None:
        environment = {
            **v.env, "AWS_LAMBDA_FUNCTION_NAME": v.function, "AWS_LAMBDA_FUNCTION_VERSION": v.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(v.memory_mb), "AWS_LAMBDA_FUNCTION_TIMEOUT": str(v.timeout_s),
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"], "AWS_SESSION_TOKEN": "role-session",
            "AWS_ENDPOINT_URL": self.relay.url, "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{v.function}",
        }  # fmt: skip
        cpus = min(max(v.memory_mb / _MB_PER_VCPU, 0.1), float(len(_cpus())))
        env.container = self.docker.containers.run(
            v.image, command=v.command, entrypoint=["/aws-lambda-rie"], detach=True, name=env.name,
            environment=environment, network=self.network, read_only=True,
            tmpfs={"/tmp": f"size={v.ephemeral_mb}m"}, mem_limit=f"{v.memory_mb}m", nano_cpus=int(cpus * 1e9),
            volumes={str(RIE): {"bind": "/aws-lambda-rie", "mode": "ro"}},
            labels={**self._label, f"{LABEL}.function": v.function, f"{LABEL}.version": v.version},
        )  # fmt: skip
        env.container.reload()
        env.address = env.container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((env.address, 8080), timeout=0.5):
                break
            time.sleep(0.05)
        self.started.append((v.function, v.version, env.name))

    # --- invocations ------------------------------------------------------------------------------

    def invoke(self, region: str, function: str, version: str, payload: bytes, *, tail: bool = False) -> Answer:
        v = self._version(region, function, version)
        env, new = self._acquire(region, v)
        try:
            if new:
                try:
                    self._start(region, v, env)
                except BaseException:
                    with self.lock:
                        v.environments.remove(env)
                    raise
            return self._invoke(v, env, payload, tail)
        finally:
            self._release(env)

    def _invoke(self, v: Version, env: Environment, payload: bytes, tail: bool) -> Answer:
        cold, env.fresh = env.fresh, False
        since = time.time()
        try:
            resp = httpx.post(
                f"http://{env.address}:8080{INVOKE}", content=payload, timeout=v.timeout_s + 30, verify=tls()
            )
            status, body = resp.status_code, resp.content
        except httpx.HTTPError as exc:
            status, body = 502, json.dumps({"errorType": "Sandbox.Failure", "errorMessage": str(exc)}).encode()
        error = ""
        if status != 200:  # the runtime exited (an init that failed) or the sandbox failed
            error, env.fresh = "Unhandled", True  # the RIE starts the runtime again at the next invoke
            if not body:
                exited = "RequestId: Error: Runtime exited with an error"
                body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": exited}).encode()
        elif body.startswith(b"Task timed out after"):  # the RIE's plain text; Lambda answers a timeout so:
            error, env.fresh = "Unhandled", True  # and, as after a timeout in Lambda, the next invoke inits again
            body = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": body.decode()}).encode()
        elif _is_error(body):
            error = "Unhandled"
        log, init = self._log(env, since, cold) if tail or error or cold else ("", None)
        return Answer(200, body, error, log, v.version, cold, init)

    def _log(self, env: Environment, since: float, cold: bool) -> tuple[str, float | None]:
        """This invocation's log as Lambda writes it, and the init duration of a cold start."""
        try:
            raw = env.container.logs(timestamps=True, since=int(since) - 1).decode(errors="replace")
        except docker.errors.DockerException:
            return "", None
        lines = []
        for line in raw.splitlines():
            stamp, _, text = line.partition(" ")
            with contextlib.suppress(ValueError):
                if datetime.fromisoformat(stamp.replace("Z", "+00:00")[:26] + "+00:00").timestamp() < since - 0.05:
                    continue
            lines.append(text)
        init = None
        for text in lines:
            found = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", text)
            if found and cold:
                init = float(found.group(1))
        out = []
        for text in lines:
            if "(rapid)" in text:
                continue  # the emulator's own log, which Lambda does not show
            report = re.match(r"REPORT RequestId: (\S+)\s+Init Duration: [0-9.]+ ms\s+Duration: ([0-9.]+) ms(.*)", text)
            if report:
                rid, duration, rest = report.groups()
                if init is not None:
                    text = (f"REPORT RequestId: {rid}\tDuration: {max(0.0, float(duration) - init):.2f} ms{rest}"
                            f"\tInit Duration: {init:.2f} ms")  # fmt: skip
                else:
                    text = f"REPORT RequestId: {rid}\tDuration: {duration} ms{rest}"
            out.append(text)
        return "\n".join(out)[-4096:], init

    # --- environments -----------------------------------------------------------------------------

    def provision(self, region: str, function: str, version: str, count: int) -> None:
        """``count`` initialized environments of ``version`` kept beside the on-demand ones (provisioned)."""
        v = self._version(region, function, version)
        warm = json.dumps({"rawPath": "/health", "requestContext": {"http": {"method": "GET"}}, "headers": {}}).encode()
        for _ in range(count):
            env = Environment(f"lambda-{v.function}-{v.version}-p{uuid.uuid4().hex[:5]}"[:120])
            with self.lock:
                v.environments.append(env)
            self._start(region, v, env)
            self._invoke(v, env, warm, False)  # Lambda runs a provisioned environment's init ahead
            self._release(env)

    def recycle(self, function: str, version: str | None = None) -> int:
        """Stop every idle environment of ``function`` (one version of it): the next request is cold."""
        stopped = 0
        with self.lock:
            for (_, f, ver), v in self.versions.items():
                if f != function or (version is not None and ver != version):
                    continue
                for env in [e for e in v.environments if not e.busy]:
                    v.environments.remove(env)
                    self._remove(env)
                    stopped += 1
        return stopped

    def forget(self, region: str, function: str, version: str | None = None) -> None:
        """A function (or one version) deleted: its environments go, its settings are read again if made anew."""
        with self.lock:
            for key in [k for k in self.versions if k[:2] == (region, function) and version in (None, k[2])]:
                for env in self.versions.pop(key).environments:
                    self._remove(env)
            if version is None:
                self.reserved.pop((region, function), None)
            self.lock.notify_all()

    def _remove(self, env: Environment) -> None:
        if env.container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                env.container.remove(force=True)

    def _reaper(self) -> None:
        while not self._stop.wait(2.0):
            now = time.monotonic()
            with self.lock:
                for v in self.versions.values():
                    for env in [e for e in v.environments if not e.busy and now - e.last_used > self.idle_s]:
                        v.environments.remove(env)
                        self._remove(env)

    def containers(self) -> list[str]:
        return [str(c.name) for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={_pid()}"})]

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            for v in self.versions.values():
                for env in v.environments:
                    self._remove(env)
            self.versions.clear()
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={_pid()}"}):
            container.remove(force=True)
        self.relay.close()


def choose(version: str, weights: dict[str, float]) -> str:
    """The version an alias's request goes to: an additional version by its weight, else the alias's own."""
    roll = random.random()
    for extra, weight in weights.items():
        if roll < weight:
            return extra
        roll -= weight
    return version


def _is_error(body: bytes) -> bool:
    """The RIE answers 200 with ``{"errorType", "errorMessage", ...}`` when the handler raised."""
    try:
        raw = json.loads(body)
    except ValueError:
        return False
    return isinstance(raw, dict) and "errorType" in raw and "errorMessage" in raw and set(raw) <= _ERROR_KEYS


def _pid() -> int:
    import os

    return os.getpid()


def _cpus() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0))


@contextlib.contextmanager
def network() -> Iterator[tuple[str, str]]:
    """An internal bridge network of the Lambda data plane; yields ``(name, gateway address)``."""
    import ipaddress

    from tests.targets.ec2.dataplane import bridge_network

    with bridge_network("10.223.0.0/24", prefix="slipway-lambda", label=LABEL) as (name, cidr):
        yield name, str(next(ipaddress.ip_network(cidr).hosts()))


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
