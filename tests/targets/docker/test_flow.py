"""The release flow with `kind: docker` on both stages: built, pushed, gated and promoted by digest, for
a skops model (the safe format: its image must carry skops, its server load it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from flows.release import release
from flows.teardown import teardown
from slipway.ledger import SqliteLedger
from tests.conftest import SpecWriter, free_port
from tests.images import TEST_REPOSITORY

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture
def docker_spec(
    write_spec: SpecWriter, state_dir: Path, api_key: str, iris_model: Path, tmp_path: Path
) -> Iterator[Path]:
    import joblib
    import skops.io

    skops_model = tmp_path / "iris.skops"
    skops.io.dump(joblib.load(iris_model), skops_model)
    spec = write_spec(
        model__source=str(skops_model),
        staging={"kind": "docker", "port": free_port(), "ready_timeout_s": 30},
        production={"kind": "docker", "port": free_port(), "ready_timeout_s": 30},
        image={"repository": TEST_REPOSITORY},
    )
    yield spec
    teardown(str(spec))


def test_release_flow_runs_on_docker_and_promotes_the_digest(docker_spec: Path, state_dir: Path, api_key: str) -> None:
    result = release(str(docker_spec))
    image = result.release.image
    assert image is not None and image.digest.startswith("sha256:")
    url = result.production.endpoint.url
    resp = httpx.post(f"{url}/predict", json={"inputs": [[6.3, 3.3, 6.0, 2.5]]}, headers={"X-API-Key": api_key})
    assert resp.json() == {"predictions": [2]}
    live = docker.from_env().containers.get(result.production.handle["container"])
    assert live.attrs["Config"]["Image"] == str(image)  # production runs exactly the pushed digest
    staging = docker.from_env().containers.list(all=True, filters={"label": "io.slipway.stage=staging"})
    assert staging == []  # staging torn down at the end of the run
    [record] = SqliteLedger(state_dir / "ledger.sqlite").releases("iris")
    assert record.release.image == image
    meta = httpx.get(f"{url}/metadata", headers={"X-API-Key": api_key}, timeout=5).json()
    assert meta["artifact_format"] == "skops" and "skops" in meta["framework"]
