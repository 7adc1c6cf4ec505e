"""The CLI as a user meets it: clear errors with exit code 1, plan changes nothing, the decision tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from slipway.cli import app
from slipway.recommend import recommend
from tests.conftest import SpecWriter

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
    assert "nothing (first release)" in result.output
    assert not state_dir.exists()


@pytest.mark.fault("bad input")
def test_plan_warns_about_a_missing_key(
    write_spec: SpecWriter, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLIPWAY_API_KEY", raising=False)
    result = runner.invoke(app, ["plan", str(write_spec())])
    assert result.exit_code == 1
    assert "SLIPWAY_API_KEY is not set" in result.output


def test_releases_of_a_model_never_deployed(write_spec: SpecWriter, state_dir: Path) -> None:
    result = runner.invoke(app, ["releases", str(write_spec())])
    assert result.exit_code == 0 and "releases of iris" in result.output


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
