"""The teardown flow: remove what a stage runs (staging, production, or both)."""

from __future__ import annotations

from typing import Literal

from prefect import flow

from flows.pipeline import open_pipeline, run_id
from slipway.ledger import Action, LiveEvent
from slipway.release import Stage, now
from tasks.stage import teardown_stage


@flow(name="teardown", log_prints=True)
def teardown(spec_path: str, stage: Literal["staging", "production", "all"] = "all") -> None:
    """Stop and remove what the stage runs; production's teardown is recorded in the ledger.

    Args:
        spec_path: Path of the release spec (slipway.yaml).
        stage: Which stage to take down.
    """
    p = open_pipeline(spec_path, need_key=False)
    stages = [Stage.STAGING, Stage.PRODUCTION] if stage == "all" else [Stage(stage)]
    with p.ledger.lock(p.service, timeout_s=p.settings.lock_timeout_s, purpose="teardown"):
        for s in stages:
            teardown_stage(p.target(s))
            if s is Stage.PRODUCTION:
                p.ledger.record_event(
                    LiveEvent(p.service, s, None, Action.TEARDOWN, now(), run_id(), p.production.location)
                )
