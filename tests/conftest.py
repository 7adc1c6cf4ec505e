"""Shared fixtures: a private state directory, an API key, free ports, the example model, specs."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = ["tests.targets.fixtures"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = REPO / "examples" / "iris" / "slipway.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's kind of fault goes into its report (JUnit XML properties) for benchmarks/reliability.py."""
    for item in items:
        if (mark := item.get_closest_marker("fault")) is not None:
            item.user_properties.append(("fault", mark.args[0]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(path))
    monkeypatch.delenv("SLIPWAY_LEDGER_URL", raising=False)
    return path


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = secrets.token_hex(16)
    monkeypatch.setenv("SLIPWAY_API_KEY", key)
    return key


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model (version 1) and its samples file, trained once per session."""
    from examples.iris.train import train

    return train(tmp_path_factory.mktemp("iris-v1"), version=1)


@pytest.fixture(scope="session")
def iris_model_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.iris.train import train

    return train(tmp_path_factory.mktemp("iris-v2"), version=2)


SpecWriter = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path, iris_model: Path) -> SpecWriter:
    """Write a spec for the example model on two free local ports; keyword arguments override keys."""

    def write(model: Path | None = None, name: str = "spec", **overrides: Any) -> Path:
        model = model or iris_model
        spec: dict[str, Any] = {
            "model": {"name": "iris", "source": str(model), "samples": str(model.parent / "samples.json")},
            "staging": {"kind": "local", "port": free_port(), "ready_timeout_s": 20},
            "production": {"kind": "local", "port": free_port(), "ready_timeout_s": 20},
            "gate": {
                "load": {"users": 4, "spawn_rate": 4, "duration_s": 2},
                "slo": {"p95_ms": 1000, "p99_ms": 2000, "max_error_rate": 0.0, "min_rps": 1},
            },
        }
        for key, value in overrides.items():
            section, _, leaf = key.partition("__")
            if leaf:
                _merge(spec.setdefault(section, {}), leaf.split("__"), value)
            else:
                spec[section] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write


def _merge(node: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect server for the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
