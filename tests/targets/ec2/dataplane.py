"""The data plane moto does not have: the instances of the ec2 target, run for real on the Docker Engine.

moto keeps EC2's control plane (instances, their user data, tags, addresses) and runs nothing. This
agent plays the hypervisor for one subnet: a user-defined Docker bridge network with the subnet's
CIDR stands in for the subnet, and for every instance moto has in it (pending or running) the agent
boots what the instance's user data would boot, as a container holding the instance's private IP
address. The target then reaches ``http://<private ip>:<port>`` over that bridge as it would reach
the instance, and never knows.

* **Watching.** A thread reconciles moto with the Docker Engine a few times a second through boto3
  while a test is :meth:`~Ec2DataPlane.watching`
  (``describe_subnets`` for the subnets with the network's CIDR, ``describe_instances`` in them): an
  instance without its container is booted, a container whose instance is terminated or gone (a moto
  reset) is stopped (SIGTERM, as at shutdown) and removed.
* **The API front.** Real EC2 reports ``terminated`` only once the instance is down, and the target
  relies on it (``teardown`` waits for ``instance_terminated``). moto says ``terminated`` at once, so
  the target talks to moto through :class:`ApiFront`, a pass-through HTTP proxy that runs a
  reconciliation after every call that starts or ends instances and before it answers: by the time
  ``TerminateInstances`` returns, the container is gone; by the time ``RunInstances`` returns, it
  is starting (a fast boot).
* **Booting from the user data.** :func:`boot_plan` reads the script moto stores
  (``DescribeInstanceAttribute userData``) line by line: the Docker install and ``systemctl`` lines
  are the image's part (the engine is there), ``aws ssm get-parameter`` reads moto's SSM with the
  script's own region, name and ``--with-decryption``, and the ``docker pull`` / ``docker run``
  lines are executed by the Docker CLI with their own arguments. Only three are rewritten: ``--name``
  (the container is named after the instance id, as one engine hosts every instance; the script's
  name becomes a label), ``-p P:P`` (dropped: the container answers at the instance's address; a
  ``P:Q`` mapping with ``P != Q`` is refused as not emulated) and ``--env-file`` (a private
  temporary file). ``--network``/``--ip`` place it in the subnet. A line the agent does not know
  fails the boot, so a change of the boot script is seen here.

Boot failures (a line not understood, an image other than the ``slipway:image`` tag, a public IP,
secrets without an instance profile, a failed ``docker run``) are kept in :attr:`Ec2DataPlane.errors`
for the fixture to report; the last lines a container wrote are kept, when it is removed, in
:attr:`Ec2DataPlane.console`. Everything the agent starts carries the label :data:`AGENT_LABEL` and is
removed by :meth:`Ec2DataPlane.stop`. Not emulated: security-group filtering (every host on the
bridge reaches the port), stop/start of instances (recorded as an error), IMDS.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import ipaddress
import logging
import os
import shlex
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import httpx
from botocore.exceptions import BotoCoreError, ClientError
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

AGENT_LABEL = "slipway-test.ec2-dataplane"  # value: the pid of the test session that started it
INSTANCE_LABEL = "slipway-test.ec2-instance"
POLL_S = 0.3
_BOOTING_STATES = ("pending", "running")
_INSTANCE_ACTIONS = frozenset({"RunInstances", "TerminateInstances", "StopInstances", "StartInstances"})
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
log = logging.getLogger(__name__)


class BootError(Exception):
    """The instance would not come up as the agent can emulate it; the message says why."""


# --- the boot script -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """An ``aws ssm get-parameter`` of the script: what the instance's role would read."""

    region: str
    name: str
    decrypt: bool


@dataclass(frozen=True)
class BootPlan:
    """What a user-data script does, as far as the data plane is concerned."""

    env_files: dict[str, dict[str, Parameter]]  # path on the instance → variable → its parameter
    login: tuple[str, str, Parameter] | None  # registry, username, password
    pulls: list[str]
    run: list[str]  # the arguments of `docker run`, as written
    skipped: list[str] = field(default_factory=list)  # the lines that are the image's part

    @property
    def parameters(self) -> list[Parameter]:
        found = [p for env in self.env_files.values() for p in env.values()]
        return found + ([self.login[2]] if self.login else [])


def _logical_lines(script: str) -> Iterator[tuple[int, str]]:
    number, pending = 0, ""
    for n, line in enumerate(script.splitlines(), 1):
        number = number or n
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield number, (pending + line).strip()
        number, pending = 0, ""
    if pending:
        yield number, pending.strip()


