"""The ledger a team shares: PostgreSQL, chosen by ``SLIPWAY_LEDGER_URL=postgresql://USER@HOST/DB``.

Same rows as the SQLite ledger (``slipway.ledger``), in the schema ``slipway`` of that database,
brought up to date by numbered migrations when a process first uses it (one process migrates, under
an advisory lock; the others wait and find it done). Keep the password out of the URL: libpq reads
``PGPASSWORD`` or a ``PGPASSFILE``, and ``where`` never shows one.

The deploy lock is a session advisory lock on a connection held for the block: every machine that
shares the database sees it, and the server drops it when the holder's session ends — a killed
process at once (its socket closes), a vanished machine after the TCP keepalives below give up. The
holder also writes who it is into ``slipway.locks`` so that a waiting run can say whom it waits for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from slipway.errors import LedgerError
from slipway.ledger import (
    EVENT_COLUMNS,
    LiveEvent,
    Outcome,
    ReleaseRecord,
    event_from_row,
    event_row,
    from_row,
    insert_release,
    live_of,
    refuse_overlap,
    to_row,
)
from slipway.locking import describe, holder_info, wait_for
from slipway.release import Stage, now
from slipway.settings import get_settings
from slipway.store import PACKAGES

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# a lock holder whose machine vanished is dropped after about idle + interval * count = 25 s
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
_MIGRATION_LOCK = 0x5_11B_3A7  # the advisory lock key migrations take (any constant, one per schema)

_MIGRATIONS = (
    # 1: the SQLite ledger's schema at its version 2, with insertion order kept by ``seq``
    """
    CREATE TABLE slipway.releases (
        seq BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, service TEXT NOT NULL, model TEXT NOT NULL,
        version TEXT NOT NULL, package_sha256 TEXT NOT NULL, package_dir TEXT NOT NULL, spec_hash TEXT NOT NULL,
        staging_kind TEXT NOT NULL, production_kind TEXT NOT NULL, image TEXT NOT NULL, outcome TEXT NOT NULL,
        gate TEXT NOT NULL, error TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT NOT NULL,
        flow_run_id TEXT NOT NULL, trigger TEXT NOT NULL
    );
    CREATE INDEX releases_service ON slipway.releases (service, started_at, seq);
    CREATE TABLE slipway.events (
        seq BIGSERIAL PRIMARY KEY, service TEXT NOT NULL, stage TEXT NOT NULL, release_id TEXT,
        action TEXT NOT NULL, at TEXT NOT NULL, flow_run_id TEXT NOT NULL, location TEXT NOT NULL
    );
    CREATE INDEX events_service ON slipway.events (service, stage, seq);
    CREATE TABLE slipway.locks (service TEXT PRIMARY KEY, holder TEXT NOT NULL)
    """,
    # 2: the SQLite ledger's version 3, what the image is: 'image' or 'server_image'
    """
    ALTER TABLE slipway.releases ADD COLUMN image_kind TEXT NOT NULL DEFAULT 'image'
    """,
)

_HINT = (
    "check that PostgreSQL answers at that address and that the user's password is right (PGPASSWORD or a "
    "PGPASSFILE, not the URL); scripts/services/postgres.sh up starts one on this machine"
)


class PostgresLedger:
    def __init__(self, url: str, packages: Path | None = None) -> None:
        self.url = url
        self.packages = packages or get_settings().path(PACKAGES)  # this machine's copies (SqliteLedger's)
        try:
            info = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise LedgerError(f"SLIPWAY_LEDGER_URL is not a PostgreSQL URL: {exc}", hint=_URL_HINT) from None
        self._where = (
            f"postgresql://{info.get('user', '')}@{info.get('host', 'localhost')}:{info.get('port', 5432)}"
            f"/{info.get('dbname', '')}"
        )
        self._conninfo = make_conninfo(url, connect_timeout=CONNECT_TIMEOUT_S, application_name="slipway", **KEEPALIVES)
        self._migrated = False

    @property
    def where(self) -> str:
        return self._where

    @contextmanager
    def _db(self, doing: str, *, autocommit: bool = False) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A connection inside one transaction (committed when the block ends without error)."""
        try:
            conn = psycopg.connect(self._conninfo, row_factory=dict_row, autocommit=autocommit)
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot reach the release ledger at {self._where}: {_first_line(exc)}", hint=_HINT
            ) from None
        try:
            with conn:
                if not self._migrated:
                    self._migrate(conn)
                yield conn
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot {doing} the release ledger at {self._where}: {_first_line(exc)}",
                hint="the user needs CREATE on the database (for the schema slipway) and to own its tables",
            ) from None

    def _migrate(self, conn: psycopg.Connection[dict[str, Any]]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS slipway")
            conn.execute("CREATE TABLE IF NOT EXISTS slipway.schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM slipway.schema_version").fetchone()
            version = row["version"] if row else 0
            for number in range(version, len(_MIGRATIONS)):
                for statement in filter(str.strip, _MIGRATIONS[number].split(";")):
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO slipway.schema_version VALUES (%s)", (len(_MIGRATIONS),))
            elif version < len(_MIGRATIONS):
                conn.execute("UPDATE slipway.schema_version SET version = %s", (len(_MIGRATIONS),))
        self._migrated = True

    def check_writable(self) -> None:
        with self._db("write") as conn:
            row = conn.execute(
                "SELECT has_table_privilege('slipway.releases', 'INSERT') AND "
                "has_table_privilege('slipway.events', 'INSERT') AS ok"
            ).fetchone()
            if not (row and row["ok"]):
                raise LedgerError(
                    f"the user of {self._where} may not write the ledger's tables",
                    hint="GRANT INSERT, UPDATE, SELECT on the tables of schema slipway to that user",
                )

    @contextmanager
    def lock(self, service: str, *, timeout_s: float, purpose: str) -> Iterator[None]:
        key = int.from_bytes(hashlib.sha256(f"slipway:{service}".encode()).digest()[:8], "big", signed=True)
        with self._db("lock a service in", autocommit=True) as conn:

            def try_lock() -> bool:
                row = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (key,)).fetchone()
                return bool(row and row["got"])

            def holder() -> str:
                row = conn.execute("SELECT holder FROM slipway.locks WHERE service = %s", (service,)).fetchone()
                return describe(json.loads(row["holder"]) if row else None)

            wait_for(try_lock, holder, service, timeout_s)
            conn.execute(
                "INSERT INTO slipway.locks VALUES (%s, %s) "
                "ON CONFLICT (service) DO UPDATE SET holder = EXCLUDED.holder",
                (service, json.dumps(holder_info(purpose))),
            )
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error as exc:  # the session is gone, and its lock with it
                    log.warning("the ledger's session ended before the %s of %s did (%s): its lock was released "
                                "early", purpose, service, _first_line(exc))  # fmt: skip

    def start(self, record: ReleaseRecord) -> None:
        row = to_row(record)
        with self._db("write") as conn:
            conn.execute(insert_release(row, "%"), row)

    def finish(self, release_id: str, outcome: Outcome, *, gate: dict[str, Any] | None = None, error: str = "") -> None:
        with self._db("write") as conn:
            conn.execute(
                "UPDATE slipway.releases SET outcome = %s, gate = COALESCE(%s, gate), error = %s, finished_at = %s "
                "WHERE id = %s",
                (outcome.value, None if gate is None else json.dumps(gate), error, now(), release_id),
            )

    def record_event(self, event: LiveEvent) -> None:
        with self._db("write") as conn:
            conn.execute(_INSERT_EVENT, event_row(event))

    def import_history(self, records: Iterable[ReleaseRecord], events: Iterable[LiveEvent]) -> int:
        rows = [to_row(r) for r in records]
        with self._db("write") as conn:
            refuse_overlap(rows, lambda ids: [r["id"] for r in conn.execute(
                "SELECT id FROM slipway.releases WHERE id = ANY(%s)", (list(ids),))])  # fmt: skip
            with conn.cursor() as cur:
                for row in rows:
                    cur.execute(insert_release(row, "%"), row)
                cur.executemany(_INSERT_EVENT, [event_row(e) for e in events])
        return len(rows)

    def get(self, release_id: str) -> ReleaseRecord | None:
        with self._db("read") as conn:
            row = conn.execute("SELECT * FROM slipway.releases WHERE id = %s", (release_id,)).fetchone()
        return from_row(row, self.packages) if row else None

    def releases(self, service: str) -> list[ReleaseRecord]:
        with self._db("read") as conn:
            rows = conn.execute(
                "SELECT * FROM slipway.releases WHERE service = %s ORDER BY started_at, seq", (service,)
            ).fetchall()
        return [from_row(r, self.packages) for r in rows]

    def events(self, service: str, stage: Stage | None = None) -> list[LiveEvent]:
        with self._db("read") as conn:
            rows = conn.execute(
                "SELECT * FROM slipway.events WHERE service = %s AND (%s::text IS NULL OR stage = %s) ORDER BY seq",
                (service, stage and stage.value, stage and stage.value),
            ).fetchall()
        return [event_from_row(r) for r in rows]

    def live(self, service: str, stage: Stage) -> ReleaseRecord | None:
        return live_of(self, service, stage)

    def services(self) -> list[str]:
        with self._db("read") as conn:
            rows = conn.execute(
                "SELECT service FROM slipway.releases UNION SELECT service FROM slipway.events ORDER BY 1"
            ).fetchall()
        return [r["service"] for r in rows]


_INSERT_EVENT = (
    f"INSERT INTO slipway.events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"
)
_URL_HINT = "write it as postgresql://USER@HOST:PORT/DATABASE, with the password in PGPASSWORD"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
