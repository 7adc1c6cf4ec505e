"""What every flow and CLI command opens first: the spec, settings, ledger, package store, key and
both targets.

Everything is checked before anything changes: the spec, the ledger's and the store's locations, the key, and that
the spec's production is where the service's production is (``check_location``: two specs that
name one service, or a production moved without a teardown, are refused with the fix).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect.runtime import flow_run
from pydantic import SecretStr

from slipway.errors import ConfigError
from slipway.ledger import Action, Ledger
from slipway.ledgers import open_ledger
from slipway.release import Stage
from slipway.settings import Settings, get_settings, resolve_api_key
from slipway.spec import ReleaseSpec, load_spec
from slipway.store import PackageStore, open_store
from targets import make_target
from targets.base import LoadRunner, Target, TargetContext
from tasks import log_progress


@dataclass(frozen=True)
class Pipeline:
    spec: ReleaseSpec
    settings: Settings
    ledger: Ledger
    store: PackageStore
    api_key: SecretStr | None
    staging: Target
    production: Target

    @property
    def service(self) -> str:
        return self.spec.service

    def target(self, stage: Stage) -> Target:
        return self.staging if stage is Stage.STAGING else self.production

    @property
    def gate_runner(self) -> LoadRunner | None:
        """The staging target, when the spec runs the gate's load next to it (``gate.where: in_target``)."""
        if self.spec.gate.where != "in_target":
            return None
        if not isinstance(self.staging, LoadRunner):
            raise ConfigError(
                f"gate.where is in_target, and the staging target ({self.staging.kind}) cannot run a load generator "
                "next to itself",
                hint="set gate.where: local, or stage on a target that can (kubernetes runs the gate as a Job)",
            )
        return self.staging


def open_pipeline(spec_path: str, *, need_key: bool = True, check: bool = True) -> Pipeline:
    """Validate everything a run needs before it changes anything (``check``: the location too)."""
    spec = load_spec(spec_path)
    settings = get_settings()
    ledger = open_ledger(settings)
    requires_auth = spec.auth.mode != "none"
    api_key = resolve_api_key(spec.auth.api_key_env, requires_auth) if need_key else None

    def target(stage: Stage) -> Target:
        ctx = TargetContext(spec.service, spec.model.name, stage, settings.state_dir, requires_auth, api_key,
                            log_progress, spec.serving.server_args())  # fmt: skip
        return make_target(spec.target_for(stage), ctx)

    p = Pipeline(spec, settings, ledger, open_store(settings), api_key, target(Stage.STAGING), target(Stage.PRODUCTION))
    if check:
        check_location(p)
        _ = p.gate_runner  # a gate the staging target cannot run is refused before anything changes
    return p


def check_location(p: Pipeline) -> None:
    """Refuse a spec whose production is not where the ledger says the service's production is."""
    placed = [e for e in p.ledger.events(p.service, Stage.PRODUCTION) if e.location or e.action is Action.TEARDOWN]
    if not placed or placed[-1].action is Action.TEARDOWN or placed[-1].location == p.production.location:
        return
    last = placed[-1]
    raise ConfigError(
        f"service {p.service!r} has its production at {last.location} (release {last.release_id}), and this spec "
        f"puts production at {p.production.location}",
        hint="two specs name the same service: give this spec its own `service:` name; to move production, "
        "run `slipway teardown --stage production` with the spec that put it there first",
    )


def run_id() -> str:
    """The Prefect flow run this runs in ('' outside one), for the ledger."""
    return str(flow_run.get_id() or "")
