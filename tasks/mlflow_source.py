"""Models that come from MLflow: a model directory (with an ``MLmodel`` file) or an MLflow URI.

``models:/name/3`` and ``models:/name@champion`` are resolved through the registry (the tracking
URI comes from ``MLFLOW_TRACKING_URI``), so the package records the exact version it got. MLflow is
an optional dependency (``pip install 'slipway[mlflow]'``); the model server never needs it: the
package holds the native model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipway.errors import ConfigError, ModelError
from slipway.registry import RegisteredSource, registered_source

_URI = re.compile(r"^(models|runs|mlflow-artifacts|s3|gs|wasbs|file):/")


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    version: str
    uri: str
    input_example: list[Any] | None


def is_mlflow(source: str, base_dir: Path) -> bool:
    if _URI.match(source):
        return True
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return (path / "MLmodel").is_file()


def load(source: str, base_dir: Path) -> LoadedModel:
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
        local = mlflow.artifacts.download_artifacts(uri) if _URI.match(uri) else uri
        info = mlflow.models.Model.load(local)
        if "sklearn" not in info.flavors:
            raise ModelError(
                f"MLflow model {uri} has the flavors {sorted(info.flavors)}, and Slipway serves sklearn models",
                hint="log the model with mlflow.sklearn.log_model",
            )
        model = mlflow.sklearn.load_model(local)
        example = _input_example(info, local)
    except MlflowException as exc:
        raise ModelError(
            f"cannot load MLflow model {uri}: {exc.message}",
            hint="check the URI, the registry (MLFLOW_TRACKING_URI) and that the version exists",
        ) from exc
    return LoadedModel(model=model, version=version, uri=uri, input_example=example)


def _registered_version(mlflow: Any, source: RegisteredSource) -> str:
    if source.version:
        return source.version
    client = mlflow.MlflowClient()
    return str(client.get_model_version_by_alias(source.name, source.alias).version)


def _input_example(info: Any, local_path: str) -> list[Any] | None:
    """The logged input example as sample rows, if the model has one."""
    try:
        example = info.load_input_example(local_path)
    except Exception:  # an unreadable example is as good as none: model.samples is then required
        return None
    if example is None:
        return None
    rows = example.to_numpy().tolist() if hasattr(example, "to_numpy") else [list(r) for r in example]
    return [{"input": row, "expected": None} for row in rows]
