"""A target that keeps its state in memory and fails on demand: for the flow's retry behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from targets.base import Capabilities, Deployment, Endpoint, Release, Stage, StageStatus, put_live


@dataclass
class FakeTarget:
    stage: Stage = Stage.STAGING
    kind: str = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(needs_image=False, zero_downtime_promotion=True)
    failures: list[Exception] = field(default_factory=list)  # raised by deploy, one per call, in order
    live: Release | None = None
    deploy_calls: int = 0
    discarded: list[str] = field(default_factory=list)

    def deploy(self, release: Release) -> Deployment:
        self.deploy_calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return Deployment(release, self.stage, Endpoint("http://127.0.0.1:1"))

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        return deployment

    def promote(self, deployment: Deployment) -> Deployment:
        self.live = deployment.release
        return deployment

    def discard(self, deployment: Deployment) -> None:
        self.discarded.append(deployment.release.id)

    def rollback(self, release: Release, timeout_s: float) -> Deployment:
        return put_live(self, release, timeout_s)

    def endpoint(self) -> Endpoint | None:
        return Endpoint("http://127.0.0.1:1") if self.live else None

    def teardown(self) -> None:
        self.live = None

    def describe(self) -> StageStatus:
        return StageStatus(self.stage, self.kind, self.live.id if self.live else None, self.endpoint(), True)