def _parameter(command: str, line: str) -> Parameter:
    """``aws ssm get-parameter --region R [--with-decryption] --name N --query Parameter.Value --output text``."""
    words = shlex.split(command)
    if words[:3] != ["aws", "ssm", "get-parameter"]:
        raise BootError(f"not an `aws ssm get-parameter`: {line!r}")
    flags: dict[str, str] = {}
    rest = words[3:]
    while rest:
        flag = rest.pop(0)
        flags[flag] = "" if flag == "--with-decryption" else rest.pop(0)
    known = set(flags) <= {"--region", "--with-decryption", "--name", "--query", "--output"}
    as_text = (flags.get("--query"), flags.get("--output")) == ("Parameter.Value", "text")
    if not known or not as_text or "--name" not in flags:
        raise BootError(f"an `aws ssm get-parameter` the agent does not know: {line!r}")
    return Parameter(flags.get("--region", ""), flags["--name"], "--with-decryption" in flags)


def boot_plan(script: str) -> BootPlan:
    """Read a user-data script; any line the agent cannot account for is a :class:`BootError`."""
    if not script.startswith("#!/bin/bash\n"):
        raise BootError("the user data is not a bash script (#!/bin/bash)")
    env_files: dict[str, dict[str, Parameter]] = {}
    login: tuple[str, str, Parameter] | None = None
    pulls: list[str] = []
    run: list[str] = []
    skipped: list[str] = []
    depth = 0  # inside `if ! command -v docker ...; then ... fi`: installing Docker, the image's part
    for n, line in _logical_lines(script):
        words = shlex.split(line) if line and not line.startswith("#") else []
        if depth:
            depth += (words[:1] == ["if"]) - (words == ["fi"])
            skipped.append(line)
        elif not words or words == ["set", "-euo", "pipefail"] or words == ["umask", "077"]:
            continue
        elif line == "if ! command -v docker >/dev/null; then":
            depth = 1
            skipped.append(line)
        elif words == ["systemctl", "enable", "--now", "docker"]:
            skipped.append(line)
        elif words[0] == "printf" and len(words) == 5 and words[3] == ">" and words[2].startswith("$(") \
                and words[2].endswith(")") and words[1].endswith("=%s\\n"):  # fmt: skip
            # printf 'NAME=%s\n' "$(aws ssm get-parameter ...)" > FILE
            env_files.setdefault(words[4], {})[words[1][: -len("=%s\\n")]] = _parameter(words[2][2:-1], line)
        elif "|" in words and words[words.index("|") + 1 :][:2] == ["docker", "login"]:
            bar = line.index("|")
            after = shlex.split(line[bar + 1 :])
            if len(after) != 6 or after[2] != "--username" or after[4] != "--password-stdin":
                raise BootError(f"line {n}: a `docker login` the agent does not know: {line!r}")
            login = (after[5], after[3], _parameter(line[:bar], line))
        elif words[:2] == ["docker", "pull"] and len(words) == 3:
            pulls.append(words[2])
        elif words[:2] == ["docker", "run"] and not run:
            run = words[2:]
        else:
            raise BootError(f"line {n} of the user data is not one the data-plane agent knows: {line!r}")
    if depth:
        raise BootError("the user data has an `if` without its `fi`")
    if not run:
        raise BootError("the user data runs no container (no `docker run`)")
    return BootPlan(env_files, login, pulls, run, skipped)


def run_arguments(plan: BootPlan, image: str, *, name: str, network: str, ip: str,
                  env_files: dict[str, str], labels: dict[str, str]) -> list[str]:  # fmt: skip
    """The `docker run` arguments of the plan, placed on ``network`` at ``ip`` (see the module doc)."""
    if image not in plan.run:
        raise BootError(f"the user data's `docker run` does not run {image} (the instance's slipway:image tag)")
    at = plan.run.index(image)
    options, command = plan.run[:at], plan.run[at + 1 :]
    out: list[str] = []
    while options:
        word = options.pop(0)
        if word in ("--network", "--net", "--ip") or word.startswith(("--network=", "--net=", "--ip=")):
            raise BootError(f"the user data sets {word}: the agent places the container in the subnet itself")
        if word in ("--name", "-p", "--publish", "--env-file") and not options:
            raise BootError(f"`docker run {word}` without a value")
        if word == "--name":
            labels = {**labels, "slipway-test.ec2-name": options.pop(0)}
        elif word in ("-p", "--publish"):
            published, _, container_port = options.pop(0).rpartition(":")
            if published.rpartition(":")[2] != container_port:
                raise BootError(f"`-p {published}:{container_port}`: only a port published as itself is emulated "
                                "(the container answers on its own port at the instance's address)")  # fmt: skip
        elif word == "--env-file":
            path = options.pop(0)
            if path not in env_files:
                raise BootError(f"`--env-file {path}`: no earlier line of the user data writes it")
            out += ["--env-file", env_files[path]]
        else:
            out.append(word)
    for key, value in labels.items():
        out += ["--label", f"{key}={value}"]
    return [*out, "--name", name, "--network", network, "--ip", ip, image, *command]


