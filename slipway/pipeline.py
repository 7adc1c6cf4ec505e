"""What every flow and CLI command opens first: the spec, settings, ledger, key and both targets."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import SecretStr

from slipway.errors import ConfigError
from slipway.ledger import Ledger, open_ledger
from slipway.settings import Settings, get_settings
from slipway.spec import AuthSettings, ReleaseSpec, load_spec
from targets import make_target
from targets.base import Stage, Target, TargetContext


@dataclass(frozen=True)
class Pipeline:
    spec: ReleaseSpec
    settings: Settings
    ledger: Ledger
    api_key: SecretStr | None
    staging: Target
    production: Target

    @property
    def model(self) -> str:
        return self.spec.model.name

    def target(self, stage: Stage) -> Target:
        return self.staging if stage is Stage.STAGING else self.production


def open_pipeline(spec_path: str, *, need_key: bool = True) -> Pipeline:
    """Validate everything a run needs before it changes anything."""
    spec = load_spec(spec_path)
    settings = get_settings()
    ledger = open_ledger(settings)
    api_key = resolve_api_key(spec.auth) if need_key else None
    requires_auth = spec.auth.mode != "none"

    def target(stage: Stage) -> Target:
        ctx = TargetContext(spec.model.name, stage, settings.state_dir, requires_auth, api_key)
        return make_target(spec.target_for(stage.value), ctx)

    return Pipeline(spec, settings, ledger, api_key, target(Stage.STAGING), target(Stage.PRODUCTION))


def resolve_api_key(auth: AuthSettings) -> SecretStr | None:
    """The endpoint's API key from the environment; None only when the spec turns auth off."""
    if auth.mode == "none":
        return None
    value = os.environ.get(auth.api_key_env, "")
    if not value:
        raise ConfigError(
            f"the endpoint requires an API key (auth.mode: api_key) and ${auth.api_key_env} is not set",
            hint=f"export {auth.api_key_env}=$(openssl rand -hex 24) (or your team's key) and run again; "
            "set auth.mode: none in the spec only for an endpoint that may be called by anyone",
        )
    if len(value) < 16:
        raise ConfigError(
            f"${auth.api_key_env} is {len(value)} characters long: too short to be an API key",
            hint="use at least 16 random characters, e.g. $(openssl rand -hex 24)",
        )
    return SecretStr(value)
