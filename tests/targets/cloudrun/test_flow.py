"""The release flow with `kind: cloudrun`, staging and production in two projects of the emulator: the image
built and pushed by the pipeline, the gate run by Locust against the candidate's tag URL with an ID token,
production pinned to that revision, a rollback through the flow, and a gate failure that leaves production
as it was (checked by request)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth
import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.cloud import run_v2

from flows.release import release
from flows.rollback import rollback
from flows.teardown import teardown
from slipway.errors import GateFailed
from slipway.http import google_id_token
from slipway.ledger import Action, SqliteLedger
from slipway.release import Stage
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY
from tests.targets.cloudrun.emulator import CloudRunEmulator
from tests.targets.cloudrun.fixtures import OTHER_PROJECT, PROJECT, REGION

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]
_BODY = {"inputs": [[6.3, 3.3, 6.0, 2.5]]}


def _stage(emulator: CloudRunEmulator, project: str, service: str) -> dict[str, Any]:
    return {"kind": "cloudrun", "project": project, "region": REGION, "service": service,
            "api_endpoint": emulator.url, "secret_manager_endpoint": emulator.url,
            "logging_endpoint": emulator.url, "startup_timeout_s": 30, "ready_timeout_s": 60}  # fmt: skip


@pytest.fixture
def specs(write_spec: SpecWriter, gcp_env: CloudRunEmulator, iris_model_v2: Path, state_dir: Path,
          api_key: str) -> Iterator[dict[str, Path]]:  # fmt: skip
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


def _sha(url: str) -> str:
    token = google_id_token(url)
    resp = httpx.get(f"{url}/metadata", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return str(resp.json()["sha256"])


def test_release_flow_staging_gate_production_then_rollback_and_a_failed_gate(
    specs: dict[str, Path], gcp_env: CloudRunEmulator, state_dir: Path
) -> None:
    creds, _ = google.auth.default()
    services = run_v2.ServicesClient(credentials=creds, transport="rest",
                                     client_options=ClientOptions(api_endpoint=gcp_env.url))  # fmt: skip
    staging_name = f"projects/{PROJECT}/locations/{REGION}/services/iris-flow-staging"
    production_name = f"projects/{OTHER_PROJECT}/locations/{REGION}/services/iris-flow"

    first = release(str(specs["v1"]))
    url = first.production.endpoint.url
    assert first.production.endpoint.auth.audience == url  # IAM: an ID token for the service's URL
    resp = httpx.post(f"{url}/predict", json=_BODY, timeout=10,
                      headers={"Authorization": f"Bearer {google_id_token(url)}"})  # fmt: skip
    assert resp.json() == {"predictions": [2]}
    assert httpx.post(f"{url}/predict", json=_BODY, timeout=10).status_code == 403  # no token: Cloud Run refuses
    service = services.get_service(name=production_name)
    assert service.template.containers[0].image == str(first.release.image)  # exactly the pushed digest
    assert [(t.revision, t.percent) for t in service.traffic] == [(first.production.handle["revision"], 100)]
    assert staging_name not in gcp_env.services  # staging torn down after the run

    started = time.monotonic()
    second = release(str(specs["v2"]))
    v2_seconds = time.monotonic() - started
    assert second.production.endpoint.url == url  # a stable endpoint: the service's URL
    assert _sha(url) == second.release.package_sha256

    assert rollback(str(specs["v2"])) == first.release.id
    assert _sha(url) == first.release.package_sha256
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    assert [e.action for e in ledger.events("iris", Stage.PRODUCTION)][-1] is Action.ROLLBACK

    revisions_before = {r for r in gcp_env.revisions if r.startswith(production_name)}
    with pytest.raises(GateFailed, match="throughput"):
        release(str(specs["strict"]))
    assert _sha(url) == first.release.package_sha256  # production, checked by request: as it was
    assert {r for r in gcp_env.revisions if r.startswith(production_name)} == revisions_before
    assert staging_name not in gcp_env.services  # the candidate's revision went with staging
    assert v2_seconds < 120
