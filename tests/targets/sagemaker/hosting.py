"""The SageMaker emulator's data plane: each production variant runs the way SageMaker hosting runs it.

For a variant of an endpoint config the emulator puts live, :class:`Hosting` does what SageMaker does
for one instance of it: reads the variant's Model from moto (image by digest, ``ModelDataUrl``,
environment), downloads the model data from moto's S3 and extracts it into a folder that is mounted
**read-only at /opt/ml/model**, and runs ``docker run IMAGE serve`` with the Model's environment
(the image pulled from the local registry by digest), publishing 8080 on an ephemeral port of
127.0.0.1. The variant is in service once ``GET /ping`` answers 200 within the variant's
``ContainerStartupHealthCheckTimeoutInSeconds``; a container that exits first, or a ping that never
answers, fails it with SageMaker's reason. A container's output goes to moto's CloudWatch Logs
(``/aws/sagemaker/Endpoints/<endpoint>``, stream ``<variant>/<container id>``), as SageMaker writes it.

Not reproduced: more than one container per variant (``InitialInstanceCount`` is recorded, one
container serves), instance types (no CPU or memory limits by type), availability zones, model data
as an uncompressed S3 prefix, network isolation and VPC configs.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import httpx

from slipway.http import tls

LABEL = "slipway-test.sagemaker-hosting"  # value: the emulator's id
CONTAINER_PORT = 8080
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class Fleet:
    """The containers of one variant of one endpoint config (one container here)."""

    endpoint: str
    config: str
    variant: str
    container: str
    port: int
    model_dir: Path
    instances: int
    started: float = field(default_factory=time.time)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))


class FleetFailed(Exception):
    """The variant did not come up; the message is SageMaker's FailureReason."""


class Hosting:
    def __init__(self, emulator_id: str, moto_url: str, region: str, root: Path) -> None:
        self.id = emulator_id
        self.moto_url, self.region = moto_url, region
        self.root = root
        self.docker = docker.from_env()
        self.lock = threading.RLock()
        self.fleets: list[Fleet] = []

    def _aws(self, service: str, region: str = "") -> Any:
        return boto3.client(service, endpoint_url=self.moto_url, region_name=region or self.region, **_CREDENTIALS)

    def start(self, endpoint: str, config: str, variant: dict[str, Any], region: str, budget_s: float) -> Fleet:
        """Run one variant; raises ``FleetFailed`` with SageMaker's reason if it never answers /ping."""
        name = variant["VariantName"]
        model = self._aws("sagemaker", region).describe_model(ModelName=variant["ModelName"])
        container = model["PrimaryContainer"]
        model_dir = Path(tempfile.mkdtemp(prefix=f"{endpoint}-{name}-", dir=self.root))
        model_dir.chmod(0o755)
        try:
            self._extract(container["ModelDataUrl"], model_dir, region)
        except FleetFailed:
            raise
        except Exception as exc:
            raise FleetFailed(
                f"Failed to download model data for production variant {name}: {type(exc).__name__}: {exc}. "
                "Please ensure that the model data exists in S3 and that the execution role may read it."
            ) from exc
        env = dict(container.get("Environment") or {})
        try:
            run = self.docker.containers.run(
                container["Image"], command=["serve"], detach=True, read_only=True, tmpfs={"/tmp": ""},
                volumes={str(model_dir): {"bind": "/opt/ml/model", "mode": "ro"}}, environment=env,
                ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", None)},
                labels={LABEL: self.id, f"{LABEL}.endpoint": endpoint, f"{LABEL}.variant": name},
            )  # fmt: skip
        except docker.errors.ImageNotFound:
            raise FleetFailed(
                f"The image '{container['Image']}' of production variant {name} does not exist."
            ) from None
        except docker.errors.APIError as exc:
            raise FleetFailed(f"The container of production variant {name} could not start: {exc.explanation}") from exc
        fleet = Fleet(endpoint, config, name, run.id, 0, model_dir, int(variant.get("InitialInstanceCount") or 1))
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            try:
                run.reload()
            except docker.errors.NotFound as exc:  # removed while it started: the endpoint was deleted
                raise FleetFailed(f"The container of production variant {name} was removed while it started") from exc
            published = (run.ports or {}).get(f"{CONTAINER_PORT}/tcp") or []
            if published and not fleet.port:
                fleet.port = int(published[0]["HostPort"])
            if run.status in ("exited", "dead"):
                break
            if fleet.port:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{fleet.port}/ping", timeout=1, verify=tls()).status_code == 200:
                        with self.lock:
                            self.fleets.append(fleet)
                        return fleet
            time.sleep(0.2)
        self._write_logs(fleet, region)
        self._remove(fleet)
        raise FleetFailed(
            f"The primary container for production variant {name} did not pass the ping health check. "
            "Please check CloudWatch logs for this endpoint."
        )

    def _extract(self, url: str, into: Path, region: str) -> None:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        s3 = self._aws("s3", region)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.ClientError as exc:
            raise FleetFailed(f"Could not find model data at {url}. ({exc.response['Error'].get('Code')})") from exc
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            tar.extractall(into, filter="data")
        for path in into.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)

    def invoke(self, fleet: Fleet, body: bytes, content_type: str, accept: str) -> httpx.Response:
        headers = {"Content-Type": content_type or "application/json", "Accept": accept or "*/*"}
        return fleet.client.post(f"http://127.0.0.1:{fleet.port}/invocations", content=body, headers=headers)

    def stop(self, fleet: Fleet, region: str) -> None:
        """SIGTERM, then SIGKILL after SageMaker's 30 s; its output into CloudWatch Logs."""
        with self.lock:
            if fleet in self.fleets:
                self.fleets.remove(fleet)
        with contextlib.suppress(docker.errors.DockerException):
            self.docker.containers.get(fleet.container).stop(timeout=30)
        self._write_logs(fleet, region)
        self._remove(fleet)

    def logs_of(self, fleet: Fleet, region: str) -> None:
        self._write_logs(fleet, region)

    def _write_logs(self, fleet: Fleet, region: str) -> None:
        try:
            raw = self.docker.containers.get(fleet.container).logs(timestamps=True).decode(errors="replace")
        except docker.errors.DockerException:
            return
        logs = self._aws("logs", region)
        group, stream = f"/aws/sagemaker/Endpoints/{fleet.endpoint}", f"{fleet.variant}/{fleet.container[:12]}"
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_group(logGroupName=group)
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": line.partition(" ")[2]} for line in raw.splitlines() if line.strip()]
        if events:
            logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)

    def _remove(self, fleet: Fleet) -> None:
        fleet.client.close()
        with contextlib.suppress(docker.errors.DockerException):
            self.docker.containers.get(fleet.container).remove(force=True)
        import shutil

        shutil.rmtree(fleet.model_dir, ignore_errors=True)

    def containers(self) -> list[str]:
        return [c.name for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"})]

    def stop_all(self) -> None:
        with self.lock:
            fleets = list(self.fleets)
            self.fleets.clear()
        for fleet in fleets:
            self._remove(fleet)
        for c in self.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.id}"}):
            with contextlib.suppress(docker.errors.DockerException):
                c.remove(force=True)
