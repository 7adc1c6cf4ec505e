"""Promote step: switch production to exactly the release that passed the gate, and record it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from slipway.ledger import Action, Ledger, LiveEvent
from slipway.release import Release, now
from slipway.spec import Timeouts
from targets.base import Deployment, Target, put_live
from tasks import TASK_OPTIONS


@task(name="promote to production", cache_policy=NONE, **TASK_OPTIONS)
def promote(target: Target, release: Release, timeouts: Timeouts, ledger: Ledger, flow_run_id: str) -> Deployment:
    """Start the gated release next to the live one, check it, then switch and record the switch."""
    deployment = put_live(target, release, timeouts)
    ledger.record_event(
        LiveEvent(release.service, target.stage, release.id, Action.PROMOTE, now(), flow_run_id, target.location)
    )
    get_run_logger().info("production now serves release %s at %s", release.id, deployment.endpoint.url)
    return deployment
