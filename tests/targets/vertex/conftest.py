"""Vertex AI tests run on the Google emulator (tests/targets/cloudrun/emulator.py serves Vertex AI too), whose
deployed models run on the real Docker Engine and registry: missing, the run fails."""

from __future__ import annotations

import pytest


@pytest.fixture
def target_kind() -> str:
    return "vertex"
