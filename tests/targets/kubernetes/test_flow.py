"""The release flow with `kind: kubernetes` on both stages: the image built and pushed by the
pipeline, staging gated by Locust through the target's 127.0.0.1 forward, production promoted by
digest, then rollback and teardown; and a next release whose gate runs in the cluster
(``gate.where: in_target``) and fails, leaving production as it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from flows.release import release
from flows.teardown import teardown
from slipway.errors import GateFailed
from slipway.ledger import Outcome
from slipway.ledgers import open_ledger
from slipway.release import Stage
from slipway.settings import get_settings
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY
from tests.targets.kubernetes.cluster import config_for, gate_leftovers, namespace

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api", "k8s_cluster")]


def _stages() -> dict[str, object]:
    def stage(name: str) -> dict[str, object]:
        cfg = config_for(namespace(f"flow-{name}"), ready_timeout_s=120)
        return {"kind": "kubernetes", **cfg.model_dump(exclude={"kind"}, exclude_defaults=True)}

    return {"staging": stage("staging"), "production": stage("production"), "image": {"repository": TEST_REPOSITORY}}


@pytest.fixture
def k8s_spec(write_spec: SpecWriter, state_dir: Path, api_key: str) -> Iterator[Path]:
    spec = write_spec(**_stages())
    yield spec
    teardown(str(spec))


@pytest.mark.fault("injected failure")
def test_release_flow_runs_on_kubernetes_and_promotes_the_digest(
    k8s_spec: Path, write_spec: SpecWriter, iris_model_v2: Path, api_key: str
) -> None:
    result = release(str(k8s_spec))
    image = result.release.image
    assert image is not None and image.digest.startswith("sha256:")
    url = result.production.endpoint.url
    assert url.startswith("http://127.0.0.1:")
    resp = httpx.post(f"{url}/predict", json={"inputs": [[6.3, 3.3, 6.0, 2.5]]},
                      headers={"Authorization": f"Bearer {api_key}"}, timeout=10)  # fmt: skip
    assert resp.json() == {"predictions": [2]}
    prod = config_for(namespace("flow-production"))
    apps = client.AppsV1Api(config.new_client_from_config(prod.kubeconfig))
    (live,) = apps.list_namespaced_deployment(prod.namespace).items
    assert live.spec.template.spec.containers[0].image == str(image)  # exactly the pushed digest
    staging = config_for(namespace("flow-staging"))
    assert not apps.list_namespaced_deployment(staging.namespace).items  # staging torn down after the run

    # the next release's gate runs in the cluster and cannot meet its SLO: rejected, production as it was
    impossible = {"where": "in_target", "load": {"users": 8, "spawn_rate": 8, "duration_s": 3},
                  "slo": {"p95_ms": 2000, "p99_ms": 4000, "min_rps": 1e9}}  # fmt: skip
    v2 = write_spec(iris_model_v2, name="v2", gate=impossible, **_stages())
    with pytest.raises(GateFailed) as info:
        release(str(v2))
    assert "throughput" in str(info.value)
    resp = httpx.get(f"{url}/metadata", headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    assert resp.json()["sha256"] == result.release.package_sha256  # production untouched
    ledger = open_ledger(get_settings())
    rejected = ledger.releases(result.release.service)[-1]
    assert rejected.outcome is Outcome.REJECTED and rejected.gate is not None and rejected.gate["requests"] > 0
    assert str(rejected.gate["where"]).startswith(f"kubernetes namespace {staging.namespace}, Job ")
    assert ledger.live(result.release.service, Stage.PRODUCTION).id == result.release.id  # type: ignore[union-attr]
    assert not gate_leftovers(staging)  # the gate's Job and ConfigMap are deleted
    assert not apps.list_namespaced_deployment(staging.namespace).items
