"""Helpers for the model server's tests (and its benchmark): build packages, run real servers.

``build_package`` writes a package by hand in the format ``serving.manifest`` defines (the package
step in tasks/package.py writes the same). ``start_server`` runs ``python -m serving`` as a real
subprocess on free 127.0.0.1 ports and waits for its ready file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import joblib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from serving.manifest import Manifest, Sample, Schema, sha256_file  # noqa: E402
from tests.conftest import free_port  # noqa: E402

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
KEY = "test-key-" + uuid.uuid4().hex


def train_iris(out_dir: Path, version: int = 1) -> tuple[Any, list[list[float]]]:
    """The example model (examples/iris/train.py) and its sample rows."""
    spec = importlib.util.spec_from_file_location("_iris_train", REPO / "examples" / "iris" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.train(out_dir, version)
    rows = json.loads((out_dir / "samples.json").read_text())["inputs"]
    return joblib.load(path), rows


def build_package(
    pkg: Path,
    model: Any,
    inputs: Sequence[Any],
    *,
    outputs: Sequence[Any] | None = None,
    name: str = "iris",
    version: str = "1",
    task: str = "classification",
    feature_names: list[str] | None = FEATURES,
) -> Path:
    """Write ``pkg/model.joblib`` and ``pkg/package.json``; golden outputs default to model.predict."""
    import sklearn

    pkg.mkdir(parents=True, exist_ok=True)
    artifact = pkg / "model.joblib"
    joblib.dump(model, artifact)
    if outputs is None:
        outputs = model.predict(np.asarray(inputs, dtype=np.float64)).tolist()
    manifest = Manifest(
        name=name,
        version=version,
        artifact_file=artifact.name,
        sha256=sha256_file(artifact),
        artifact_format="joblib",
        source="tests/serving/conftest.py",
        schema=Schema(n_features=len(inputs[0]), feature_names=feature_names, task=task),
        framework={"scikit-learn": sklearn.__version__, "numpy": np.__version__, "joblib": joblib.__version__},
        samples=[Sample(input=list(i), output=o) for i, o in zip(inputs, outputs, strict=True)],
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    (pkg / "package.json").write_text(manifest.to_json())
    return pkg


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    stderr_path: Path
    ready_file: Path
    key: str | None = KEY
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ready['port']}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.ready['control_port']}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def server_command(package: Path, port: int, ready_file: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "serving", "--package", str(package), "--host", "127.0.0.1",
        "--port", str(port), "--control-port", "0", "--ready-file", str(ready_file), *extra,
    ]  # fmt: skip


def server_env(key: str | None = KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    if key is not None:
        env["SLIPWAY_API_KEY"] = key
    env.update(extra)
    return env


def start_server(
    package: Path,
    workdir: Path,
    *extra: str,
    port: int | None = None,
    key: str | None = KEY,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    cpu: int | None = None,
) -> Server:
    """Start ``python -m serving`` and wait until its ready file appears (or it exits: AssertionError)."""
    tag = uuid.uuid4().hex[:8]
    ready_file = workdir / f"ready-{tag}.json"
    stderr_path = workdir / f"stderr-{tag}.log"
    cmd = server_command(package, port if port is not None else free_port(), ready_file, *extra)
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env or server_env(key), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start (exit {proc.wait()}): {stderr_path.read_text()}")
        time.sleep(0.02)
    ready = json.loads(ready_file.read_text())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Server(proc, ready, stderr_path, ready_file, key, headers)


def run_to_exit(cmd: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run a server command that is expected to refuse to start; its exit code and stderr."""
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=timeout, check=False)
    return proc.returncode, proc.stderr.decode()


@contextlib.contextmanager
def running(package: Path, workdir: Path, *extra: str, **kwargs: Any) -> Iterator[Server]:
    server = start_server(package, workdir, *extra, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kit() -> ModuleType:
    """This module: tests reach the helpers through a fixture instead of ``import conftest``."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def iris(workdir: Path) -> tuple[Any, list[list[float]]]:
    return train_iris(workdir / "iris-train")


@pytest.fixture(scope="session")
def iris_package(workdir: Path, iris: tuple[Any, list[list[float]]]) -> Path:
    model, rows = iris
    return build_package(workdir / "iris-pkg", model, rows)


@pytest.fixture(scope="session")
def server(iris_package: Path, workdir: Path) -> Iterator[Server]:
    with running(iris_package, workdir) as srv:
        yield srv
