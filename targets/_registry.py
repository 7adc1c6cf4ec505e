"""Registry credentials (from the environment or a Prefect Secret block) and a reachability check.

Credentials are never part of the spec: the spec names where they are. For a name ``NAME``,
the environment variables ``NAME_USERNAME`` and ``NAME_PASSWORD`` are read first (upper-cased,
non-alphanumerics as ``_``); else the Prefect Secret block ``NAME`` holding
``{"username": ..., "password": ...}``. The password is kept in a ``SecretStr`` and never logged.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from slipway.errors import ConfigError, TransientTargetError


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
        resp = httpx.get(url, auth=auth, timeout=5)
    except httpx.HTTPError as exc:
        raise TransientTargetError(
            f"the registry {registry} does not answer ({type(exc).__name__})",
            target="image", operation=operation, resource=repository,
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