# --- the agent -------------------------------------------------------------------------------------


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def bridge_network(
    first_cidr: str = "10.213.0.0/24", tries: int = 16, *, prefix: str = "slipway-ec2", label: str = AGENT_LABEL
) -> Iterator[tuple[str, str]]:
    """An internal user-defined bridge network named ``<prefix>-<pid>``, labelled ``label``; yields
    ``(name, cidr)``. (The lambda data plane makes its own with another prefix and label.)

    The first of ``first_cidr`` and the /24s after it that no other network of the engine holds (two
    test sessions can run side by side). Internal: the containers reach nothing beyond it; the host
    reaches them through the bridge's address, the first of the subnet (AWS's VPC router address).
    """
    client = docker.from_env()
    me = str(os.getpid())
    for net in client.networks.list(filters={"label": label}):
        owner = net.attrs["Labels"].get(label, "")
        if not _alive(owner):  # left by a killed session
            for container in client.containers.list(all=True, filters={"label": f"{label}={owner}"}):
                container.remove(force=True)
            with contextlib.suppress(docker.errors.APIError):
                net.remove()
    base = ipaddress.ip_network(first_cidr)
    network = None
    for i in range(tries):
        cidr = str(ipaddress.ip_network((int(base.network_address) + i * base.num_addresses, base.prefixlen)))
        try:
            network = client.networks.create(
                f"{prefix}-{me}", driver="bridge", internal=True, labels={label: me},
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=cidr)]),
            )  # fmt: skip
            break
        except docker.errors.APIError as exc:
            if "overlap" not in str(exc).lower():
                raise
    if network is None:
        raise RuntimeError(f"no free /24 from {first_cidr} on for the {prefix} network")
    try:
        yield str(network.name), cidr
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{label}={me}"}):
            container.remove(force=True)
        network.remove()


