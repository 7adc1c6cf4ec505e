"""What the SageMaker target writes: names, tags and the request bodies of its calls, as plain dicts.

Pure functions of the config, the context and the release, so what a Model, an endpoint config, the
deployment guardrails, an alarm or a scaling policy is made of is read in one place.

Names (SageMaker's ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``): the stage's endpoint is
``<service>-<stage>``; a release's Model and endpoint config are ``<endpoint>-<release>`` and its one
production variant is named after the release, so ``InvokedProductionVariant`` says which release
answered. Everything Slipway creates carries the tag ``managed-by: slipway`` and ``slipway:*`` tags
(service, stage, model, version, release, package and model-data sha256, image, spec hash).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from serving.contract import AUTH_ENV, options_environment
from slipway.release import Release
from slipway.spec import SageMakerTarget as SageMakerConfig
from targets.base import TargetContext

MANAGED = ("managed-by", "slipway")
RELEASE_TAG = "slipway:release"
LIVE_TAG = "slipway:live-release"
MODEL_DATA_TAG = "slipway:model-data-sha256"
METRICS_NAMESPACE = "AWS/SageMaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def short(text: str, limit: int = 63) -> str:
    """A SageMaker name: letters, digits and '-' only; ``text`` if it fits, else its head and a hash."""
    text = re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-") or "x"
    text = re.sub(r"-{2,}", "-", text)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{text[: limit - 7].rstrip('-')}-{digest}"


def endpoint_name(config: SageMakerConfig, ctx: TargetContext) -> str:
    return config.endpoint_name or short(f"{ctx.service}-{ctx.stage.value}")


def variant_name(release_id: str) -> str:
    return short(release_id)


def release_name(endpoint: str, release_id: str) -> str:
    """The release's Model and endpoint config on this endpoint."""
    return short(f"{endpoint}-{release_id}")


def model_data_key(config: SageMakerConfig, ctx: TargetContext, sha256: str) -> str:
    """Model data is stored by its digest: the same archive is uploaded once, whatever release needs it."""
    return f"{config.prefix.strip('/')}/{ctx.service}/{sha256}/model.tar.gz".lstrip("/")


def alarm_names(endpoint: str, release_id: str) -> tuple[str, str]:
    base = f"slipway-{endpoint}-{variant_name(release_id)}"
    return f"{base}-5xx", f"{base}-latency"


def tags(ctx: TargetContext, release: Release | None, **extra: str) -> list[dict[str, str]]:
    values = {MANAGED[0]: MANAGED[1], "slipway:service": ctx.service, "slipway:stage": ctx.stage.value,
              "slipway:model": ctx.model, **extra}  # fmt: skip
    if release is not None:
        values |= {RELEASE_TAG: release.id, "slipway:version": release.version,
                   "slipway:sha256": release.package_sha256, "slipway:image": str(release.image or ""),
                   "slipway:spec-hash": release.spec_hash}  # fmt: skip
    return [{"Key": k, "Value": v[:256]} for k, v in values.items()]


def tag_map(tag_list: list[Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in tag_list}


def model_request(
    config: SageMakerConfig, ctx: TargetContext, release: Release, name: str, model_data_url: str, sha256: str
) -> dict[str, Any]:
    """CreateModel: the server-only image by digest, the model data mounted at /opt/ml/model; no API key
    (SageMaker authenticates InvokeEndpoint with IAM at its edge, so the server runs with SLIPWAY_AUTH=none);
    the spec's serving options as the environment the server reads (SageMaker runs ``IMAGE serve``)."""
    container: dict[str, Any] = {
        "Image": str(release.image),
        "Mode": "SingleModel",
        "ModelDataUrl": model_data_url,
        "Environment": {AUTH_ENV: "none", **options_environment(ctx.server_args)},
    }
    return {
        "ModelName": name,
        "PrimaryContainer": container,
        "ExecutionRoleArn": config.execution_role_arn,
        "Tags": tags(ctx, release, **{MODEL_DATA_TAG: sha256}),
    }


def endpoint_config_request(
    config: SageMakerConfig, ctx: TargetContext, release: Release, name: str, model: str
) -> dict[str, Any]:
    """CreateEndpointConfig: one production variant (instances or serverless), data capture, KMS."""
    variant: dict[str, Any] = {"VariantName": variant_name(release.id), "ModelName": model,
                               "InitialVariantWeight": 1.0}  # fmt: skip
    if config.serverless is not None:
        variant["ServerlessConfig"] = {"MemorySizeInMB": config.serverless.memory_mb,
                                       "MaxConcurrency": config.serverless.max_concurrency}  # fmt: skip
    else:
        variant |= {
            "InstanceType": config.instance_type,
            "InitialInstanceCount": config.instance_count,
            "ContainerStartupHealthCheckTimeoutInSeconds": config.container_startup_timeout_s,
            "ModelDataDownloadTimeoutInSeconds": config.model_data_download_timeout_s,
        }
    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [variant],
        "Tags": tags(ctx, release),
    }
    capture = data_capture(config)
    if capture is not None:
        request["DataCaptureConfig"] = capture
    if config.kms_key_id and config.serverless is None:
        request["KmsKeyId"] = config.kms_key_id
    return request


