"""Docker tests run on the real engine and registry (scripts/services/docker.sh up) and the local
base and proxy images (scripts/images/base.sh, scripts/images/nginx.sh). Missing: the run fails."""

from __future__ import annotations

import io

import docker
import httpx
import pytest

from targets.base import ImageRef
from tests.docker.helpers import TEST_REPOSITORY


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/docker/" in str(item.fspath):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session", autouse=True)
def docker_services() -> None:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"the Docker Engine does not answer ({exc}): run scripts/services/docker.sh up")
    for image, script in (("slipway/python-base:bookworm", "base.sh"), ("slipway/nginx:bookworm", "nginx.sh")):
        if not client.images.list(name=image):
            pytest.fail(f"image {image} is missing: run scripts/images/{script}")
    try:
        httpx.get("http://127.0.0.1:5000/v2/", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the registry on 127.0.0.1:5000 does not answer ({exc}): run scripts/services/docker.sh up")


@pytest.fixture(scope="session")
def hung_image(docker_services: None) -> ImageRef:
    """An image whose server never answers: it sleeps instead of serving (pushed, by digest)."""
    return build_and_push(
        "hung", 'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "import time; time.sleep(3600)"]\n'
    )


def build_and_push(name: str, dockerfile: str) -> ImageRef:
    client = docker.from_env()
    repo = f"{TEST_REPOSITORY}/{name}"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:test", rm=True, pull=False)
    digest = ""
    for chunk in client.api.push(repo, tag="test", stream=True, decode=True):
        assert "error" not in chunk, chunk
        digest = chunk.get("aux", {}).get("Digest", digest)
    return ImageRef(repo, digest)
