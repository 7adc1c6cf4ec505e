"""Kubernetes tests run on the real single-node cluster of scripts/k8s, which the fixtures build
(once) and start; a cluster that cannot be brought up fails the run, it never skips."""

from __future__ import annotations

import pytest


@pytest.fixture
def target_kind() -> str:
    return "kubernetes"
