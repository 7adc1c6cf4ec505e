"""The release ledger: every release attempt and every change of what a stage serves, durably.

``Ledger`` is the interface; ``SqliteLedger`` the default (a file under the state directory), and
``slipway.postgres.PostgresLedger`` the one a team shares (``SLIPWAY_LEDGER_URL=postgresql://...``),
chosen by URL scheme in ``open_ledger``. Everything is keyed by the *service* (a deployment's
identity, ``service:`` in the spec, the model's name unless set), so two specs of one model keep two
histories. The ledger also holds each service's deploy lock: one run per service at a time, on every
machine that shares the ledger.

Two tables:
  releases  one row per attempt: service, model, version, package sha256 and location in the package
            store (``slipway.store``; never a machine's path), image digest (and whether the model is
            inside it), targets,
            outcome, gate figures, error, timestamps, Prefect flow run id, trigger
  events    one row per change of what a stage serves: promote, rollback, teardown, and reconcile
            (a switch a killed run made but could not record; see flows/recovery.py), with the
            location of the stage it changed
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from slipway.errors import LedgerError
from slipway.locking import service_lock
from slipway.release import ImageRef, Release, Stage, now
from slipway.settings import get_settings
from slipway.sqlite import transaction
from slipway.store import PACKAGES, location_of


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
    """``where`` names the store for people (never with a password); ``lock`` holds a service's
    deploy lock for a block, waiting up to ``timeout_s`` and then raising ``DeployLocked`` naming the
    holder; a holder that dies releases it. ``import_history`` writes another ledger's rows as they
    are, in one transaction, into a ledger that holds none of them (``slipway ledger migrate``)."""

    @property
    def where(self) -> str: ...
    def check_writable(self) -> None: ...
    def lock(self, service: str, *, timeout_s: float, purpose: str) -> AbstractContextManager[None]: ...
    def start(self, record: ReleaseRecord) -> None: ...
    def finish(
        self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = ""
    ) -> None: ...
    def record_event(self, event: LiveEvent) -> None: ...
    def get(self, release_id: str) -> ReleaseRecord | None: ...
    def releases(self, service: str) -> list[ReleaseRecord]: ...
    def events(self, service: str, stage: Stage | None = None) -> list[LiveEvent]: ...
    def live(self, service: str, stage: Stage) -> ReleaseRecord | None: ...
    def services(self) -> list[str]: ...
    def import_history(self, records: Iterable[ReleaseRecord], events: Iterable[LiveEvent]) -> int: ...


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
    # 3: what the image is: 'image' (the model inside) or 'server_image' (model data mounted beside it)
    """
    ALTER TABLE releases ADD COLUMN image_kind TEXT NOT NULL DEFAULT 'image'
    """,
)


class SqliteLedger:
    """A file; its locks are ``flock``s in ``locks/`` beside it (one machine). ``packages``: where this
    machine's copies of packages are (``PackageStore.working``), for the releases it reads."""

    def __init__(self, path: Path, packages: Path | None = None) -> None:
        self.path = path
        self.packages = packages or get_settings().path(PACKAGES)

    @property
    def where(self) -> str:
        return str(self.path)

    def lock(self, service: str, *, timeout_s: float, purpose: str) -> AbstractContextManager[None]:
        return service_lock(self.path.parent / "locks", service, timeout_s=timeout_s, purpose=purpose)

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
        row = to_row(record)
        with self._db("write") as conn:
            conn.execute(insert_release(row, ":"), row)

    def finish(self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = "") -> None:
        with self._db("write") as conn:
            conn.execute(
                "UPDATE releases SET outcome = ?, gate = COALESCE(?, gate), error = ?, finished_at = ? WHERE id = ?",
                (outcome.value, None if gate is None else json.dumps(gate), error, now(), release_id),
            )

    def record_event(self, event: LiveEvent) -> None:
        with self._db("write") as conn:
            conn.execute(_INSERT_EVENT, event_row(event))

    def import_history(self, records: Iterable[ReleaseRecord], events: Iterable[LiveEvent]) -> int:
        rows = [to_row(r) for r in records]
        with self._db("write") as conn:
            refuse_overlap(
                rows,
                lambda ids: [
                    r[0] for r in conn.execute(f"SELECT id FROM releases WHERE id IN ({','.join('?' * len(ids))})", ids)
                ],
            )
            for row in rows:
                conn.execute(insert_release(row, ":"), row)
            conn.executemany(_INSERT_EVENT, [event_row(e) for e in events])
        return len(rows)

    def _read(self, sql: str, params: tuple[str, ...]) -> list[sqlite3.Row]:
        """Rows of a query; a ledger not written yet has none (reading never creates the file)."""
        if not self.path.exists():
            return []
        with self._db("read") as conn:
            rows: list[sqlite3.Row] = conn.execute(sql, params).fetchall()
            return rows

    def get(self, release_id: str) -> ReleaseRecord | None:
        rows = self._read("SELECT * FROM releases WHERE id = ?", (release_id,))
        return from_row(rows[0], self.packages) if rows else None

    def releases(self, service: str) -> list[ReleaseRecord]:
        rows = self._read("SELECT * FROM releases WHERE service = ? ORDER BY started_at, rowid", (service,))
        return [from_row(r, self.packages) for r in rows]

    def events(self, service: str, stage: Stage | None = None) -> list[LiveEvent]:
        if stage is None:
            rows = self._read("SELECT * FROM events WHERE service = ? ORDER BY seq", (service,))
        else:
            rows = self._read(
                "SELECT * FROM events WHERE service = ? AND stage = ? ORDER BY seq", (service, stage.value)
            )
        return [event_from_row(r) for r in rows]

    def live(self, service: str, stage: Stage) -> ReleaseRecord | None:
        return live_of(self, service, stage)

    def services(self) -> list[str]:
        rows = self._read("SELECT service FROM releases UNION SELECT service FROM events ORDER BY 1", ())
        return [r[0] for r in rows]


