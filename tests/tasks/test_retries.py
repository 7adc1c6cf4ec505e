"""Tasks retry transient errors, and only those (on the fake target, which fails on demand)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from slipway.errors import At, TargetError, TransientTargetError
from slipway.release import Release, Stage
from targets.base import Deployment
from tasks.stage import deploy_staging
from tests.fakes.target import FakeTarget
from tests.targets.fixtures import TIMEOUTS, context

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

fast_deploy = deploy_staging.with_options(retry_delay_seconds=0)


@flow
def _stage(target: FakeTarget, release: Release) -> Deployment:
    return fast_deploy(target, release, TIMEOUTS)


def _throttled() -> TransientTargetError:
    return TransientTargetError("throttled", at=At("fake", "deploy"))


@pytest.fixture
def target(state_dir: Path, api_key: str) -> FakeTarget:
    fake = FakeTarget(context(Stage.STAGING, state_dir, api_key))
    yield fake
    fake.teardown()


def test_transient_errors_are_retried_until_the_step_passes(target: FakeTarget, releases: dict[str, Release]) -> None:
    target.fail["deploy"] = [_throttled()]
    target.fail["wait_ready"] = [_throttled()]
    assert _stage(target, releases["v1"]).release.id == "r-v1"
    assert target.calls.count("deploy") == 3 and target.describe().release_id == "r-v1"


def test_other_errors_fail_at_once(target: FakeTarget, releases: dict[str, Release]) -> None:
    target.fail["deploy"] = [TargetError("image not found", at=At("fake", "deploy"))]
    with pytest.raises(TargetError, match="image not found"):
        _stage(target, releases["v1"])
    assert target.calls == ["deploy"] and target.describe().release_id is None


def test_retries_give_up_after_three(target: FakeTarget, releases: dict[str, Release]) -> None:
    target.fail["deploy"] = [_throttled() for _ in range(5)]
    with pytest.raises(TransientTargetError):
        _stage(target, releases["v1"])
    assert target.calls.count("deploy") == 4
