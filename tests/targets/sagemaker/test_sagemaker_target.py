"""What only the SageMaker target promises, on moto behind the front with its variants running for real:
the resources and their settings, the guardrail canary and its rollbacks, alarms, autoscaling and data
capture across updates, the retained config a rollback goes back to, and each bad input, with production
untouched (checked by InvokeEndpoint)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from slipway.errors import ConfigError, GuardrailRollback, TargetError, TransientTargetError
from slipway.http import client
from slipway.modeldata import model_data
from slipway.release import ImageRef, Release, Stage
from targets import _sagemaker_objects as obj
from targets import make_target
from targets.base import Target, put_live
from targets.sagemaker import SageMakerEndpointTarget
from tests.targets.fixtures import SERVING, SHA_OF_VARIANT, TIMEOUTS, context
from tests.targets.sagemaker.fixtures import BUCKET, SageMakerEnv, sagemaker_config

Make = Callable[..., SageMakerEndpointTarget]
_ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def make(sagemaker_env: SageMakerEnv, state_dir: Path, api_key: str) -> Iterator[Make]:
    made: list[Target] = []

    def factory(stage: Stage = Stage.PRODUCTION, **settings: Any) -> SageMakerEndpointTarget:
        target = make_target(sagemaker_config(sagemaker_env, **settings), context(stage, state_dir, api_key))
        assert isinstance(target, SageMakerEndpointTarget)
        made.append(target)
        return target

    yield factory
    sagemaker_env.front.faults.clear()
    for target in made:
        target.teardown()


def _served(target: Target) -> str:
    """The release that answers the stage's InvokeEndpoint (by its variant), and the answer is right."""
    endpoint = target.endpoint()
    assert endpoint is not None
    with client(endpoint, SecretStr("unused"), timeout_s=10) as http:
        resp = http.post(endpoint.routes.predict, json=_ROW)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": [0]}
    return resp.headers["x-amzn-invoked-production-variant"]


def _name(target: SageMakerEndpointTarget) -> str:
    return target.name


