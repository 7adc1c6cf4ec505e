"""The release flow with `kind: kubernetes` on both stages: the image built and pushed by the
pipeline, staging gated by Locust through the target's 127.0.0.1 forward, production promoted by
digest, then rollback and teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from flows.release import release
from flows.teardown import teardown
from tests.conftest import SpecWriter
from tests.images import TEST_REPOSITORY
from tests.targets.kubernetes.cluster import config_for, namespace

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api", "k8s_cluster")]


@pytest.fixture
def k8s_spec(write_spec: SpecWriter, state_dir: Path, api_key: str) -> Iterator[Path]:
    def stage(name: str) -> dict[str, object]:
        cfg = config_for(namespace(f"flow-{name}"), ready_timeout_s=120)
        return {"kind": "kubernetes", **cfg.model_dump(exclude={"kind"}, exclude_defaults=True)}

    spec = write_spec(staging=stage("staging"), production=stage("production"), image={"repository": TEST_REPOSITORY})
    yield spec
    teardown(str(spec))


def test_release_flow_runs_on_kubernetes_and_promotes_the_digest(k8s_spec: Path, api_key: str) -> None:
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
