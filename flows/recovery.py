"""Settle what a killed run left behind, before the next run of the service changes anything.

Runs of one service are serialized by its lock, and this is called with the lock held, so a release
still ``pending`` in the ledger belongs to a run that died (killed, machine lost) part-way. What
production actually serves decides how it is settled:

- production serves it: the run died after the switch and before recording it. The release passed
  the gate (promotion only follows a passed gate), so it is recorded as promoted and live;
- otherwise: it never went live, and is recorded as failed, with the reason.

Staging, which every run tears down at its end, is torn down for the killed run.

A run killed during a rollback leaves no pending release but can leave production serving another
release than the ledger's live one; that is recorded too, when the release served is one the
ledger accepted. Anything else (production serving a release the ledger never accepted, e.g. after
the ledger was moved) is not guessed at: it is reported, and the run goes on to replace it.
"""

from __future__ import annotations

from flows.pipeline import Pipeline
from slipway.ledger import Action, LiveEvent, Outcome
from slipway.release import Stage, now

INTERRUPTED = "interrupted: the run ended before finishing (killed?)"


def settle_interrupted(p: Pipeline, flow_run_id: str) -> list[str]:
    """Bring the ledger in line with what production serves; returns what was settled, for the log."""
    pending = [r for r in p.ledger.releases(p.service) if r.outcome is Outcome.PENDING]
    recorded = p.ledger.live(p.service, Stage.PRODUCTION)
    serving = p.production.describe().release_id
    if not pending and (serving is None or (recorded is not None and serving == recorded.id)):
        return []
    notes = []
    for record in pending:
        if record.id == serving:
            p.ledger.finish(
                record.id, Outcome.PROMOTED, error=f"{INTERRUPTED} after production switched to this release; "
                f"recorded by run {flow_run_id or '(no flow run)'}",
            )  # fmt: skip
            notes.append(f"release {record.id} went live before its run was killed: recorded as promoted")
        else:
            p.ledger.finish(record.id, Outcome.FAILED, error=f"{INTERRUPTED}; production was not switched to it")
            notes.append(f"release {record.id} was left pending by a killed run: recorded as failed")
    if pending:
        p.staging.teardown()
        notes.append("staging, left running by the killed run, torn down")
    if serving is not None and (recorded is None or serving != recorded.id):
        served = p.ledger.get(serving)
        if served is None or served.outcome is not Outcome.PROMOTED:  # not guessed at: reported
            state = "unknown to the ledger" if served is None else served.outcome.value
            notes.append(
                f"production serves release {serving}, which is {state}, while the ledger says "
                f"{recorded.id if recorded else 'nothing'} is live: left as it is until a release replaces it "
                "(`slipway teardown --stage production` removes it)"
            )
            return notes
        p.ledger.record_event(LiveEvent(p.service, Stage.PRODUCTION, serving, Action.RECONCILE, now(), flow_run_id,
                                        p.production.location))  # fmt: skip
        notes.append(f"production serves release {serving}: recorded as live (a run was killed after the switch)")
    return notes