def test_resources_tags_and_a_guardrail_canary_with_alarms_scaling_and_capture_kept(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    progress: list[str] = []
    capture = {"sampling_percent": 25}
    scaling = {"min_instances": 2, "max_instances": 4, "invocations_per_instance": 500}
    target = make(instance_count=2, data_capture=capture, autoscaling=scaling, alarms={"latency_p99_ms": 2000})
    target.ctx = dataclasses.replace(target.ctx, progress=progress.append)
    sm, name = sagemaker_env.client("sagemaker"), _name(target)
    put_live(target, releases["v1"], TIMEOUTS)
    assert _served(target) == "r-v1"

    v1 = sm.describe_model(ModelName=obj.release_name(name, "r-v1"))
    container = v1["PrimaryContainer"]
    assert container["Image"] == str(releases["v1"].image) and "@sha256:" in container["Image"]
    # SageMaker's IAM authenticates at its edge; SageMaker runs IMAGE serve, so the spec's serving options
    # travel as the environment
    assert container["Environment"] == {"SLIPWAY_AUTH": "none", "SLIPWAY_MAX_BATCH_ROWS": str(SERVING.max_batch_rows)}
    (fleet,) = sagemaker_env.front.endpoints[name].fleets.values()  # the server itself, past the front
    batching = httpx.get(f"http://127.0.0.1:{fleet.port}/metadata", timeout=10).json()["batching"]
    assert (batching["enabled"], batching["max_rows"]) == (True, SERVING.max_batch_rows)
    data = model_data(releases["v1"].package_dir)
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/slipway/iris/{data.sha256}/model.tar.gz"
    tags = obj.tag_map(sm.list_tags(ResourceArn=v1["ModelArn"])["Tags"])
    assert tags["slipway:release"] == "r-v1" and tags[obj.MODEL_DATA_TAG] == data.sha256
    assert tags["slipway:version"] == releases["v1"].version and tags["managed-by"] == "slipway"
    config = sm.describe_endpoint_config(EndpointConfigName=obj.release_name(name, "r-v1"))
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "r-v1", "ml.m5.large", 2)  # fmt: skip
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 25

    started = time.monotonic()
    put_live(target, releases["v2"], TIMEOUTS)  # CANARY 50 % for 30 s, then all: through UpdateEndpoint
    promoted_s = time.monotonic() - started
    assert _served(target) == "r-v2"
    assert sagemaker_env.front.endpoints[name].shares == [0.5, 1.0]  # the canary's half, baked, then all
    assert any("status Updating" in line for line in progress), progress
    assert any("pending variant r-v2" in line for line in progress), progress
    endpoint = target.sagemaker.describe_endpoint(EndpointName=name)  # through the front
    assert endpoint["EndpointConfigName"] == obj.release_name(name, "r-v2")
    assert endpoint["DataCaptureConfig"]["CurrentSamplingPercentage"] == 25  # kept across the update

    alarms = {a["AlarmName"]: a for a in sagemaker_env.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    errors, latency = obj.alarm_names(name, "r-v2")
    assert alarms[errors]["MetricName"] == "Invocation5XXErrors"
    assert (
        alarms[latency]["ExtendedStatistic"] == "p99" and alarms[latency]["Threshold"] == 2_000_000
    )  # µs: the gate's p99
    assert not set(obj.alarm_names(name, "r-v1")) & set(alarms)  # the previous variant's went
    scalable = sagemaker_env.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")
    ids = {t["ResourceId"]: t for t in scalable["ScalableTargets"]}
    assert obj.resource_id(name, "r-v2") in ids and obj.resource_id(name, "r-v1") not in ids
    assert (ids[obj.resource_id(name, "r-v2")]["MinCapacity"], ids[obj.resource_id(name, "r-v2")]["MaxCapacity"]) == (
        2, 4)  # fmt: skip

    rolled = time.monotonic()
    target.rollback(releases["v1"], TIMEOUTS)  # the retained config, all at once
    rollback_s = time.monotonic() - rolled
    assert _served(target) == "r-v1" and target.describe().release_id == "r-v1"
    print(f"\ncanary promotion {promoted_s:.1f} s, rollback {rollback_s:.1f} s (emulated waits at 30x)")


@pytest.mark.fault("guardrail rollback")
def test_an_alarm_during_the_canary_rolls_back_and_is_a_rejection_naming_it(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    target = make(rollout={"type": "canary", "size": 50, "wait_interval_s": 600, "termination_wait_s": 0,
                           "max_execution_timeout_s": 3600}, promote_timeout_s=3700)  # fmt: skip
    put_live(target, releases["v1"], TIMEOUTS)
    errors_alarm = obj.alarm_names(_name(target), "r-v2")[0]
    cloudwatch = sagemaker_env.client("cloudwatch")

    def fire_once_canary_serves() -> None:
        sm = target.sagemaker
        for _ in range(600):
            pending = sm.describe_endpoint(EndpointName=_name(target)).get("PendingDeploymentSummary") or {}
            if any(v.get("CurrentWeight", 0) > 0 for v in pending.get("ProductionVariants", [])):
                cloudwatch.set_alarm_state(AlarmName=errors_alarm, StateValue="ALARM", StateReason="5xx in the canary")
                return
            time.sleep(0.1)

    threading.Thread(target=fire_once_canary_serves, daemon=True).start()
    with pytest.raises(GuardrailRollback) as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert info.value.alarms and errors_alarm in info.value.alarms[0]
    assert "5xx in the canary" in str(info.value) and "previous endpoint config" in info.value.hint
    assert _served(target) == "r-v1" and target.describe().release_id == "r-v1"
    assert not [c for c in target._releases() if c == "r-v2"]  # the candidate's config went


@pytest.mark.fault("update timeout")
def test_an_update_past_its_maximum_execution_timeout_is_rolled_back(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    sagemaker_env.front.time_scale = 100  # SageMaker's shortest timeout, 600 s, in 6 s
    target = make(rollout={"type": "linear", "size": 50, "wait_interval_s": 1800, "termination_wait_s": 0,
                           "max_execution_timeout_s": 600})  # fmt: skip
    put_live(target, releases["v1"], TIMEOUTS)
    with pytest.raises(TargetError, match="MaximumExecutionTimeoutInSeconds") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert not isinstance(info.value, GuardrailRollback)  # no alarm fired: a failure, not a rejection
    assert "production serves" in str(info.value)
    assert _served(target) == "r-v1"


@pytest.fixture(scope="session")
def exiting_server_image(docker_services: None) -> ImageRef:
    from tests.images import build_and_push

    script = "import sys; print('fatal: cannot load /opt/ml/model: no such model', flush=True); sys.exit(3)"
    image = build_and_push("sm-exits", f'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "{script}"]\n')
    return dataclasses.replace(image, model_inside=False)


@pytest.mark.fault("bad input")
def test_an_image_that_fails_the_ping_health_check_says_why_with_the_containers_output(
    make: Make, releases: dict[str, Release], exiting_server_image: ImageRef
) -> None:
    bad = dataclasses.replace(releases["v2"], id="r-noping", image=exiting_server_image)
    staging = make(Stage.STAGING)
    with pytest.raises(TargetError) as info:  # a new endpoint: Failed
        put_live(staging, bad, TIMEOUTS)
    message = str(info.value)
    assert "did not pass the ping health check" in message and "Failed" in message
    assert "fatal: cannot load /opt/ml/model" in message  # the container's output, from CloudWatch Logs
    assert staging.endpoint() is None

    production = make()
    put_live(production, releases["v1"], TIMEOUTS)
    with pytest.raises(TargetError) as update:  # an update: the green fleet never passes, blue keeps serving
        put_live(production, bad, TIMEOUTS)
    assert "did not pass the ping health check" in str(update.value)
    assert "fatal: cannot load /opt/ml/model" in str(update.value)
    assert _served(production) == "r-v1"


@pytest.mark.fault("bad input")
def test_model_data_overwritten_or_missing_in_s3_is_refused_and_production_stays(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    target = make()
    s3 = sagemaker_env.client("s3")
    v2 = model_data(releases["v2"].package_dir)
    v2_key = obj.model_data_key(target.config, target.ctx, v2.sha256)
    s3.put_object(Bucket=BUCKET, Key=v2_key, Body=b"not the model", Metadata={"sha256": "0" * 64})
    put_live(target, releases["v1"], TIMEOUTS)
    with pytest.raises(ConfigError, match=r"has sha256 000000000000, not the release's") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "nothing was changed on the endpoint" in info.value.hint
    models = sagemaker_env.client("sagemaker").list_models(NameContains=_name(target))["Models"]
    assert [m["ModelName"] for m in models] == [obj.release_name(_name(target), "r-v1")]
    assert _served(target) == "r-v1"

    s3.delete_object(Bucket=BUCKET, Key=v2_key)
    put_live(target, releases["v2"], TIMEOUTS)  # uploaded under its digest this time
    v1 = model_data(releases["v1"].package_dir)
    s3.delete_object(Bucket=BUCKET, Key=obj.model_data_key(target.config, target.ctx, v1.sha256))
    with pytest.raises(ConfigError, match="is missing from S3"):
        target.rollback(releases["v1"], TIMEOUTS)
    assert _served(target) == "r-v2"


@pytest.mark.fault("bad input")
def test_an_instance_type_the_region_does_not_offer_is_refused_before_anything_serves(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    target = make(instance_type="ml.p5.48xlarge")
    with pytest.raises(ConfigError) as info:
        put_live(target, releases["v1"], TIMEOUTS)
    assert "ValidationException" in str(info.value) and "ml.p5.48xlarge" in str(info.value)
    assert "instance_type the region does not offer" in info.value.hint
    sm = sagemaker_env.client("sagemaker")
    assert sm.list_models(NameContains=_name(target))["Models"] == []  # the Model it made went too
    assert target.endpoint() is None


@pytest.mark.fault("throttling")
def test_throttling_is_retried_then_reported(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    front = sagemaker_env.front
    target = make()
    front.throttle("CreateModel", 2)  # botocore's standard retries (api_attempts: 3) get through
    before = front.calls["CreateModel"]
    put_live(target, releases["v1"], TIMEOUTS)
    assert front.calls["CreateModel"] - before == 3
    front.throttle("UpdateEndpoint", 10)
    with pytest.raises(TransientTargetError, match="ThrottlingException") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "retried" in info.value.hint  # the flow's task retries it; then it is reported as it is
    front.faults.clear()
    assert _served(target) == "r-v1"


@pytest.mark.fault("bad input")
def test_an_update_that_would_drop_data_capture_is_refused(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    capturing = make(data_capture={"sampling_percent": 10})
    put_live(capturing, releases["v1"], TIMEOUTS)
    config = capturing.config
    forgetful = make(endpoint_name=config.endpoint_name)  # the same endpoint, a spec without data_capture
    with pytest.raises(ConfigError, match="the update would drop it"):
        put_live(forgetful, releases["v2"], TIMEOUTS)
    assert _served(capturing) == "r-v1"
    deliberate = make(endpoint_name=config.endpoint_name, data_capture={"enabled": False})
    put_live(deliberate, releases["v2"], TIMEOUTS)
    assert "DataCaptureConfig" not in deliberate.sagemaker.describe_endpoint(EndpointName=_name(deliberate))


def test_serverless_config_facts_and_the_plan(
    make: Make, sagemaker_env: SageMakerEnv, releases: dict[str, Release]
) -> None:
    single = make()
    facts = single.facts()
    assert (facts.instances, facts.zones, facts.tls) == (1, 1, True)
    assert facts.usage is not None and facts.usage.hourly == {"sagemaker.ml.m5.large": 1.0}
    assert any("WARNING: 1 instance in one availability zone" in c.detail for c in single.changes())
    spread = make(instance_count=2, autoscaling={"min_instances": 2, "max_instances": 6})
    assert (spread.facts().instances, spread.facts().max_instances, spread.facts().zones) == (2, 6, 2)
    assert not any("WARNING" in c.detail for c in spread.changes())

    serverless = make(Stage.STAGING, serverless={"memory_mb": 2048, "max_concurrency": 5})
    put_live(serverless, releases["v1"], TIMEOUTS)
    assert _served(serverless) == "r-v1"
    config = sagemaker_env.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=obj.release_name(_name(serverless), "r-v1"))  # fmt: skip
    assert config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert serverless.facts().instances == 0
    assert SHA_OF_VARIANT["r-v1"] == releases["v1"].package_sha256
