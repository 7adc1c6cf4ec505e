"""Shared fixtures: a private state directory, an API key, free ports, the example model, specs, and the
real services a test's markers ask for (the Docker Engine, the Kubernetes cluster), checked once."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway import ports

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("SLIPWAY_PREFECT_SERVER", "temporary")  # a CLI a test starts leaves no server behind

pytest_plugins = [
    "tests.targets.fixtures", "tests.targets.ec2.fixtures", "tests.targets.cloudrun.fixtures",
    "tests.targets.sagemaker.fixtures",
    "tests.targets.lambda.fixtures",  # a package named as the kind: imported by name only (a keyword)
]  # fmt: skip

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = REPO / "examples" / "iris" / "slipway.yaml"


# Folders whose tests all need a service, and the markers that say so.
_FOLDER_MARKS = {
    "tests/targets/docker/": ("docker",),
    "tests/targets/kubernetes/": ("kubernetes", "docker"),
    "tests/targets/cloudrun/": ("cloudrun", "docker"),
    "tests/targets/sagemaker/": ("sagemaker", "moto", "docker"),
    "tests/targets/lambda/": ("awslambda", "moto", "docker"),
    "tests/targets/vertex/": ("cloudrun", "docker"),  # Vertex AI is served by the same Google emulator
}


# The suite runs in two processes (`make test`: pytest -n 2 --dist loadgroup). Tests of one file stay
# in one process (their module fixtures are set up once); so do tests that share something of the
# machine by name: the "iris" containers and proxies of docker stages, the cluster and its
# namespaces, the Cloud Run emulator, the EC2 data plane's bridge network, the trigger stack.
# Contract tests go with the group of their kind.
_SHARED = {
    "docker": ("tests/targets/docker/", "tests/flows/test_team.py", "tests/slipway/test_cli.py"),
    "kubernetes": ("tests/targets/kubernetes/", "tests/flows/test_k8s_pool.py"),
    "cloudrun": ("tests/targets/cloudrun/", "tests/serving/test_contracts.py"),
    "ec2": ("tests/targets/ec2/",),
    "sagemaker": ("tests/targets/sagemaker/",),
    "lambda": ("tests/targets/lambda/",),
    "vertex": ("tests/targets/vertex/",),  # an emulator of its own per process: nothing shared by name
    "triggers": ("tests/flows/triggers/",),
}


def _group(item: pytest.Item, path: str) -> str:
    if path == "tests/targets/test_contract.py" and hasattr(item, "callspec"):
        kind = str(item.callspec.id).split("-")[0]
        return kind if kind in _SHARED else f"contract-{kind}"
    return next((group for group, places in _SHARED.items() if path.startswith(places)), path)


@pytest.hookimpl(wrapper=True)  # around xdist's, which reads the groups off the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Markers by folder; the process group of each test (``_SHARED``); a test's kind of fault goes
    into its report (JUnit XML properties) for benchmarks/reliability.py."""
    for item in items:
        path = Path(str(item.fspath)).relative_to(REPO).as_posix()
        item.add_marker(pytest.mark.xdist_group(_group(item, path)))
        for folder, marks in _FOLDER_MARKS.items():
            if path.startswith(folder):
                for mark in marks:
                    item.add_marker(getattr(pytest.mark, mark))
        if item.get_closest_marker("kubernetes") is not None:
            from tests.targets.kubernetes.cluster import FIRST_RUN_TIMEOUT_S

            item.add_marker(pytest.mark.timeout(FIRST_RUN_TIMEOUT_S))
        if (mark := item.get_closest_marker("fault")) is not None:
            item.user_properties.append(("fault", mark.args[0]))
    yield


@pytest.fixture(autouse=True)
def _services(request: pytest.FixtureRequest) -> None:
    """The real services the test's markers name, checked (or started) once; never skipped."""
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_services")
    if request.node.get_closest_marker("kubernetes") is not None:
        request.getfixturevalue("k8s_cluster")


@pytest.fixture(scope="session")
def docker_services() -> None:
    from tests.images import check_docker_services

    check_docker_services()


@pytest.fixture(scope="session")
def k8s_cluster() -> Path:
    from tests.targets.kubernetes.cluster import ensure_cluster

    return ensure_cluster()


def free_port() -> int:
    """A port for a server a test starts, in this xdist worker's own lane (see slipway.ports)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return ports.free_port(int(worker or 0), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


@pytest.fixture(autouse=True)
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


def spec_file(path: Path, model: Path, **overrides: Any) -> Path:
    """Write a spec for ``model`` (a trained example) on two free local ports; keyword arguments
    override keys (``gate__slo={...}`` sets one key of a section)."""
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
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def write_spec(tmp_path: Path, iris_model: Path) -> SpecWriter:
    """Write a spec for the example model (``spec_file``) into the test's folder."""

    def write(model: Path | None = None, name: str = "spec", **overrides: Any) -> Path:
        return spec_file(tmp_path / f"{name}.yaml", model or iris_model, **overrides)

    return write


def _merge(node: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


@pytest.fixture(scope="session")
def postgres_server() -> tuple[str, str]:
    """The PostgreSQL server of scripts/services/postgres.sh (started unless it answers): the URL of
    its database ``slipway`` and the password of its role."""
    script = ["bash", str(REPO / "scripts" / "services" / "postgres.sh")]
    subprocess.run([*script, "up"], check=True, capture_output=True)
    url, password = (subprocess.run([*script, cmd], check=True, capture_output=True, text=True).stdout.strip()
                     for cmd in ("url", "password"))  # fmt: skip
    return url, password


@contextlib.contextmanager
def fresh_database(server: tuple[str, str]) -> Iterator[str]:
    """A new, empty database of that server (its URL, without the password), dropped afterwards."""
    import psycopg

    url, password = server
    name = f"test_{secrets.token_hex(4)}"
    with psycopg.connect(url, password=password, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, password=password, autocommit=True) as admin:  # the test may have changed PGPASSWORD
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database of that server for this test, the password in PGPASSWORD (not the URL)."""
    monkeypatch.setenv("PGPASSWORD", postgres_server[1])
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty ledger of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger' / 'ledger.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect server for the session's flow runs, on a port of this worker's lane (the
    harness's own choice, bind(0), can be taken by another test's connection before the server binds)."""
    from prefect.testing import utilities

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(utilities, "_find_available_port", free_port)
        with utilities.prefect_test_harness(server_startup_timeout=120):
            yield


# What a deploy process holds; none of it may reach the code a model file runs.
SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789", "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/gcp.json",
    "PREFECT_API_KEY": "pnu_0123456789", "REGISTRY_PASSWORD": "registry-secret-0123", "KUBECONFIG": "/secrets/kube",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-0123", "PGPASSWORD": "pg-secret-0123456",
}  # fmt: skip


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch, api_key: str) -> dict[str, str]:
    """Credentials in this process's environment, as a deploy worker has them (and the endpoint's key)."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return {**SECRETS, "SLIPWAY_API_KEY": api_key}


@pytest.fixture
def trojan(tmp_path: Path, iris_model: Path) -> tuple[Path, Path]:
    """A malicious pickle of the example model, and where its payload writes what it saw."""
    import joblib

    from tests.fakes.models import write_trojan

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    dumps.chmod(0o777)  # the sandbox may run as nobody
    return write_trojan(tmp_path / "trojan.pkl", joblib.load(iris_model), dumps / "env.jsonl"), dumps / "env.jsonl"
