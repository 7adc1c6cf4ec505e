"""What the Lambda target needs besides the function itself: the error codes, the function's settings
as Lambda's API takes them, the API key's store, the package in S3, the image's size and the answers
of an invocation.

* ``settings``: the arguments of ``CreateFunction`` / ``UpdateFunctionConfiguration`` for a release,
  and a digest of them (``SLIPWAY_SETTINGS`` in the function's environment): a published version
  whose digest and release match is reused (``rollback``, and production after staging when both
  stages share a function), never published twice.
* ``KeyStore``: under ``url_auth: NONE`` the handler checks Slipway's key, which it reads once per cold
  start from a Secrets Manager secret (``slipway/<service>/<stage>/api-key``) or an SSM SecureString
  parameter (``/slipway/<service>/<stage>/api-key``), pinned to the version the release was deployed
  with; a new version only when the key changed.
* ``upload_package``: ``model_location: s3``: the package's ``package.json`` and artifact, content
  addressed under ``s3://<bucket>/<prefix><service>/<sha256>/`` (SSE-S3), uploaded once.
* ``image_size_mb``: the uncompressed size Lambda's 10 GB limit counts, from the engine that built
  the image (else the registry's compressed layer sizes, a lower bound).
* ``Invocation``: one direct ``Invoke`` with ``LogType=Tail``: the payload, the function error, the
  log tail and the ``Init Duration`` Lambda reports in it on a cold start.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from serving.contract import (
    API_KEY_PARAMETER_ENV,
    API_KEY_SECRET_ENV,
    API_KEY_SECRET_VERSION_ENV,
    AUTH_ENV,
    PACKAGE_S3_ENV,
    PACKAGE_SHA256_ENV,
)
from serving.manifest import read_manifest
from slipway.release import Release
from slipway.spec import LambdaTarget as LambdaConfig
from targets.aws import ServiceCodes

RELEASE_ENV = "SLIPWAY_RELEASE"
SETTINGS_ENV = "SLIPWAY_SETTINGS"
IMAGE_LIMIT_MB = 10_240  # Lambda: 10 GB, the uncompressed image with all its layers
_TAIL_LINES = 15

LAMBDA_CODES = ServiceCodes(
    transient=frozenset({"ResourceConflictException", "ResourceNotReadyException", "ServiceException",
                         "EC2ThrottledException", "ProvisionedConcurrencyConfigNotFoundException"}),
    config=frozenset({"RequestTooLargeException", "InvalidRequestContentException", "UnsupportedMediaTypeException",
                      "InvalidZipFileException", "PreconditionFailedException"}),
    limits=frozenset({"CodeStorageExceededException"}),
    hints={
        "InvalidParameterValueException": "Lambda refused a setting, which its message names: fix it in the spec "
        "(role: an existing execution role that trusts lambda.amazonaws.com; the image: in ECR, in the function's "
        "region) — docs/targets/lambda.md",
        "ResourceConflictException": "an update of the function was in progress (another deploy, the console) "
        "and did not finish in api_retry_s; the step is retried",
        "TooManyRequestsException": "Lambda throttled the API calls (or the invocations); the step is retried",
        "CodeStorageExceededException": "the account's code storage is full: delete old function versions",
    },
)  # fmt: skip


def settings(
    config: LambdaConfig, release: Release, image: str, env: dict[str, str], server_args: tuple[str, ...]
) -> dict[str, Any]:
    """The function configuration of ``release``: what ``CreateFunction`` / ``UpdateFunctionConfiguration``
    take (with ``image``), its environment carrying the release and a digest of all of it. The spec's
    options of the model server (``server_args``) follow the image's entrypoint as the image's CMD would:
    ``ImageConfig.Command``."""
    variables = {**config.env, **env, RELEASE_ENV: release.id}
    body = {
        "Role": config.role, "MemorySize": config.memory_mb, "Timeout": config.timeout_s,
        "EphemeralStorage": {"Size": config.ephemeral_storage_mb}, "ImageUri": image,
        "Architectures": [config.architecture], "Variables": variables, "Command": list(server_args),
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "Role": config.role,
        "MemorySize": config.memory_mb,
        "Timeout": config.timeout_s,
        "EphemeralStorage": {"Size": config.ephemeral_storage_mb},
        "ImageConfig": {"Command": list(server_args)},
        "Environment": {"Variables": {**variables, SETTINGS_ENV: digest}},
        "Description": f"Slipway {release.service} release {release.id} (model {release.model} {release.version})"[
            :256
        ],
    }


def digest_of(configuration: dict[str, Any]) -> tuple[str, str]:
    """(release id, settings digest) of a function configuration, '' where it has none."""
    variables = (configuration.get("Environment") or {}).get("Variables") or {}
    return str(variables.get(RELEASE_ENV, "")), str(variables.get(SETTINGS_ENV, ""))


def auth_env(config: LambdaConfig, requires_auth: bool) -> dict[str, str]:
    """How the handler authenticates HTTP events: IAM at the URL (AWS_IAM), or Slipway's key (NONE)."""
    if config.url_auth == "AWS_IAM" or not requires_auth:
        return {AUTH_ENV: "none"}  # AWS_IAM: Lambda checks a SigV4 signature and IAM before the handler
    return {}


