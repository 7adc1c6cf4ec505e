"""Machine-local settings, from the environment (``SLIPWAY_*``); never from the release spec."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "slipway"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIPWAY_", extra="ignore")

    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Where packages, stage state, reports, locks and the SQLite ledger live.",
    )
    ledger_url: str = Field(
        default="",
        description="Ledger location: empty for <state_dir>/ledger.sqlite, or sqlite:///PATH.",
    )
    lock_timeout_s: float = Field(
        default=0.0, ge=0, description="How long a deploy waits for another deploy of the same model."
    )

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)


def get_settings() -> Settings:
    return Settings()
