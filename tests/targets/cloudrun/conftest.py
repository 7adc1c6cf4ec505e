"""Cloud Run tests run on the emulator (tests/targets/cloudrun/fixtures.py, a plugin of tests/conftest.py),
whose revisions run on the real Docker Engine and registry: missing, the run fails."""

from __future__ import annotations

import pytest


@pytest.fixture
def target_kind() -> str:
    return "cloudrun"
