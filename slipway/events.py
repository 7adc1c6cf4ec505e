"""Registry events as Prefect events, each emitted once whichever source saw it first.

Two sources report the registry's changes: the webhook receiver (``slipway.webhooks``) and the
watcher flow (``flows/watch.py``). Both call ``announce``, which deduplicates twice:

- a ``Sightings`` table in the state directory (``<state>/triggers.sqlite``) records each version
  and each alias position already announced, and each webhook delivery id already handled;
- the Prefect event id is derived from what was seen (uuid5), and Prefect's trigger service
  ignores an event id it has already evaluated: two machines with separate tables still start
  one run.

Events (``prefect.resource.id`` is ``mlflow.model.<name>``; ``model`` and ``version`` are resource
fields, ``alias`` too for an alias move):

    slipway.model.version.created   a version was registered
    slipway.model.alias.moved       an alias now points at a (different) version
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from slipway.release import now
from slipway.sqlite import transaction

VERSION_CREATED = "slipway.model.version.created"
ALIAS_MOVED = "slipway.model.alias.moved"
_NAMESPACE = uuid.UUID("5f1c7d2e-4a0b-4f7e-9a53-2c9e51ad0b7e")

_MIGRATIONS = (
    """
CREATE TABLE IF NOT EXISTS versions (model TEXT, version TEXT, event_id TEXT, source TEXT, at TEXT,
                                     PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS aliases (model TEXT, alias TEXT, version TEXT, moves INTEGER, at TEXT,
                                    PRIMARY KEY (model, alias));
CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, at TEXT)
""",
)


@dataclass(frozen=True)
class Sighting:
    """A registry change worth an event."""

    event: str
    model: str
    version: str
    alias: str = ""
    source: str = ""  # webhook or watcher


class Sightings:
    """What was already announced; safe across threads and processes (SQLite transactions)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _db(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, _MIGRATIONS, what="the trigger table", doing="write",
                           hint="make SLIPWAY_STATE_DIR writable", isolation="IMMEDIATE")  # fmt: skip

    def first_delivery(self, delivery_id: str) -> bool:
        """True the first time a webhook delivery id is seen."""
        with self._db() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO deliveries VALUES (?, ?)", (delivery_id, now()))
            return cur.rowcount == 1

    def forget_delivery(self, delivery_id: str) -> None:
        with self._db() as conn:
            conn.execute("DELETE FROM deliveries WHERE id = ?", (delivery_id,))

    def claim(self, s: Sighting) -> uuid.UUID | None:
        """The event id to announce ``s`` with, or None when it was announced already."""
        with self._db() as conn:
            if s.event == VERSION_CREATED:
                event_id = _event_id(s.event, s.model, s.version)
                cur = conn.execute(
                    "INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?)",
                    (s.model, s.version, str(event_id), s.source, now()),
                )
                return event_id if cur.rowcount == 1 else None
            row = conn.execute("SELECT version, moves FROM aliases WHERE model = ? AND alias = ?", (s.model, s.alias))
            last = row.fetchone()
            if last is not None and last[0] == s.version:
                return None
            moves = 1 if last is None else int(last[1]) + 1
            conn.execute(
                "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?, ?)", (s.model, s.alias, s.version, moves, now())
            )
            return _event_id(s.event, s.model, s.alias, s.version, str(moves))

    def announced_versions(self, model: str) -> set[str]:
        with self._db() as conn:
            return {r[0] for r in conn.execute("SELECT version FROM versions WHERE model = ?", (model,))}


def announce(sightings: Sightings, s: Sighting) -> uuid.UUID | None:
    """Emit the Prefect event of ``s`` unless it was announced already; returns the event id emitted."""
    from prefect.events import emit_event

    event_id = sightings.claim(s)
    if event_id is None:
        return None
    resource = {"prefect.resource.id": f"mlflow.model.{s.model}", "model": s.model, "version": s.version}
    if s.alias:
        resource["alias"] = s.alias
    emit_event(event=s.event, resource=resource, id=event_id, payload={"source": s.source})
    return event_id


def _event_id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(parts))
