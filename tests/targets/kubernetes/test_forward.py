"""The forwarder's pod list follows a Service switch at once (targets._k8s_forward): a listing that
began before the switch may serve the connection it was made for, but it is never cached for the
next ones. Under the contract test's load such a listing used to be cached and sent the first request
after a promotion to the previous release (CI, 2026-12-01)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from kubernetes import client

from targets._k8s_forward import Forwarder


class _Pods:
    """list_namespaced_pod over two releases' pods; the first listing waits until it is let go."""

    def __init__(self) -> None:
        self.started, self.go = threading.Event(), threading.Event()
        self.calls = 0

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            self.go.wait(10)
        release = label_selector.split("=")[1]
        ready = [SimpleNamespace(type="Ready", status="True")]
        pod = SimpleNamespace(metadata=SimpleNamespace(name=f"pod-{release}", deletion_timestamp=None),
                              status=SimpleNamespace(conditions=ready))  # fmt: skip
        return SimpleNamespace(items=[pod])


def test_a_listing_begun_before_a_switch_is_not_cached_for_the_connections_after_it() -> None:
    selector = {"release": "v1"}
    forwarder = Forwarder(client.ApiClient(client.Configuration()), "ns", lambda: dict(selector), 8080)
    pods = _Pods()
    forwarder.core = pods  # type: ignore[assignment]
    try:
        early: list[list[str]] = []
        listing = threading.Thread(target=lambda: early.append(forwarder._pods()))
        listing.start()
        assert pods.started.wait(10)  # a connection accepted before the switch is listing v1's pods
        selector["release"] = "v2"  # the Service switched, then the target refreshes the forwarder
        forwarder.refresh()
        pods.go.set()
        listing.join(10)
        assert early == [["pod-v1"]]
        assert forwarder._pods() == ["pod-v2"]  # the first connection after the switch goes to v2
        assert forwarder._pods() == ["pod-v2"] and pods.calls == 2  # and that listing is cached
    finally:
        forwarder.close()
