"""A target in this process that implements the whole protocol, serves for real, and fails on demand.

Each candidate is the real model server app (``serving.create_app``: the package is loaded and
self-checked) behind one uvicorn server per stage on 127.0.0.1. That server is the stage's stable
endpoint: it routes each request to the live release, or splits by weight during a ``shift``. A
candidate is reached through the same server with the header ``X-Slipway-Candidate: <release>``
(its ``Endpoint.headers``), as a platform routes to a tagged revision or a variant.

``fail`` makes a step raise, one exception per call, in order: ``fail["deploy"] = [TransientTargetError(...)]``;
the step names are the protocol's (deploy, wait_ready, shift, promote, discard, rollback, teardown).
A failing ``promote`` raises before it switches, as the protocol requires.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from serving import create_app
from serving.app import SlipwayApp
from serving.batching import BatchSettings
from serving.model import PackageError
from slipway.errors import At, ConfigError, TargetError
from slipway.release import Endpoint, Release, Stage
from slipway.spec import Timeouts
from targets.base import PACKAGE, Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, put_live
from tests.conftest import free_port

CANDIDATE_HEADER = "X-Slipway-Candidate"
ASGIApp = Callable[..., Any]


def _batching(server_args: tuple[str, ...]) -> BatchSettings:
    """The batch settings the server's options (``TargetContext.server_args``) stand for."""
    options = dict(zip(server_args[::2], server_args[1::2], strict=True))
    return BatchSettings(
        options.get("--batching", "auto"),  # type: ignore[arg-type]
        int(options.get("--max-batch-rows", BatchSettings.max_rows)),
        int(options.get("--max-batch-wait-us", BatchSettings.max_wait_us)),
    )


class _Router:
    """The stage's ASGI app: the candidate a request names, else the live release (or the split)."""

    def __init__(self) -> None:
        self.apps: dict[str, SlipwayApp] = {}
        self.live: str | None = None
        self.canary: tuple[str, float] | None = None

    def pick(self, scope: dict[str, Any]) -> SlipwayApp | None:
        for name, value in scope["headers"]:
            if name == CANDIDATE_HEADER.lower().encode():
                return self.apps.get(value.decode())
        if self.canary and random.random() < self.canary[1]:
            return self.apps.get(self.canary[0])
        return self.apps.get(self.live) if self.live else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        app = self.pick(scope)
        if app is None:
            body = b'{"error":"nothing is deployed here"}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})  # fmt: skip
            return
        await app(scope, receive, send)


@dataclass
class FakeTarget:
    ctx: TargetContext
    kind: str = "fake"
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(artifacts=PACKAGE, traffic_split=True))
    fail: dict[str, list[BaseException]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stage: Stage = self.ctx.stage
        self._router = _Router()
        self._errors: dict[str, str] = {}  # candidate → why its app could not be created
        self.port = free_port()
        self.location = f"fake 127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None

    # --- the protocol --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        self._step("deploy")
        self._serve()
        key = self.ctx.key_for_deploy()
        try:
            self._router.apps[release.id] = create_app(release.package_dir, key.get_secret_value() if key else None,
                                                       batching=_batching(self.ctx.server_args))  # fmt: skip
        except PackageError as exc:  # what a real target sees as a server exiting at start
            self._errors[release.id] = str(exc)
        return Deployment(release, self.stage, self._endpoint({CANDIDATE_HEADER: release.id}))

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        self._step("wait_ready")
        if deployment.release.id in self._errors:
            raise TargetError(f"release {deployment.release.id} exited at start: {self._errors[deployment.release.id]}",
                              at=At(self.kind, "wait_ready", deployment.release.id))  # fmt: skip
        return deployment

    def shift(self, deployment: Deployment, weight: float) -> None:
        self._step("shift")
        if self._router.live is None:
            raise ConfigError("nothing is live to split traffic with", at=At(self.kind, "shift", self.stage.value))
        self._router.canary = (deployment.release.id, weight) if weight else None

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        self._step("promote")
        previous = self._router.live
        self._router.live, self._router.canary = deployment.release.id, None
        if previous and previous != deployment.release.id:
            self._router.apps.pop(previous, None)
        return Deployment(deployment.release, self.stage, self._endpoint(), deployment.handle)

    def discard(self, deployment: Deployment) -> None:
        self._step("discard")
        rid = deployment.release.id
        if rid == self._router.live:
            return
        if self._router.canary and self._router.canary[0] == rid:
            self._router.canary = None
        self._router.apps.pop(rid, None)
        self._errors.pop(rid, None)

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        self._step("rollback")
        return put_live(self, release, timeouts)

    def endpoint(self) -> Endpoint | None:
        return self._endpoint() if self._router.live else None

    def teardown(self) -> None:
        self._step("teardown")
        self._router.apps.clear()
        self._router.live = self._router.canary = None
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None

    def describe(self) -> StageStatus:
        live = self._router.live
        if live is None:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        return StageStatus(self.stage, self.kind, live, self._endpoint(), healthy=True, detail=self.location)

    def facts(self) -> Facts:
        return Facts(1, 1, "", False, None, False, ("/metrics",), tls=False, public=False, at_rest=(), usage=None)

    def changes(self) -> list[Change]:
        return [Change("create", "candidate app in this process")]

    # --- helpers -------------------------------------------------------------------------------

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def _endpoint(self, headers: dict[str, str] | None = None) -> Endpoint:
        return Endpoint(f"http://127.0.0.1:{self.port}", self.ctx.auth, headers or {})

    def _serve(self) -> None:
        if self._server is not None:
            return
        config = uvicorn.Config(self._router, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning",
                                access_log=False)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-{self.stage.value}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake target's server did not start"
            time.sleep(0.01)