@dataclass(frozen=True)
class Moved:
    services: int
    releases: int
    events: int


def migrate(source: Ledger, target: Ledger) -> Moved:
    """Copy every release and event of ``source`` into ``target`` as they are, in one transaction of
    the target; it must hold none of them. The source is only read."""
    services = source.services()
    records = [r for s in services for r in source.releases(s)]
    events = [e for s in services for e in source.events(s)]
    target.check_writable()
    target.import_history(records, events)
    return Moved(len(services), len(records), len(events))


def live_of(ledger: Ledger, service: str, stage: Stage) -> ReleaseRecord | None:
    """What the last event of a stage says it serves."""
    events = ledger.events(service, stage)
    if not events or events[-1].release_id is None:
        return None
    return ledger.get(events[-1].release_id)


EVENT_COLUMNS = ("service", "stage", "release_id", "action", "at", "flow_run_id", "location")
_INSERT_EVENT = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"


def insert_release(row: dict[str, Any], mark: str) -> str:
    """The INSERT of a release row, with named parameters marked ``:name`` (SQLite) or ``%(name)s``."""
    values = (f":{k}" if mark == ":" else f"%({k})s" for k in row)
    return f"INSERT INTO releases ({', '.join(row)}) VALUES ({', '.join(values)})"


def event_row(e: LiveEvent) -> tuple[str | None, ...]:
    return (e.service, e.stage.value, e.release_id, e.action.value, e.at, e.flow_run_id, e.location)


def event_from_row(r: Any) -> LiveEvent:
    return LiveEvent(
        r["service"], Stage(r["stage"]), r["release_id"], Action(r["action"]), r["at"], r["flow_run_id"], r["location"]
    )


def refuse_overlap(rows: list[dict[str, Any]], existing: Callable[[tuple[str, ...]], list[str]]) -> None:
    """Refuse to import releases the target already holds (``existing(ids)`` returns their ids)."""
    ids = tuple(r["id"] for r in rows)
    found = [i for chunk in range(0, len(ids), 500) for i in existing(ids[chunk : chunk + 500])]
    if found:
        raise LedgerError(
            f"the target ledger already holds {len(found)} of these releases (e.g. {found[0]})",
            hint="migrate into an empty ledger; nothing was written",
        )


def to_row(record: ReleaseRecord) -> dict[str, Any]:
    r = record.release
    return {
        "id": r.id, "service": r.service, "model": r.model, "version": r.version,
        "package_sha256": r.package_sha256, "package_dir": location_of(r.package_dir), "spec_hash": r.spec_hash,
        "image": str(r.image or ""),
        "image_kind": "image" if r.image is None or r.image.model_inside else "server_image",
        "staging_kind": record.staging_kind, "production_kind": record.production_kind,
        "outcome": record.outcome.value, "gate": json.dumps(record.gate), "error": record.error,
        "started_at": record.started_at, "finished_at": record.finished_at, "flow_run_id": record.flow_run_id,
        "trigger": record.trigger,
    }  # fmt: skip


def from_row(row: Any, packages: Path) -> ReleaseRecord:
    """A row as a record; its package is this machine's copy under ``packages``. The column holds the
    package's store-relative location (``slipway.store``); rows written before the store hold the
    absolute path of a package under ``<state>/packages``, whose last two parts are that location."""
    release = Release(
        id=row["id"], service=row["service"], model=row["model"], version=row["version"],
        package_sha256=row["package_sha256"], package_dir=packages / location_of(Path(row["package_dir"])),
        spec_hash=row["spec_hash"],
        image=ImageRef.parse(row["image"], model_inside=row["image_kind"] == "image"),
    )  # fmt: skip
    return ReleaseRecord(
        release, row["staging_kind"], row["production_kind"], Outcome(row["outcome"]), json.loads(row["gate"]),
        row["error"], row["started_at"], row["finished_at"], row["flow_run_id"], row["trigger"],
    )  # fmt: skip
