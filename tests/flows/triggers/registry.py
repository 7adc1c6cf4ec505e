"""Registering model versions in a real MLflow registry, as a user would."""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def register(name: str, c: float = 1.0) -> str:
    """Log a fitted iris model and register it as a new version of ``name``; returns the version."""
    import mlflow

    data = load_iris()
    model = LogisticRegression(max_iter=500, C=c).fit(data.data, data.target)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
    return str(info.registered_model_version)


def register_unloadable(name: str) -> str:
    """Register a version of ``name`` that Slipway cannot load (a pyfunc model, not sklearn)."""
    import mlflow
    from mlflow.pyfunc import PythonModel

    class Broken(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # untyped: MLflow reads hints
            raise RuntimeError("broken")

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Broken(), registered_model_name=name)
    return str(info.registered_model_version)


def register_burst(name: str, count: int) -> list[str]:
    """Register ``count`` new versions of ``name`` back to back (one logged model, as fast as MLflow takes them)."""
    import mlflow
    from mlflow import MlflowClient

    data = load_iris()
    model = LogisticRegression(max_iter=500, C=0.5).fit(data.data, data.target)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model")
    client = MlflowClient()
    return [
        str(client.create_model_version(name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id).version)
        for _ in range(count)
    ]


def register_trojan(name: str, dump: Path) -> str:
    """Register a version of ``name`` whose model file runs a payload when loaded (see
    tests/fakes/models.py ``trojan_of``), then is a working iris model."""
    import mlflow

    from tests.fakes.models import trojan_of

    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(trojan_of(model, dump), name="model", registered_model_name=name,
                                        serialization_format="pickle")  # fmt: skip
    return str(info.registered_model_version)
