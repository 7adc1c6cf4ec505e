"""The Prefect deployments of every spec in a folder: ``slipway deployments sync FOLDER``.

Each spec (``*.yaml``/``*.yml`` in the folder, not below it) gets four deployments named by its
service — ``release/<service>``, ``rollback/<service>``, ``teardown/<service>`` and
``verify production/<service>`` — in one work pool, and a ``models:/`` spec also gets the
registry-event trigger of its release deployment (an automation the deployment owns). Everything
sync creates carries the tag ``slipway-sync``; it changes and removes only those, in the same work
pool, and never touches a deployment someone else made.

Per model, each deployment has a concurrency limit of 1 (Prefect's deployment concurrency limit,
itself a global concurrency limit the server keeps per deployment): release, rollback and teardown
queue (``ENQUEUE``: a run waits in AwaitingConcurrencySlot, holding no worker), verify drops a
check that would overlap the running one (``CANCEL_NEW``). Runs of *different* deployments of one
service (a rollback during a release) are kept apart by the ledger's deploy lock, which spans
machines; a global concurrency limit shared by the four would add a second lock for the same thing
and would need the flows to take it themselves.

Sync reads every spec before it changes anything: a spec that does not load, or two specs of one
service, stop it with the file named and the server as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import httpx
from prefect import Flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.client.schemas.responses import DeploymentResponse
from prefect.events.schemas.automations import AutomationCore
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema

from flows.release import release
from flows.rollback import rollback
from flows.teardown import teardown
from flows.verify import verify
from slipway.errors import ConfigError, SlipwayError
from slipway.events import ALIAS_MOVED, VERSION_CREATED
from slipway.registry import registered_source
from slipway.spec import ReleaseSpec, load_spec

MANAGED = "slipway-sync"
CODE_DIR = Path(__file__).resolve().parent.parent  # the checkout whose flows/ the workers run
_LOCK_WAIT = {"env": {"SLIPWAY_LOCK_TIMEOUT_S": "900"}}

Action = Literal["create", "update", "remove", "unchanged"]


@dataclass(frozen=True)
class _Kind:
    flow: Flow[..., Any]
    entrypoint: str
    description: str
    parameters: dict[str, Any]
    collision: ConcurrencyLimitStrategy
    job_variables: dict[str, Any] = field(default_factory=dict)


_KINDS = (
    _Kind(release, "flows/release.py:release", "package → build → push → staging → Locust gate → production",
          {"trigger": "ui", "strict": False}, ConcurrencyLimitStrategy.ENQUEUE, _LOCK_WAIT),
    _Kind(rollback, "flows/rollback.py:rollback", "return production to an earlier accepted release", {},
          ConcurrencyLimitStrategy.ENQUEUE, _LOCK_WAIT),
    _Kind(teardown, "flows/teardown.py:teardown", "stop and remove what a stage runs", {"stage": "staging"},
          ConcurrencyLimitStrategy.ENQUEUE, _LOCK_WAIT),
    _Kind(verify, "flows/verify.py:verify", "re-run the smoke check against production and record the result", {},
          ConcurrencyLimitStrategy.CANCEL_NEW),
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    """What sync did (or found nothing to do) to one deployment; ``detail`` names what differed."""

    action: Action
    deployment: str
    spec: str
    detail: str = ""


@dataclass(frozen=True)
class _Wanted:
    kind: _Kind
    spec: ReleaseSpec
    spec_path: Path
    fields: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.kind.flow.name}/{self.spec.service}"


def read_folder(folder: Path) -> dict[Path, ReleaseSpec]:
    """Every spec of the folder, all loaded and checked before anything changes."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder", hint="pass the folder that holds the release specs")
    paths = sorted(p.resolve() for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not paths:
        raise ConfigError(
            f"no release specs (*.yaml, *.yml) in {folder}",
            hint="put the specs in the folder; to remove every synced deployment, delete those tagged "
            f"{MANAGED} (prefect deployment ls)",
        )
    specs: dict[Path, ReleaseSpec] = {}
    for path in paths:
        try:
            specs[path] = load_spec(path)
        except SlipwayError as exc:
            raise ConfigError(
                f"{exc.message}\nnothing was synced", hint=exc.hint or f"fix or move {path.name}"
            ) from exc
    seen: dict[str, Path] = {}
    for path, spec in specs.items():
        if spec.service in seen:
            raise ConfigError(
                f"{seen[spec.service].name} and {path.name} both release service {spec.service!r}; nothing was synced",
                hint="give one of them its own `service:` name",
            )
        seen[spec.service] = path
    return specs


def sync(folder: Path, *, work_pool: str) -> list[Change]:
    """Make the server's synced deployments of ``work_pool`` those of the folder's specs."""
    specs = read_folder(folder)
    with _client(work_pool) as client:
        flow_ids = {k.flow.name: client.create_flow_from_name(k.flow.name) for k in _KINDS}
        names = {v: k for k, v in flow_ids.items()}
        wanted = {(flow_ids[w.kind.flow.name], w.spec.service): w for w in _wanted(specs, work_pool)}
        have = {(d.flow_id, d.name): d for d in _deployments(client)}
        _refuse_foreign(client, wanted, have)
        changes = []
        for key, w in wanted.items():
            current = have.get(key)
            trigger = _trigger(w)
            diff = _differences(client, w, trigger, current)
            if current and not diff:
                changes.append(Change("unchanged", w.full_name, str(w.spec_path)))
                continue
            dep_id = client.create_deployment(flow_id=key[0], name=w.spec.service, **w.fields)  # an upsert
            owner = f"prefect.deployment.{dep_id}"
            if current is None or "trigger" in diff:
                client.delete_resource_owned_automations(owner)
                if trigger:
                    client.create_automation(_as_automation(trigger, dep_id))
            action: Action = "update" if current else "create"
            changes.append(Change(action, w.full_name, str(w.spec_path), ", ".join(diff) if current else ""))
        for key, d in have.items():
            if key not in wanted and d.work_pool_name == work_pool:
                client.delete_resource_owned_automations(f"prefect.deployment.{d.id}")
                client.delete_deployment(d.id)
                gone = str(d.parameters.get("spec_path", ""))
                changes.append(
                    Change("remove", f"{names.get(d.flow_id, d.flow_id)}/{d.name}", gone, "its spec is gone")
                )
    return changes


def _wanted(specs: dict[Path, ReleaseSpec], work_pool: str) -> Iterator[_Wanted]:
    for path, spec in specs.items():
        for kind in _KINDS:
            yield _Wanted(kind, spec, path, {
                "description": f"{kind.description} — service {spec.service} ({path.name})",
                "entrypoint": kind.entrypoint,
                "path": str(CODE_DIR),
                "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(CODE_DIR)}}],
                "parameters": {"spec_path": str(path), **kind.parameters},
                "parameter_openapi_schema": parameter_schema(kind.flow).model_dump_for_openapi(),
                "enforce_parameter_schema": True,
                "tags": [MANAGED, f"service:{spec.service}"],
                "work_pool_name": work_pool,
                "job_variables": kind.job_variables,
                "concurrency_limit": 1,
                "concurrency_options": ConcurrencyOptions(collision_strategy=kind.collision),
            })  # fmt: skip


def _trigger(w: _Wanted) -> DeploymentEventTrigger | None:
    """The registry-event trigger of a release deployment whose spec names a ``models:/`` source."""
    src = registered_source(w.spec.model.source)
    if w.kind.flow is not release or src is None:
        return None
    match: dict[str, str | list[str]] = {"prefect.resource.id": f"mlflow.model.{src.name}"}
    if src.alias:
        match["alias"] = src.alias
    return DeploymentEventTrigger(
        name=f"release {w.spec.service} on " + (f"a move of @{src.alias}" if src.alias else "a new version"),
        description=f"a registry change of {src.name} → release it ({MANAGED})",
        expect={ALIAS_MOVED if src.alias else VERSION_CREATED},
        match=match,
        parameters={"version": "{{ event.resource['version'] }}", "trigger": "event:{{ event.id }}"},
    )


def _differences(
    client: SyncPrefectClient, w: _Wanted, trigger: DeploymentEventTrigger | None, current: DeploymentResponse | None
) -> list[str]:
    """The names of the fields where the server's deployment differs from the wanted one."""
    if current is None:
        return ["new"]
    options = current.concurrency_options
    have: dict[str, Any] = current.model_dump(mode="json", include=set(w.fields) - {"concurrency_limit"})
    have["concurrency_limit"] = current.global_concurrency_limit.limit if current.global_concurrency_limit else None
    have["concurrency_options"] = options.model_dump(mode="json") if options else None
    want = {k: v.model_dump(mode="json") if k == "concurrency_options" else v for k, v in w.fields.items()}
    diff = [k for k in want if _canon(want[k]) != _canon(have.get(k))]
    owned = [
        a for a in client.read_resource_related_automations(f"prefect.deployment.{current.id}") if MANAGED in a.tags
    ]
    wanted_automations = [_automation(_as_automation(trigger, current.id))] if trigger else []
    if sorted(map(_canon, map(_automation, owned))) != sorted(map(_canon, wanted_automations)):
        diff.append("trigger")
    return diff


def _as_automation(trigger: DeploymentEventTrigger, deployment_id: UUID) -> AutomationCore:
    """The automation of a trigger, owned by its deployment (deleted with it) and tagged as synced."""
    trigger.set_deployment_id(deployment_id)
    return trigger.as_automation().model_copy(update={"tags": [MANAGED]})


def _automation(a: AutomationCore) -> dict[str, Any]:
    """What an automation does (the server does not return its owner)."""
    fields = {"name", "description", "enabled", "tags", "trigger", "actions", "actions_on_trigger",
              "actions_on_resolve"}  # fmt: skip
    dumped: dict[str, Any] = a.model_dump(mode="json", include=fields)
    dumped["trigger"].pop("id", None)
    return dumped


def _canon(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = sorted(value)
    return json.dumps(value, sort_keys=True, default=str)


def _deployments(client: SyncPrefectClient) -> list[DeploymentResponse]:
    found: list[DeploymentResponse] = []
    while page := client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[MANAGED])), limit=200, offset=len(found)
    ):
        found += page
    return found


