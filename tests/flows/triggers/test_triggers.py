"""Registration → Prefect event → deployment trigger → release run, on real services end to end.

The stack (conftest.py) is a Prefect server with a process worker running prefect.yaml's
deployments, and MLflow (SQLite backend) whose webhook posts to Slipway's receiver. Tests run in
file order: the first registers version 1 and the later ones build on what production serves.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError

from flows.watch import watch
from slipway.ledger import Outcome
from slipway.release import Stage
from tests.flows.triggers.conftest import MODEL, Stack
from tests.flows.triggers.helpers import ago, delivery, events_of, final_run_for, release_runs, runs_for, wait_for
from tests.flows.triggers.registry import register, register_burst, register_trojan, register_unloadable

pytestmark = [pytest.mark.prefect_server, pytest.mark.mlflow, pytest.mark.timeout(600)]

RUN_STARTS_WITHIN_S = 90  # generous: the machine is shared with other builds
PRODUCTION_WITHIN_S = 240


def _served_version(stack: Stack) -> str:
    url = f"http://127.0.0.1:{stack.production_port}/metadata"
    return str(httpx.get(url, headers={"X-API-Key": stack.api_key}, timeout=5).json()["version"])


def _record_latency(stack: Stack, row: dict[str, Any]) -> None:
    path = Path(os.environ.get("SLIPWAY_LATENCY_FILE") or stack.tmp / "latency.jsonl")
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"\nlatency: {row}")


@pytest.fixture(scope="module")
def v1(stack: Stack) -> FlowRun:
    version = register(MODEL)
    registered = MlflowClient().get_model_version(MODEL, version).creation_timestamp / 1000
    assert version == "1"
    run = final_run_for("1", timeout=PRODUCTION_WITHIN_S)
    promoted = [e for e in stack.ledger.events(MODEL, Stage.PRODUCTION) if e.flow_run_id == str(run.id)]
    assert run.start_time and run.created and promoted
    live_at = datetime.fromisoformat(promoted[0].at).timestamp()
    _record_latency(stack, {
        "version": version, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "to_run_created_s": round(run.created.timestamp() - registered, 1),
        "to_run_started_s": round(run.start_time.timestamp() - registered, 1),
        "to_production_s": round(live_at - registered, 1),
    })  # fmt: skip
    assert run.start_time.timestamp() - registered < RUN_STARTS_WITHIN_S
    return run


def test_a_registered_version_is_released_and_the_ledger_names_its_event(stack: Stack, v1: FlowRun) -> None:
    assert v1.state is not None and v1.state.is_completed(), v1.state
    assert v1.parameters["version"] == "1" and v1.parameters["trigger"].startswith("event:")
    (record,) = stack.ledger.releases(MODEL)
    assert record.outcome is Outcome.PROMOTED and record.release.version == "1"
    assert record.flow_run_id == str(v1.id) and record.trigger == v1.parameters["trigger"]
    event_id = record.trigger.removeprefix("event:")
    events = events_of(stack.prefect_api, f"mlflow.model.{MODEL}", ago(600))
    (event,) = [e for e in events if e["id"] == event_id]
    assert event["event"] == "slipway.model.version.created"
    assert event["resource"]["model"] == MODEL and event["resource"]["version"] == "1"
    assert _served_version(stack) == "1"


@pytest.mark.fault("injected failure")
def test_the_same_version_seen_again_starts_no_second_release(
    stack: Stack, v1: FlowRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = v1.parameters["trigger"].removeprefix("event:")
    # the watcher sharing the receiver's table: already announced
    assert watch([MODEL]) == []
    # a re-delivery (new delivery id, same version) and a repeated delivery id: no event
    payload = {"entity": "model_version", "action": "created", "data": {"name": MODEL, "version": "1"}}
    headers, body = delivery(stack.secret, payload)
    assert httpx.post(stack.receiver, content=body, headers=headers).json()["event_id"] is None
    assert httpx.post(stack.receiver, content=body, headers=headers).json()["duplicate"] is True
    # a watcher elsewhere (its own table) announces it under the same event id: Prefect drops it
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(stack.tmp / "another-machine"))
    assert watch([MODEL]) == [event_id]
    time.sleep(8)
    assert len(runs_for("1")) == 1


def test_the_verify_deployment_checks_production_and_records_it(stack: Stack, v1: FlowRun) -> None:
    run = run_deployment("verify production/verify", parameters={"spec_path": str(stack.spec)}, timeout=180)
    assert run.state is not None and run.state.is_completed(), run.state
    (report,) = (stack.state_dir / "reports" / MODEL / "verify").glob("*/verification.json")
    result = json.loads(report.read_text())
    assert result["failures"] == [] and result["version"] == "1"


@pytest.mark.fault("bad input")
def test_a_parameter_that_fails_validation_is_refused_with_the_reason(stack: Stack) -> None:
    with pytest.raises(PrefectHTTPStatusError, match="Validation failed for field 'version'.*does not match"):
        run_deployment("release/release", parameters={"spec_path": str(stack.spec), "version": "latest"}, timeout=0)


@pytest.mark.fault("bad input")
def test_bad_deliveries_are_rejected_and_emit_nothing(stack: Stack) -> None:
    since = ago(5)
    payload = {"entity": "model_version", "action": "created", "data": {"name": "ghost", "version": "1"}}
    headers, body = delivery(stack.secret, payload)
    assert httpx.post(stack.receiver, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    wrong, _ = delivery("not-the-secret-at-all", payload)
    assert httpx.post(stack.receiver, content=body, headers=wrong).status_code == 403
    tampered = body.replace(b'"1"', b'"2"')
    assert httpx.post(stack.receiver, content=tampered, headers=headers).status_code == 403
    old_headers, old_body = delivery(stack.secret, payload, age_s=3600)
    assert httpx.post(stack.receiver, content=old_body, headers=old_headers).status_code == 403
    time.sleep(3)
    assert events_of(stack.prefect_api, "mlflow.model.ghost", since) == []
    # the same delivery, signed right, is accepted: the query above would have seen its event
    assert httpx.post(stack.receiver, content=body, headers=headers).status_code == 200
    wait_for("the ghost event", lambda: events_of(stack.prefect_api, "mlflow.model.ghost", since), 30)


@pytest.mark.fault("bad input")
def test_a_version_that_fails_to_load_fails_its_run_and_keeps_production(stack: Stack, v1: FlowRun) -> None:
    version = register_unloadable(MODEL)
    run = final_run_for(version, timeout=PRODUCTION_WITHIN_S)
    assert run.state is not None and run.state.is_failed()
    assert "sklearn" in (run.state.message or ""), run.state.message
    assert [r.release.version for r in stack.ledger.releases(MODEL)] == ["1"]
    assert _served_version(stack) == "1"


@pytest.mark.fault("injected failure")
def test_a_burst_of_versions_ends_on_the_last_and_never_interleaves(stack: Stack, v1: FlowRun) -> None:
    burst = register_burst(MODEL, 3)
    last = burst[-1]
    runs = {v: final_run_for(v, timeout=3 * PRODUCTION_WITHIN_S) for v in burst}
    wait_for(f"production on version {last}", lambda: _served_version(stack) == last, 60)
    assert runs[last].state is not None and runs[last].state.is_completed()
    for v in burst[:-1]:
        state = runs[v].state
        assert state is not None and (
            state.is_completed() or (state.is_cancelled() and "superseded" in str(state.message))
        )
    assert stack.ledger.live(MODEL, Stage.PRODUCTION).release.version == last  # type: ignore[union-attr]
    spans = sorted((r.start_time, r.end_time) for r in release_runs() if r.start_time and r.end_time)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"release runs overlap: one ended {end}, the next started {start}"


@pytest.mark.fault("bad input")
def test_a_malicious_version_released_by_its_event_runs_its_code_without_credentials(stack: Stack, v1: FlowRun) -> None:
    """Last of the module: it releases a new version. The registry is where anyone with write access
    can put a model file; the worker that releases it holds every deploy credential."""
    from tests.fakes.models import dumped

    dumps = stack.tmp / "trojan"
    dumps.mkdir()
    dumps.chmod(0o777)  # the sandbox may run as nobody
    dump = dumps / "env.jsonl"
    version = register_trojan(MODEL, dump)
    before = len(dumped(dump))  # MLflow loads the model as it logs it (its requirements inference), on the user's side
    run = final_run_for(version, timeout=PRODUCTION_WITHIN_S)
    assert run.state is not None and run.state.is_completed(), run.state
    assert _served_version(stack) == version
    # What Slipway's release ran: the package sandbox, once; the package holds the model the sandbox
    # re-serialized, so the servers run none of the file's code.
    (seen,) = dumped(dump)[before:]
    assert not any(k.startswith(("PREFECT_", "SLIPWAY_", "MLFLOW_", "AWS_")) for k in seen["env"]), sorted(seen["env"])
    assert not {stack.api_key, stack.secret} & set(seen["env"].values())
