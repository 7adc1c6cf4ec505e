"""The Target lifecycle, checked by what the endpoint serves, on every target that can run here."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from slipway.errors import SlipwayError
from targets.base import Release, Stage, put_live
from tests.load import Load
from tests.targets.fixtures import TargetFactory


def served_sha(url: str, key: str) -> str:
    resp = httpx.get(f"{url}/metadata", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    resp.raise_for_status()
    return str(resp.json()["sha256"])


def predicts(url: str, key: str) -> list[int]:
    resp = httpx.post(f"{url}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]},
                      headers={"Authorization": f"Bearer {key}"}, timeout=5)  # fmt: skip
    resp.raise_for_status()
    return list(resp.json()["predictions"])


def test_release_goes_live_and_answers_with_auth(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str
) -> None:
    target = target_factory(Stage.PRODUCTION)
    assert target.endpoint() is None
    live = put_live(target, releases["v1"], 20)
    url = live.endpoint.url
    assert predicts(url, api_key) == [0]
    assert served_sha(url, api_key) == releases["v1"].package_sha256
    assert httpx.post(f"{url}/predict", json={"inputs": [[1, 2, 3, 4]]}).status_code == 401
    status = target.describe()
    assert (status.release_id, status.healthy) == ("r-v1", True)


@pytest.mark.fault("promotion under load")
def test_promotion_and_rollback_under_load_fail_no_request(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str,
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    """Clients that open a connection per request see every answer come from v1 or v2, never an error
    (local: SO_REUSEPORT hand-over; docker: nginx blue/green; kubernetes: Service selector switch)."""
    target = target_factory(Stage.PRODUCTION)
    url = put_live(target, releases["v1"], 20).endpoint.url
    with Load(url, api_key, keepalive=False) as load:
        time.sleep(0.5)
        put_live(target, releases["v2"], 20)
        assert served_sha(url, api_key) == releases["v2"].package_sha256
        assert target.describe().release_id == "r-v2"
        target.rollback(releases["v1"], 20)
        time.sleep(0.5)
    assert served_sha(url, api_key) == releases["v1"].package_sha256
    assert target.describe().release_id == "r-v1"
    record_property("requests", load.requests)
    record_property("failed", sum(load.failures.values()))
    assert not load.failures, load.outcomes
    assert {releases[v].package_sha256[:12] for v in ("v1", "v2")} <= set(load.outcomes)


@pytest.mark.fault("bad input")
def test_release_that_fails_to_start_leaves_production_serving(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str
) -> None:
    target = target_factory(Stage.PRODUCTION)
    url = put_live(target, releases["v1"], 20).endpoint.url
    with pytest.raises(SlipwayError) as info:
        put_live(target, releases["broken"], 20)
    assert "r-broken" in str(info.value)
    assert "checksum" in str(info.value) or "sha256" in str(info.value)
    assert served_sha(url, api_key) == releases["v1"].package_sha256
    assert target.describe().release_id == "r-v1"


def test_teardown_really_stops_and_is_idempotent(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str
) -> None:
    target = target_factory(Stage.STAGING)
    url = put_live(target, releases["v1"], 20).endpoint.url
    target.teardown()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
    assert target.endpoint() is None
    assert target.describe().release_id is None
    target.teardown()
