"""The launcher: refusing to start (exit codes + one-line messages), SO_REUSEPORT, workers, PORT, 500s."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

ROW = [5.1, 3.5, 1.4, 0.2]


def assert_one_line(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.fault("bad input")
@pytest.mark.parametrize("key", [None, "", "   "])
def test_refuses_to_start_without_key(kit: Any, iris_package: Path, workdir: Path, key: str | None) -> None:
    env = kit.server_env(None) if key is None else kit.server_env(None, SLIPWAY_API_KEY=key)
    code, stderr = kit.run_to_exit(kit.server_command(iris_package, kit.free_port(), workdir / "never.json"), env)
    assert code == 2
    assert_one_line(stderr, "SLIPWAY_API_KEY", "--no-auth")
    assert not (workdir / "never.json").exists()


@pytest.mark.fault("bad input")
def test_refuses_tampered_artifact(kit: Any, iris_package: Path, workdir: Path) -> None:
    pkg = workdir / "tampered"
    shutil.copytree(iris_package, pkg)
    with (pkg / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    code, stderr = kit.run_to_exit(kit.server_command(pkg, kit.free_port(), workdir / "never.json"), kit.server_env())
    assert code == 3
    assert_one_line(stderr, "sha256", "model.joblib", "refusing")


@pytest.mark.fault("bad input")
def test_refuses_golden_sample_mismatch(kit: Any, workdir: Path, iris: tuple[Any, list[list[float]]]) -> None:
    model, rows = iris
    outputs = model.predict(rows).tolist()
    outputs[2] = (outputs[2] + 1) % 3
    pkg = kit.build_package(workdir / "golden-mismatch", model, rows, outputs=outputs)
    code, stderr = kit.run_to_exit(kit.server_command(pkg, kit.free_port(), workdir / "never.json"), kit.server_env())
    assert code == 3
    assert_one_line(stderr, "golden sample 2", f"recorded {outputs[2]}")


@pytest.mark.fault("bad input")
def test_refuses_missing_package(kit: Any, workdir: Path) -> None:
    code, stderr = kit.run_to_exit(
        kit.server_command(workdir / "no-such-package", kit.free_port(), workdir / "never.json"), kit.server_env()
    )
    assert code == 3
    assert_one_line(stderr, "no-such-package", "does not exist")


@pytest.mark.fault("bad input")
def test_port_held_by_plain_socket(kit: Any, iris_package: Path, workdir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, stderr = kit.run_to_exit(kit.server_command(iris_package, port, workdir / "never.json"), kit.server_env())
    assert code == 4
    assert_one_line(stderr, f"port {port}", "in use")


def test_two_servers_share_a_port_with_reuseport(kit: Any, server: Any, iris_package: Path, workdir: Path) -> None:
    port = server.ready["port"]
    second = kit.start_server(iris_package, workdir, port=port)
    try:
        assert second.ready["port"] == port and second.ready["pid"] != server.ready["pid"]
        pids = set()
        for _ in range(40):  # fresh connections: the kernel spreads them over both listeners
            with httpx.Client(headers=server.headers) as client:
                pids.add(client.get(f"http://127.0.0.1:{port}/metadata").json()["pid"])
                assert client.post(f"http://127.0.0.1:{port}/predict", json={"inputs": ROW}).status_code == 200
        assert pids == {server.proc.pid, second.proc.pid}
        # each control port answers for its own process only
        assert httpx.get(f"{second.control_url}/metadata", headers=server.headers).json()["pid"] == second.proc.pid
    finally:
        assert second.stop() == 0  # SIGTERM: graceful shutdown, exit 0
    for _ in range(10):  # the first server still has the port
        with httpx.Client(headers=server.headers) as client:
            assert client.post(f"http://127.0.0.1:{port}/predict", json={"inputs": ROW}).status_code == 200


def test_workers_port_env_and_no_auth(kit: Any, iris_package: Path, workdir: Path) -> None:
    port = kit.free_port()
    ready_file = workdir / "workers-ready.json"
    cmd = kit.server_command(iris_package, port, ready_file, "--workers", "2", "--no-auth")
    cmd.remove("--port")
    cmd.remove(str(port))  # the port comes from $PORT, as in an image
    env = kit.server_env(None, PORT=str(port))
    proc = subprocess.Popen(cmd, cwd=kit.REPO, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        ready = json.loads(ready_file.read_text())
        assert ready["port"] == port and ready["pid"] == proc.pid and ready["workers"] == 2
        workers = {child.pid for child in psutil.Process(proc.pid).children()}
        assert len(workers) == 2
        pids = set()
        for _ in range(30):
            with httpx.Client() as client:  # no key needed
                assert client.post(f"http://127.0.0.1:{port}/predict", json={"inputs": ROW}).status_code == 200
                pids.add(client.get(f"http://127.0.0.1:{port}/metadata").json()["pid"])
        assert pids == workers
    finally:
        proc.terminate()
        code = proc.wait(15)
    assert code == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers)
    assert proc.stderr is not None
    assert "auth OFF" in proc.stderr.read().decode()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_held_port_takes_no_connection_until_sigusr1(
    kit: Any, iris_package: Path, workdir: Path, workers: int
) -> None:
    """--hold: checked on its control port while the public port stays closed, then served on SIGUSR1."""
    import signal
    import socket

    port = kit.free_port()
    server = kit.start_server(iris_package, workdir, "--hold", "--workers", str(workers), port=port)
    try:
        assert json.loads(server.ready_file.read_text())["serving"] is False
        assert httpx.get(f"{server.control_url}/ready", timeout=2).status_code == 200
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # bound, not listening: refused
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not json.loads(server.ready_file.read_text())["serving"]:
            assert time.monotonic() < deadline, "the held port was not served after SIGUSR1"
            time.sleep(0.02)
        with httpx.Client(headers=server.headers) as client:
            assert client.post(f"http://127.0.0.1:{port}/predict", json={"inputs": ROW}).status_code == 200
        assert "now serving" in server.stderr
    finally:
        assert server.stop() == 0  # and it drains and stops like any other


FLAKY = '''
import numpy as np

class Flaky:
    """Predicts 0, but raises on values it has never seen: valid-shaped input, a failing model."""
    n_features_in_ = 4

    def predict(self, X):
        if (X > 100).any():
            raise ValueError("feature value out of the training range")
        return np.zeros(len(X), dtype=np.int64)
'''


@pytest.mark.fault("injected failure")
def test_model_error_is_a_500_and_the_server_survives(kit: Any, workdir: Path, monkeypatch: Any) -> None:
    mods = workdir / "mods"
    mods.mkdir(exist_ok=True)
    (mods / "flaky_model.py").write_text(textwrap.dedent(FLAKY))
    monkeypatch.syspath_prepend(str(mods))
    from flaky_model import Flaky  # type: ignore[import-not-found]

    pkg = kit.build_package(workdir / "flaky", Flaky(), [ROW])
    env = kit.server_env(kit.KEY, PYTHONPATH=str(mods))
    with kit.running(pkg, workdir, env=env) as srv:
        url = f"{srv.url}/predict"
        bad = httpx.post(url, json={"inputs": [1, 2, 3, 1000]}, headers=srv.headers)
        assert bad.status_code == 500
        assert "ValueError" in bad.json()["error"] and "training range" in bad.json()["error"]
        assert httpx.post(url, json={"inputs": ROW}, headers=srv.headers).json() == {"predictions": [0]}
        metrics = httpx.get(f"{srv.url}/metrics", headers=srv.headers).text
        assert 'slipway_requests_total{path="/predict",status="500"} 1' in metrics
        assert "slipway_prediction_errors_total 1" in metrics
    assert "training range" in srv.stderr
