"""The release flow with `kind: vertex`, staging and production in two projects of the emulator: the image built
and pushed by the pipeline, the gate run by Locust against staging's endpoint with an access token, production
switched by traffic split to the deployed model of that exact model version, a rollback through the CLI (a
traffic change back to the retained deployed model), and a gate failure that leaves production as it was
(checked by request)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth
import pytest
from google.api_core.client_options import ClientOptions
from google.cloud import aiplatform_v1 as vx
from typer.testing import CliRunner

from flows.release import release
from flows.teardown import teardown
from slipway.cli import app
from slipway.errors import GateFailed
from slipway.http import client
from slipway.ledger import Action, SqliteLedger
from slipway.release import Endpoint, Stage
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY
from tests.targets.cloudrun.emulator import CloudRunEmulator
from tests.targets.cloudrun.fixtures import OTHER_PROJECT, PROJECT
from tests.targets.vertex.emulator import DISPLAY_NAMES
from tests.targets.vertex.fixtures import REGION

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]
_ROWS = [[6.3, 3.3, 6.0, 2.5]]


def _stage(emulator: CloudRunEmulator, project: str, endpoint: str) -> dict[str, Any]:
    return {"kind": "vertex", "project": project, "region": REGION, "endpoint": endpoint, "model": "iris_flow",
            "api_endpoint": emulator.url, "logging_endpoint": emulator.url, "ready_timeout_s": 60}  # fmt: skip


@pytest.fixture
def specs(
    write_spec: SpecWriter, gcp_env: CloudRunEmulator, iris_model_v2: Path, api_key: str
) -> Iterator[dict[str, Path]]:
    stages = {"staging": _stage(gcp_env, PROJECT, "iris-flow-staging"),
              "production": _stage(gcp_env, OTHER_PROJECT, "iris-flow")}  # fmt: skip
    image = {"repository": TEST_REPOSITORY}
    made = {
        "v1": write_spec(name="v1", image=image, **stages),
        "v2": write_spec(iris_model_v2, name="v2", image=image, **stages),
        "strict": write_spec(iris_model_v2, name="strict", image=image, gate__slo={"min_rps": 1e9}, **stages),
    }
    yield made
    teardown(str(made["v1"]))


def _serving(endpoint: Endpoint) -> str:
    """Which release's deployed model answers a prediction (its display name, slipway-<release>)."""
    with client(endpoint, None) as http:
        resp = http.post(endpoint.routes.predict, json={"instances": _ROWS})
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"] == [2]
    return DISPLAY_NAMES[resp.json()["deployedModelId"]].removeprefix("slipway-")


def test_release_flow_staging_gate_production_by_traffic_then_rollback_and_a_failed_gate(
    specs: dict[str, Path], gcp_env: CloudRunEmulator, state_dir: Path
) -> None:
    endpoints = vx.EndpointServiceClient(credentials=google.auth.default()[0], transport="rest",
                                         client_options=ClientOptions(api_endpoint=gcp_env.url))  # fmt: skip
    production = f"projects/{OTHER_PROJECT}/locations/{REGION}/endpoints/iris-flow"
    staging = f"projects/{PROJECT}/locations/{REGION}/endpoints/iris-flow-staging"

    first = release(str(specs["v1"]))
    endpoint = first.production.endpoint
    assert _serving(endpoint) == first.release.id
    served = endpoints.get_endpoint(name=production)
    [deployed] = served.deployed_models
    assert dict(served.traffic_split) == {deployed.id: 100} and deployed.display_name == f"slipway-{first.release.id}"
    assert staging not in gcp_env.vertex.endpoints  # staging torn down after the run

    second = release(str(specs["v2"]))
    assert second.production.endpoint.url == endpoint.url  # a stable endpoint
    assert _serving(endpoint) == second.release.id
    split = dict(endpoints.get_endpoint(name=production).traffic_split)
    assert sorted(split.values()) == [0, 100]  # the first release retained at 0 %, for the rollback

    rolled = CliRunner().invoke(app, ["rollback", str(specs["v2"])])
    assert rolled.exit_code == 0, rolled.output
    assert first.release.id in rolled.output and _serving(endpoint) == first.release.id
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    assert [e.action for e in ledger.events("iris", Stage.PRODUCTION)][-1] is Action.ROLLBACK

    before = endpoints.get_endpoint(name=production)
    with pytest.raises(GateFailed, match="throughput"):
        release(str(specs["strict"]))
    assert {_serving(endpoint) for _ in range(4)} == {first.release.id}  # production, checked by request
    after = endpoints.get_endpoint(name=production)
    assert (dict(after.traffic_split), after.etag) == (dict(before.traffic_split), before.etag)  # not even touched
    assert staging not in gcp_env.vertex.endpoints
