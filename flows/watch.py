"""The watcher flow: poll MLflow's model registry and announce what changed, for registries whose
server sends no webhooks (file store, managed registries without them, or as a safety net).

Each run announces, per model, its newest version and every alias position not announced yet
(``slipway.events``): the same sightings the webhook receiver announces, under the same event
ids, so a version seen by both starts one release. Older unannounced versions are not announced:
the newest supersedes them. Scheduled in ``prefect.yaml`` (deployment ``watch``).
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from slipway.events import ALIAS_MOVED, VERSION_CREATED, Sighting, Sightings, announce
from slipway.registry import aliases, latest_versions
from slipway.settings import get_settings

ModelNames = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    Field(min_length=1, description="Registered model names to watch in MLflow's registry (MLFLOW_TRACKING_URI)."),
]


@flow(name="watch registry", log_prints=True)
def watch(models: ModelNames, watch_aliases: bool = True) -> list[str]:
    """Announce each model's newest registry version (and alias moves) not announced yet.

    Args:
        models: Registered model names to watch in MLflow's registry (MLFLOW_TRACKING_URI).
        watch_aliases: Also announce alias moves (for specs with a models:/name@alias source).

    Returns the ids of the events emitted.
    """
    logger = get_run_logger()
    sightings = Sightings(get_settings().path("triggers.sqlite"))
    emitted: list[str] = []
    for model in models:
        seen = [Sighting(VERSION_CREATED, model, str(v), source="watcher") for v in _newest(model)]
        if watch_aliases:
            seen += [Sighting(ALIAS_MOVED, model, v, alias=a, source="watcher") for a, v in aliases(model).items()]
        for s in seen:
            if event_id := announce(sightings, s):
                logger.info("announced %s %s version %s%s: event %s", s.event, model, s.version,
                            f" (@{s.alias})" if s.alias else "", event_id)  # fmt: skip
                emitted.append(str(event_id))
    return emitted


def _newest(model: str) -> list[int]:
    versions = latest_versions(model)
    return [max(versions)] if versions else []
