"""`slipway deployments sync FOLDER` against the stack's real Prefect server: the deployments and
triggers of every spec, updated and removed as the folder changes, idempotent, all-or-nothing.

The deployments go to a work pool of their own that no worker polls: a run a trigger creates stays
Scheduled, so what the trigger asked for is read from the run, and nothing runs beside the other
trigger tests. Tests run in file order on one folder.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, DeploymentFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from typer.testing import CliRunner

from flows.deployments import MANAGED
from slipway.cli import app
from tests.conftest import REPO
from tests.flows.triggers.conftest import Stack
from tests.flows.triggers.helpers import wait_for

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(300)]

POOL = "slipway-sync-test"
FLOWS = ("release", "rollback", "teardown", "verify production")
runner = CliRunner()


def _spec(folder: Path, name: str, source: str) -> Path:
    path = folder / f"{name}.yaml"
    samples = str(REPO / "examples/iris/samples.json")
    path.write_text(yaml.safe_dump({
        "model": {"name": name, "source": source, "samples": samples},
        "staging": {"kind": "local", "port": 18001}, "production": {"kind": "local", "port": 18002},
    }))  # fmt: skip
    return path


def _sync(folder: Path, *extra: str) -> Any:
    return runner.invoke(app, ["deployments", "sync", str(folder), "--work-pool", POOL, *extra])


def _synced() -> dict[str, DeploymentResponse]:
    """The deployments tagged as synced, by full name."""
    with get_client(sync_client=True) as client:
        deps = client.read_deployments(deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED])))
        flows = {f.id: f.name for f in client.read_flows()}
    return {f"{flows[d.flow_id]}/{d.name}": d for d in deps}


def _automations_of(dep: DeploymentResponse) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        found = client.read_resource_related_automations(f"prefect.deployment.{dep.id}")
    return [a.model_dump(mode="json") for a in found]


def _emit(api_url: str, event: Event) -> None:
    """Send ``event`` to the stack's server. (Not ``emit_event``: its worker is one per process, and
    the flows of earlier tests bound it to their own server.)"""

    async def send() -> None:
        async with PrefectEventsClient(api_url=api_url) as client:
            await client.emit(event)

    asyncio.run(send())


def _runs_of(dep: DeploymentResponse) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


@pytest.fixture(scope="module")
def folder(stack: Stack) -> Iterator[Path]:
    path = stack.tmp / "specs"
    path.mkdir()
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
    try:
        yield path
    finally:
        with get_client(sync_client=True) as client:
            for dep in _synced().values():
                client.delete_resource_owned_automations(f"prefect.deployment.{dep.id}")
                client.delete_deployment(dep.id)
            client.delete_work_pool(POOL)


def test_a_folder_of_two_specs_gets_their_deployments_and_triggers(folder: Path) -> None:
    alpha = _spec(folder, "alpha", "models:/alpha/1")
    beta = _spec(folder, "beta", "models:/beta@champion")
    result = _sync(folder)
    assert result.exit_code == 0, result.output
    assert "8 created, 0 updated, 0 removed, 0 unchanged" in result.output
    deps = _synced()
    assert sorted(deps) == sorted(f"{f}/{s}" for f in FLOWS for s in ("alpha", "beta"))
    for name, dep in deps.items():
        service = name.rsplit("/", 1)[1]
        assert dep.work_pool_name == POOL and set(dep.tags) == {MANAGED, f"service:{service}"}
        assert dep.parameters["spec_path"] == str({"alpha": alpha, "beta": beta}[service])
        assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
        strategy = "CANCEL_NEW" if name.startswith("verify") else "ENQUEUE"
        assert dep.concurrency_options is not None and dep.concurrency_options.collision_strategy.value == strategy
        assert dep.enforce_parameter_schema and dep.pull_steps
    assert deps["release/alpha"].parameters == {"spec_path": str(alpha), "trigger": "ui", "strict": False}
    assert deps["teardown/beta"].parameters["stage"] == "staging"
    (on_version,) = _automations_of(deps["release/alpha"])
    assert on_version["trigger"]["expect"] == ["slipway.model.version.created"]
    assert on_version["trigger"]["match"] == {"prefect.resource.id": "mlflow.model.alpha"}
    assert on_version["actions"][0]["deployment_id"] == str(deps["release/alpha"].id)
    (on_alias,) = _automations_of(deps["release/beta"])
    assert on_alias["trigger"]["expect"] == ["slipway.model.alias.moved"]
    assert on_alias["trigger"]["match"] == {"prefect.resource.id": "mlflow.model.beta", "alias": "champion"}
    assert all(_automations_of(deps[f"{f}/alpha"]) == [] for f in FLOWS[1:])


def test_a_registry_event_creates_a_run_of_that_models_release(stack: Stack, folder: Path) -> None:
    event_id = uuid.uuid4()
    _emit(stack.prefect_api, Event(
        event="slipway.model.version.created", id=event_id,
        resource={"prefect.resource.id": "mlflow.model.alpha", "model": "alpha", "version": "7"},
    ))  # fmt: skip
    deps = _synced()
    (run,) = wait_for("a run of release/alpha", lambda: _runs_of(deps["release/alpha"]), timeout=120)
    assert run.parameters == {
        "spec_path": str(folder / "alpha.yaml"), "trigger": f"event:{event_id}", "strict": False, "version": "7"
    }  # fmt: skip
    assert _runs_of(deps["release/beta"]) == []


def test_a_second_sync_changes_nothing_and_says_so(folder: Path) -> None:
    before = {n: d.updated for n, d in _synced().items()}
    result = _sync(folder, "--output", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slipway.deployments.sync/1" and doc["changed"] is False
    assert {c["action"] for c in doc["changes"]} == {"unchanged"} and len(doc["changes"]) == 8
    assert {n: d.updated for n, d in _synced().items()} == before
    text = _sync(folder)
    assert "nothing to change: the 8 deployments of 2 specs are as the specs say" in text.output


def test_an_edited_spec_is_updated_and_a_removed_one_is_removed(folder: Path) -> None:
    kept = _synced()
    _spec(folder, "alpha", "models:/alpha@champion")
    (folder / "beta.yaml").unlink()
    result = _sync(folder)
    assert result.exit_code == 0, result.output
    assert "0 created, 1 updated, 4 removed, 3 unchanged" in result.output
    deps = _synced()
    assert sorted(deps) == sorted(f"{f}/alpha" for f in FLOWS)
    assert deps["release/alpha"].id == kept["release/alpha"].id  # updated in place: its runs stay its own
    (trigger,) = _automations_of(deps["release/alpha"])
    assert trigger["trigger"]["expect"] == ["slipway.model.alias.moved"]
    assert trigger["trigger"]["match"]["alias"] == "champion"
    assert _automations_of(kept["release/beta"]) == []  # the removed deployment's trigger went with it


@pytest.mark.fault("bad input")
def test_a_bad_spec_names_its_file_and_nothing_is_synced(folder: Path) -> None:
    before = {n: (d.id, d.updated) for n, d in _synced().items()}
    _spec(folder, "beta", "models:/beta/1")  # would be created
    (folder / "broken.yaml").write_text("model: {name: broken, source: m.joblib}\nstaging: {kind: lokal}\n")
    result = _sync(folder)
    assert result.exit_code == 1
    assert f"invalid release spec {folder.resolve() / 'broken.yaml'}" in result.output
    assert "unknown target kind 'lokal'" in result.output and "nothing was synced" in result.output
    assert {n: (d.id, d.updated) for n, d in _synced().items()} == before
    (folder / "broken.yaml").unlink()
    (folder / "beta.yaml").unlink()


@pytest.mark.fault("bad input")
def test_a_deployment_sync_did_not_make_is_never_taken_over(folder: Path) -> None:
    before = {n: (d.id, d.updated) for n, d in _synced().items()}
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("rollback")
        foreign = client.create_deployment(flow_id=flow_id, name="gamma", work_pool_name=POOL, tags=["by-hand"])
    _spec(folder, "gamma", "models:/gamma/1")
    try:
        result = _sync(folder)
        assert result.exit_code == 1
        assert "deployment rollback/gamma (for gamma.yaml) exists and was not made by slipway" in result.output
        assert "prefect deployment delete 'rollback/gamma'" in result.output
        assert {n: (d.id, d.updated) for n, d in _synced().items()} == before
        with get_client(sync_client=True) as client:
            assert client.read_deployment(foreign).tags == ["by-hand"]
    finally:
        (folder / "gamma.yaml").unlink()
        with get_client(sync_client=True) as client:
            client.delete_deployment(foreign)


@pytest.mark.fault("bad input")
def test_a_missing_work_pool_is_named_with_the_command_that_creates_it(folder: Path) -> None:
    result = runner.invoke(app, ["deployments", "sync", str(folder), "--work-pool", "nowhere"])
    assert result.exit_code == 1
    assert "has no work pool 'nowhere'; nothing was synced" in result.output
    assert "prefect work-pool create nowhere --type process" in result.output
