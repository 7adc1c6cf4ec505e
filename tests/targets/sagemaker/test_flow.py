"""The release flow with `kind: sagemaker`, staging and production two endpoints behind the SageMaker front: the
server-only image built and pushed by the pipeline, the model data uploaded, the gate run by Locust through
InvokeEndpoint (SigV4) against staging, production updated through a guardrail canary; then the weights-only
path (a new model version with the same dependencies: no image build, a new Model and an updated endpoint),
and a rollback through the CLI, each checked by requests to production."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from flows.release import release
from flows.teardown import teardown
from slipway.cli import app
from slipway.http import request_headers
from slipway.ledger import Action, SqliteLedger
from slipway.release import Endpoint, Stage
from targets._sagemaker_objects import release_name, variant_name
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY
from tests.targets.sagemaker.fixtures import SageMakerEnv, sagemaker_config

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]
_BODY = b'{"inputs": [[6.3, 3.3, 6.0, 2.5]]}'


@pytest.fixture
def specs(
    write_spec: SpecWriter, sagemaker_env: SageMakerEnv, iris_model_v2: Path, state_dir: Path, api_key: str
) -> Iterator[dict[str, Path]]:
    stages = {
        stage: sagemaker_config(sagemaker_env, endpoint_name=f"iris-flow-{stage}").model_dump(
            mode="json", exclude_defaults=True
        ) | {"kind": "sagemaker"}
        for stage in ("staging", "production")
    }  # fmt: skip
    common: dict[str, Any] = {"image": {"repository": TEST_REPOSITORY}, **stages}
    # latency limits this shared machine meets while the emulator's front relays every request
    slo = {"p95_ms": 10_000, "p99_ms": 10_000}
    made = {
        "v1": write_spec(name="v1", gate__slo=slo, **common),
        "v2": write_spec(iris_model_v2, name="v2", gate__slo=slo, **common),
    }
    yield made
    teardown(str(made["v1"]))


def _serving(endpoint: Endpoint) -> str:
    """The release whose variant answered a prediction through InvokeEndpoint, SigV4-signed."""
    url = f"{endpoint.url}/invocations"
    headers = {"Content-Type": "application/json", **request_headers(endpoint, None, "POST", url, _BODY)}
    resp = httpx.post(url, content=_BODY, timeout=30, headers=headers)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.json() == {"predictions": [2]}
    return str(resp.headers["x-amzn-invoked-production-variant"])


@pytest.mark.timeout(600)  # three releases, five endpoint fleets started: minutes when the machine is shared
def test_release_flow_staging_gate_guardrail_canary_weights_only_path_and_rollback(
    specs: dict[str, Path], sagemaker_env: SageMakerEnv, state_dir: Path
) -> None:
    front = sagemaker_env.front
    runner = CliRunner()

    deployed = runner.invoke(app, ["deploy", str(specs["v1"])])  # the first release, through the CLI
    assert deployed.exit_code == 0, deployed.output
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    first = ledger.live("iris", Stage.PRODUCTION)
    assert first is not None
    assert "aws sagemaker-runtime invoke-endpoint --endpoint-name iris-flow-production" in deployed.output
    assert "iris-flow-staging" not in front.endpoints  # staging torn down after the run

    started = time.monotonic()
    second = release(str(specs["v2"]))  # the weights-only path: same dependencies, a new model version
    v2_seconds = time.monotonic() - started
    print(f"the weights-only release (a new model version, the same server-only image): {v2_seconds:.1f} s")
    assert second.release.image == first.release.image  # the same server-only image, by digest: nothing was built
    endpoint = second.production.endpoint
    assert _serving(endpoint) == variant_name(second.release.id)
    production = front.endpoints["iris-flow-production"]
    assert production.shares[-2:] == [0.5, 1.0]  # the guardrail canary: half, baked, then all
    assert production.config == release_name("iris-flow-production", second.release.id)

    rolled = runner.invoke(app, ["rollback", str(specs["v2"])])
    assert rolled.exit_code == 0, rolled.output
    assert first.id in rolled.output
    assert _serving(endpoint) == variant_name(first.id)
    assert front.endpoints["iris-flow-production"].config == release_name("iris-flow-production", first.id)
    assert [e.action for e in ledger.events("iris", Stage.PRODUCTION)][-1] is Action.ROLLBACK

    assert v2_seconds < 300  # on a calm machine well under a minute: every step here is local
