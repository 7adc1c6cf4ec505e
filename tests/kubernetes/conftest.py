"""Kubernetes tests run on the real single-node cluster of scripts/k8s, which the fixtures build
(once) and start; a cluster that cannot be brought up fails the run, it never skips."""

from __future__ import annotations

import pytest

from tests.kubernetes.cluster import FIRST_RUN_TIMEOUT_S, k8s_cluster

__all__ = ["k8s_cluster"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kubernetes/" in str(item.fspath):
            item.add_marker(pytest.mark.kubernetes)
            item.add_marker(pytest.mark.docker)
            item.add_marker(pytest.mark.timeout(FIRST_RUN_TIMEOUT_S))
