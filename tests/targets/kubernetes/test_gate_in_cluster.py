"""The gate next to the target (``gate.where: in_target``): Locust as a Job in the staging namespace,
against the Service by its cluster DNS name, its figures read back from the Job's log — on the real
cluster, beside the gate that reaches the same release through the target's port-forward. (A failed
in-cluster gate in the release flow: tests/targets/kubernetes/test_flow.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from slipway.release import Release, Stage
from slipway.spec import GateSettings
from targets.base import put_live
from tasks.gate import check, run_gate
from tests.targets.fixtures import TIMEOUTS
from tests.targets.kubernetes.cluster import gate_leftovers

pytestmark = pytest.mark.locust


def _settings() -> GateSettings:
    return GateSettings.model_validate(
        {"load": {"users": 32, "spawn_rate": 32, "duration_s": 4},
         "slo": {"p95_ms": 10_000, "p99_ms": 20_000, "min_rps": 1}}
    )  # fmt: skip  # both gates measure: a busy node must not stop either


def test_the_in_cluster_gate_measures_the_service_not_the_port_forward(  # type: ignore[no-untyped-def]
    make, releases: dict[str, Release], api_key: str, tmp_path: Path
) -> None:
    # the server's pod requests half a core: on this shared 2-core node, 50m would give it a
    # twentieth of the CPU weight of every other process, and both gates would measure that
    target = make(Stage.STAGING, cpu_request="500m")
    staged = put_live(target, releases["v1"], TIMEOUTS)
    package, key, settings = releases["v1"].package_dir, SecretStr(api_key), _settings()
    forwarded = check(run_gate(staged, package, settings, key, tmp_path / "forwarded"))
    in_cluster = check(run_gate(staged, package, settings, key, tmp_path / "in-cluster", runner=target))
    assert forwarded.where == "on this machine" and in_cluster.where.startswith("kubernetes namespace slipway-t")
    near, far = in_cluster.load, forwarded.load
    assert near is not None and far is not None
    assert near.failures == 0 and near.requests > 1000 and 0 < near.p50_ms <= near.p95_ms <= near.p99_ms
    assert 0 < near.gate_cpu_pct <= 105 and 0 < near.machine_busy_pct <= 105
    assert near.rps >= 1.5 * far.rps, f"in the cluster {near.rps:.0f} req/s, through the port-forward {far.rps:.0f}"
    assert (tmp_path / "in-cluster" / "locust.html").stat().st_size > 1000
    assert "Locust ran kubernetes namespace" in in_cluster.to_markdown()
    assert not gate_leftovers(target.config)  # the Job and its ConfigMap are deleted
