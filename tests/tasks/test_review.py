"""The review of the deployment practices: each check with a spec that triggers it and one that passes
it; strict mode; plan's JSON; and the cost arithmetic on known inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.pipeline import open_pipeline
from slipway.cli import app
from slipway.costs import Price, Usage, monthly, per_thousand
from slipway.errors import ConfigError
from tasks.gate import CostBasis, GateReport, LoadResult, priced
from tasks.review import Review, review
from tests.conftest import SpecWriter, free_port

runner = CliRunner()


def _review(spec: Path) -> Review:
    p = open_pipeline(str(spec), need_key=False)
    return review(p.spec, p.staging, p.production)


def _finding(result: Review, practice: str) -> tuple[str, str]:
    (found,) = [f for f in result.findings if f.practice.startswith(practice)]
    return found.level, found.reason


def docker(port: int | None = None, **settings: Any) -> dict[str, Any]:
    return {"kind": "docker", "port": port or free_port(), **settings}


def test_an_authenticated_spec_on_this_machine_passes_every_practice(write_spec: SpecWriter, api_key: str) -> None:
    result = _review(write_spec())
    assert {f.level for f in result.findings} == {"pass"}, [f for f in result.findings if f.level != "pass"]
    assert _finding(result, "DON'T forget about costs") == (
        "pass",
        "both stages run on this machine: nothing is billed",
    )
    result.check(strict=True)


@pytest.mark.fault("bad input")
def test_an_open_production_is_refused_unless_the_spec_says_why(write_spec: SpecWriter) -> None:
    level, reason = _finding(_review(write_spec(auth={"mode": "none"})), "DON'T expose")
    assert (level, reason) == ("refuse", "auth.mode is none: anyone who reaches production may call it")
    because = write_spec(auth={"mode": "none", "unauthenticated_because": "behind the VPN's authenticating proxy"})
    level, reason = _finding(_review(because), "DON'T expose")
    assert level == "warn" and "behind the VPN's authenticating proxy" in reason  # always printed


@pytest.mark.fault("bad input")
def test_a_short_key_is_refused(write_spec: SpecWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIPWAY_API_KEY", "short")
    assert _finding(_review(write_spec()), "DON'T expose") == ("refuse", "$SLIPWAY_API_KEY is 5 characters long")


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("image__repository", "https://deploy:hunter2hunter2@registry.example.com/ml", "a password in a URL"),
        ("model__version", "AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
        ("image__registry_credentials", "ghp_" + "a1B2" * 9, "an API token"),
    ],
)
def test_a_credential_written_into_the_spec_is_refused(
    write_spec: SpecWriter, api_key: str, key: str, value: str, what: str
) -> None:
    level, reason = _finding(_review(write_spec(**{key: value})), "DON'T hard-code")
    assert level == "refuse" and what in reason and key.replace("__", ".") in reason


@pytest.mark.fault("bad input")
def test_staging_and_production_in_one_place_are_refused(write_spec: SpecWriter, api_key: str) -> None:
    port = free_port()
    level, reason = _finding(_review(write_spec(staging=docker(port), production=docker(port))), "DON'T deploy")
    assert level == "refuse" and f"port {port}" in reason
    assert _finding(_review(write_spec(staging=docker(), production=docker())), "DON'T deploy")[0] == "pass"


def test_a_fixed_count_where_the_platform_scales_and_a_single_instance_are_warnings(
    write_spec: SpecWriter, api_key: str
) -> None:
    k8s = {"kind": "kubernetes", "namespace": "slipway-p"}
    fixed = _review(write_spec(staging={**k8s, "namespace": "slipway-s"}, production={**k8s, "replicas": 1,
                                                                                     "max_replicas": 1}))  # fmt: skip
    assert _finding(fixed, "DO implement auto-scaling")[0] == "warn"
    assert _finding(fixed, "DO use multiple availability zones")[0] == "warn"
    scaled = _review(write_spec(staging={**k8s, "namespace": "slipway-s"}, production={**k8s, "replicas": 2,
                                                                                      "max_replicas": 6}))  # fmt: skip
    assert _finding(scaled, "DO implement auto-scaling") == ("pass", "production: HPA: 2-6 pods at 70 % CPU")
    assert not [f for f in scaled.findings if f.practice.startswith("DO use multiple")]


def test_plain_http_on_a_public_production_is_a_warning(write_spec: SpecWriter, api_key: str) -> None:
    public = _review(write_spec(staging=docker(), production=docker(bind_address="0.0.0.0")))
    assert _finding(public, "DO encrypt data") == ("warn", "production's endpoint is public over plain HTTP")
    private = _review(write_spec(staging=docker(), production=docker()))
    assert _finding(private, "DO encrypt data")[0] == "pass"


def test_costs_not_in_the_table_are_warnings_until_the_spec_gives_them(write_spec: SpecWriter, api_key: str) -> None:
    unpriced = _review(write_spec(staging=docker(), production=docker()))
    level, reason = _finding(unpriced, "DON'T forget about costs")
    assert level == "warn" and "docker.host_hour" in reason
    priced_spec = write_spec(staging=docker(), production=docker(), costs={"prices": {"docker.host_hour": 0.05}})
    level, reason = _finding(_review(priced_spec), "DON'T forget about costs")
    assert level == "pass" and "production $36.50/month" in reason  # 730 h × $0.05


@pytest.mark.fault("bad input")
def test_strict_turns_warnings_into_refusals_in_plan(write_spec: SpecWriter, api_key: str, state_dir: Path) -> None:
    spec = str(write_spec(staging=docker(), production=docker()))  # a cost warning, nothing refused
    assert runner.invoke(app, ["plan", spec]).exit_code == 0
    strict = runner.invoke(app, ["plan", spec, "--strict"])
    assert strict.exit_code == 1 and "docker.host_hour" in strict.output
    with pytest.raises(ConfigError, match="DON'T forget about costs"):
        _review(Path(spec)).check(strict=True)


def test_plan_prints_json_for_a_bot(write_spec: SpecWriter, api_key: str, state_dir: Path) -> None:
    result = runner.invoke(app, ["plan", str(write_spec()), "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["service"] == "iris" and len(doc["steps"]) == 7 and doc["refused"] == []
    assert [c["action"] for c in doc["changes"]["production"]] == ["create", "change"]  # nothing live yet
    assert {f["practice"] for f in doc["review"]["findings"]} >= {
        "DO version deployments",
        "DON'T hard-code credentials",
    }


PRICES = {"vm.hour": Price(0.10, "instance-hour", "test", ""), "req": Price(0.0000004, "request", "test", ""),
          "cpu.s": Price(0.000024, "vCPU-second", "test", "")}  # fmt: skip


def test_the_arithmetic_on_known_inputs() -> None:
    always_on = Usage(hourly={"vm.hour": 2})
    assert monthly(always_on, PRICES, 1e6, 0.05).usd == pytest.approx(146.0)  # 2 × 730 h × $0.10
    assert per_thousand(always_on, PRICES, 100, 0.05).usd == pytest.approx(0.2 / 360)  # $0.20/h for 360,000 req/h
    per_request = Usage(per_request={"req": 1}, per_request_second={"cpu.s": 1})
    assert monthly(per_request, PRICES, 1e6, 0.05).usd == pytest.approx(0.4 + 1e6 * 0.05 * 0.000024)  # $1.60
    assert per_thousand(per_request, PRICES, 0, 0.05).usd == pytest.approx(0.0004 + 1000 * 0.05 * 0.000024)
    missing = monthly(Usage(hourly={"nope": 1}), PRICES, 1, 1)
    assert (missing.usd, missing.missing) == (None, ["nope"])


def test_the_gate_prices_a_prediction_on_productions_sizing() -> None:
    from slipway.spec import LoadProfile

    load = LoadResult(requests=1000, failures=0, rps=200, p50_ms=5, p95_ms=9, p99_ms=12, gate_cpu_pct=40,
                      machine_busy_pct=50)  # fmt: skip
    report = GateReport("r1", LoadProfile(), [], load)
    basis = CostBasis(Usage(hourly={"vm.hour": 2}), PRICES, staging_instances=1, production_instances=2)
    costed = priced(report, basis)
    assert costed.cost_per_1000_usd == pytest.approx(0.2 / (400 * 3.6))  # 2 × 200 req/s on $0.20/h
    assert costed.figures()["cost_per_1000_usd"] == costed.cost_per_1000_usd
    assert "400 req/s on 2 instance(s)" in costed.cost_note
    assert priced(report, CostBasis(None, PRICES, 1, 1)).cost_per_1000_usd == 0.0  # this machine
