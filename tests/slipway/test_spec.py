"""Bad specs are refused with a message that names the key and what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.errors import ConfigError
from slipway.spec import load_spec
from tests.conftest import EXAMPLE_SPEC, SpecWriter


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    return str(info.value)


def test_example_spec_is_valid() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    assert spec.model.name == "iris"
    assert spec.staging.port != spec.production.port
    assert spec.auth.mode == "api_key"
    assert spec.resolve(spec.model.source) == EXAMPLE_SPEC.parent / "model.joblib"


@pytest.mark.fault("bad input")
def test_missing_spec(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope.yaml")


@pytest.mark.fault("bad input")
def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("model: [unclosed\n")
    assert "not valid YAML" in _error(path)


@pytest.mark.fault("bad input")
def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("- a\n- b\n")
    assert "must be a YAML mapping" in _error(path)


@pytest.mark.fault("bad input")
def test_unknown_key_is_named(write_spec: SpecWriter) -> None:
    message = _error(write_spec(gate__slo__p95=10))
    assert "gate.slo.p95: unknown key" in message


@pytest.mark.fault("bad input")
def test_wrong_types_are_named(write_spec: SpecWriter) -> None:
    message = _error(write_spec(staging__port="eighty", gate__load__users=-1))
    assert "  staging.port: " in message
    assert "gate.load.users" in message


@pytest.mark.fault("bad input")
def test_a_target_key_is_named_by_its_stage_not_its_kind(write_spec: SpecWriter) -> None:
    message = _error(write_spec(production={"kind": "docker", "port": 80, "memory": "lots"}))
    assert "  production.port: " in message and "  production.memory: " in message
    assert "production.docker" not in message


@pytest.mark.fault("bad input")
def test_unknown_target_kind_lists_known_kinds(write_spec: SpecWriter) -> None:
    message = _error(write_spec(production={"kind": "mainframe"}))
    assert "unknown target kind 'mainframe'" in message
    assert "local" in message


@pytest.mark.fault("bad input")
def test_same_port_for_both_stages(write_spec: SpecWriter) -> None:
    message = _error(write_spec(staging__port=9100, production__port=9100))
    assert "both use port 9100" in message


@pytest.mark.fault("bad input")
def test_p99_below_p95(write_spec: SpecWriter) -> None:
    assert "set p99_ms >= p95_ms" in _error(write_spec(gate__slo__p95_ms=50, gate__slo__p99_ms=10))


@pytest.mark.fault("bad input")
def test_secrets_cannot_be_put_in_the_spec(write_spec: SpecWriter) -> None:
    assert "auth.api_key: unknown key" in _error(write_spec(auth={"mode": "api_key", "api_key": "hunter2"}))


def test_the_service_is_the_model_unless_named(write_spec: SpecWriter) -> None:
    assert load_spec(write_spec()).service == "iris"
    assert load_spec(write_spec(service="iris-canary")).service == "iris-canary"


@pytest.mark.fault("bad input")
def test_a_service_name_that_is_not_a_dns_label(write_spec: SpecWriter) -> None:
    assert "service: String should match pattern" in _error(write_spec(service="Iris Model!!"))


def test_every_example_spec_is_valid_and_has_its_own_service() -> None:
    specs = [load_spec(path) for path in sorted(EXAMPLE_SPEC.parent.glob("slipway*.yaml"))]
    assert {s.model.name for s in specs} == {"iris"}
    assert len({s.service for s in specs}) == len(specs)  # each example keeps its own history


def test_the_serving_section_becomes_the_servers_options(write_spec: SpecWriter) -> None:
    assert load_spec(write_spec()).serving.server_args() == ()  # the defaults: nothing to pass
    spec = load_spec(write_spec(serving={"batching": "off", "max_batch_rows": 64, "max_batch_wait_us": 500}))
    assert spec.serving.server_args() == ("--batching", "off", "--max-batch-rows", "64", "--max-batch-wait-us", "500")


@pytest.mark.fault("bad input")
def test_an_unknown_batching_mode_is_named(write_spec: SpecWriter) -> None:
    message = _error(write_spec(serving={"batching": "sometimes"}))
    assert "serving.batching:" in message and "'auto', 'on' or 'off'" in message
