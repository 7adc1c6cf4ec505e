"""The ledger records attempts and stage changes durably; the lock keeps deploys of a model apart."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipway.errors import ConfigError, DeployLocked, LedgerError
from slipway.ledger import Action, LiveEvent, Outcome, ReleaseRecord, SqliteLedger, now, open_ledger
from slipway.locking import model_lock
from slipway.settings import Settings


def _record(rid: str) -> ReleaseRecord:
    return ReleaseRecord(rid, "iris", "1", "ab" * 32, "/pkg", "spec", "local", "local", flow_run_id="run-1")


def test_attempts_outcomes_and_live_release_survive_reopening(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    ledger.start(_record("r1"))
    ledger.finish("r1", Outcome.PROMOTED, gate={"rps": 900.0, "p95_ms": 4.0})
    ledger.record_event(LiveEvent("iris", "production", "r1", Action.PROMOTE, now(), "run-1"))
    ledger.start(_record("r2"))
    ledger.finish("r2", Outcome.REJECTED, gate={"rps": 10.0}, error="p95 too high")

    reopened = SqliteLedger(tmp_path / "l.sqlite")
    r1, r2 = reopened.releases("iris")
    assert (r1.id, r1.outcome, r1.gate["rps"], r1.flow_run_id) == ("r1", Outcome.PROMOTED, 900.0, "run-1")
    assert (r2.outcome, r2.error) == (Outcome.REJECTED, "p95 too high")
    assert r2.finished_at
    live = reopened.live("iris", "production")
    assert live is not None and live.id == "r1"

    reopened.record_event(LiveEvent("iris", "production", None, Action.TEARDOWN, now()))
    assert reopened.live("iris", "production") is None


@pytest.mark.fault("bad input")
def test_unwritable_ledger_says_where_and_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the ledger's folder should be")
    with pytest.raises(LedgerError) as info:
        SqliteLedger(blocker / "ledger.sqlite").check_writable()
    assert str(blocker / "ledger.sqlite") in str(info.value)
    assert "SLIPWAY_STATE_DIR" in info.value.hint


@pytest.mark.fault("bad input")
def test_unknown_ledger_scheme(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported scheme 'mysql'"):
        open_ledger(Settings(state_dir=tmp_path, ledger_url="mysql://x"))


def test_second_deploy_fails_clearly_while_first_holds_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from slipway.locking import model_lock\n"
         "with model_lock(Path(sys.argv[1]), 'iris', timeout_s=0, purpose='deploy'):\n"
         "    print('held', flush=True); time.sleep(3)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(DeployLocked) as info, model_lock(tmp_path, "iris", timeout_s=0.5, purpose="deploy"):
        pass
    assert f"pid {holder.pid}" in str(info.value)
    started = time.monotonic()
    with model_lock(tmp_path, "iris", timeout_s=10, purpose="deploy"):  # waits for the holder
        assert time.monotonic() - started > 0.5
    holder.wait()


def test_lock_is_per_model(tmp_path: Path) -> None:
    with (
        model_lock(tmp_path, "iris", timeout_s=0, purpose="deploy"),
        model_lock(tmp_path, "wine", timeout_s=0, purpose="deploy"),
    ):
        pass
