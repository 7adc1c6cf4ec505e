"""The rollback flow: put production back on an earlier accepted release."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from slipway.errors import ConfigError
from slipway.ledger import Action, Ledger, LiveEvent, Outcome, ReleaseRecord, now
from slipway.locking import model_lock
from slipway.pipeline import open_pipeline
from slipway.recovery import settle_interrupted
from targets.base import ImageRef, Release, Stage


@flow(name="rollback", log_prints=True)
def rollback(spec_path: str, to_release: str = "") -> str:
    """Return production to ``to_release``, or to the release live before the current one.

    Args:
        spec_path: Path of the release spec (slipway.yaml).
        to_release: Id of an earlier promoted release (see `slipway releases`); empty for the previous one.
    """
    p = open_pipeline(spec_path)
    p.ledger.check_writable()
    with model_lock(p.settings.path("locks"), p.model, timeout_s=p.settings.lock_timeout_s, purpose="rollback"):
        for note in settle_interrupted(p, str(flow_run.get_id() or "")):
            get_run_logger().warning(note)
        record = choose_rollback(p.ledger, p.model, to_release)
        p.production.rollback(to_release_of(record), p.spec.production.ready_timeout_s)
        p.ledger.record_event(
            LiveEvent(p.model, Stage.PRODUCTION.value, record.id, Action.ROLLBACK, now(), str(flow_run.get_id() or ""))
        )
    get_run_logger().info("production of %s rolled back to release %s (version %s)", p.model, record.id, record.version)
    return record.id


def choose_rollback(ledger: Ledger, model: str, to_release: str) -> ReleaseRecord:
    """The release to roll back to: the one named, or the one live before the current one."""
    live = ledger.live(model, Stage.PRODUCTION.value)
    if to_release:
        record = ledger.get(to_release)
        if record is None or record.model != model:
            raise ConfigError(
                f"no release {to_release!r} of model {model!r}", hint="pick an id from `slipway releases`"
            )
        if record.outcome is not Outcome.PROMOTED:
            raise ConfigError(
                f"release {to_release} was {record.outcome.value}, never accepted: it cannot go to production",
                hint="roll back to a release whose outcome is 'promoted' (see `slipway releases`)",
            )
        return record
    history = [e.release_id for e in ledger.events(model, Stage.PRODUCTION.value) if e.release_id]
    earlier = [rid for rid in reversed(history) if live is None or rid != live.id]
    if not earlier:
        raise ConfigError(
            f"model {model!r} has no earlier production release to roll back to",
            hint="see `slipway releases`; deploy a release first",
        )
    record = ledger.get(earlier[0])
    assert record is not None  # events only name recorded releases
    return record


def to_release_of(record: ReleaseRecord) -> Release:
    repo, _, digest = record.image.partition("@")
    return Release(
        id=record.id,
        model=record.model,
        version=record.version,
        package_sha256=record.package_sha256,
        package_dir=Path(record.package_dir),
        spec_hash=record.spec_hash,
        image=ImageRef(repo, digest) if digest else None,
    )
