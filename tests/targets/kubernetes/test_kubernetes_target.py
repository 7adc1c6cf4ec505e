"""The kubernetes target on the real cluster: the objects of a release, zero failed requests while
promoting, failures named by pod and reason, teardown that leaves nothing behind."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from kubernetes import client, config

from slipway.errors import TargetError
from slipway.release import ImageRef, Release
from slipway.spec import Timeouts
from targets.base import put_live
from tests.images import build_and_push
from tests.load import Load

pytestmark = pytest.mark.usefixtures("k8s_cluster")


def apis(kubeconfig: Path) -> tuple[client.CoreV1Api, client.AppsV1Api, client.ApiClient]:
    api = config.new_client_from_config(str(kubeconfig))
    return client.CoreV1Api(api), client.AppsV1Api(api), api


def served_sha(url: str, key: str) -> str:
    resp = httpx.get(f"{url}/metadata", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    resp.raise_for_status()
    return str(resp.json()["sha256"])


def test_release_objects_are_labelled_pinned_and_hardened(
    make, releases: dict[str, Release], k8s_cluster: Path, api_key: str
) -> None:
    target = make()
    live = put_live(target, releases["v1"], Timeouts(60, 90))
    core, apps, _ = apis(k8s_cluster)
    ns = target.namespace
    (d,) = apps.list_namespaced_deployment(ns).items
    labels = d.metadata.labels
    assert (labels["slipway.io/model"], labels["slipway.io/release"], labels["slipway.io/version"]) == (
        "iris", "r-v1", releases["v1"].version)  # fmt: skip
    pod = d.spec.template.spec
    (c,) = pod.containers
    assert c.image == str(live.release.image) and "@sha256:" in c.image
    assert (c.readiness_probe.http_get.path, c.liveness_probe.http_get.path) == ("/ready", "/health")
    assert c.resources.limits and c.resources.requests
    assert pod.security_context.run_as_non_root and c.security_context.read_only_root_filesystem
    assert c.env[-1].value_from.secret_key_ref.name == target._names(live.release).secret
    assert d.spec.strategy.rolling_update.max_unavailable == 0
    svc = core.read_namespaced_service("iris", ns)
    assert svc.spec.selector["slipway.io/release"] == "r-v1" and svc.spec.type == "ClusterIP"
    assert target.hpas.group_version == "autoscaling/v2beta2"  # the newest v1.20 serves
    assert target.pdbs.group_version == "policy/v1beta1"
    assert target.hpas.names(ns, "slipway.io/release=r-v1") == ["iris-r-v1"]
    assert target.pdbs.names(ns, "slipway.io/release=r-v1") == ["iris-r-v1"]
    assert live.endpoint.url.startswith("http://127.0.0.1:")
    assert served_sha(live.endpoint.url, api_key) == releases["v1"].package_sha256

    target.teardown()
    sel = "app.kubernetes.io/managed-by=slipway"
    assert not apps.list_namespaced_deployment(ns, label_selector=sel).items
    assert not core.list_namespaced_service(ns, label_selector=sel).items
    assert not core.list_namespaced_secret(ns, label_selector=sel).items
    assert not target.hpas.names(ns, sel) and not target.pdbs.names(ns, sel)
    core_pods = lambda: core.list_namespaced_pod(ns, label_selector=sel).items  # noqa: E731
    deadline = time.monotonic() + 60
    while core_pods() and time.monotonic() < deadline:
        time.sleep(1)
    assert not core_pods() and not apps.list_namespaced_replica_set(ns, label_selector=sel).items


@pytest.mark.fault("promotion under load")
def test_rolling_update_under_load_fails_no_request(  # type: ignore[no-untyped-def]
    make, releases: dict[str, Release], api_key: str, record_property: Callable[[str, object], None]
) -> None:
    """Blue/green under load is in the contract tests; a rolling update replaces pods in place."""
    target = make(strategy="rolling")
    url = put_live(target, releases["v1"], Timeouts(60, 90)).endpoint.url
    core, _, _ = apis(Path(target.config.kubeconfig))
    with Load(target.endpoint(), api_key) as load:
        put_live(target, releases["v2"], Timeouts(60, 90))
        served_after = served_sha(url, api_key)
        # keep the load on until the old pods are gone: their keep-alive connections must move too.
        # A pod may take its whole termination grace (drain_s + 30 s) and the kubelet's next sync.
        deadline = time.monotonic() + 120
        while core.list_namespaced_pod(target.namespace, label_selector="slipway.io/release=r-v1").items:
            assert time.monotonic() < deadline, "the old pods did not go away"
            time.sleep(0.5)
        time.sleep(2)
    record_property("requests", load.requests)
    record_property("failed", sum(load.failures.values()))
    assert not load.failures, load.outcomes
    assert served_after == releases["v2"].package_sha256
    assert set(load.outcomes) == {releases["v1"].package_sha256[:12], releases["v2"].package_sha256[:12]}, (
        load.outcomes,
        releases["v1"].package_sha256[:12],
    )
    assert sum(load.outcomes.values()) > 100


@pytest.mark.fault("bad input")
@pytest.mark.parametrize("strategy", ["blue_green", "rolling"])
def test_image_that_exits_at_start_leaves_production_serving(
    make, releases: dict[str, Release], api_key: str, strategy: str
) -> None:
    target = make(strategy=strategy)
    url = put_live(target, releases["v1"], Timeouts(60, 90)).endpoint.url
    exits = 'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "raise SystemExit(1)"]\n'
    image = build_and_push("exits", exits)
    broken = dataclasses.replace(releases["v2"], id="r-exits", image=image)
    with pytest.raises(TargetError) as info:
        put_live(target, broken, Timeouts(60, 60))
    message = str(info.value)
    assert "r-exits" in message and "pod iris-" in message and "exited with code 1" in message
    assert served_sha(url, api_key) == releases["v1"].package_sha256
    assert target.describe().release_id == "r-v1"
    _, apps, _ = apis(Path(target.config.kubeconfig))
    images = [d.spec.template.spec.containers[0].image for d in apps.list_namespaced_deployment(target.namespace).items]
    assert images == [str(releases["v1"].image)]  # the candidate is gone; the live one untouched


@pytest.mark.fault("bad input")
def test_missing_image_and_unschedulable_are_named(make, releases: dict[str, Release]) -> None:
    target = make()
    v1 = releases["v1"]
    missing = dataclasses.replace(v1, id="r-missing", image=ImageRef(v1.image.repository, "sha256:" + "0" * 64))
    with pytest.raises(TargetError, match=r"(?s)r-missing.*pod iris-r-missing-.*(ErrImagePull|ImagePullBackOff)"):
        put_live(target, missing, Timeouts(60, 60))
    huge = make(cpu_request="64", cpu_limit="64")
    with pytest.raises(TargetError, match=r"(?s)r-v1.*Unschedulable.*Insufficient cpu"):
        put_live(huge, v1, Timeouts(60, 60))
    assert huge.endpoint() is None