def data_capture_uri(config: SageMakerConfig, ctx: TargetContext) -> str:
    dc = config.data_capture
    if dc is not None and dc.s3_uri:
        return dc.s3_uri
    return f"s3://{config.bucket}/{config.prefix.strip('/')}/{ctx.service}/data-capture".replace("//data", "/data")


def data_capture(config: SageMakerConfig, uri: str = "") -> dict[str, Any] | None:
    dc = config.data_capture
    if dc is None or not dc.enabled:
        return None
    out: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": dc.sampling_percent,
        "DestinationS3Uri": uri or dc.s3_uri,
        "CaptureOptions": [{"CaptureMode": "Input" if c == "input" else "Output"} for c in dc.capture],
    }
    if config.kms_key_id:
        out["KmsKeyId"] = config.kms_key_id
    return out


def deployment_config(config: SageMakerConfig, alarms: list[str], *, all_at_once: bool = False) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: a blue/green update with the spec's traffic routing, and
    automatic rollback on the alarms Slipway made for the new variant."""
    r = config.rollout
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE" if all_at_once else r.type.upper(),
                               "WaitIntervalInSeconds": r.wait_interval_s}  # fmt: skip
    size = {"Type": r.size_type.upper(), "Value": r.size}
    if not all_at_once and r.type == "canary":
        routing["CanarySize"] = size
    elif not all_at_once and r.type == "linear":
        routing["LinearStepSize"] = size
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": r.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": r.max_execution_timeout_s,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


def alarm_requests(config: SageMakerConfig, ctx: TargetContext, endpoint: str, release_id: str) -> list[dict[str, Any]]:
    """PutMetricAlarm for the variant: invocation 5xx errors, and ModelLatency's p99 against the SLO
    (ModelLatency is in microseconds; in a spec it defaults to gate.slo.p99_ms). Missing data is not
    breaching: an idle endpoint is not failing."""
    errors_name, latency_name = alarm_names(endpoint, release_id)
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant_name(release_id)}]
    a = config.alarms
    common = {"Namespace": METRICS_NAMESPACE, "Dimensions": dims, "Period": 60,
              "EvaluationPeriods": a.evaluation_minutes, "DatapointsToAlarm": a.evaluation_minutes,
              "TreatMissingData": "notBreaching", "ComparisonOperator": "GreaterThanThreshold",
              "Tags": tags(ctx, None, **{RELEASE_TAG: release_id})}  # fmt: skip
    alarms = [
        {**common, "AlarmName": errors_name, "MetricName": "Invocation5XXErrors", "Statistic": "Sum",
         "Threshold": float(a.max_5xx_errors),
         "AlarmDescription": f"Slipway: {endpoint} variant {variant_name(release_id)} answers 5xx errors"},
        {**common, "AlarmName": latency_name, "MetricName": "ModelLatency", "ExtendedStatistic": "p99",
         "Threshold": a.latency_p99_ms * 1000.0, "Unit": "Microseconds",
         "AlarmDescription": f"Slipway: {endpoint} variant {variant_name(release_id)} p99 model latency above "
         f"{a.latency_p99_ms:g} ms"},
    ]  # fmt: skip
    return alarms if a.latency_p99_ms else alarms[:1]  # no SLO to hold (a config outside a spec): no latency alarm


def resource_id(endpoint: str, variant: str) -> str:
    """Application Auto Scaling's id of a variant."""
    return f"endpoint/{endpoint}/variant/{variant}"


def scaling_policy(config: SageMakerConfig, endpoint: str, variant: str) -> dict[str, Any]:
    assert config.autoscaling is not None
    a = config.autoscaling
    return {
        "PolicyName": f"slipway-{endpoint}-invocations",
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint, variant),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": a.invocations_per_instance,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": a.scale_in_cooldown_s,
            "ScaleOutCooldown": a.scale_out_cooldown_s,
        },
    }
