"""SQLite files of the state directory (the ledger, the trigger table): one transaction per use, the
schema brought up to date first by numbered migrations, every failure a ``LedgerError``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from slipway.errors import LedgerError


@contextmanager
def transaction(
    path: Path,
    migrations: Sequence[str],
    *,
    what: str,
    doing: str,
    hint: str,
    isolation: Literal["DEFERRED", "IMMEDIATE"] = "DEFERRED",
) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` inside one transaction, committed when the block ends without error.

    ``migrations[i]`` takes the schema from version ``i`` to ``i + 1`` (``PRAGMA user_version``);
    each runs once per file, in its own transaction, before the block's.
    """

    def fail(exc: Exception) -> LedgerError:
        return LedgerError(f"cannot {doing} {what} at {path}: {exc}", hint=hint)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=isolation)
    except (OSError, sqlite3.Error) as exc:
        raise fail(exc) from exc
    try:
        conn.row_factory = sqlite3.Row
        _migrate(conn, migrations)
        with conn:
            yield conn
    except sqlite3.Error as exc:
        raise fail(exc) from exc
    finally:
        conn.close()


def _migrate(conn: sqlite3.Connection, migrations: Sequence[str]) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version >= len(migrations):
        return
    with conn:  # one transaction: a second process migrating at once waits, then finds it done
        conn.execute("BEGIN IMMEDIATE")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for number in range(version, len(migrations)):
            for statement in filter(str.strip, migrations[number].split(";")):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(migrations)}")
