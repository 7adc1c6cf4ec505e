"""Docker tests run on the real engine and registry (scripts/services/docker.sh up) and the local
base and proxy images (scripts/images/base.sh, scripts/images/nginx.sh). Missing: the run fails."""

from __future__ import annotations

import pytest

from slipway.release import ImageRef
from tests.images import build_and_push


@pytest.fixture
def target_kind() -> str:
    return "docker"


@pytest.fixture(scope="session")
def hung_image(docker_services: None) -> ImageRef:
    """An image whose server never answers: it sleeps instead of serving (pushed, by digest)."""
    return build_and_push(
        "hung", 'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "import time; time.sleep(3600)"]\n'
    )
