"""The gate against a real server: Locust as a subprocess, figures read back, SLOs judged."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from slipway.errors import GateFailed
from slipway.release import Release, Stage
from slipway.spec import GateSettings
from targets.base import Deployment, put_live
from tasks.gate import check, run_gate
from tests.targets.fixtures import TIMEOUTS, TargetFactory

pytestmark = pytest.mark.locust


def _settings(processes: int = 1, **slo: float) -> GateSettings:
    return GateSettings.model_validate(
        {"load": {"users": 4, "spawn_rate": 4, "duration_s": 2, "processes": processes},
         "slo": {"p95_ms": 1000, "p99_ms": 2000, "min_rps": 1, **slo}}
    )  # fmt: skip


@pytest.fixture
def staged(target_factory: TargetFactory, releases: dict[str, Release]) -> Deployment:
    return put_live(target_factory(Stage.STAGING), releases["v1"], TIMEOUTS)


def test_passing_gate_reports_figures_from_locust(staged: Deployment, api_key: str, tmp_path: Path) -> None:
    report = check(run_gate(staged, staged.release.package_dir, _settings(), SecretStr(api_key), tmp_path))
    assert report.passed and not report.smoke_failures and report.load is not None
    load = report.load
    assert load.requests > 50 and load.failures == 0 and load.rps > 10
    assert 0 < load.p50_ms <= load.p95_ms <= load.p99_ms
    assert 0 < load.gate_cpu_pct <= 100 * 1.05 and 0 < load.machine_busy_pct <= 100 * 1.05
    figures = report.figures()  # what the ledger keeps
    assert (figures["requests"], figures["p95_ms"], figures["passed"]) == (load.requests, load.p95_ms, True)
    assert (tmp_path / "locust.html").stat().st_size > 1000
    markdown = report.to_markdown()
    assert "| p95 latency |" in markdown and "passed" in markdown


@pytest.mark.fault("injected failure")
def test_two_process_gates_run_side_by_side(staged: Deployment, api_key: str, tmp_path: Path) -> None:
    """Locust's master listens on *:5557 unless told otherwise: a second gate on the machine (another
    model's release, a benchmark) held it, and a gate with --processes failed to start."""
    settings = _settings(processes=2)
    with socket.create_server(("", 5557)) if _free(5557) else contextlib.nullcontext():
        report = check(run_gate(staged, staged.release.package_dir, settings, SecretStr(api_key), tmp_path))
    assert report.passed and report.profile.processes == 2 and report.load and report.load.requests > 50


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.fault("bad input")
def test_impossible_slo_fails_listing_each_violation(staged: Deployment, api_key: str, tmp_path: Path) -> None:
    report = run_gate(
        staged, staged.release.package_dir, _settings(p95_ms=0.001, p99_ms=0.001, min_rps=1e9),
        SecretStr(api_key), tmp_path,
    )  # fmt: skip
    with pytest.raises(GateFailed) as info:
        check(report)
    text = str(info.value)
    assert "p95 latency" in text and "p99 latency" in text and "throughput" in text
    assert "error rate" not in text
    assert "production was left untouched" in text


@pytest.mark.fault("bad input")
def test_smoke_catches_wrong_predictions(staged: Deployment, api_key: str, tmp_path: Path) -> None:
    lying = tmp_path / "lying-package"
    shutil.copytree(staged.release.package_dir, lying)
    manifest = json.loads((lying / "package.json").read_text())
    manifest["samples"][0]["output"] = 2
    (lying / "package.json").write_text(json.dumps(manifest))
    report = run_gate(staged, lying, _settings(), SecretStr(api_key), tmp_path / "r")
    assert not report.passed
    assert any("sample 0: expected 2, got 0" in f for f in report.smoke_failures)


@pytest.mark.fault("bad input")
def test_wrong_key_fails_smoke_and_skips_the_load_phase(staged: Deployment, tmp_path: Path) -> None:
    report = run_gate(staged, staged.release.package_dir, _settings(), SecretStr("x" * 32), tmp_path)
    assert any("HTTP 401" in f and "API key" in f for f in report.smoke_failures)
    assert not report.passed and report.load is None
    assert not (tmp_path / "load_stats.csv").exists()
    assert report.violations[0].startswith("smoke: sample 0: HTTP 401")
