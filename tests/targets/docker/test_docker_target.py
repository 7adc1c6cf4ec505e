"""The docker target on the real engine: zero failed requests through a promotion, a candidate that
never becomes ready, rollback, what a container runs with, and the target's bad inputs."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from slipway.errors import ConfigError, TargetError
from slipway.release import ImageRef, Release, Stage
from slipway.spec import DockerTarget, Timeouts
from targets import make_target
from targets.base import Target, put_live
from tests.conftest import free_port
from tests.images import TEST_REPOSITORY
from tests.targets.fixtures import TIMEOUTS, context


@pytest.fixture
def make(state_dir: Path, api_key: str) -> Iterator[object]:
    made: list[Target] = []

    def factory(stage: Stage = Stage.PRODUCTION, service: str = "iris", **settings: object) -> Target:
        ctx = context(stage, state_dir, api_key, service)
        target = make_target(DockerTarget.model_validate({"port": free_port(), **settings}), ctx)
        made.append(target)
        return target

    yield factory
    for target in made:
        target.teardown()


def _sha(url: str, key: str) -> str:
    return str(httpx.get(f"{url}/metadata", headers={"X-API-Key": key}, timeout=5).json()["sha256"])


@pytest.mark.fault("injected failure")
def test_candidate_never_ready_leaves_production_serving(  # type: ignore[no-untyped-def]
    make, releases: dict[str, Release], api_key: str, hung_image: ImageRef
) -> None:
    target = make(ready_timeout_s=3)
    url = put_live(target, releases["v1"], TIMEOUTS).endpoint.url
    hung = dataclasses.replace(releases["v2"], id="r-hung", image=hung_image)
    started = time.monotonic()
    with pytest.raises(TargetError, match="r-hung was not ready after 3 s"):
        put_live(target, hung, Timeouts(3, 30))
    assert time.monotonic() - started < 20
    assert _sha(url, api_key) == releases["v1"].package_sha256
    assert target.describe().release_id == "r-v1"
    found = docker.from_env().containers.list(all=True, filters={"label": "io.slipway.release=r-hung"})
    names = [c.name for c in found]
    assert names == []  # the candidate was discarded


def test_container_settings_and_key_not_in_image(make, releases: dict[str, Release], api_key: str) -> None:  # type: ignore[no-untyped-def]
    target = make(Stage.STAGING, memory="300m", cpus=0.5, restart_policy="on-failure", log_max_size="5m")
    live = put_live(target, releases["v1"], TIMEOUTS)
    assert live.endpoint.url.endswith(f":{target.config.port}")  # type: ignore[attr-defined]
    attrs = docker.from_env().containers.get(live.handle["container"]).attrs
    host = attrs["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (300 * 2**20, 500_000_000)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "3", "max-size": "5m"}}
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert f"SLIPWAY_API_KEY={api_key}" in attrs["Config"]["Env"]
    image = docker.from_env().images.get(str(live.release.image)).attrs["Config"]
    assert not any("SLIPWAY_API_KEY" in e for e in image["Env"] or [])
    assert image["User"] == "10001:10001" and image["Healthcheck"]["Test"][0] == "CMD"
    assert image["Labels"]["io.slipway.sha256"] == releases["v1"].package_sha256


def test_a_long_service_name_goes_live_behind_the_proxy(make, releases: dict[str, Release], api_key: str) -> None:  # type: ignore[no-untyped-def]
    """The proxy finds containers by name through the engine's DNS: 63 characters at most."""
    target = make(service="fraud-detector-for-card-payments-eu")
    url = put_live(target, releases["v1"], TIMEOUTS).endpoint.url
    assert _sha(url, api_key) == releases["v1"].package_sha256


@pytest.mark.fault("bad input")
def test_port_taken_is_a_clear_error_and_starts_nothing(make, releases: dict[str, Release]) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        target = make(Stage.STAGING, port=squatter.getsockname()[1])
        with pytest.raises(ConfigError, match="is taken"):
            put_live(target, releases["v1"], TIMEOUTS)
    assert docker.from_env().containers.list(all=True, filters={"label": "io.slipway.stage=staging"}) == []


@pytest.mark.fault("bad input")
def test_unreachable_engine_is_a_clear_error(releases: dict[str, Release], state_dir: Path, api_key: str) -> None:
    ctx = context(Stage.PRODUCTION, state_dir, api_key)
    target = make_target(DockerTarget(host=f"tcp://127.0.0.1:{free_port()}", port=free_port()), ctx)
    with pytest.raises(TargetError, match="cannot reach"):
        target.deploy(releases["v1"])
    with pytest.raises(TargetError, match="cannot reach"):
        target.teardown()


@pytest.mark.fault("bad input")
def test_release_without_image_is_refused(make, releases: dict[str, Release]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="has no image artifact"):
        make().deploy(dataclasses.replace(releases["v1"], image=None))


@pytest.mark.fault("bad input")
def test_image_missing_from_registry_is_a_clear_error(make, releases: dict[str, Release]) -> None:  # type: ignore[no-untyped-def]
    ghost = ImageRef(f"{TEST_REPOSITORY}/ghost", "sha256:" + "0" * 64)
    with pytest.raises(TargetError, match="deploy"):
        make(Stage.STAGING).deploy(dataclasses.replace(releases["v1"], image=ghost))
