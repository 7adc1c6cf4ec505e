"""Stage steps: put a release live on a stage through its target, and take a stage down."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from slipway.release import Release
from slipway.spec import Timeouts
from targets.base import Deployment, Target, put_live
from tasks import TASK_OPTIONS


@task(name="deploy to staging", cache_policy=NONE, **TASK_OPTIONS)
def deploy_staging(target: Target, release: Release, timeouts: Timeouts) -> Deployment:
    deployment = put_live(target, release, timeouts)
    get_run_logger().info("release %s is live on staging at %s", release.id, deployment.endpoint.url)
    return deployment


@task(name="tear down", cache_policy=NONE, **TASK_OPTIONS)
def teardown_stage(target: Target) -> None:
    target.teardown()
    get_run_logger().info("%s (%s) torn down", target.stage.value, target.kind)
