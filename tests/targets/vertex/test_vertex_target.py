"""What only the Vertex AI target promises, on the Google emulator with its deployed models running for real:
a model version per release running the image by digest under Vertex's contract, the candidate deployed
at 0 %, the previous deployed model retained for a rollback by traffic and undeployed after the retention
window, deployed models Slipway did not create left alone, the bad inputs, and a teardown that leaves nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import google.auth
import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.cloud import aiplatform_v1 as vx

from slipway.errors import ConfigError, TargetError
from slipway.http import client
from slipway.release import AuthScheme, ImageRef, Release, Stage
from targets.base import Target, put_live
from tests.targets.cloudrun.emulator import CloudRunEmulator
from tests.targets.cloudrun.fixtures import OTHER_PROJECT, PROJECT, reset, targets_on
from tests.targets.fixtures import TIMEOUTS
from tests.targets.vertex.emulator import DISPLAY_NAMES
from tests.targets.vertex.fixtures import vertex_config

Make = Callable[..., Target]
ROWS = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def make(gcp_env: CloudRunEmulator, state_dir: Path, api_key: str) -> Iterator[Make]:
    with targets_on(gcp_env, vertex_config, state_dir, api_key) as factory:
        yield factory


def _endpoints(emulator: CloudRunEmulator) -> vx.EndpointServiceClient:
    options = ClientOptions(api_endpoint=emulator.url)
    return vx.EndpointServiceClient(credentials=google.auth.default()[0], transport="rest", client_options=options)


def _served(target: Target) -> str:
    """The display name of the deployed model that answers one prediction (slipway-<release id>)."""
    endpoint = target.endpoint()
    assert endpoint is not None
    with client(endpoint, None) as http:
        resp = http.post(endpoint.routes.predict, json={"instances": ROWS})
    resp.raise_for_status()
    assert resp.json()["predictions"] == [0]
    return DISPLAY_NAMES[resp.json()["deployedModelId"]]


def test_model_version_runs_the_image_by_digest_under_vertex_contract(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release]
) -> None:
    target = make(machine_type="n1-standard-4", min_replicas=2, max_replicas=3, env={"LOG_LEVEL": "debug"},
                  labels={"team": "ml"})  # fmt: skip
    live = put_live(target, releases["v1"], TIMEOUTS)
    assert live.endpoint.auth.scheme is AuthScheme.GOOGLE_ACCESS_TOKEN
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    [deployed] = endpoint.deployed_models
    assert dict(endpoint.traffic_split) == {deployed.id: 100} and endpoint.labels["slipway-live"] == deployed.id
    assert deployed.display_name == "slipway-r-v1" and deployed.model_version_id == "1"
    r = deployed.dedicated_resources
    assert (r.machine_spec.machine_type, r.min_replica_count, r.max_replica_count) == ("n1-standard-4", 2, 3)
    models = vx.ModelServiceClient(credentials=google.auth.default()[0], transport="rest",
                                   client_options=ClientOptions(api_endpoint=gcp_env.url))  # fmt: skip
    version = models.get_model(name=f"{deployed.model}@r-r-v1")
    spec = version.container_spec
    assert spec.image_uri == str(releases["v1"].image) and "@sha256:" in spec.image_uri
    assert (spec.predict_route, spec.health_route, [p.container_port for p in spec.ports]) == ("/predict", "/ready",
                                                                                              [8080])  # fmt: skip
    assert {e.name: e.value for e in spec.env} == {"LOG_LEVEL": "debug", "SLIPWAY_AUTH": "none"}
    assert {"managed-by": "slipway", "slipway-release": "r-v1", "team": "ml"}.items() <= dict(version.labels).items()
    # the container runs under Vertex's contract, with no credential of the deployer
    [container] = docker.from_env().containers.list(
        filters={"label": f"slipway-test.cloudrun-emulator.vertex={target.name}/{deployed.id}"}
    )
    environ = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert (environ["AIP_HTTP_PORT"], environ["AIP_PREDICT_ROUTE"], environ["AIP_DEPLOYED_MODEL_ID"]) == (
        "8080", "/predict", deployed.id)  # fmt: skip
    assert not {"SLIPWAY_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"} & set(environ)
    # Google checks the caller's access token before the container sees the request
    anonymous = httpx.post(f"{live.endpoint.url}{live.endpoint.routes.predict}", json={"instances": ROWS}, timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"


def test_previous_release_retained_for_a_rollback_by_traffic_then_undeployed(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release]
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    v1 = _endpoints(gcp_env).get_endpoint(name=target.name).deployed_models[0].id  # type: ignore[attr-defined]
    candidate = target.wait_ready(target.deploy(releases["v2"]), TIMEOUTS.ready_s)
    assert {_served(target) for _ in range(6)} == {"slipway-r-v1"}  # the candidate deployed at 0 %
    target.promote(candidate, TIMEOUTS.promote_s)
    assert {_served(target) for _ in range(6)} == {"slipway-r-v2"}
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    assert {d.id: endpoint.traffic_split[d.id] for d in endpoint.deployed_models}[v1] == 0  # kept, at 0 %
    deploys = len([c for c in gcp_env.calls if c[1].endswith(":deployModel")])
    target.rollback(releases["v1"], TIMEOUTS)  # within the retention window: a traffic change back to it
    assert len([c for c in gcp_env.calls if c[1].endswith(":deployModel")]) == deploys
    assert {_served(target) for _ in range(6)} == {"slipway-r-v1"} and target.describe().release_id == "r-v1"
    # with no retention window, the next promotion undeploys what it retires
    short = make(endpoint=target.endpoint_id, model=target.model_id, retain_previous_s=0)  # type: ignore[attr-defined]
    put_live(short, releases["v2"], TIMEOUTS)
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    assert [d.display_name for d in endpoint.deployed_models] == ["slipway-r-v2"]
    assert not [k for k in endpoint.labels if k.startswith("slipway-retired-")]
    short.rollback(releases["v1"], TIMEOUTS)  # undeployed: deployed again from its model version
    assert {_served(short) for _ in range(4)} == {"slipway-r-v1"}


def test_deployed_models_slipway_did_not_create_are_left_as_they_are(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], state_dir: Path, api_key: str
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    model = _endpoints(gcp_env).get_endpoint(name=target.name).deployed_models[0].model  # type: ignore[attr-defined]
    # someone deploys a model of their own on the endpoint, by hand, with no traffic
    machine = vx.MachineSpec(machine_type="n1-standard-2")
    resources = vx.DedicatedResources(machine_spec=machine, min_replica_count=1, max_replica_count=1)
    theirs = vx.DeployedModel(model=f"{model}@1", display_name="hand-deployed", dedicated_resources=resources)
    _endpoints(gcp_env).deploy_model(endpoint=target.name, deployed_model=theirs).result(timeout=60)  # type: ignore[attr-defined]
    changes = " ".join(f"{c.action} {c.resource} {c.detail}" for c in target.changes())
    assert "1 deployed model(s) Slipway did not create are kept, with no traffic: hand-deployed" in changes
    put_live(target, releases["v2"], TIMEOUTS)
    target.teardown()
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    assert [d.display_name for d in endpoint.deployed_models] == ["hand-deployed"]  # the endpoint stays, with it
    _endpoints(gcp_env).undeploy_model(endpoint=target.name, deployed_model_id=endpoint.deployed_models[0].id,  # type: ignore[attr-defined]
                                       traffic_split={}).result(timeout=60)  # fmt: skip


@pytest.mark.fault("bad input")
def test_an_image_that_fails_the_health_check_fails_with_its_last_lines(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], exiting_image: ImageRef
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    broken = dataclasses.replace(releases["v2"], id="r-exits", image=exiting_image)
    with pytest.raises(TargetError) as info:
        put_live(target, broken, TIMEOUTS)
    message = str(info.value)
    assert "r-exits" in message and "Model server exited unexpectedly" in message  # Vertex's reason
    assert "| fatal: MODEL_BUCKET is not set" in message  # the container's own last line, from Cloud Logging
    assert {_served(target) for _ in range(4)} == {"slipway-r-v1"}
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    assert [d.display_name for d in endpoint.deployed_models] == ["slipway-r-v1"]


@pytest.mark.fault("bad input")
def test_a_machine_type_the_region_does_not_offer_names_the_field(make: Make, releases: dict[str, Release]) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    other = make(endpoint=target.endpoint_id, model=target.model_id, machine_type="n1-highgpu-96")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match='Machine type "n1-highgpu-96" is not supported') as info:
        put_live(other, releases["v2"], TIMEOUTS)
    assert "deployed_model.dedicated_resources.machine_spec.machine_type" in info.value.hint
    assert {_served(target) for _ in range(4)} == {"slipway-r-v1"}


@pytest.mark.fault("bad input")
def test_a_traffic_split_that_does_not_sum_to_100_is_refused_and_production_untouched(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release]
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    candidate = target.wait_ready(target.deploy(releases["v2"]), TIMEOUTS.ready_s)
    with pytest.raises(ConfigError, match="a traffic weight is between 0 and 1"):
        target.shift(candidate, 1.5)
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    split = {k: 60 for k in endpoint.traffic_split}  # 120: what Vertex refuses
    with pytest.raises(Exception, match="must sum to 100"):
        _endpoints(gcp_env).update_endpoint(endpoint=vx.Endpoint(name=target.name, traffic_split=split),  # type: ignore[attr-defined]
                                            update_mask={"paths": ["traffic_split"]})  # fmt: skip
    target.discard(candidate)
    assert {_served(target) for _ in range(4)} == {"slipway-r-v1"}


@pytest.mark.fault("injected failure")
def test_missing_permission_names_it_and_throttling_is_retried(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release]
) -> None:
    target = make(api_retry_s=3)
    quota = "Quota exceeded for aiplatform.googleapis.com/custom_model_serving_cpus"
    throttled = gcp_env.fail(429, "RESOURCE_EXHAUSTED", quota, method="POST", path=":deployModel", times=1)
    put_live(target, releases["v1"], TIMEOUTS)
    assert throttled.hits == 1
    gcp_env.revoke(PROJECT, "roles/aiplatform.user")
    gcp_env.projects[PROJECT].policy["roles/owner"] = set()
    with pytest.raises(ConfigError, match=r"403 PERMISSION_DENIED: Permission 'aiplatform\.") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "roles/aiplatform.user" in info.value.hint and "docs/targets/vertex.md" in info.value.hint
    reset(gcp_env)
    assert {_served(target) for _ in range(4)} == {"slipway-r-v1"}


def test_production_in_another_project_and_teardown_leaves_nothing(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], state_dir: Path
) -> None:
    staging = make(Stage.STAGING)
    production = make(Stage.PRODUCTION, project=OTHER_PROJECT)
    put_live(staging, releases["v1"], TIMEOUTS)
    put_live(production, releases["v1"], TIMEOUTS)
    put_live(production, releases["v2"], TIMEOUTS)
    assert OTHER_PROJECT in production.location and PROJECT in staging.location
    staging.teardown()
    production.teardown()
    staging.teardown()  # idempotent
    left = gcp_env.vertex.resources()
    ours = {f"/{t.endpoint_id}" for t in (staging, production)} | {f"/{t.model_id}@" for t in (staging, production)}  # type: ignore[attr-defined]
    assert not [r for what in ("models", "endpoints", "deployed") for r in left[what] if any(n in r for n in ours)]
    assert left["pending_operations"] == [], left


@pytest.mark.fault("bad input")
def test_a_deployment_that_never_becomes_ready_times_out_and_is_undeployed(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], hung_image: ImageRef
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    hung = dataclasses.replace(releases["v2"], id="r-hung", image=hung_image)
    slow = make(endpoint=target.endpoint_id, model=target.model_id, ready_timeout_s=4)  # type: ignore[attr-defined]
    with pytest.raises(TargetError, match="Model server never became ready") as info:
        put_live(slow, hung, TIMEOUTS)
    assert "raise production.ready_timeout_s" in info.value.hint
    endpoint = _endpoints(gcp_env).get_endpoint(name=target.name)  # type: ignore[attr-defined]
    assert [d.display_name for d in endpoint.deployed_models] == ["slipway-r-v1"]  # nothing of it is left
    assert {_served(target) for _ in range(4)} == {"slipway-r-v1"}
