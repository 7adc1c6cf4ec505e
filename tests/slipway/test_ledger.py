"""The ledger records attempts and stage changes durably; the lock keeps runs of a service apart."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipway.errors import ConfigError, DeployLocked, LedgerError
from slipway.ledger import Action, LiveEvent, Outcome, ReleaseRecord, SqliteLedger, now, open_ledger
from slipway.locking import service_lock
from slipway.release import ImageRef, Release, Stage
from slipway.settings import Settings

IMAGE = ImageRef("127.0.0.1:5000/slipway/iris", "sha256:" + "cd" * 32)


def _record(rid: str, service: str = "iris") -> ReleaseRecord:
    release = Release(rid, service, "iris", "1", "ab" * 32, Path("/pkg"), "spec", IMAGE)
    return ReleaseRecord(release, "local", "docker", flow_run_id="run-1")


def test_attempts_outcomes_and_live_release_survive_reopening(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    ledger.start(_record("r1"))
    ledger.finish("r1", Outcome.PROMOTED, gate={"rps": 900.0, "p95_ms": 4.0})
    ledger.record_event(LiveEvent("iris", Stage.PRODUCTION, "r1", Action.PROMOTE, now(), "run-1", "docker port 1"))
    ledger.start(_record("r2"))
    ledger.finish("r2", Outcome.REJECTED, gate={"rps": 10.0}, error="p95 too high")

    reopened = SqliteLedger(tmp_path / "l.sqlite")
    r1, r2 = reopened.releases("iris")
    assert (r1.id, r1.outcome, r1.gate["rps"], r1.flow_run_id) == ("r1", Outcome.PROMOTED, 900.0, "run-1")
    assert (r2.outcome, r2.error) == (Outcome.REJECTED, "p95 too high")
    assert r2.finished_at
    assert r1.release == _record("r1").release  # typed back: the image is an ImageRef, the folder a Path
    live = reopened.live("iris", Stage.PRODUCTION)
    assert live is not None and live.id == "r1"
    assert reopened.events("iris", Stage.PRODUCTION)[0].location == "docker port 1"

    reopened.record_event(LiveEvent("iris", Stage.PRODUCTION, None, Action.TEARDOWN, now()))
    assert reopened.live("iris", Stage.PRODUCTION) is None


def test_two_services_of_one_model_keep_two_histories(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    ledger.start(_record("a1", "iris"))
    ledger.start(_record("b1", "iris-registry"))
    assert [r.id for r in ledger.releases("iris")] == ["a1"]
    assert [r.id for r in ledger.releases("iris-registry")] == ["b1"]


def test_a_ledger_written_before_services_is_migrated_losing_nothing(tmp_path: Path) -> None:
    """A file of the first schema (rows keyed by model, no user_version) opens with its rows keyed by
    the model's name, the default service."""
    path = tmp_path / "old.sqlite"
    from slipway.ledger import _MIGRATIONS

    with sqlite3.connect(path) as conn:
        conn.executescript(_MIGRATIONS[0])
        conn.execute("INSERT INTO releases VALUES ('r0', 'iris', '1', ?, '/pkg', 'h', 'local', 'local', '', "
                     "'promoted', '{}', '', '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', 'run', 'manual')",
                     ("ab" * 32,))  # fmt: skip
        conn.execute("INSERT INTO events (model, stage, release_id, action, at, flow_run_id) "
                     "VALUES ('iris', 'production', 'r0', 'promote', 't1', 'run')")  # fmt: skip
    ledger = SqliteLedger(path)
    (old,) = ledger.releases("iris")
    assert (old.id, old.release.service, old.outcome, old.release.image) == ("r0", "iris", Outcome.PROMOTED, None)
    live = ledger.live("iris", Stage.PRODUCTION)
    assert live is not None and live.id == "r0"
    ledger.start(_record("r1"))  # and it takes new rows
    assert [r.id for r in ledger.releases("iris")] == ["r0", "r1"]


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
         "import sys, time; from pathlib import Path; from slipway.locking import service_lock\n"
         "with service_lock(Path(sys.argv[1]), 'iris', timeout_s=0, purpose='deploy'):\n"
         "    print('held', flush=True); time.sleep(3)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(DeployLocked) as info, service_lock(tmp_path, "iris", timeout_s=0.5, purpose="deploy"):
        pass
    assert f"pid {holder.pid}" in str(info.value)
    started = time.monotonic()
    with service_lock(tmp_path, "iris", timeout_s=10, purpose="deploy"):  # waits for the holder
        assert time.monotonic() - started > 0.5
    holder.wait()


def test_lock_is_per_service(tmp_path: Path) -> None:
    with (
        service_lock(tmp_path, "iris", timeout_s=0, purpose="deploy"),
        service_lock(tmp_path, "wine", timeout_s=0, purpose="deploy"),
    ):
        pass