class Ec2DataPlane:
    """Runs, for real, the instances moto has in the subnets whose CIDR is ``cidr`` in ``region``."""

    def __init__(self, moto_url: str, region: str, network: str, cidr: str) -> None:
        self.moto_url, self.region, self.network, self.cidr = moto_url, region, network, cidr
        self.ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=region, **_CREDENTIALS)
        self.docker = docker.from_env()
        self.errors: list[str] = []
        self.console: dict[str, str] = {}  # instance id → the last lines its container wrote, kept at removal
        self.poll_error = ""
        self._label = {AGENT_LABEL: str(os.getpid())}
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ec2-dataplane", daemon=True)

    def start(self) -> Ec2DataPlane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for container in self.containers():
                container.remove(force=True)

    @contextlib.contextmanager
    def watching(self) -> Iterator[Ec2DataPlane]:
        """Poll moto only inside this block (a test that launches instances), not for the whole session."""
        self._watching.set()
        try:
            yield self
        finally:
            self._watching.clear()

    def take_errors(self) -> list[str]:
        with self._lock:
            errors, self.errors = self.errors, []
        return errors

    def containers(self) -> list[Container]:
        label = f"{AGENT_LABEL}={self._label[AGENT_LABEL]}"
        return list(self.docker.containers.list(all=True, filters={"label": label}))

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if not self._watching.is_set():
                continue
            try:
                self.reconcile()
                self.poll_error = ""
            except (ClientError, BotoCoreError, docker.errors.DockerException) as exc:
                if str(exc) != self.poll_error:  # e.g. while a test of tests/targets/ec2 makes moto enforce IAM
                    log.warning("ec2 data plane: reconciling failed: %s", exc)
                self.poll_error = str(exc)

    def reconcile(self) -> None:
        """Make the containers match moto's instances: boot the new, retire the gone."""
        with self._lock:
            instances = self._instances()
            for container in self.containers():
                iid = container.labels[INSTANCE_LABEL]
                if instances.get(iid, {}).get("State", {}).get("Name") not in _BOOTING_STATES:
                    with contextlib.suppress(docker.errors.NotFound):  # as at shutdown: SIGTERM, then 10 s
                        container.stop(timeout=10)
                        self.console[iid] = container.logs(tail=50).decode(errors="replace")
                        container.remove(force=True)
                    if iid in instances and instances[iid]["State"]["Name"] in ("stopping", "stopped"):
                        self.errors.append(f"{iid}: stopping an instance is not emulated (its container is removed)")
            running = {c.labels[INSTANCE_LABEL] for c in self.containers()}
            for iid, instance in instances.items():
                if instance["State"]["Name"] in _BOOTING_STATES and iid not in running and iid not in self._failed:
                    try:
                        self._boot(instance)
                    except (BootError, ClientError, BotoCoreError, subprocess.CalledProcessError) as exc:
                        self._failed.add(iid)
                        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
                        self.errors.append(f"{iid} did not boot: {detail}")
                        log.error("ec2 data plane: %s did not boot: %s", iid, detail)

    def _instances(self) -> dict[str, Any]:
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": [self.cidr]}])["Subnets"]
        if not subnets:
            return {}
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "subnet-id", "Values": [s["SubnetId"] for s in subnets]}]
        )
        found = (i for page in pages for r in page["Reservations"] for i in r["Instances"])
        return {i["InstanceId"]: i for i in found if any(t["Key"].startswith("slipway:") for t in i.get("Tags", []))}

    def _boot(self, instance: Any) -> None:
        iid, ip = instance["InstanceId"], instance.get("PrivateIpAddress", "")
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        if instance.get("PublicIpAddress"):
            raise BootError(f"it has a public IP {instance['PublicIpAddress']}: the target would call that one, "
                            "which is not emulated (launch in a subnet with MapPublicIpOnLaunch false)")  # fmt: skip
        if not ip or ipaddress.ip_address(ip) not in ipaddress.ip_network(self.cidr):
            raise BootError(f"its private IP {ip!r} is not in {self.cidr}")
        if "slipway:image" not in tags:
            raise BootError("it has no slipway:image tag")
        value = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"].get("Value", "")
        plan = boot_plan(base64.b64decode(value).decode())
        if plan.parameters and not instance.get("IamInstanceProfile"):
            raise BootError("its user data reads SSM parameters and it has no instance profile to read them with")
        with tempfile.TemporaryDirectory(prefix="slipway-ec2-") as tmp:
            env_files = {}
            for n, (path, variables) in enumerate(plan.env_files.items()):
                local = Path(tmp) / f"{n}.env"
                local.touch(mode=0o600)
                local.write_text("".join(f"{k}={self._read(p)}\n" for k, p in variables.items()))
                env_files[path] = str(local)
            config = ["--config", str(Path(tmp) / "docker")] if plan.login else []
            if plan.login:
                registry, username, password = plan.login
                _docker([*config, "login", "--username", username, "--password-stdin", registry],
                        stdin=self._read(password))  # fmt: skip
            for image in plan.pulls:
                _docker([*config, "pull", "--quiet", image])
            args = run_arguments(plan, tags["slipway:image"], name=f"slipway-ec2-{iid}", network=self.network,
                                 ip=ip, env_files=env_files, labels={**self._label, INSTANCE_LABEL: iid})  # fmt: skip
            _docker([*config, "run", *args])

    def _read(self, parameter: Parameter) -> str:
        ssm = boto3.client("ssm", endpoint_url=self.moto_url, region_name=parameter.region or self.region,
                           **_CREDENTIALS)  # fmt: skip
        found = ssm.get_parameter(Name=parameter.name, WithDecryption=parameter.decrypt)
        return str(found["Parameter"]["Value"])


def _docker(args: list[str], stdin: str | None = None) -> None:
    subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=True, timeout=120)


# --- the API front ---------------------------------------------------------------------------------


class ApiFront:
    """moto behind a pass-through proxy that lets the data plane catch up on instance changes.

    Every request is forwarded as is; after an EC2 call that starts or ends instances (and before its
    answer goes back) the data plane reconciles, so a terminated instance no longer answers by the time
    the caller hears it is terminated.
    """

    def __init__(self, moto_url: str, plane: Ec2DataPlane) -> None:
        http_client = httpx.Client(base_url=moto_url, timeout=120)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                resp = http_client.request(self.command, self.path, content=body, headers=headers)
                action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", [""])[0]
                if action in _INSTANCE_ACTIONS and resp.status_code == 200:
                    try:
                        plane.reconcile()
                    except (ClientError, BotoCoreError, docker.errors.DockerException) as exc:
                        plane.errors.append(f"reconciling after {action} failed: {exc}")
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self._http = http_client
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="ec2-api-front", daemon=True)

    def start(self) -> ApiFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()
