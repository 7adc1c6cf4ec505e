"""Models that come from MLflow: a model directory (with an ``MLmodel`` file) or an MLflow URI.

This module fetches (resolves and downloads); it never loads a model: loading runs the model's code,
which happens only in the package step's sandbox (``tasks/_inspect.py``).

``models:/name/3`` and ``models:/name@champion`` are resolved through the registry (the tracking
URI comes from ``MLFLOW_TRACKING_URI``), so the package records the exact version it got. MLflow is
an optional dependency (``pip install 'slipway[mlflow]'``); the model server never needs it: the
package holds the native model.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slipway.errors import ConfigError, ModelError
from slipway.registry import RegisteredSource, registered_source

_URI = re.compile(r"^(models|runs|mlflow-artifacts|s3|gs|wasbs|file):/")


@dataclass(frozen=True)
class Fetched:
    """An MLflow model copied to a local folder, not loaded: loading it runs code (tasks/_inspect.py does)."""

    local: Path
    version: str  # the registry version, "" for other sources
    uri: str


def is_mlflow(source: str, base_dir: Path) -> bool:
    if _URI.match(source):
        return True
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return (path / "MLmodel").is_file()


def fetch(source: str, base_dir: Path, dest: Path) -> Fetched:
    """Resolve ``source`` (a registry version or alias is pinned to its number) and copy its files to
    ``dest``; refuse a flavor Slipway cannot serve (read from the MLmodel file, as YAML)."""
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise ConfigError(
            f"model source {source!r} is an MLflow model, but MLflow is not installed",
            hint="pip install 'slipway[mlflow]'",
        ) from None
    uri, version = source, ""
    if not _URI.match(source):
        path = Path(source).expanduser()
        uri = str(path if path.is_absolute() else (base_dir / path).resolve())
    try:
        if registered := registered_source(source):
            version = _registered_version(mlflow, registered)
            uri = f"models:/{registered.name}/{version}"
        if _URI.match(uri):
            dest.mkdir(parents=True, exist_ok=True)
            local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dest)))
        else:
            shutil.copytree(uri, dest)
            local = dest
        flavors = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors", {})
    except MlflowException as exc:
        raise ModelError(
            f"cannot fetch MLflow model {uri}: {exc.message}",
            hint="check the URI, the registry (MLFLOW_TRACKING_URI) and that the version exists",
        ) from exc
    if "sklearn" not in flavors:
        raise ModelError(
            f"MLflow model {uri} has the flavors {sorted(flavors)}, and Slipway serves sklearn models",
            hint="log the model with mlflow.sklearn.log_model",
        )
    return Fetched(local, version, uri)


def _registered_version(mlflow: Any, source: RegisteredSource) -> str:
    if source.version:
        return source.version
    client = mlflow.MlflowClient()
    return str(client.get_model_version_by_alias(source.name, source.alias).version)
