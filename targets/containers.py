"""Docker Engines and OCI registries, for the image step and the targets that run images.

* Engines: ``connect`` reaches one through the Docker SDK (the local socket, ``DOCKER_HOST``,
  ``ssh://`` or ``tcp://``); ``map_error`` turns its failures into Slipway's errors by type and HTTP
  status code (never by message text): 404 is "not found", 408/429/502/503/504 and timeouts are
  transient, anything else is a plain error of the calling step.
* Registries: credentials are never part of the spec, which names where they are. For a name
  ``NAME``, the environment variables ``NAME_USERNAME`` and ``NAME_PASSWORD`` are read first
  (upper-cased, non-alphanumerics as ``_``); else the Prefect Secret block ``NAME`` holding
  ``{"username": ..., "password": ...}``. The password is kept in a ``SecretStr`` and never logged.
  An Artifact Registry host (``LOCATION-docker.pkg.dev``) named by no credentials is pushed to with
  Google's Application Default Credentials (``registry_credentials``): the user
  ``oauth2accesstoken`` and a fresh access token, as ``gcloud auth configure-docker`` does.
  ``check_registry`` fails early on a registry that does not answer or refuses the credentials.
  An Amazon ECR registry (``<account>.dkr.ecr.<region>.amazonaws.com``) named by no credentials
  gets ECR's own: a 12-hour token from ``ecr:GetAuthorizationToken`` (``registry_credentials``),
  with the default AWS chain (``AWS_PROFILE``; ``AWS_ENDPOINT_URL_ECR`` points it elsewhere).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass

import docker
import docker.errors
import httpx
import requests
from pydantic import SecretStr

from slipway.errors import (
    At,
    ConfigError,
    ImageError,
    OperationError,
    SlipwayError,
    TargetError,
    TransientImageError,
    TransientTargetError,
)
from slipway.http import tls

_TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
_TRANSIENT_OF: dict[type[OperationError], type[OperationError]] = {
    TargetError: TransientTargetError,
    ImageError: TransientImageError,
}


def describe_host(host: str) -> str:
    return host or "the local Docker Engine (DOCKER_HOST or /var/run/docker.sock)"


def connect(
    host: str, *, at: At, error: type[OperationError] = TargetError, timeout_s: float = 120
) -> docker.DockerClient:
    """A client for the engine at ``host`` ('' = from the environment), checked with a ping; an
    engine that does not answer is an ``error`` (the calling step's kind) at ``at``."""
    try:
        if host:
            client = docker.DockerClient(base_url=host, timeout=int(timeout_s))
        else:
            client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:  # DockerException, OSError, requests and paramiko errors alike
        hint = "start it (scripts/services/docker.sh up) or fix the target's host / DOCKER_HOST"
        if host.startswith("ssh://"):
            hint = (
                "check that the ssh server answers, that your key is accepted (ssh-agent or ~/.ssh/config) "
                "and the host key is in ~/.ssh/known_hosts, and that the remote user may use docker"
            )
        raise error(f"cannot reach {describe_host(host)}: {type(exc).__name__}: {exc}", at=at, hint=hint) from exc
    return client


def ssh_hostname(host: str) -> str | None:
    """The host name of an ``ssh://user@host:port`` engine URL, None for other kinds of URL."""
    if not host.startswith("ssh://"):
        return None
    return urllib.parse.urlsplit(host).hostname


def map_error(exc: Exception, *, at: At, error: type[OperationError] = TargetError, hint: str = "") -> SlipwayError:
    """A Docker SDK / transport exception as an ``error`` of the calling step (its transient
    subclass where a retry may pass)."""
    if isinstance(exc, SlipwayError):
        return exc
    status = exc.status_code if isinstance(exc, docker.errors.APIError) else None
    transient = (status in _TRANSIENT_STATUS) or isinstance(exc, requests.Timeout | socket.timeout)
    detail = exc.explanation if isinstance(exc, docker.errors.APIError) and exc.explanation else str(exc)
    cls = _TRANSIENT_OF[error] if transient else error
    code = f" (HTTP {status})" if status else ""
    return cls(f"{type(exc).__name__}{code}: {detail}", at=at, hint=hint)


def port_answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: SecretStr

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password.get_secret_value()}