class KeyStore:
    """Slipway's key where the function reads it at each cold start: Secrets Manager or SSM."""

    def __init__(self, session: Any, config: LambdaConfig, service: str, stage: str) -> None:
        self.kind = config.api_key_store
        args = {"endpoint_url": config.aws_endpoint_url} if config.aws_endpoint_url else {}
        self.client = session.client("secretsmanager" if self.kind == "secretsmanager" else "ssm", **args)
        self.name = f"slipway/{service}/{stage}/api-key"
        if self.kind == "ssm":
            self.name = "/" + self.name

    def put(self, key: SecretStr) -> dict[str, str]:
        """Write ``key`` unless it is there; the function's environment naming the version that holds it."""
        value = key.get_secret_value()
        if self.kind == "ssm":
            try:
                found = self.client.get_parameter(Name=self.name, WithDecryption=True)["Parameter"]
                version = int(found["Version"]) if found["Value"] == value else 0
            except self.client.exceptions.ParameterNotFound:
                version = 0
            if not version:
                version = int(self.client.put_parameter(Name=self.name, Value=value, Type="SecureString",
                                                        Overwrite=True)["Version"])  # fmt: skip
            return {API_KEY_PARAMETER_ENV: f"{self.name}:{version}"}
        try:
            current = self.client.get_secret_value(SecretId=self.name)
            arn, version_id = current["ARN"], current["VersionId"]
            if current.get("SecretString") != value:
                version_id = self.client.put_secret_value(SecretId=self.name, SecretString=value)["VersionId"]
        except self.client.exceptions.ResourceNotFoundException:
            made = self.client.create_secret(Name=self.name, SecretString=value,
                                             Tags=[{"Key": "managed-by", "Value": "slipway"}])  # fmt: skip
            arn, version_id = made["ARN"], made["VersionId"]
        return {API_KEY_SECRET_ENV: arn, API_KEY_SECRET_VERSION_ENV: version_id}

    def delete(self) -> None:
        if self.kind == "ssm":
            with contextlib.suppress(self.client.exceptions.ParameterNotFound):
                self.client.delete_parameter(Name=self.name)
            return
        with contextlib.suppress(self.client.exceptions.ResourceNotFoundException):
            self.client.delete_secret(SecretId=self.name, ForceDeleteWithoutRecovery=True)

    @property
    def resource(self) -> str:
        return f"{'Secrets Manager secret' if self.kind == 'secretsmanager' else 'SSM SecureString parameter'} " \
               f"{self.name}"  # fmt: skip


