"""The release flow end to end on the local target, judged by what production serves and the ledger."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from flows.release import release
from flows.teardown import teardown
from slipway.errors import ConfigError, DeployLocked, GateFailed, LedgerError
from slipway.ledger import Outcome, SqliteLedger
from slipway.release import Stage
from tests.conftest import SpecWriter, free_port

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]

IMPOSSIBLE = {"p95_ms": 0.001, "p99_ms": 0.001, "max_error_rate": 0.0, "min_rps": 1}


def _port(spec: Path, stage: str) -> int:
    return int(yaml.safe_load(spec.read_text())[stage]["port"])


def _sha_served(spec: Path, key: str) -> str:
    url = f"http://127.0.0.1:{_port(spec, 'production')}/metadata"
    return str(httpx.get(url, headers={"X-API-Key": key}, timeout=5).json()["sha256"])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ledger(state_dir: Path) -> SqliteLedger:
    return SqliteLedger(state_dir / "ledger.sqlite")


@pytest.fixture
def spec_v1(write_spec: SpecWriter, state_dir: Path, api_key: str) -> Path:
    spec = write_spec()
    yield spec
    teardown(str(spec))


def test_deploy_promotes_records_and_tears_staging_down(spec_v1: Path, state_dir: Path, api_key: str) -> None:
    result = release(str(spec_v1))
    url = result.production.endpoint.url
    resp = httpx.post(f"{url}/predict", json={"inputs": [[6.3, 3.3, 6.0, 2.5]]}, headers={"X-API-Key": api_key})
    assert resp.json() == {"predictions": [2]}
    assert httpx.post(f"{url}/predict", json={"inputs": [[6.3, 3.3, 6.0, 2.5]]}).status_code == 401
    assert not _listening(_port(spec_v1, "staging"))

    (record,) = _ledger(state_dir).releases("iris")
    assert record.outcome is Outcome.PROMOTED
    assert record.release.package_sha256 == result.release.package_sha256 == _sha_served(spec_v1, api_key)
    assert record.gate["requests"] > 0 and record.gate["passed"] is True
    assert record.flow_run_id and record.finished_at
    assert _ledger(state_dir).live("iris", Stage.PRODUCTION).id == record.id  # type: ignore[union-attr]


@pytest.mark.fault("injected failure")
def test_failed_gate_leaves_production_on_the_previous_release(
    spec_v1: Path, write_spec: SpecWriter, iris_model_v2: Path, state_dir: Path, api_key: str
) -> None:
    first = release(str(spec_v1))
    strict = write_spec(
        model=iris_model_v2, name="strict",
        staging__port=_port(spec_v1, "staging"), production__port=_port(spec_v1, "production"),
        gate__slo=IMPOSSIBLE,
    )  # fmt: skip
    with pytest.raises(GateFailed) as info:
        release(str(strict))
    assert "p95 latency" in str(info.value) and "p99 latency" in str(info.value)

    assert _sha_served(spec_v1, api_key) == first.release.package_sha256
    assert not _listening(_port(spec_v1, "staging"))
    ledger = _ledger(state_dir)
    accepted, rejected = ledger.releases("iris")
    assert rejected.outcome is Outcome.REJECTED and rejected.gate["p95_ms"] > 0.001
    assert "p95 latency" in rejected.error
    assert ledger.live("iris", Stage.PRODUCTION).id == accepted.id  # type: ignore[union-attr]


@pytest.mark.fault("injected failure")
def test_server_crash_during_the_gate_fails_it_and_keeps_production(
    spec_v1: Path, write_spec: SpecWriter, state_dir: Path, api_key: str
) -> None:
    first = release(str(spec_v1))
    crashing = write_spec(
        name="crash", staging__port=_port(spec_v1, "staging"), production__port=_port(spec_v1, "production"),
        gate__load={"users": 4, "spawn_rate": 4, "duration_s": 6},
    )  # fmt: skip
    live_file = state_dir / "local" / "iris" / "staging" / "live.json"

    def kill_staging_once_it_serves() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not live_file.exists():
            time.sleep(0.05)
        time.sleep(4)  # into the load phase
        os.kill(int(yaml.safe_load(live_file.read_text())["pid"]), signal.SIGKILL)

    killer = threading.Thread(target=kill_staging_once_it_serves, daemon=True)
    killer.start()
    with pytest.raises(GateFailed, match="error rate"):
        release(str(crashing))
    killer.join()
    assert _sha_served(spec_v1, api_key) == first.release.package_sha256
    assert _ledger(state_dir).releases("iris")[-1].outcome is Outcome.REJECTED


@pytest.mark.fault("bad input")
def test_missing_api_key_changes_nothing(spec_v1: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIPWAY_API_KEY")
    with pytest.raises(ConfigError, match=r"\$SLIPWAY_API_KEY is not set"):
        release(str(spec_v1))
    assert not _listening(_port(spec_v1, "staging")) and not _listening(_port(spec_v1, "production"))
    assert not (state_dir / "ledger.sqlite").exists()


@pytest.mark.fault("bad input")
@pytest.mark.usefixtures("api_key")
def test_a_gate_in_target_on_a_target_that_cannot_run_it_changes_nothing(
    write_spec: SpecWriter, state_dir: Path
) -> None:
    spec = write_spec(gate__where="in_target")
    with pytest.raises(ConfigError, match=r"staging target \(local\) cannot run a load generator") as info:
        release(str(spec))
    assert "gate.where: local" in info.value.hint
    assert not _listening(_port(spec, "staging")) and not _listening(_port(spec, "production"))
    assert not (state_dir / "ledger.sqlite").exists()


@pytest.mark.fault("bad input")
def test_unwritable_ledger_fails_before_anything_is_deployed(
    spec_v1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with monkeypatch.context() as env, pytest.raises(LedgerError, match="cannot write the release ledger"):
        env.setenv("SLIPWAY_LEDGER_URL", f"sqlite:///{blocker}/ledger.sqlite")
        release(str(spec_v1))
    assert not _listening(_port(spec_v1, "staging")) and not _listening(_port(spec_v1, "production"))


@pytest.mark.postgres
@pytest.mark.fault("bad input")
@pytest.mark.parametrize("problem", ["unreachable", "wrong password"])
def test_a_team_ledger_that_cannot_be_used_fails_before_anything_is_deployed(
    spec_v1: Path, state_dir: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    if problem == "unreachable":
        postgres_url = f"postgresql://slipway@127.0.0.1:{free_port()}/slipway"
    with monkeypatch.context() as env:  # the fixtures' teardown uses the default ledger
        env.setenv("SLIPWAY_LEDGER_URL", postgres_url)
        if problem == "wrong password":
            env.setenv("PGPASSWORD", "wrong-password-0000")
        with pytest.raises(LedgerError, match="cannot reach the release ledger at postgresql://slipway@"):
            release(str(spec_v1))
    assert not _listening(_port(spec_v1, "staging")) and not _listening(_port(spec_v1, "production"))
    assert not (state_dir / "packages").exists()


@pytest.mark.fault("injected failure")
def test_second_deploy_of_the_same_model_is_refused_while_one_runs(spec_v1: Path, state_dir: Path) -> None:
    lock = SqliteLedger(state_dir / "ledger.sqlite").lock("iris", timeout_s=0, purpose="deploy")
    with lock, pytest.raises(DeployLocked, match="another deploy .* of service 'iris' is running"):
        release(str(spec_v1))
    assert not _listening(_port(spec_v1, "production"))


@pytest.mark.fault("bad input")
def test_two_specs_that_release_one_model_to_two_places_need_two_service_names(
    spec_v1: Path, write_spec: SpecWriter, state_dir: Path, api_key: str
) -> None:
    first = release(str(spec_v1))
    elsewhere = write_spec(name="elsewhere")  # the same model (service "iris"), production on another port
    with pytest.raises(ConfigError, match=rf"has its production at local 127.0.0.1:{_port(spec_v1, 'production')}"):
        release(str(elsewhere))
    assert not _listening(_port(elsewhere, "production")) and not _listening(_port(elsewhere, "staging"))
    assert _sha_served(spec_v1, api_key) == first.release.package_sha256

    named = write_spec(name="named", service="iris-b")
    try:
        second = release(str(named))
        assert _sha_served(named, api_key) == second.release.package_sha256
        assert _sha_served(spec_v1, api_key) == first.release.package_sha256  # the first production still serves
        ledger = _ledger(state_dir)
        assert [r.id for r in ledger.releases("iris")] == [first.release.id]
        assert [r.id for r in ledger.releases("iris-b")] == [second.release.id]
    finally:
        teardown(str(named))


@pytest.mark.fault("bad input")
def test_a_malicious_model_released_holds_no_credential_where_its_code_runs(
    write_spec: SpecWriter, trojan: tuple[Path, Path], credentials: dict[str, str], state_dir: Path
) -> None:
    """The trojan runs in the package sandbox (nothing), then in the staging and production servers
    (their own endpoint key, nothing else); never in the process that holds the deploy credentials."""
    from tests.fakes.models import dumped

    model, dump = trojan
    spec = write_spec(model__source=str(model))
    try:
        result = release(str(spec))
        assert _sha_served(spec, credentials["SLIPWAY_API_KEY"]) == result.release.package_sha256
    finally:
        teardown(str(spec))
    runs = dumped(dump)
    assert len(runs) >= 3 and all(r["pid"] != os.getpid() for r in runs)  # sandbox, staging, production
    sandbox, *servers = runs
    assert not {name for name, value in credentials.items() if value in repr(sandbox["env"])}
    for server in servers:
        leaked = {name for name, value in credentials.items() if value in repr(server["env"])}
        assert leaked == {"SLIPWAY_API_KEY"}, leaked  # its own key, nothing more
