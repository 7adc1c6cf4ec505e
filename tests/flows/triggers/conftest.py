"""The trigger tests' stack, started by the project's own scripts: a Prefect server with a worker
(scripts/services/prefect.sh), MLflow on SQLite with Slipway's webhook receiver
(scripts/services/mlflow.sh). Ports on 127.0.0.1, state under a temp dir, all stopped afterwards."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.ledger import SqliteLedger
from tests.conftest import REPO, free_port

SCRIPTS = REPO / "scripts" / "services"
MODEL = "iris"


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    spec: Path
    state_dir: Path
    tmp: Path
    prefect_api: str
    mlflow_uri: str
    receiver: str
    secret: str
    api_key: str

    @property
    def ledger(self) -> SqliteLedger:
        return SqliteLedger(self.state_dir / "ledger.sqlite")

    @property
    def production_port(self) -> int:
        return int(yaml.safe_load(self.spec.read_text())["production"]["port"])


def _spec(tmp: Path) -> Path:
    spec: dict[str, Any] = {
        "model": {"name": MODEL, "source": f"models:/{MODEL}/1", "samples": str(REPO / "examples/iris/samples.json")},
        "staging": {"kind": "local", "port": free_port(), "ready_timeout_s": 30},
        "production": {"kind": "local", "port": free_port(), "ready_timeout_s": 30},
        "gate": {"load": {"users": 2, "spawn_rate": 2, "duration_s": 2},
                 "slo": {"p95_ms": 2000, "p99_ms": 4000, "max_error_rate": 0.0, "min_rps": 1}},
    }  # fmt: skip
    path = tmp / "slipway.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _script(name: str, action: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["bash", str(SCRIPTS / name), action], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _finish(procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> dict[str, str]:
    failed = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            failed[name] = out.decode(errors="replace")[-3000:]
    return failed


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("triggers")
    ports = {k: str(free_port()) for k in ("SLIPWAY_PREFECT_PORT", "SLIPWAY_MLFLOW_PORT", "SLIPWAY_WEBHOOK_PORT")}
    secret, api_key = secrets.token_hex(24), secrets.token_hex(16)
    spec = _spec(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SLIPWAY_"))}
    env |= ports | {
        "SLIPWAY_VAR": str(tmp / "var"),
        "SLIPWAY_STATE_DIR": str(tmp / "state"),
        "SLIPWAY_SPEC": str(spec),
        "SLIPWAY_WEBHOOK_SECRET": secret,
        "SLIPWAY_API_KEY": api_key,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['SLIPWAY_MLFLOW_PORT']}",
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['SLIPWAY_PREFECT_PORT']}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    }
    s = Stack(
        env=env, spec=spec, state_dir=tmp / "state", tmp=tmp, prefect_api=env["PREFECT_API_URL"],
        mlflow_uri=env["MLFLOW_TRACKING_URI"], receiver=f"http://127.0.0.1:{ports['SLIPWAY_WEBHOOK_PORT']}/mlflow",
        secret=secret, api_key=api_key,
    )  # fmt: skip
    started = time.monotonic()
    try:
        failed = _finish({n: _script(n, "up", env) for n in ("mlflow.sh", "prefect.sh")}, timeout=400)
        if failed:
            pytest.fail("the trigger stack did not start:\n" + "\n".join(f"--- {n}:\n{o}" for n, o in failed.items()))
        print(f"\ntrigger stack up in {time.monotonic() - started:.0f} s")
        with pytest.MonkeyPatch.context() as mp, temporary_settings({PREFECT_API_URL: s.prefect_api}):
            for key in ("MLFLOW_TRACKING_URI", "SLIPWAY_STATE_DIR", "SLIPWAY_API_KEY", "SLIPWAY_WEBHOOK_SECRET"):
                mp.setenv(key, env[key])
            yield s
    finally:
        subprocess.run(
            [str(REPO / ".venv/bin/slipway"), "teardown", str(spec)], env=env, capture_output=True, timeout=120
        )
        _finish({n: _script(n, "down", env) for n in ("prefect.sh", "mlflow.sh")}, timeout=120)


@pytest.fixture(autouse=True)
def state_dir(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stack's state dir, not a test's own (tests/conftest.py): what these tests run in-process
    (the watcher) shares the worker's and the receiver's tables, as on one machine."""
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(stack.state_dir))
    return stack.state_dir
