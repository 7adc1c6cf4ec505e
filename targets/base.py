"""The ``Target`` protocol: one small lifecycle that fits every deployment pattern.

A target is bound to one stage (staging or production) of one service. Putting a release live is
always the same three steps, whatever the pattern (``put_live``):

    deploy(release)                start the release as a *candidate* beside whatever is live
    wait_ready(candidate, t)       until the candidate answers its readiness route (or raise, naming why not)
    promote(candidate, t)          switch the stage's traffic to the candidate; retire (or retain) the previous

and, for targets whose capabilities say they split traffic, ``shift(candidate, weight)`` sends a
share of the stage's traffic to a ready candidate before promotion (the canary steps).

What each method may touch, for every target:

- ``deploy`` creates the candidate's own resources. It never changes what serves the stage's
  traffic: the live release's resources, its routing and its configuration stay as they were.
- ``wait_ready`` only reads.
- ``shift`` changes the stage's routing only, never the live release's resources; weight 0 sends
  everything back to the live release.
- ``promote`` is the one method that changes what is live. It may take minutes (a cloud rollout):
  it reports progress through ``TargetContext.progress`` and gives up after its timeout. If it
  raises, the stage serves what it served before (the target undoes its partial switch), or the
  error says exactly what it serves.
- ``discard`` removes a candidate that never went live (and any share of traffic ``shift`` gave it).
  It never touches the live release: called on a candidate that is live, it does nothing.
- ``rollback`` puts an earlier release live through the same steps (reusing retained resources
  where the pattern keeps them); ``teardown`` removes everything of the stage; ``describe``,
  ``endpoint``, ``facts`` (what the stage is configured to be) and ``changes`` (what a release
  would create, change and delete: the plan) only read.

Each pattern maps these onto its own resources: a process (local), a container behind a proxy or an
instance (VM), a revision (container service), a Deployment and Service (Kubernetes), a function
version and alias (serverless), an endpoint variant (managed ML platform).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import SecretStr

from slipway.costs import Usage
from slipway.errors import ConfigError
from slipway.release import ArtifactKind, Auth, AuthScheme, Endpoint, Release, Stage
from slipway.spec import Timeouts

Progress = Callable[[str], None]
_log = logging.getLogger("slipway.targets")


@dataclass(frozen=True)
class ColdStart:
    """The first request of a fresh execution environment (targets that start them on demand), as measured
    by whoever sent it: its latency, and the init duration the platform (or the server) reported."""

    latency_ms: float
    init_ms: float | None
    by: str  # who measured it: "readiness check", "gate"


@dataclass(frozen=True)
class Deployment:
    """A release running on a stage. ``handle`` holds the target's own resource ids.

    ``cold_starts``: the cold starts the target saw getting it ready (the gate reports them with its
    own); ``throttling``: what limits the deployment's concurrency and the setting that raises it, for
    the gate's report when requests are throttled (HTTP 429)."""

    release: Release
    stage: Stage
    endpoint: Endpoint
    handle: Mapping[str, str] = field(default_factory=dict)
    cold_starts: tuple[ColdStart, ...] = ()
    throttling: str = ""


@dataclass(frozen=True)
class StageStatus:
    stage: Stage
    kind: str
    release_id: str | None
    endpoint: Endpoint | None
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class Capabilities:
    """What a pattern takes and can do; the pipeline acts on each field.

    ``artifacts``: what ``deploy`` takes from the build (the image step builds the union of both
    stages'). ``traffic_split``: ``shift`` is implemented (else it raises ``ConfigError``).
    ``stable_endpoint``: the stage answers at one address across promotions; where it does not (an
    instance per release), a promotion moves the address and ``slipway deploy`` says so.
    """

    artifacts: frozenset[ArtifactKind]
    traffic_split: bool = False
    stable_endpoint: bool = True


IMAGE = frozenset({ArtifactKind.IMAGE})
PACKAGE = frozenset({ArtifactKind.PACKAGE})


@dataclass(frozen=True)
class Limit:
    """A platform limit the stage must stay within (serverless: time, memory, package size)."""

    what: str  # "image size", "timeout"
    value: float | None  # None: not known yet (e.g. the image is not built)
    limit: float
    unit: str  # "MB", "s"
    note: str = ""  # where the value comes from

    @property
    def exceeded(self) -> bool:
        return self.value is not None and self.value > self.limit


@dataclass(frozen=True)
class Facts:
    """What a stage is configured to be, read from its config (and, where cheap, the platform): what
    ``plan`` reviews against the chapter's practices (tasks/review.py) and prices (slipway/costs.py)."""

    instances: int  # always-on instances at the least (0: scales to zero)
    max_instances: int
    autoscaling: str  # what scales it ("HPA: 2-4 pods at 70 % CPU"); "" when its count is fixed
    can_autoscale: bool  # the target can scale it, so a fixed count is a choice
    zones: int | None  # availability zones it spans; None where that is not known or not a notion
    can_span_zones: bool
    monitoring: tuple[str, ...]  # what watches it: routes, probes, alarms
    tls: bool  # its users reach it over TLS
    public: bool  # reachable from beyond this machine or a private network
    at_rest: tuple[str, ...]  # what Slipway stores for it, and how it is encrypted
    usage: Usage | None  # what it is billed by; None: nothing is billed (this machine)
    limits: tuple[Limit, ...] = ()  # the platform's limits and where the stage stands against them


@dataclass(frozen=True)
class Change:
    """One thing a release put live on a stage would create, change or delete."""

    action: Literal["create", "change", "delete"]
    resource: str
    detail: str = ""