def upload_package(s3: Any, config: LambdaConfig, release: Release) -> dict[str, str]:
    """Put the package in S3 once (content-addressed); the environment that makes the handler load it."""
    manifest = read_manifest(release.package_dir)
    prefix = f"{config.model_prefix}{release.service}/{release.package_sha256}/"
    for name in ("package.json", manifest.artifact_file):
        key = prefix + name
        try:
            s3.head_object(Bucket=config.model_bucket, Key=key)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            s3.put_object(Bucket=config.model_bucket, Key=key, Body=(release.package_dir / name).read_bytes(),
                          ServerSideEncryption="AES256")  # fmt: skip
    return {PACKAGE_S3_ENV: f"s3://{config.model_bucket}/{prefix}", PACKAGE_SHA256_ENV: release.package_sha256}


def image_size_mb(image: str) -> tuple[float | None, str]:
    """The image's size as Lambda counts it (uncompressed, every layer) and where the figure comes from."""
    import docker
    import docker.errors

    try:
        client = docker.from_env(timeout=10)
        try:
            return float(client.images.get(image).attrs["Size"]) / 1e6, "as built on this machine's engine"
        except docker.errors.ImageNotFound:
            return None, "not on this machine's engine: Lambda checks it at the update"
        finally:
            client.close()
    except Exception:  # the size is checked where it can be read; Lambda itself refuses an image over 10 GB
        return None, "not readable here"


def newest_image_mb(model: str) -> tuple[float | None, str]:
    """The newest image of ``model`` built on this machine (what the next release's will be about)."""
    import docker

    try:
        client = docker.from_env(timeout=5)
        try:
            images = client.images.list(filters={"label": f"io.slipway.model={model}"})
        finally:
            client.close()
    except Exception:
        return None, "no image built on this machine yet: checked again at deploy"
    if not images:
        return None, "no image built on this machine yet: checked again at deploy"
    newest = max(images, key=lambda i: str(i.attrs.get("Created", "")))
    return float(newest.attrs["Size"]) / 1e6, f"{(newest.tags or [newest.short_id])[0]}, the newest built here"


@dataclass(frozen=True)
class Invocation:
    """One direct invoke of a version with its log tail."""

    payload: Any
    function_error: str  # "Unhandled" when the handler (or its init) failed, else ""
    log: str  # the last 4 KB of the invocation's log (LogType=Tail)
    latency_ms: float
    init_ms: float | None  # Lambda's "Init Duration" in the REPORT line: a cold start
    executed_version: str

    @property
    def tail(self) -> str:
        lines = [f"  | {line}" for line in self.log.rstrip().splitlines()[-_TAIL_LINES:]]
        return "\n".join(lines) or "  (the invocation returned no log)"

    @property
    def error(self) -> str:
        if isinstance(self.payload, dict):
            if self.function_error:
                return f"{self.payload.get('errorType', 'Error')}: {self.payload.get('errorMessage', '')}".strip()
            if "error" in self.payload and "status" in self.payload:
                return f"HTTP {self.payload['status']}: {self.payload['error']}"
        return f"{self.function_error}: {self.payload!r}"[:300] if self.function_error else ""


def invoke(client: Any, function: str, qualifier: str, event: Any) -> Invocation:
    started = time.perf_counter()
    resp = client.invoke(FunctionName=function, Qualifier=qualifier, Payload=json.dumps(event).encode(),
                         LogType="Tail")  # fmt: skip
    latency = (time.perf_counter() - started) * 1000
    raw = resp["Payload"].read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    log = base64.b64decode(resp.get("LogResult") or "").decode(errors="replace")
    init = re.search(r"Init Duration: ([0-9.]+) ms", log)
    return Invocation(payload, str(resp.get("FunctionError") or ""), log, latency,
                      float(init.group(1)) if init else None, str(resp.get("ExecutedVersion", "")))  # fmt: skip


def ready_event(release: Release) -> tuple[dict[str, Any], Any]:
    """The readiness check's direct invoke: the chapter's ``{"features": ROW}`` with the first golden
    sample, and the prediction it must give (``{"inputs": []}``-less packages: /ready as an HTTP event)."""
    samples = read_manifest(release.package_dir).samples
    if samples:
        return {"features": samples[0].input}, {"prediction": samples[0].output}
    return http_event("GET", "/ready"), None


def http_event(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A function URL's event (payload format 2.0) for a direct invoke."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
        "body": None, "isBase64Encoded": False,
    }  # fmt: skip
