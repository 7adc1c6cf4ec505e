"""Machine-local settings and secrets, from the environment (``SLIPWAY_*``, the API key); never from the spec."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from slipway.errors import ConfigError


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
    store_url: str = Field(
        default="",
        description="Package store: empty for the state directory, s3://BUCKET/PREFIX, or an absolute path.",
    )
    prefect_server_dir: Path | None = Field(
        default=None,
        description="The local Prefect server's folder (``slipway server``); empty: <state_dir>/prefect-server.",
    )
    lock_timeout_s: float = Field(
        default=0.0, ge=0, description="How long a run waits for another run of the same service."
    )
    package_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the sandbox may take to load a model and predict its samples."
    )
    package_memory_mb: int = Field(
        default=4096, ge=256, description="The sandbox's memory limit (address space) while it loads a model."
    )

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)


def get_settings() -> Settings:
    return Settings()


# What a process that must hold no credentials inherits of this one's environment: the model
# sandbox (tasks/package.py) and the local model server (plus its own key).
_PLAIN = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"})  # fmt: skip


def plain_environment() -> dict[str, str]:
    """This process's environment without anything that could be a credential: an allowlist of
    locale, path and thread settings. Cloud, registry, Prefect and endpoint keys never pass."""
    return {k: v for k, v in os.environ.items() if k in _PLAIN or k.startswith("LC_")}


def resolve_api_key(api_key_env: str, required: bool) -> SecretStr | None:
    """The endpoint's API key from the environment variable the spec names; None when auth is off."""
    if not required:
        return None
    value = os.environ.get(api_key_env, "")
    if not value:
        raise ConfigError(
            f"the endpoint requires an API key (auth.mode: api_key) and ${api_key_env} is not set",
            hint=f"export {api_key_env}=$(openssl rand -hex 24) (or your team's key) and run again; "
            "set auth.mode: none in the spec only for an endpoint that may be called by anyone",
        )
    if len(value) < 16:
        raise ConfigError(
            f"${api_key_env} is {len(value)} characters long: too short to be an API key",
            hint="use at least 16 random characters, e.g. $(openssl rand -hex 24)",
        )
    return SecretStr(value)