@dataclass(frozen=True)
class TargetContext:
    """What every target gets besides its typed config."""

    service: str  # the deployment's identity: every resource is named and labelled by it
    model: str
    stage: Stage
    state_dir: Path
    requires_auth: bool
    api_key: SecretStr | None  # None for read-only use (status) and when requires_auth is False
    progress: Progress = _log.info  # where long operations report how they are going
    server_args: tuple[str, ...] = ()  # the spec's options of the model server (ServingSettings.server_args)

    def key_for_deploy(self) -> SecretStr | None:
        """The key a new deployment gets; refuses to start an authenticated endpoint without one."""
        if self.requires_auth and self.api_key is None:
            raise ConfigError(
                f"the {self.stage.value} endpoint requires an API key and none was given",
                hint="set the environment variable named by auth.api_key_env in the spec",
            )
        return self.api_key if self.requires_auth else None

    @property
    def auth(self) -> Auth:
        """How callers authenticate to endpoints that check Slipway's own key (or nothing)."""
        return Auth(AuthScheme.API_KEY if self.requires_auth else AuthScheme.NONE)


class Target(Protocol):
    kind: str
    stage: Stage
    capabilities: Capabilities
    location: str  # where the stage lives, e.g. "docker ssh://vm port 8200": stable across runs

    def deploy(self, release: Release) -> Deployment:
        """Start ``release`` as a candidate on this stage without touching what is live."""
        ...

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        """Block until the candidate is ready; raise ``TargetError`` naming the reason if not."""
        ...

    def shift(self, deployment: Deployment, weight: float) -> None:
        """Send ``weight`` (0 to 1) of the stage's traffic to the ready candidate, the rest to the live one."""
        ...

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        """Switch the stage's traffic to the ready candidate and retire the previous release."""
        ...

    def discard(self, deployment: Deployment) -> None:
        """Remove a candidate that never went live, and any traffic shifted to it. Never touches the live one."""
        ...

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        """Put an earlier release live again."""
        ...

    def endpoint(self) -> Endpoint | None:
        """The stage's stable endpoint, or None when nothing is live."""
        ...

    def teardown(self) -> None:
        """Remove everything this stage runs. Idempotent."""
        ...

    def describe(self) -> StageStatus:
        """What is live on the stage and whether it answers."""
        ...

    def facts(self) -> Facts:
        """What the stage is configured to be (for the review of practices and for cost). Only reads."""
        ...

    def changes(self) -> list[Change]:
        """What putting a new release live here would create, change and delete. Only reads."""
        ...


@dataclass(frozen=True)
class LoadJob:
    """A load generator to run next to a target: what the gate's load phase runs there.

    ``files`` (path relative to the job's working directory → text) is all it runs from: the
    locustfile, the modules it imports, the package manifest with the golden samples. ``argv`` is
    the command after the interpreter (``-m locust ...``), run in that directory with it on the
    module path; ``env`` holds no secret: the target sets ``key_env`` to the endpoint's API key
    from where it keeps it (a Kubernetes Secret). ``outputs`` are files the command writes in its
    working directory that come back in ``LoadOutput``; ``cores`` is the CPU it may use.
    """

    name: str
    files: Mapping[str, str]
    argv: tuple[str, ...]
    env: Mapping[str, str]
    key_env: str | None
    outputs: tuple[str, ...]
    cores: int = 1


@dataclass(frozen=True)
class LoadOutput:
    """What a load job left: its exit code, its output files, the tail of its log, and how busy it
    (its processes' CPU seconds over its wall time) and the machine it ran on were."""

    exit_code: int
    outputs: Mapping[str, str]
    log_tail: str
    cpu_s: float
    wall_s: float
    machine_busy_pct: float
    where: str  # e.g. "kubernetes namespace slipway-staging, Job iris-gate-1a2b"


@runtime_checkable
class LoadRunner(Protocol):
    """A target that can run the gate's load generator next to itself, as Flagger's load tester runs
    in the cluster: the gate then measures the service, not the network (or the port-forward)
    between the machine that runs the flow and the target (``gate.where: in_target``)."""

    def load_endpoint(self, deployment: Deployment) -> Endpoint:
        """The live ``deployment`` as reachable from where ``run_load`` runs (a Service's cluster DNS name)."""
        ...

    def run_load(self, deployment: Deployment, job: LoadJob, timeout_s: float) -> LoadOutput:
        """Run ``job`` next to the target, against ``deployment``; ``TargetError`` if it cannot run
        (a job that runs and fails is reported in ``LoadOutput.exit_code``)."""
        ...


def put_live(target: Target, release: Release, timeouts: Timeouts) -> Deployment:
    """deploy → wait_ready → promote, discarding the candidate if it never goes live.

    The one sequence every stage change goes through. A release that lacks an artifact the target
    takes is refused before anything changes; the live deployment is untouched until the candidate
    is ready, and a promotion that fails leaves it (or says what is live instead).
    """
    release.check_artifacts(target.capabilities.artifacts, f"the {target.stage.value} target ({target.kind})")
    candidate = target.deploy(release)
    try:
        return target.promote(target.wait_ready(candidate, timeouts.ready_s), timeouts.promote_s)
    except BaseException:
        target.discard(candidate)  # never touches what is live, so a candidate a promotion made live stays
        raise


def no_shift(target: Target) -> ConfigError:
    """The error ``shift`` raises on a target whose capabilities say it does not split traffic."""
    return ConfigError(
        f"the {target.stage.value} target ({target.kind}, {target.location}) cannot split traffic",
        hint="promote all at once, or pick a target (or strategy) that splits traffic (docs/architecture.md)",
    )
