"""Vertex AI targets on the Google emulator of the session (``gcp_env``, tests/targets/cloudrun/fixtures.py)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from slipway.spec import VertexTarget
from tests.targets.cloudrun.fixtures import PROJECT

if TYPE_CHECKING:
    from tests.targets.cloudrun.emulator import CloudRunEmulator

REGION = "europe-west4"
_names = itertools.count(1)


def vertex_config(emulator: CloudRunEmulator, **settings: Any) -> VertexTarget:
    """A target config on the emulator; an endpoint and a model of its own unless given."""
    n = next(_names)
    return VertexTarget.model_validate(
        {
            "project": PROJECT,
            "region": REGION,
            "endpoint": f"iris-v{n}",
            "model": f"iris_v{n}",
            "api_endpoint": emulator.url,
            "logging_endpoint": emulator.url,
            "ready_timeout_s": 60,
            "promote_timeout_s": 60,
            **settings,
        }
    )
