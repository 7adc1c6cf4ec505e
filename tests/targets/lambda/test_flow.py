"""The release with `kind: lambda` through the CLI and the flow, on moto behind the Lambda front with every
version running under the RIE: staging gated by Locust over the function URL signed with SigV4, the cold
starts in the gate report, production's alias on exactly the gated version, a rollback that points it
back (checked by request), and a gate that fails on throttling, named with the setting to change, with
production's alias untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.release import release
from flows.teardown import teardown
from slipway.cli import app
from slipway.errors import GateFailed
from slipway.http import client
from slipway.ledger import Action, SqliteLedger
from slipway.release import Auth, AuthScheme, Endpoint, Stage
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY

from .fixtures import REGION, LambdaStandIn

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]
_BODY = {"inputs": [[6.3, 3.3, 6.0, 2.5]]}


def _stage(standin: LambdaStandIn, function: str, **settings: Any) -> dict[str, Any]:
    return {"kind": "lambda", "region": REGION, "function": function, "role": standin.role_arn,
            "endpoint_url": standin.url, "aws_endpoint_url": standin.moto_url, "memory_mb": 1769, "timeout_s": 120,
            "ready_timeout_s": 180, "promote_timeout_s": 120, "api_retry_s": 30, **settings}  # fmt: skip


@pytest.fixture
def specs(write_spec: SpecWriter, aws_env: LambdaStandIn, iris_model_v2: Path, state_dir: Path,
          api_key: str) -> Iterator[dict[str, Path]]:  # fmt: skip
    stages = {"staging": _stage(aws_env, "iris-flow-staging"), "production": _stage(aws_env, "iris-flow")}
    image = {"repository": TEST_REPOSITORY}
    throttled = {**stages, "staging": _stage(aws_env, "iris-flow-staging", reserved_concurrency=1)}
    made = {
        "v1": write_spec(name="v1", image=image, **stages),
        "v2": write_spec(iris_model_v2, name="v2", image=image, **stages),
        "throttled": write_spec(iris_model_v2, name="throttled", image=image, **throttled),
    }
    yield made
    teardown(str(made["v1"]))


def _served(standin: LambdaStandIn, api_key: str) -> tuple[str, str]:
    """The sha256 production's alias serves, asked over its function URL, and the version behind it."""
    lam = standin.client("lambda", through_front=True)
    url = lam.get_function_url_config(FunctionName="iris-flow", Qualifier="live")["FunctionUrl"].rstrip("/")
    version = lam.get_alias(FunctionName="iris-flow", Name="live")["FunctionVersion"]
    endpoint = Endpoint(url, Auth(AuthScheme.AWS_SIGV4, aws_service="lambda", aws_region=REGION))
    with client(endpoint, SecretStr(api_key), timeout_s=30) as http:
        resp = http.get("/metadata")
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return str(resp.json()["sha256"]), str(version)


@pytest.mark.timeout(900)  # three releases, each version's cold start 10-60 s on this shared 2-core machine
def test_release_staging_gate_production_then_rollback_and_a_throttled_gate(
    specs: dict[str, Path], aws_env: LambdaStandIn, state_dir: Path, api_key: str
) -> None:
    cli = CliRunner()
    deployed = cli.invoke(app, ["deploy", str(specs["v1"])])
    assert deployed.exit_code == 0, deployed.output
    assert f'curl -s --aws-sigv4 "aws:amz:{REGION}:lambda"' in deployed.output  # the call to try, signed as it must be
    first_sha, first_version = _served(aws_env, api_key)
    lam = aws_env.client("lambda", through_front=True)
    url = lam.get_function_url_config(FunctionName="iris-flow", Qualifier="live")["FunctionUrl"]
    assert httpx.post(f"{url.rstrip('/')}/predict", json=_BODY, timeout=10).status_code == 403  # AWS_IAM: unsigned
    staging = [f["FunctionName"] for f in aws_env.client("lambda").list_functions()["Functions"]]
    assert "iris-flow-staging" not in staging  # staging torn down after the run

    second = release(str(specs["v2"]))
    sha, version = _served(aws_env, api_key)
    assert sha == second.release.package_sha256 and version == second.production.handle["version"]
    assert second.report.cold.count >= 1  # the staging version's first invoke, at least: measured apart
    assert "Cold starts (the first request of a fresh execution environment)" in second.report.to_markdown()
    assert second.report.figures()["cold_max_ms"] > 0

    rolled = cli.invoke(app, ["rollback", str(specs["v2"])])
    assert rolled.exit_code == 0, rolled.output
    assert _served(aws_env, api_key) == (first_sha, first_version)  # the very version, not a new one
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    assert [e.action for e in ledger.events("iris", Stage.PRODUCTION)][-1] is Action.ROLLBACK

    versions_before = lam.list_versions_by_function(FunctionName="iris-flow")["Versions"]
    with pytest.raises(GateFailed) as failed:
        release(str(specs["throttled"]))
    throttled = [v for v in failed.value.violations if v.startswith("throttled: ")]
    assert throttled and "reserved concurrency 1 of function iris-flow-staging" in throttled[0], failed.value.violations
    assert "raise staging.reserved_concurrency" in throttled[0]
    assert _served(aws_env, api_key) == (first_sha, first_version)  # production's alias, invoked: as it was
    assert lam.list_versions_by_function(FunctionName="iris-flow")["Versions"] == versions_before
