"""Tasks retry transient target errors, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from slipway.errors import TargetError, TransientTargetError
from targets.base import Deployment, Release
from tasks.stage import deploy_staging
from tests.fakes.target import FakeTarget

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_api")]

RELEASE = Release("r1", "iris", "1", "ab" * 32, Path("/pkg"), "spec")
fast_deploy = deploy_staging.with_options(retry_delay_seconds=0)


@flow
def _stage(target: FakeTarget) -> Deployment:
    return fast_deploy(target, RELEASE, 1.0)


def _throttled() -> TransientTargetError:
    return TransientTargetError("throttled", target="fake", operation="deploy")


def test_transient_errors_are_retried_until_the_step_passes() -> None:
    target = FakeTarget(failures=[_throttled(), _throttled()])
    assert _stage(target).release.id == "r1"
    assert (target.deploy_calls, target.live) == (3, RELEASE)


def test_other_errors_fail_at_once() -> None:
    target = FakeTarget(failures=[TargetError("image not found", target="fake", operation="deploy")])
    with pytest.raises(TargetError, match="image not found"):
        _stage(target)
    assert target.deploy_calls == 1 and target.live is None


def test_retries_give_up_after_three() -> None:
    target = FakeTarget(failures=[_throttled() for _ in range(5)])
    with pytest.raises(TransientTargetError):
        _stage(target)
    assert target.deploy_calls == 4