def resolve_credentials(name: str) -> Credentials | None:
    """The credentials named ``name``; None for a registry without auth (empty name)."""
    if not name:
        return None
    prefix = re.sub(r"[^A-Z0-9]", "_", name.upper())
    user, password = os.environ.get(f"{prefix}_USERNAME", ""), os.environ.get(f"{prefix}_PASSWORD", "")
    if user and password:
        return Credentials(user, SecretStr(password))
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(name).get()  # type: ignore[union-attr]
    except Exception as exc:
        raise ConfigError(
            f"registry credentials {name!r} not found: neither ${prefix}_USERNAME/${prefix}_PASSWORD are set "
            f"nor a Prefect Secret block {name!r} can be loaded ({type(exc).__name__})",
            hint=f"export {prefix}_USERNAME and {prefix}_PASSWORD, or create the Secret block {name!r}",
        ) from None
    data = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict) or not data.get("username") or not data.get("password"):
        raise ConfigError(
            f"the Prefect Secret block {name!r} does not hold {{'username': ..., 'password': ...}}",
            hint="store the registry credentials as a JSON object with username and password",
        )
    return Credentials(str(data["username"]), SecretStr(str(data["password"])))


ARTIFACT_REGISTRY_SUFFIX = "-docker.pkg.dev"
ECR_HOST = re.compile(r"^(?P<account>[0-9]{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


def registry_credentials(repository: str, name: str) -> Credentials | None:
    """The credentials to push to (or pull from) ``repository``: those named ``name``; else, for an
    Artifact Registry host, an access token of Google's Application Default Credentials; for an ECR
    registry, a token from ECR; else none."""
    if name:
        return resolve_credentials(name)
    host = registry_of(repository) or ""
    if host.endswith(ARTIFACT_REGISTRY_SUFFIX):
        return _google_credentials(host)
    ecr = ECR_HOST.match(host)
    return ecr_credentials(host, ecr["account"], ecr["region"]) if ecr else None


def _google_credentials(host: str) -> Credentials:
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ConfigError(
            f"no Google credentials to push to {host}: {type(exc).__name__}: {exc}",
            hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS; the identity "
            "needs roles/artifactregistry.writer on the repository",
        ) from None
    return Credentials("oauth2accesstoken", SecretStr(str(creds.token)))


def ecr_credentials(host: str, account: str, region: str) -> Credentials:
    """An ECR registry's credentials: ``AWS`` and the token ``GetAuthorizationToken`` gives (12 hours)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from targets.aws import map_aws_error, session

    at = At("image", "push", host)
    try:
        ecr = session(region).client("ecr")
        data = ecr.get_authorization_token(registryIds=[account])["authorizationData"][0]
    except (ClientError, BotoCoreError) as exc:
        mapped = map_aws_error(exc, at=at)
        if isinstance(mapped, ConfigError):
            raise mapped from exc
        cls = TransientImageError if isinstance(mapped, TransientTargetError) else ImageError
        raise cls(mapped.message.removeprefix(f"{at} "), at=at, hint=mapped.hint) from exc
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Credentials(user, SecretStr(password))


def registry_of(repository: str) -> str | None:
    """The registry host[:port] of a repository, None for Docker Hub's implicit one."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def check_registry(repository: str, creds: Credentials | None, *, operation: str) -> None:
    """Fail early, with a clear error, on a registry that does not answer or refuses the credentials.

    Judged by the HTTP status of ``GET /v2/`` (the registry API's version check): 401 with the
    credentials given (basic auth) means refused. Registries with token auth are left to the push.
    """
    registry = registry_of(repository)
    if registry is None:
        return
    local = registry.split(":")[0] in ("localhost", "127.0.0.1") or registry.startswith("127.")
    url = f"{'http' if local else 'https'}://{registry}/v2/"
    auth = (creds.username, creds.password.get_secret_value()) if creds else None
    try:
        resp = httpx.get(url, auth=auth, timeout=5, verify=tls())
    except httpx.HTTPError as exc:
        raise TransientImageError(
            f"the registry {registry} does not answer ({type(exc).__name__})", at=At("image", operation, repository),
            hint="start it (scripts/services/docker.sh up) or fix image.repository in the spec",
        ) from exc  # fmt: skip
    basic = resp.headers.get("www-authenticate", "").lower().startswith("basic")
    if resp.status_code == 401 and (basic or creds is None):
        raise ConfigError(
            f"the registry {registry} refused {'the credentials of ' + creds.username if creds else 'anonymous access'}"
            f" (HTTP 401)",
            hint="set image.registry_credentials in the spec and the matching _USERNAME/_PASSWORD variables "
            "(or Prefect Secret block) to an account that may push",
        )
