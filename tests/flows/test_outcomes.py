"""Every way a release can end, on the fake target (it serves for real and fails on demand), judged by
what production serves and what the ledger holds: promoted, rejected by the gate, failed before
promotion, failed during promotion, and killed part-way then settled by the next run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from flows.release import release
from flows.rollback import rollback
from slipway.errors import At, GateFailed, TargetError
from slipway.http import client
from slipway.ledger import Action, Outcome, ReleaseRecord, SqliteLedger
from slipway.release import Release, Stage
from targets.base import TargetContext
from tests.conftest import SpecWriter
from tests.fakes.target import FakeTarget
from tests.targets.fixtures import TIMEOUTS

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]

IMPOSSIBLE = {"p95_ms": 0.001, "p99_ms": 0.001, "max_error_rate": 0.0, "min_rps": 1}


@dataclass
class Stages:
    staging: FakeTarget
    production: FakeTarget
    ledger: SqliteLedger
    key: str

    def serves(self) -> str:
        """The sha256 prefix of what production answers /metadata with."""
        endpoint = self.production.endpoint()
        assert endpoint is not None, "production serves nothing"
        with client(endpoint, SecretStr(self.key)) as http:
            return str(http.get("/metadata").json()["sha256"])[:12]

    def events(self) -> list[tuple[Action, str | None]]:
        return [(e.action, e.release_id) for e in self.ledger.events("iris", Stage.PRODUCTION)]


@pytest.fixture
def stages(state_dir: Path, api_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stages]:
    """Both stages of every flow run of the test are these two fakes (they keep state across runs)."""
    made: dict[Stage, FakeTarget] = {}

    def make_target(config: object, ctx: TargetContext) -> FakeTarget:
        if ctx.stage not in made:
            made[ctx.stage] = FakeTarget(ctx)
        return made[ctx.stage]

    monkeypatch.setattr("flows.pipeline.make_target", make_target)
    key = SecretStr(api_key)
    for stage in Stage:
        make_target(None, TargetContext("iris", "iris", stage, state_dir, True, key))
    yield Stages(made[Stage.STAGING], made[Stage.PRODUCTION], SqliteLedger(state_dir / "ledger.sqlite"), api_key)
    for target in made.values():
        target.teardown()


@pytest.fixture
def specs(write_spec: SpecWriter, iris_model_v2: Path) -> dict[str, Path]:
    gate = {"users": 2, "spawn_rate": 2, "duration_s": 1}
    return {
        "v1": write_spec(gate__load=gate),
        "v2": write_spec(model=iris_model_v2, name="v2", gate__load=gate),
        "v2-impossible": write_spec(model=iris_model_v2, name="v2i", gate__load=gate, gate__slo=IMPOSSIBLE),
    }


def test_promoted(stages: Stages, specs: dict[str, Path]) -> None:
    result = release(str(specs["v1"]))
    (record,) = stages.ledger.releases("iris")
    assert record.outcome is Outcome.PROMOTED and record.gate["passed"] and record.gate["requests"] > 0
    assert stages.serves() == result.release.package_sha256[:12]
    assert stages.events() == [(Action.PROMOTE, record.id)]
    assert stages.staging.describe().release_id is None  # staging torn down at the end of the run


@pytest.mark.fault("injected failure")
def test_rejected_by_the_gate(stages: Stages, specs: dict[str, Path]) -> None:
    first = release(str(specs["v1"]))
    before = len(stages.production.calls)
    with pytest.raises(GateFailed, match="p95 latency"):
        release(str(specs["v2-impossible"]))
    accepted, rejected = stages.ledger.releases("iris")
    assert rejected.outcome is Outcome.REJECTED and rejected.gate["passed"] is False and "p95 latency" in rejected.error
    assert stages.serves() == first.release.package_sha256[:12]
    assert stages.events() == [(Action.PROMOTE, accepted.id)]
    assert stages.production.calls[before:] == []  # production was not even deployed to


@pytest.mark.fault("injected failure")
def test_failed_before_promotion(stages: Stages, specs: dict[str, Path]) -> None:
    first = release(str(specs["v1"]))
    stages.staging.fail["deploy"] = [TargetError("the stage's quota is used up", at=At("fake", "deploy"))]
    with pytest.raises(TargetError, match="quota is used up"):
        release(str(specs["v2"]))
    failed = stages.ledger.releases("iris")[-1]
    assert failed.outcome is Outcome.FAILED and "quota is used up" in failed.error and not failed.gate
    assert stages.serves() == first.release.package_sha256[:12]
    assert stages.events() == [(Action.PROMOTE, first.release.id)]
    assert stages.staging.calls[-1] == "teardown"


@pytest.mark.fault("injected failure")
def test_failed_during_promotion(stages: Stages, specs: dict[str, Path]) -> None:
    first = release(str(specs["v1"]))
    stages.production.fail["promote"] = [TargetError("the switch was refused", at=At("fake", "promote"))]
    with pytest.raises(TargetError, match="the switch was refused"):
        release(str(specs["v2"]))
    failed = stages.ledger.releases("iris")[-1]
    assert failed.outcome is Outcome.FAILED and failed.gate["passed"] is True  # it passed the gate, then failed
    assert stages.serves() == first.release.package_sha256[:12]
    assert stages.events() == [(Action.PROMOTE, first.release.id)]
    assert stages.production.calls[-3:] == ["wait_ready", "promote", "discard"]  # the candidate is removed


@pytest.mark.fault("injected failure")
@pytest.mark.parametrize("switched", [False, True], ids=["before-the-switch", "after-the-switch"])
def test_killed_and_settled_by_the_next_run(stages: Stages, specs: dict[str, Path], switched: bool) -> None:
    """A run that died without recording anything left its release pending (and, after the switch,
    production serving it): the next run records what production serves before it changes anything."""
    first = release(str(specs["v1"]))
    dead = Release("r-killed", "iris", "iris", "2", "cd" * 32, first.release.package_dir, "h")
    stages.ledger.start(ReleaseRecord(dead, "fake", "fake"))
    if switched:  # the dead run switched production, then died before its promote event
        from targets.base import put_live

        put_live(stages.production, dead, TIMEOUTS)
    if switched:
        assert rollback(str(specs["v1"])) == first.release.id  # settles first: v1 is the release before r-killed
        assert stages.ledger.get("r-killed").outcome is Outcome.PROMOTED  # type: ignore[union-attr]
        assert stages.events() == [(Action.PROMOTE, first.release.id), (Action.RECONCILE, "r-killed"),
                                   (Action.ROLLBACK, first.release.id)]  # fmt: skip
    else:
        second = release(str(specs["v2"]))
        assert stages.ledger.get("r-killed").outcome is Outcome.FAILED  # type: ignore[union-attr]
        assert stages.serves() == second.release.package_sha256[:12]
    assert "interrupted" in stages.ledger.get("r-killed").error  # type: ignore[union-attr]
