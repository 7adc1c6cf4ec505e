"""The release ledger: every release attempt and every change of what a stage serves, durably.

``Ledger`` is the interface; ``SqliteLedger`` the default (a file under the state directory).
Another store (Postgres for a team) implements the same protocol and is chosen by URL scheme in
``open_ledger``. Everything is keyed by the *service* (a deployment's identity, ``service:`` in the
spec, the model's name unless set), so two specs of one model keep two histories.

Two tables:
  releases  one row per attempt: service, model, version, package sha256, image digest, targets,
            outcome, gate figures, error, timestamps, Prefect flow run id, trigger
  events    one row per change of what a stage serves: promote, rollback, teardown, and reconcile
            (a switch a killed run made but could not record; see flows/recovery.py), with the
            location of the stage it changed
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from slipway.errors import ConfigError
from slipway.release import ImageRef, Release, Stage
from slipway.settings import Settings
from slipway.sqlite import transaction


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
    """A release attempt: the release, the targets it went through, and how it ended."""

    release: Release
    staging_kind: str
    production_kind: str
    outcome: Outcome = Outcome.PENDING
    gate: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started_at: str = field(default_factory=now)
    finished_at: str = ""
    flow_run_id: str = ""
    trigger: str = ""

    @property
    def id(self) -> str:
        return self.release.id


@dataclass(frozen=True)
class LiveEvent:
    """A change of what a stage serves. ``location`` is where the stage is (``Target.location``)."""

    service: str
    stage: Stage
    release_id: str | None
    action: Action
    at: str
    flow_run_id: str = ""
    location: str = ""


class Ledger(Protocol):
    def check_writable(self) -> None: ...
    def start(self, record: ReleaseRecord) -> None: ...
    def finish(
        self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = ""
    ) -> None: ...
    def record_event(self, event: LiveEvent) -> None: ...
    def get(self, release_id: str) -> ReleaseRecord | None: ...
    def releases(self, service: str) -> list[ReleaseRecord]: ...
    def events(self, service: str, stage: Stage) -> list[LiveEvent]: ...
    def live(self, service: str, stage: Stage) -> ReleaseRecord | None: ...


_MIGRATIONS = (
    # 1: the first schema (files written before versioning have these tables and version 0)
    """
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
    CREATE INDEX IF NOT EXISTS events_model ON events (model, stage, seq)
    """,
    # 2: keyed by service (earlier rows: the model's name, the default service), events' locations
    """
    ALTER TABLE releases ADD COLUMN service TEXT NOT NULL DEFAULT '';
    UPDATE releases SET service = model;
    CREATE INDEX releases_service ON releases (service, started_at);
    ALTER TABLE events RENAME COLUMN model TO service;
    ALTER TABLE events ADD COLUMN location TEXT NOT NULL DEFAULT '';
    CREATE INDEX events_service ON events (service, stage, seq)
    """,
)


class SqliteLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self, doing: str) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(
            self.path, _MIGRATIONS, what="the release ledger", doing=doing,
            hint="make that file and its folder writable, or set SLIPWAY_STATE_DIR / SLIPWAY_LEDGER_URL "
            "to a writable place",
        )  # fmt: skip

    def check_writable(self) -> None:
        with self._db("write") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
            conn.execute("DROP TABLE _probe")

    def start(self, record: ReleaseRecord) -> None:
        row = _to_row(record)
        with self._db("write") as conn:
            conn.execute(f"INSERT INTO releases ({', '.join(row)}) VALUES ({', '.join(f':{k}' for k in row)})", row)

    def finish(self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = "") -> None:
        with self._db("write") as conn:
            conn.execute(
                "UPDATE releases SET outcome = ?, gate = COALESCE(?, gate), error = ?, finished_at = ? WHERE id = ?",
                (outcome.value, None if gate is None else json.dumps(gate), error, now(), release_id),
            )

    def record_event(self, event: LiveEvent) -> None:
        with self._db("write") as conn:
            conn.execute(
                "INSERT INTO events (service, stage, release_id, action, at, flow_run_id, location) "
                "VALUES (?,?,?,?,?,?,?)",
                (event.service, event.stage.value, event.release_id, event.action.value, event.at,
                 event.flow_run_id, event.location),
            )  # fmt: skip

    def _read(self, sql: str, params: tuple[str, ...]) -> list[sqlite3.Row]:
        """Rows of a query; a ledger not written yet has none (reading never creates the file)."""
        if not self.path.exists():
            return []
        with self._db("read") as conn:
            rows: list[sqlite3.Row] = conn.execute(sql, params).fetchall()
            return rows

    def get(self, release_id: str) -> ReleaseRecord | None:
        rows = self._read("SELECT * FROM releases WHERE id = ?", (release_id,))
        return _from_row(rows[0]) if rows else None

    def releases(self, service: str) -> list[ReleaseRecord]:
        rows = self._read("SELECT * FROM releases WHERE service = ? ORDER BY started_at, rowid", (service,))
        return [_from_row(r) for r in rows]

    def events(self, service: str, stage: Stage) -> list[LiveEvent]:
        rows = self._read("SELECT * FROM events WHERE service = ? AND stage = ? ORDER BY seq", (service, stage.value))
        return [
            LiveEvent(r["service"], Stage(r["stage"]), r["release_id"], Action(r["action"]), r["at"],
                      r["flow_run_id"], r["location"])
            for r in rows
        ]  # fmt: skip

    def live(self, service: str, stage: Stage) -> ReleaseRecord | None:
        events = self.events(service, stage)
        if not events or events[-1].release_id is None:
            return None
        return self.get(events[-1].release_id)


def _to_row(record: ReleaseRecord) -> dict[str, Any]:
    r = record.release
    return {
        "id": r.id, "service": r.service, "model": r.model, "version": r.version,
        "package_sha256": r.package_sha256, "package_dir": str(r.package_dir), "spec_hash": r.spec_hash,
        "image": str(r.image or ""), "staging_kind": record.staging_kind, "production_kind": record.production_kind,
        "outcome": record.outcome.value, "gate": json.dumps(record.gate), "error": record.error,
        "started_at": record.started_at, "finished_at": record.finished_at, "flow_run_id": record.flow_run_id,
        "trigger": record.trigger,
    }  # fmt: skip


def _from_row(row: sqlite3.Row) -> ReleaseRecord:
    release = Release(
        id=row["id"], service=row["service"], model=row["model"], version=row["version"],
        package_sha256=row["package_sha256"], package_dir=Path(row["package_dir"]), spec_hash=row["spec_hash"],
        image=ImageRef.parse(row["image"]),
    )  # fmt: skip
    return ReleaseRecord(
        release, row["staging_kind"], row["production_kind"], Outcome(row["outcome"]), json.loads(row["gate"]),
        row["error"], row["started_at"], row["finished_at"], row["flow_run_id"], row["trigger"],
    )  # fmt: skip


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
