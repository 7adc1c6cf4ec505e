"""The MLflow model registry as a source of releases: pin a spec to a version, tell a stale one.

A spec's ``model.source`` may be ``models:/<name>/<version>`` or ``models:/<name>@<alias>``. A run
started by a registry event gets the version as a parameter: ``pin_version`` points the spec at
it, and ``superseded`` says whether a newer one (or the alias's current one) makes it moot, so
that in a burst of registrations only the last one is deployed. The tracking URI comes from
``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from slipway.errors import ConfigError, ModelError
from slipway.spec import ReleaseSpec

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class RegisteredSource:
    name: str
    version: str  # empty for an alias
    alias: str  # empty for a pinned version


def registered_source(source: str) -> RegisteredSource | None:
    """The registry name and version or alias of a ``models:/`` source; None for any other source."""
    m = _REGISTERED.match(source)
    return RegisteredSource(m["name"], m["version"] or "", m["alias"] or "") if m else None


def pin_version(spec: ReleaseSpec, version: str) -> ReleaseSpec:
    """The spec with its registry model pinned to ``version``; ``ConfigError`` for other sources."""
    src = registered_source(spec.model.source)
    if src is None:
        raise ConfigError(
            f"a version ({version}) was given, but model.source {spec.model.source!r} is not in an MLflow registry",
            hint="set model.source to models:/<name>/<version> or models:/<name>@<alias>, or run without a version",
        )
    model = spec.model.model_copy(update={"source": f"models:/{src.name}/{version}", "version": version})
    return spec.model_copy(update={"model": model})  # keeps the spec's folder and hash


def superseded(source: str, version: str) -> str:
    """Why deploying ``version`` of a registry source is moot now (empty: it is not).

    For an alias source: the alias points at another version. For a pinned source: a newer
    version is registered (its own run deploys it).
    """
    src = registered_source(source)
    if src is None:
        return ""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        if src.alias:
            current = str(client.get_model_version_by_alias(src.name, src.alias).version)
            return "" if current == version else f"alias @{src.alias} of {src.name} now points at version {current}"
        newest = max(latest_versions(src.name, client), default=0)
    except MlflowException as exc:
        raise ModelError(
            f"cannot read {source} from the MLflow registry: {exc.message}",
            hint="check MLFLOW_TRACKING_URI and that the model and alias exist",
        ) from exc
    return f"version {newest} of {src.name} is newer" if newest > int(version) else ""


def latest_versions(name: str, client: Any = None) -> list[int]:
    """Every registered version number of model ``name``."""
    client = client or _client()
    return [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]


def aliases(name: str, client: Any = None) -> dict[str, str]:
    """The aliases of model ``name`` and the version each points at."""
    client = client or _client()
    return {alias: str(version) for alias, version in (client.get_registered_model(name).aliases or {}).items()}


def _client() -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ConfigError(
            "the model source is an MLflow registry, but MLflow is not installed", hint="pip install 'slipway[mlflow]'"
        ) from None
    return MlflowClient()
