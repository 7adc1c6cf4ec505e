"""The release ledger: every release attempt and every change of what a stage serves, durably.

``Ledger`` is the interface; ``SqliteLedger`` the default (a file under the state directory).
Another store (Postgres for a team) implements the same protocol and is chosen by URL scheme in
``open_ledger``.

Two tables:
  releases  one row per attempt: model, version, package sha256, image digest, targets, outcome,
            gate figures, error, timestamps, Prefect flow run id, trigger
  events    one row per change of what a stage serves: promote, rollback, teardown, and reconcile
            (a switch a killed run made but could not record; see slipway/recovery.py)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from slipway.errors import ConfigError, LedgerError
from slipway.settings import Settings


class Outcome(StrEnum):
    PENDING = "pending"  # started, not finished (or the run died: see ``finished_at``)
    PROMOTED = "promoted"  # passed the gate and went live on production
    REJECTED = "rejected"  # failed the gate; production untouched
    FAILED = "failed"  # an error before or during promotion; production untouched


class Action(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    TEARDOWN = "teardown"
    RECONCILE = "reconcile"  # what a killed run switched production to, recorded by the next run


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ReleaseRecord:
    id: str
    model: str
    version: str
    package_sha256: str
    package_dir: str
    spec_hash: str
    staging_kind: str
    production_kind: str
    image: str = ""
    outcome: Outcome = Outcome.PENDING
    gate: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started_at: str = field(default_factory=now)
    finished_at: str = ""
    flow_run_id: str = ""
    trigger: str = ""


@dataclass(frozen=True)
class LiveEvent:
    model: str
    stage: str
    release_id: str | None
    action: Action
    at: str
    flow_run_id: str = ""


class Ledger(Protocol):
    def check_writable(self) -> None: ...
    def start(self, record: ReleaseRecord) -> None: ...
    def finish(
        self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = ""
    ) -> None: ...
    def record_event(self, event: LiveEvent) -> None: ...
    def get(self, release_id: str) -> ReleaseRecord | None: ...
    def releases(self, model: str) -> list[ReleaseRecord]: ...
    def events(self, model: str, stage: str) -> list[LiveEvent]: ...
    def live(self, model: str, stage: str) -> ReleaseRecord | None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL, package_sha256 TEXT NOT NULL,
    package_dir TEXT NOT NULL, spec_hash TEXT NOT NULL, staging_kind TEXT NOT NULL,
    production_kind TEXT NOT NULL, image TEXT NOT NULL, outcome TEXT NOT NULL, gate TEXT NOT NULL,
    error TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
    flow_run_id TEXT NOT NULL, trigger TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS releases_model ON releases (model, started_at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, stage TEXT NOT NULL,
    release_id TEXT, action TEXT NOT NULL, at TEXT NOT NULL, flow_run_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_model ON events (model, stage, seq);
"""


class SqliteLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _fail(self, exc: Exception, doing: str) -> LedgerError:
        return LedgerError(
            f"cannot {doing} the release ledger at {self.path}: {exc}",
            hint="make that file and its folder writable, or set SLIPWAY_STATE_DIR / SLIPWAY_LEDGER_URL "
            "to a writable place",
        )

    @contextmanager
    def _db(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise self._fail(exc, doing) from exc
        try:
            conn.row_factory = sqlite3.Row
            with conn:
                conn.executescript(_SCHEMA)
                yield conn
        except sqlite3.Error as exc:
            raise self._fail(exc, doing) from exc
        finally:
            conn.close()

    def check_writable(self) -> None:
        with self._db("write") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
            conn.execute("DROP TABLE _probe")

    def start(self, record: ReleaseRecord) -> None:
        row = _to_row(record)
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._db("write") as conn:
            conn.execute(f"INSERT INTO releases ({cols}) VALUES ({marks})", row)

    def finish(self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = "") -> None:
        with self._db("write") as conn:
            conn.execute(
                "UPDATE releases SET outcome = ?, gate = COALESCE(?, gate), error = ?, finished_at = ? WHERE id = ?",
                (outcome.value, None if gate is None else json.dumps(gate), error, now(), release_id),
            )

    def record_event(self, event: LiveEvent) -> None:
        with self._db("write") as conn:
            conn.execute(
                "INSERT INTO events (model, stage, release_id, action, at, flow_run_id) VALUES (?,?,?,?,?,?)",
                (event.model, event.stage, event.release_id, event.action.value, event.at, event.flow_run_id),
            )

    def _read(self, sql: str, params: tuple[str, ...]) -> list[sqlite3.Row]:
        """Rows of a query; a ledger not written yet has none (reading never creates the file)."""
        if not self.path.exists():
            return []
        with self._db("read") as conn:
            return conn.execute(sql, params).fetchall()

    def get(self, release_id: str) -> ReleaseRecord | None:
        rows = self._read("SELECT * FROM releases WHERE id = ?", (release_id,))
        return _from_row(rows[0]) if rows else None

    def releases(self, model: str) -> list[ReleaseRecord]:
        rows = self._read("SELECT * FROM releases WHERE model = ? ORDER BY started_at, rowid", (model,))
        return [_from_row(r) for r in rows]

    def events(self, model: str, stage: str) -> list[LiveEvent]:
        rows = self._read("SELECT * FROM events WHERE model = ? AND stage = ? ORDER BY seq", (model, stage))
        return [
            LiveEvent(r["model"], r["stage"], r["release_id"], Action(r["action"]), r["at"], r["flow_run_id"])
            for r in rows
        ]

    def live(self, model: str, stage: str) -> ReleaseRecord | None:
        events = self.events(model, stage)
        if not events or events[-1].release_id is None:
            return None
        return self.get(events[-1].release_id)


def _to_row(record: ReleaseRecord) -> dict[str, Any]:
    row = dict(record.__dict__)
    row["outcome"] = record.outcome.value
    row["gate"] = json.dumps(record.gate)
    return row


def _from_row(row: sqlite3.Row) -> ReleaseRecord:
    data = dict(row)
    data["outcome"] = Outcome(data["outcome"])
    data["gate"] = json.loads(data["gate"])
    return ReleaseRecord(**data)


def open_ledger(settings: Settings) -> Ledger:
    url = settings.ledger_url
    if not url:
        return SqliteLedger(settings.path("ledger.sqlite"))
    if url.startswith("sqlite:///"):
        return SqliteLedger(Path(url.removeprefix("sqlite:///")))
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        f"SLIPWAY_LEDGER_URL has the unsupported scheme {scheme!r}",
        hint="use sqlite:///PATH (the default); other stores implement slipway.ledger.Ledger",
    )
