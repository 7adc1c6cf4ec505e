"""The ledger records attempts and stage changes durably, and its lock keeps runs of a service apart:
each test on both kinds of ledger (a SQLite file; a database of the PostgreSQL server of
scripts/services/postgres.sh), unless it is about one."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipway.errors import ConfigError, DeployLocked, LedgerError
from slipway.ledger import (
    Action,
    Ledger,
    LiveEvent,
    Outcome,
    ReleaseRecord,
    SqliteLedger,
    migrate,
)
from slipway.ledgers import ledger_at, open_ledger
from slipway.release import ImageRef, Release, Stage, now
from slipway.settings import Settings, get_settings
from tests.conftest import free_port

IMAGE = ImageRef("127.0.0.1:5000/slipway/iris", "sha256:" + "cd" * 32)


def _package() -> Path:
    """A package of this machine (its state directory is the test's)."""
    return get_settings().path("packages", "iris", "1-abababababab")


def _record(rid: str, service: str = "iris") -> ReleaseRecord:
    release = Release(rid, service, "iris", "1", "ab" * 32, _package(), "spec", IMAGE)
    return ReleaseRecord(release, "local", "docker", flow_run_id="run-1")


def test_attempts_outcomes_and_live_release_survive_reopening(ledger_url: str) -> None:
    ledger = ledger_at(ledger_url)
    ledger.start(_record("r1"))
    ledger.finish("r1", Outcome.PROMOTED, gate={"rps": 900.0, "p95_ms": 4.0})
    ledger.record_event(LiveEvent("iris", Stage.PRODUCTION, "r1", Action.PROMOTE, now(), "run-1", "docker port 1"))
    ledger.start(_record("r2"))
    ledger.finish("r2", Outcome.REJECTED, gate={"rps": 10.0}, error="p95 too high")

    reopened = ledger_at(ledger_url)
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


def test_two_services_of_one_model_keep_two_histories(ledger_url: str) -> None:
    ledger = ledger_at(ledger_url)
    assert ledger.services() == []
    ledger.start(_record("a1", "iris"))
    ledger.start(_record("b1", "iris-registry"))
    assert [r.id for r in ledger.releases("iris")] == ["a1"]
    assert [r.id for r in ledger.releases("iris-registry")] == ["b1"]
    assert ledger.services() == ["iris", "iris-registry"]


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


def _hold(ledger_url: str, service: str = "iris", seconds: float = 3) -> subprocess.Popen[str]:
    """Another process (a deploy on another worker) that holds the lock of ``service``."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from slipway.ledgers import ledger_at\n"
         "with ledger_at(sys.argv[1]).lock(sys.argv[2], timeout_s=0, purpose='deploy'):\n"
         "    print('held', flush=True); time.sleep(float(sys.argv[3]))",
         ledger_url, service, str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_second_deploy_waits_then_fails_naming_the_holder(ledger_url: str) -> None:
    holder = _hold(ledger_url)
    ledger = ledger_at(ledger_url)
    with pytest.raises(DeployLocked) as info, ledger.lock("iris", timeout_s=0.5, purpose="deploy"):
        pass
    assert f"another deploy (on {socket.gethostname()}, pid {holder.pid}, since " in str(info.value)
    assert "SLIPWAY_LOCK_TIMEOUT_S" in info.value.hint
    started = time.monotonic()
    with ledger.lock("iris", timeout_s=10, purpose="deploy"):  # waits for the holder
        assert time.monotonic() - started > 0.5
    holder.wait()


@pytest.mark.fault("injected failure")
def test_a_holder_that_dies_releases_the_lock(ledger_url: str) -> None:
    holder = _hold(ledger_url, seconds=60)
    holder.kill()
    holder.wait()
    started = time.monotonic()
    with ledger_at(ledger_url).lock("iris", timeout_s=10, purpose="rollback"):
        assert time.monotonic() - started < 5


def test_lock_is_per_service(ledger_url: str) -> None:
    ledger = ledger_at(ledger_url)
    with (
        ledger.lock("iris", timeout_s=0, purpose="deploy"),
        ledger.lock("wine", timeout_s=0, purpose="deploy"),
    ):
        pass


def _history(ledger: Ledger) -> list[tuple[str, list[ReleaseRecord], list[LiveEvent]]]:
    return [(s, ledger.releases(s), ledger.events(s)) for s in ledger.services()]


@pytest.mark.postgres
def test_migrate_moves_a_sqlite_history_to_postgres_row_for_row(tmp_path: Path, postgres_url: str) -> None:
    source = SqliteLedger(tmp_path / "ledger.sqlite")
    for n, service in enumerate(("iris", "iris-registry", "wine")):
        for v in range(3):
            rid = f"{service}-{v}"
            source.start(_record(rid, service))
            if v < 2:  # the last one still pending, as a killed run leaves it
                source.finish(rid, Outcome.PROMOTED if v != 1 or n else Outcome.REJECTED,
                              gate={"rps": 100.0 + v, "checks": [{"name": "p95", "ok": True}]}, error="")  # fmt: skip
                stage = Stage.STAGING if v % 2 else Stage.PRODUCTION
                source.record_event(LiveEvent(service, stage, rid, Action.PROMOTE, now(), f"run-{v}", f"loc {v}"))
    source.record_event(LiveEvent("wine", Stage.PRODUCTION, None, Action.TEARDOWN, now(), "run-9"))
    before = _history(source)

    target = ledger_at(postgres_url)
    moved = migrate(source, target)

    assert (moved.services, moved.releases, moved.events) == (3, 9, 7)
    assert _history(target) == before  # every field of every row, in order
    assert _history(source) == before  # the source is only read
    live = target.live("iris", Stage.PRODUCTION)
    assert live is not None and live.id == "iris-0"
    assert target.live("wine", Stage.PRODUCTION) is None


@pytest.mark.postgres
@pytest.mark.fault("bad input")
def test_migrate_into_a_ledger_that_holds_those_releases_writes_nothing(tmp_path: Path, postgres_url: str) -> None:
    source = SqliteLedger(tmp_path / "ledger.sqlite")
    source.start(_record("r1"))
    source.start(_record("r2"))
    target = ledger_at(postgres_url)
    target.start(_record("r2"))
    with pytest.raises(LedgerError, match="already holds 1 of these releases") as info:
        migrate(source, target)
    assert "empty ledger" in info.value.hint
    assert [r.id for r in target.releases("iris")] == ["r2"]


@pytest.mark.postgres
def test_cli_migrate_says_what_it_moved_and_how_to_use_it(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from slipway.cli import app

    SqliteLedger(tmp_path / "ledger.sqlite").start(_record("r1"))
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["ledger", "migrate", "--to", postgres_url])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"copied 1 releases and 0 stage changes of 1 services from {tmp_path / 'ledger.sqlite'}" in text
    assert f"SLIPWAY_LEDGER_URL={postgres_url}" in text
    assert [r.id for r in ledger_at(postgres_url).releases("iris")] == ["r1"]


@pytest.mark.postgres
def test_a_second_process_finds_the_schema_migrated(postgres_url: str) -> None:
    """Processes that start at once on an empty database migrate it once between them."""
    script = "import sys; from slipway.ledgers import ledger_at; ledger_at(sys.argv[1]).check_writable()"
    procs = [subprocess.Popen([sys.executable, "-c", script, postgres_url]) for _ in range(3)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    ledger_at(postgres_url).start(_record("r1"))


@pytest.mark.postgres
@pytest.mark.fault("bad input")
def test_unreachable_postgres_says_where_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql://slipway@127.0.0.1:{free_port()}/slipway"
    with pytest.raises(
        LedgerError, match=r"cannot reach the release ledger at postgresql://slipway@127\.0\.0\.1"
    ) as info:
        ledger_at(url).check_writable()
    assert "scripts/services/postgres.sh up" in info.value.hint


@pytest.mark.postgres
@pytest.mark.fault("bad input")
def test_wrong_postgres_password_is_named_and_never_shown(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "not-the-password-4242")
    with pytest.raises(LedgerError, match="password authentication failed") as info:
        ledger_at(postgres_url).releases("iris")
    assert "PGPASSWORD" in info.value.hint
    assert "not-the-password-4242" not in str(info.value) + info.value.hint
    url_with_password = postgres_url.replace("slipway@", "slipway:not-the-password-4242@")
    with pytest.raises(LedgerError) as info:
        ledger_at(url_with_password).releases("iris")
    assert "not-the-password-4242" not in str(info.value) + info.value.hint
