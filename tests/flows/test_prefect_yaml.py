"""prefect.yaml declares deployments whose entrypoints load and whose parameters fit the flows."""

from __future__ import annotations

import yaml
from prefect.flows import load_flow_from_entrypoint

from tests.conftest import REPO


def test_every_deployment_loads_with_valid_parameters() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = set()
    for deployment in config["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        schema = flow.parameters
        assert set(deployment["parameters"]) <= set(schema.properties), deployment["name"]
        assert set(schema.required or []) <= set(deployment["parameters"]), deployment["name"]
        assert all(p.get("description") for p in schema.properties.values()), f"{deployment['name']}: undocumented"
        flow.validate_parameters(deployment["parameters"])
        names.add(deployment["name"])
    assert {"release", "rollback", "teardown"} <= names
