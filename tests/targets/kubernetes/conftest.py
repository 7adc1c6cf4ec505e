"""Kubernetes tests run on the real single-node cluster of scripts/k8s, which the fixtures build
(once) and start; a cluster that cannot be brought up fails the run, it never skips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.release import Stage
from targets import make_target
from targets.base import Target
from tests.targets.fixtures import context
from tests.targets.kubernetes.cluster import config_for, namespace


@pytest.fixture
def target_kind() -> str:
    return "kubernetes"


@pytest.fixture
def make(state_dir: Path, api_key: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """Kubernetes targets on ``config_for(**overrides)``, each in a namespace of its own, torn down after."""
    made: list[Target] = []

    def factory(stage: Stage = Stage.PRODUCTION, **overrides: object) -> Target:
        ctx = context(stage, state_dir, api_key)
        target = make_target(config_for(namespace(f"{request.node.name}-{len(made)}"), **overrides), ctx)
        made.append(target)
        return target

    yield factory
    for target in made:
        target.teardown()