def _refuse_foreign(
    client: SyncPrefectClient, wanted: dict[tuple[Any, str], _Wanted], have: dict[tuple[Any, str], DeploymentResponse]
) -> None:
    """A wanted name held by a deployment sync did not make stops sync before it changes anything."""
    for key, w in wanted.items():
        if key in have:
            continue
        try:
            other = client.read_deployment_by_name(w.full_name)
        except ObjectNotFound:
            continue
        raise ConfigError(
            f"deployment {w.full_name} (for {w.spec_path.name}) exists and was not made by slipway deployments sync "
            f"(it has no tag {MANAGED}; tags: {other.tags}); nothing was synced",
            hint=f"give the spec its own `service:` name, or delete that deployment (prefect deployment delete "
            f"'{w.full_name}')",
        )


@contextmanager
def _client(work_pool: str) -> Iterator[SyncPrefectClient]:
    """The Prefect API of PREFECT_API_URL, answering, and the work pool on it."""
    with get_client(sync_client=True) as client:
        where = client.api_url
        try:
            client.read_work_pool(work_pool)
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"the Prefect API at {where} does not answer ({type(exc).__name__}); nothing was synced",
                hint="start the server (make server) or set PREFECT_API_URL to it",
            ) from exc
        except ObjectNotFound:
            raise ConfigError(
                f"the Prefect server at {where} has no work pool {work_pool!r}; nothing was synced",
                hint=f"create it (prefect work-pool create {work_pool} --type process) or pass --work-pool",
            ) from None
        yield client
