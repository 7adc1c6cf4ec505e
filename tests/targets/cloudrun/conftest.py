"""Cloud Run tests run on the emulator (tests/targets/cloudrun/fixtures.py, a plugin of tests/conftest.py),
whose revisions run on the real Docker Engine and registry: missing, the run fails."""

from __future__ import annotations

import pytest

from slipway.release import ImageRef
from tests.images import build_and_push


@pytest.fixture
def target_kind() -> str:
    return "cloudrun"


@pytest.fixture(scope="session")
def hung_image(docker_services: None) -> ImageRef:
    """An image whose server never answers: it sleeps instead of serving (pushed, by digest)."""
    return build_and_push(
        "hung", 'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "import time; time.sleep(3600)"]\n'
    )


@pytest.fixture(scope="session")
def exiting_image(docker_services: None) -> ImageRef:
    """An image that prints why and exits at once, as a server missing its configuration would."""
    script = "import sys; print('fatal: MODEL_BUCKET is not set', flush=True); sys.exit(3)"
    return build_and_push("exits", f'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "{script}"]\n')
