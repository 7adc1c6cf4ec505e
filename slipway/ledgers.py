"""Which ledger: the one a URL names. ``sqlite:///PATH`` (the default, a file in the state directory,
one machine) or ``postgresql://USER@HOST:PORT/DB`` (a team's, ``slipway/postgres.py``). Above both
backends, so neither imports the other."""

from __future__ import annotations

from pathlib import Path

from slipway.errors import ConfigError
from slipway.ledger import Ledger, SqliteLedger
from slipway.postgres import PostgresLedger
from slipway.settings import Settings
from slipway.store import PACKAGES


def open_ledger(settings: Settings) -> Ledger:
    """The ledger of ``SLIPWAY_LEDGER_URL``: a SQLite file in the state directory unless set."""
    return ledger_at(settings.ledger_url or f"sqlite:///{settings.path('ledger.sqlite')}", settings.path(PACKAGES))


def ledger_at(url: str, packages: Path | None = None) -> Ledger:
    if url.startswith("sqlite:///"):
        return SqliteLedger(Path(url.removeprefix("sqlite:///")), packages)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url, packages)
    scheme = url.split(":", 1)[0]
    raise ConfigError(
        f"the ledger URL has the unsupported scheme {scheme!r}",
        hint="use sqlite:///PATH (the default, one machine) or postgresql://USER@HOST:PORT/DB (a team's)",
    )
