"""The ``Target`` protocol: one small lifecycle that fits every deployment pattern.

A target is bound to one stage (staging or production) of one model. Putting a release live is
always the same three steps, whatever the pattern:

    deploy(release)          start the release as a *candidate* next to whatever is live
    wait_ready(candidate)    until the candidate answers /ready (or raise, naming why not)
    promote(candidate)       make it the stage's live deployment; retire (or retain) the previous one

A candidate that fails is removed with ``discard``; the live deployment is never touched before
the candidate is ready. ``rollback`` puts an earlier release live again (reusing retained
resources where the pattern keeps them), ``teardown`` removes everything of the stage, and
``describe`` reports what is live. Each pattern maps these onto its own resources: a process
(local), a container behind a proxy (VM), a revision (container service), a Deployment and Service
(Kubernetes), a function version and alias (serverless), an endpoint variant (managed ML platform).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from slipway.errors import ConfigError


class Stage(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


@dataclass(frozen=True)
class ImageRef:
    """An image pinned by digest: the only way the pipeline refers to an image after the push."""

    repository: str
    digest: str  # "sha256:..."

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class Release:
    """What is deployed: one packaged model version, and its image when the target takes one."""

    id: str
    model: str
    version: str
    package_sha256: str
    package_dir: Path
    spec_hash: str
    image: ImageRef | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where a stage (or one candidate) answers, as reachable from this machine."""

    url: str
    requires_auth: bool = True
    # Where the stage is served to its users, when ``url`` is only a forward to 127.0.0.1 that this
    # process owns (Kubernetes): e.g. "service iris in namespace slipway-production, port 80".
    served_at: str = ""


@dataclass(frozen=True)
class Deployment:
    """A release running on a stage. ``handle`` holds the target's own resource ids."""

    release: Release
    stage: Stage
    endpoint: Endpoint
    handle: Mapping[str, str] = field(default_factory=dict)


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
    """What a pattern can do, so flows and docs can say what a promotion guarantees."""

    needs_image: bool
    zero_downtime_promotion: bool
    traffic_split: bool = False
    scale_to_zero: bool = False


@dataclass(frozen=True)
class TargetContext:
    """What every target gets besides its typed config."""

    model: str
    stage: Stage
    state_dir: Path
    requires_auth: bool
    api_key: SecretStr | None  # None for read-only use (status) and when requires_auth is False

    def key_for_deploy(self) -> SecretStr | None:
        """The key a new deployment gets; refuses to start an authenticated endpoint without one."""
        if self.requires_auth and self.api_key is None:
            raise ConfigError(
                f"the {self.stage.value} endpoint requires an API key and none was given",
                hint="set the environment variable named by auth.api_key_env in the spec",
            )
        return self.api_key if self.requires_auth else None


class Target(Protocol):
    kind: str
    stage: Stage
    capabilities: Capabilities

    def deploy(self, release: Release) -> Deployment:
        """Start ``release`` as a candidate on this stage without touching what is live."""
        ...

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        """Block until the candidate is ready; raise ``TargetError`` naming the reason if not."""
        ...

    def promote(self, deployment: Deployment) -> Deployment:
        """Make a ready candidate the stage's live deployment and retire the previous one."""
        ...

    def discard(self, deployment: Deployment) -> None:
        """Remove a candidate that never went live. Must not touch the live deployment."""
        ...

    def rollback(self, release: Release, timeout_s: float) -> Deployment:
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


def put_live(target: Target, release: Release, timeout_s: float) -> Deployment:
    """deploy → wait_ready → promote, discarding the candidate if it never becomes ready.

    The one sequence every stage change goes through; the live deployment is untouched until the
    candidate is ready.
    """
    candidate = target.deploy(release)
    try:
        ready = target.wait_ready(candidate, timeout_s)
    except BaseException:
        target.discard(candidate)
        raise
    return target.promote(ready)
