"""The rollback flow: put production back on an earlier accepted release.

Any worker can run it: a target that runs the package itself gets it from the package store when
this machine has no copy (it was released on another worker, or this state directory is new).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.pipeline import open_pipeline, run_id
from flows.recovery import settle_interrupted
from slipway.errors import ConfigError
from slipway.ledger import Action, Ledger, LiveEvent, Outcome, ReleaseRecord
from slipway.release import ArtifactKind, Stage, now


@flow(name="rollback", log_prints=True)
def rollback(spec_path: str, to_release: str = "") -> str:
    """Return production to ``to_release``, or to the release live before the current one.

    Args:
        spec_path: Path of the release spec (slipway.yaml).
        to_release: Id of an earlier promoted release (see `slipway releases`); empty for the previous one.
    """
    p = open_pipeline(spec_path)
    p.ledger.check_writable()
    with p.ledger.lock(p.service, timeout_s=p.settings.lock_timeout_s, purpose="rollback"):
        for note in settle_interrupted(p, run_id()):
            get_run_logger().warning(note)
        record = choose_rollback(p.ledger, p.service, to_release)
        if ArtifactKind.PACKAGE in p.production.capabilities.artifacts:  # from the store, if made elsewhere
            p.store.fetch_package(record.release.package_dir, record.id)
        p.production.rollback(record.release, p.spec.timeouts(Stage.PRODUCTION))
        p.ledger.record_event(
            LiveEvent(p.service, Stage.PRODUCTION, record.id, Action.ROLLBACK, now(), run_id(), p.production.location)
        )
    get_run_logger().info(
        "production of %s rolled back to release %s (version %s)", p.service, record.id, record.release.version
    )
    return record.id


def choose_rollback(ledger: Ledger, service: str, to_release: str) -> ReleaseRecord:
    """The release to roll back to: the one named, or the one live before the current one."""
    live = ledger.live(service, Stage.PRODUCTION)
    if to_release:
        record = ledger.get(to_release)
        if record is None or record.release.service != service:
            raise ConfigError(
                f"no release {to_release!r} of service {service!r}", hint="pick an id from `slipway releases`"
            )
        if record.outcome is not Outcome.PROMOTED:
            raise ConfigError(
                f"release {to_release} was {record.outcome.value}, never accepted: it cannot go to production",
                hint="roll back to a release whose outcome is 'promoted' (see `slipway releases`)",
            )
        return record
    history = [e.release_id for e in ledger.events(service, Stage.PRODUCTION) if e.release_id]
    earlier = [rid for rid in reversed(history) if live is None or rid != live.id]
    if not earlier:
        raise ConfigError(
            f"service {service!r} has no earlier production release to roll back to",
            hint="see `slipway releases`; deploy a release first",
        )
    record = ledger.get(earlier[0])
    assert record is not None  # events only name recorded releases
    return record
