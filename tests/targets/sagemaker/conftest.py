"""SageMaker tests run on moto behind the front of tests/targets/sagemaker/emulator.py (a plugin of
tests/conftest.py), whose variants run on the real Docker Engine and registry: missing, the run fails."""

from __future__ import annotations

import pytest


@pytest.fixture
def target_kind() -> str:
    return "sagemaker"
