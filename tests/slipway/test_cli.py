"""The CLI as a user meets it: clear errors with exit code 1, plan changes nothing, the decision tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slipway.cli import app
from slipway.ledger import Action, LiveEvent, Outcome, ReleaseRecord, SqliteLedger
from slipway.recommend import recommend
from slipway.release import Release, Stage, now
from slipway.settings import get_settings
from tests.conftest import SpecWriter, free_port

runner = CliRunner()


@pytest.mark.fault("bad input")
def test_bad_spec_prints_the_problem_and_the_fix_without_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "model: {name: iris, source: m.joblib}\nstaging: {kind: local, port: 9001}\nproduction: {kind: lokal}\n"
    )
    result = runner.invoke(app, ["status", str(spec)])
    assert result.exit_code == 1
    assert "unknown target kind 'lokal'" in result.output
    assert "Traceback" not in result.output


def test_plan_lists_every_step_and_changes_nothing(write_spec: SpecWriter, state_dir: Path, api_key: str) -> None:
    result = runner.invoke(app, ["plan", str(write_spec())])
    assert result.exit_code == 0, result.output
    for step in ("package", "build", "push", "staging", "gate", "promote", "record"):
        assert step in result.output
    assert "7 golden samples checked" in result.output
    assert "build     nothing (both stages run the package itself)" in result.output
    assert "nothing (first release)" in result.output
    assert not state_dir.exists()


@pytest.mark.docker
def test_plan_looks_at_both_stages(write_spec: SpecWriter, state_dir: Path, api_key: str) -> None:
    """Staging runs the package, production an image: the image is built, for production; what it
    would create there is read from the engine."""
    port = free_port()
    result = runner.invoke(app, ["plan", str(write_spec(production={"kind": "docker", "port": port}))])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "build the serving image, for production (docker)" in text
    assert "push to 127.0.0.1:5000/slipway, pinned by digest" in text
    assert f"promote docker: docker local engine port {port} (takes image; traffic split" in text
    assert "create │ proxy container slipway-iris-production-proxy" in text  # nothing runs there yet


@pytest.mark.fault("bad input")
def test_an_error_that_quotes_a_pattern_prints_it_whole(write_spec: SpecWriter, state_dir: Path) -> None:
    """Brackets in a message are text, not console markup."""
    result = runner.invoke(app, ["plan", str(write_spec(model__name="Iris Model!!"))])
    assert result.exit_code == 1
    assert "model.name: String should match pattern '^[a-z0-9][a-z0-9-]{0,62}$'" in result.output


@pytest.mark.fault("bad input")
def test_plan_warns_about_a_missing_key(
    write_spec: SpecWriter, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLIPWAY_API_KEY", raising=False)
    result = runner.invoke(app, ["plan", str(write_spec())])
    assert result.exit_code == 1
    assert "SLIPWAY_API_KEY is not set" in result.output


def _package() -> Path:
    """A package of this machine (its state directory is the test's)."""
    return get_settings().path("packages", "iris", "1-abababababab")


def _release(rid: str, version: str) -> Release:
    return Release(rid, "iris", "iris", version, "ab" * 32, _package(), "h")


def test_releases_shows_every_attempt_its_figures_and_which_is_live(write_spec: SpecWriter, state_dir: Path) -> None:
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    for rid, version, outcome, gate in [
        ("r-1", "1", Outcome.PROMOTED, {"requests": 900, "rps": 450.4, "p95_ms": 4, "p99_ms": 9, "error_rate": 0,
                                        "cost_per_1000_usd": 0.000123}),
        ("r-2", "2", Outcome.REJECTED, {"requests": 80, "rps": 40, "p95_ms": 300, "p99_ms": 900, "error_rate": 0.25}),
        ("r-3", "[3]", Outcome.FAILED, {}),
    ]:  # fmt: skip
        ledger.start(ReleaseRecord(_release(rid, version), "local", "local", trigger="manual"))
        ledger.finish(rid, outcome, gate=gate)
    ledger.record_event(LiveEvent("iris", Stage.PRODUCTION, "r-1", Action.PROMOTE, now()))
    result = runner.invoke(app, ["releases", str(write_spec())])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│ r-")}
    assert list(rows) == ["r-1 ◀ live", "r-2", "r-3"]
    assert "promoted" in rows["r-1 ◀ live"] and "450" in rows["r-1 ◀ live"] and "0.00%" in rows["r-1 ◀ live"]
    assert "0.000123" in rows["r-1 ◀ live"]  # how the cost of a prediction moves between releases
    assert "rejected" in rows["r-2"] and "300" in rows["r-2"] and "25.00%" in rows["r-2"]
    assert "failed" in rows["r-3"] and "[3]" in rows["r-3"]  # a version in brackets is text


@pytest.mark.fault("bad input")
def test_status_of_a_second_spec_of_the_same_service_elsewhere_is_refused(
    write_spec: SpecWriter, state_dir: Path
) -> None:
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    ledger.start(ReleaseRecord(_release("r-1", "1"), "local", "local"))
    ledger.record_event(LiveEvent("iris", Stage.PRODUCTION, "r-1", Action.PROMOTE, now(), "", "local 127.0.0.1:8110"))
    result = runner.invoke(app, ["status", str(write_spec(production__port=8100))])
    assert result.exit_code == 1
    assert "service 'iris' has its production at local 127.0.0.1:8110 (release r-1)" in result.output
    assert "this spec puts production at local 127.0.0.1:8100" in result.output
    assert "give this spec its own `service:` name" in result.output


@pytest.mark.parametrize(
    ("latency", "sporadic", "orchestration", "pattern"),
    [
        (True, True, True, "Managed container service or virtual machines"),
        (True, False, False, "Managed container service or virtual machines"),
        (False, True, False, "Serverless"),
        (False, True, True, "Serverless"),
        (False, False, True, "Kubernetes"),
        (False, False, False, "Managed ML platform"),
    ],
)
def test_decision_tree(latency: bool, sporadic: bool, orchestration: bool, pattern: str) -> None:
    assert recommend(latency, sporadic, orchestration).pattern == pattern


def test_recommend_asks_only_the_questions_the_tree_reaches() -> None:
    result = runner.invoke(app, ["recommend"], input="n\nn\ny\n")
    assert result.exit_code == 0
    assert result.output.count("?") >= 3 and "Kubernetes" in result.output
    result = runner.invoke(app, ["recommend"], input="y\n")
    assert "sporadic" not in result.output and "container service" in result.output.lower()
    result = runner.invoke(app, ["recommend", "--no-millisecond-latency", "--sporadic"])
    assert "Serverless" in result.output and "orchestration" not in result.output
    assert "lambda" in result.output and "serverless target: planned" not in result.output
    result = runner.invoke(app, ["recommend"], input="n\nn\nn\n")
    assert "Managed ML platform" in result.output and "sagemaker" in result.output  # a target kind, not "planned"


def test_releases_and_status_without_a_spec_cover_every_service_as_json(state_dir: Path) -> None:
    """A bot reads the whole ledger: every service, its attempts, what each stage serves."""
    ledger = SqliteLedger(state_dir / "ledger.sqlite")
    eu = Release("eu-1", "iris-eu", "iris", "3", "cd" * 32, Path("/pkg"), "h")
    for record in (
        ReleaseRecord(_release("r-1", "1"), "local", "docker", trigger="event:abc"),
        ReleaseRecord(_release("r-2", "2"), "local", "docker"),
        ReleaseRecord(eu, "local", "local"),
    ):
        ledger.start(record)
    gate = {"requests": 900, "rps": 450.4, "p95_ms": 4, "p99_ms": 9, "error_rate": 0}
    ledger.finish("r-1", Outcome.PROMOTED, gate=gate)
    ledger.finish("r-2", Outcome.REJECTED)
    ledger.record_event(LiveEvent("iris", Stage.PRODUCTION, "r-1", Action.PROMOTE, "2026-12-01T10:00:00+00:00"))
    ledger.record_event(LiveEvent("iris-eu", Stage.STAGING, "eu-1", Action.PROMOTE, "2026-12-01T11:00:00+00:00"))

    result = runner.invoke(app, ["releases", "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slipway.releases/1"
    by_service = {s["service"]: s for s in doc["services"]}
    assert list(by_service) == ["iris", "iris-eu"]
    assert by_service["iris"]["live"] == "r-1" and by_service["iris-eu"]["live"] is None
    r1, r2 = by_service["iris"]["releases"]
    assert (r1["id"], r1["version"], r1["outcome"], r1["trigger"]) == ("r-1", "1", "promoted", "event:abc")
    assert r1["gate"]["rps"] == 450.4 and r1["finished_at"] and r1["production_kind"] == "docker"
    assert (r2["outcome"], r2["gate"]) == ("rejected", {})
    assert [r["id"] for r in by_service["iris-eu"]["releases"]] == ["eu-1"]

    text = runner.invoke(app, ["releases"])
    assert "releases of iris" in text.output and "releases of iris-eu" in text.output

    result = runner.invoke(app, ["status", "--output", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "slipway.status/1"
    stages = {(s["service"], st["stage"]): st for s in doc["services"] for st in s["stages"]}
    assert stages["iris", "production"] == {
        "stage": "production", "target": "docker", "release": "r-1", "version": "1",
        "since": "2026-12-01T10:00:00+00:00", "endpoint": None, "healthy": None, "detail": "", "ledger_release": "r-1",
    }  # fmt: skip
    assert stages["iris", "staging"]["release"] is None
    assert (stages["iris-eu", "staging"]["release"], stages["iris-eu", "staging"]["target"]) == ("eu-1", "local")
    assert all(s["probed"] is False for s in doc["services"])


def test_status_of_a_spec_as_json_asks_its_targets(write_spec: SpecWriter, state_dir: Path) -> None:
    result = runner.invoke(app, ["status", str(write_spec()), "--output", "json"])
    assert result.exit_code == 0, result.output
    (svc,) = json.loads(result.stdout)["services"]
    assert svc["service"] == "iris" and svc["probed"] is True and svc["warnings"] == []
    assert [(st["stage"], st["target"], st["release"], st["healthy"]) for st in svc["stages"]] == [
        ("staging", "local", None, False), ("production", "local", None, False)
    ]  # fmt: skip


@pytest.mark.fault("bad input")
def test_an_unknown_output_format_is_refused(state_dir: Path) -> None:
    result = runner.invoke(app, ["releases", "--output", "yaml"])
    assert result.exit_code == 2 and "--output must be text or json, not 'yaml'" in result.output
