"""A team's set-up, for real: a Prefect server (scripts/services/prefect.sh, no worker of its own),
the ledger on PostgreSQL (scripts/services/postgres.sh), packages and gate reports in the moto
server's S3 (SLIPWAY_STORE_URL=s3://...), and two process workers on the same work
pool, each in its own network namespace (scripts/services/netns.sh, its own hostname) with its own
empty state directory: two machines that share only those services and a Docker Engine.

Each worker polls its own work queue of the pool, so a test chooses where a run goes. The tests
build on each other in file order (one production, one history): two releases submitted at once,
a rollback on the other machine, then a worker killed in the middle of a promotion."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import psutil
import pytest
import yaml

from slipway.ledger import Outcome
from slipway.ledgers import ledger_at
from slipway.release import Stage
from slipway.store import location_of
from tests.conftest import REPO, free_port, fresh_database, spec_file
from tests.images import TEST_REPOSITORY
from tests.targets.ec2.fixtures import new_bucket

# Each test waits for flow runs on two workers sharing 2 cores: minutes under load, not seconds.
pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.postgres, pytest.mark.moto, pytest.mark.timeout(900)]

SCRIPTS = REPO / "scripts" / "services"
WORKERS = {"a": 21, "b": 22}  # name → subnet of its namespace (10.231.N.0/30)
RUN_TIMEOUT_S = 300


@dataclass(frozen=True)
class Team:
    env: dict[str, str]  # of the workers, less what differs between them
    tmp: Path
    v1: Path
    v2: Path
    ledger_url: str
    api_key: str
    bucket: str
    workers: dict[str, subprocess.Popen[bytes]]

    def slipway(self, worker: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The CLI on a worker's machine: its namespace, its environment."""
        return subprocess.run(
            ["bash", str(SCRIPTS / "netns.sh"), "exec", worker, str(REPO / ".venv/bin/slipway"), *args],
            env=self.worker_env(worker), cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def worker_env(self, worker: str) -> dict[str, str]:
        home = self.tmp / f"worker-{worker}"
        return {**self.env, "SLIPWAY_STATE_DIR": str(home / "state"), "PREFECT_HOME": str(home / "prefect")}

    def served_sha(self) -> str:
        url = f"http://127.0.0.1:{_port(self.v1, 'production')}/metadata"
        return str(httpx.get(url, headers={"X-API-Key": self.api_key}, timeout=5).json()["sha256"])

    @property
    def ledger(self) -> Any:
        return ledger_at(self.ledger_url)


def _port(spec: Path, stage: str) -> int:
    return int(yaml.safe_load(spec.read_text())[stage]["port"])


def _script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["bash", str(SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{name} {' '.join(args)} failed:\n{proc.stdout}{proc.stderr[-3000:]}"
    return proc.stdout.strip()


def _start_worker(team_env: dict[str, str], tmp: Path, name: str) -> subprocess.Popen[bytes]:
    home = tmp / f"worker-{name}"
    (home / "state").mkdir(parents=True)
    env = {**team_env, "SLIPWAY_STATE_DIR": str(home / "state"), "PREFECT_HOME": str(home / "prefect")}
    command = (f"hostname worker-{name} && exec {REPO}/.venv/bin/prefect worker start --pool slipway "
               f"--work-queue {name} --type process --name worker-{name}")  # fmt: skip
    with open(home / "worker.log", "wb") as log:
        return subprocess.Popen(
            ["bash", str(SCRIPTS / "netns.sh"), "exec", name, "unshare", "--uts", "bash", "-c", command],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and the flow run it runs, as a lost machine ends them."""
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def team(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: tuple[str, str],
    moto_url: str,
    iris_model: Path,
    iris_model_v2: Path,
) -> Iterator[Team]:

    tmp = tmp_path_factory.mktemp("team")
    bucket, aws = new_bucket(moto_url, "slipway-team")
    ports = {"staging": free_port(), "production": free_port()}
    stages = {s: {"kind": "docker", "port": p, "ready_timeout_s": 120} for s, p in ports.items()}
    v1, v2 = (spec_file(tmp / f"v{i}.yaml", model, image={"repository": TEST_REPOSITORY}, **stages)
              for i, model in ((1, iris_model), (2, iris_model_v2)))  # fmt: skip
    api_key = secrets.token_hex(16)
    prefect_port = str(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "SLIPWAY_", "PG", "AWS_"))}
    server_env = base | {
        "SLIPWAY_VAR": str(tmp / "var"), "SLIPWAY_PREFECT_PORT": prefect_port, "SLIPWAY_SPEC": str(v1),
        "SLIPWAY_WORKER": "0", "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
    }  # fmt: skip
    api = f"http://127.0.0.1:{prefect_port}/api"
    _script("postgres.sh", "allow", "10.231.0.0/16")
    with fresh_database(postgres_server) as ledger_url:
        env = base | {
            "PATH": server_env["PATH"], "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1", "SLIPWAY_LEDGER_URL": ledger_url, "PGPASSWORD": postgres_server[1],
            "SLIPWAY_API_KEY": api_key, "SLIPWAY_STORE_URL": f"s3://{bucket}/team", **aws,
        }  # fmt: skip
        workers: dict[str, subprocess.Popen[bytes]] = {}
        try:
            _script("prefect.sh", "up", env=server_env)
            for name, subnet in WORKERS.items():
                _script("netns.sh", "up", name, str(subnet))
                subprocess.run([str(REPO / ".venv/bin/prefect"), "work-queue", "create", name, "--pool", "slipway"],
                               env=env, check=True, capture_output=True)  # fmt: skip
                workers[name] = _start_worker(env, tmp, name)
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: api}), pytest.MonkeyPatch.context() as mp:
                mp.setenv("PGPASSWORD", postgres_server[1])  # this process reads the shared ledger too
                yield Team(env, tmp, v1, v2, ledger_url, api_key, bucket, workers)
        finally:
            for proc in workers.values():
                _kill_tree(proc)
            teardown_env = env | {"SLIPWAY_STATE_DIR": str(tmp / "teardown")}
            for stage in ("staging", "production"):
                subprocess.run([str(REPO / ".venv/bin/slipway"), "teardown", str(v1), "--stage", stage],
                               env=teardown_env, capture_output=True, timeout=120)  # fmt: skip
            for name in WORKERS:
                _script("netns.sh", "down", name)
            _script("prefect.sh", "down", env=server_env)


def _submit(deployment: str, spec: Path, worker: str) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters={"spec_path": str(spec)}, work_queue_name=worker, timeout=0)


def _finished(run_id: Any, timeout: float = RUN_TIMEOUT_S) -> Any:
    from prefect import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout:.0f} s (last state {run.state})")


def _log(team: Team, worker: str) -> str:
    return (team.tmp / f"worker-{worker}" / "worker.log").read_text(errors="replace")[-4000:]


def _span(run: Any) -> tuple[datetime, datetime]:
    assert run.start_time and run.end_time
    return run.start_time, run.end_time


def test_two_releases_at_once_on_two_machines_run_one_after_the_other(team: Team) -> None:
    first, second = _submit("release/release", team.v1, "a"), _submit("release/release", team.v2, "b")
    runs = [_finished(first.id), _finished(second.id)]
    for run, worker in zip(runs, "ab", strict=True):
        assert run.state.is_completed(), f"{run.name}: {run.state.message}\n{_log(team, worker)}"
    (_, end), (start, _) = sorted(_span(r) for r in runs)
    assert end <= start, f"the releases overlapped: one ended at {end}, the other started at {start}"

    records = team.ledger.releases("iris")
    assert [r.outcome for r in records] == [Outcome.PROMOTED, Outcome.PROMOTED]
    assert {r.flow_run_id for r in records} == {str(first.id), str(second.id)}
    assert team.served_sha() == team.ledger.live("iris", Stage.PRODUCTION).release.package_sha256
    # neither machine holds the history on its disk: both print the same table from the shared ledger
    tables = [team.slipway(w, "releases", str(team.v1)) for w in "ab"]
    assert tables[0].returncode == 0, tables[0].stderr
    assert tables[0].stdout == tables[1].stdout and all(r.id in tables[0].stdout for r in records)
    for w in "ab":
        assert not (team.tmp / f"worker-{w}" / "state" / "ledger.sqlite").exists()
    # the packages are in the bucket, and the ledger names them there, not on a worker's disk
    import psycopg

    with psycopg.connect(team.ledger_url) as db:
        stored = [row[0] for row in db.execute("SELECT package_dir FROM slipway.releases")]
    assert sorted(stored) == sorted(location_of(r.release.package_dir) for r in records)  # no machine's path
    keys = _keys(team)
    assert all(any(k.startswith(f"team/packages/{location}/") for k in keys) for location in stored), keys


def _keys(team: Team) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=team.env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    return [o["Key"] for o in s3.list_objects_v2(Bucket=team.bucket).get("Contents", [])]


def test_a_rollback_on_the_other_machine_returns_production_to_the_previous_release(team: Team) -> None:
    before, live = team.ledger.releases("iris")
    other = "b" if _run_of(live.flow_run_id).work_queue_name == "a" else "a"
    run = _finished(_submit("rollback/rollback", team.v1, other).id)
    assert run.state.is_completed(), f"{run.state.message}\n{_log(team, other)}"
    production = team.ledger.live("iris", Stage.PRODUCTION)
    assert production.id == before.id != live.id
    assert team.served_sha() == before.release.package_sha256


def _run_of(flow_run_id: str | None) -> Any:
    from prefect import get_client

    assert flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_a_worker_killed_during_a_promotion_is_settled_by_the_next_run_on_the_other(team: Team) -> None:
    engine = docker.from_env()
    known = {r.id for r in team.ledger.releases("iris")}
    live = team.ledger.live("iris", Stage.PRODUCTION)
    spec = team.v2 if _run_of(live.flow_run_id).parameters["spec_path"] == str(team.v1) else team.v1
    run = _submit("release/release", spec, "a")  # the version production does not serve

    def candidate() -> bool:
        found = engine.containers.list(filters={"label": ["io.slipway.service=iris", "io.slipway.stage=production"]})
        return any(c.labels.get("io.slipway.release") not in known | {None} for c in found)

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not candidate():
        assert time.monotonic() < deadline, f"no production candidate appeared\n{_log(team, 'a')}"
        time.sleep(0.1)
    _kill_tree(team.workers["a"])
    served_then = team.served_sha()

    settle = _finished(_submit("rollback/rollback", team.v1, "b").id)
    assert settle.state.is_completed(), f"{settle.state.message}\n{_log(team, 'b')}"
    killed = [r for r in team.ledger.releases("iris") if r.flow_run_id == str(run.id)]
    assert [r.outcome for r in killed] == [Outcome.FAILED], killed
    assert "interrupted" in (killed[0].error or "")
    assert served_then == live.release.package_sha256  # killed before the switch: production kept serving
    production = team.ledger.live("iris", Stage.PRODUCTION)
    assert team.served_sha() == production.release.package_sha256
    left = engine.containers.list(filters={"label": ["io.slipway.service=iris", "io.slipway.role=release"]})
    running = {c.labels["io.slipway.release"] for c in left}
    assert production.id in running and killed[0].id not in running, "the killed run's candidate was left"
