"""Lambda tests run on moto behind the Lambda front (tests/targets/lambda/fixtures.py, a plugin of
tests/conftest.py), whose versions run under the RIE on the real Docker Engine: missing, the run fails."""

from __future__ import annotations

import pytest


@pytest.fixture
def target_kind() -> str:
    return "lambda"
