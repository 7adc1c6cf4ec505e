"""``kind: sagemaker`` — the managed ML platform pattern on Amazon SageMaker real-time endpoints.

Bring-your-own-container with the model data separate from the image: the server-only image (in
ECR) runs as ``IMAGE serve`` on 8080 and serves the package SageMaker extracts from the release's
``model.tar.gz`` into ``/opt/ml/model`` (``serving/contract.py``). A new model version with the same
dependencies therefore builds no image: it is a new SageMaker Model pointing at new model data.

* ``deploy`` uploads the model data to S3 by its sha256 (idempotent, verified), then creates the
  release's Model and endpoint config (one production variant named after the release: instances,
  or serverless; data capture; KMS) — names and bodies in ``targets._sagemaker_objects``. The
  stage's first release also creates the endpoint; later ones touch nothing that serves.
* ``wait_ready`` follows a new endpoint to ``InService`` (a container that fails its ping health
  check fails it: the error carries SageMaker's reason and the container's last lines from CloudWatch
  Logs) and invokes it once with a golden sample, reporting the variant that answered. For a later
  release it checks the model data the Model points at.
* ``promote`` is SageMaker's deployment guardrails: ``UpdateEndpoint`` to the release's config with a
  blue/green ``DeploymentConfig`` (ALL_AT_ONCE, CANARY or LINEAR traffic routing, termination wait,
  maximum execution timeout) and automatic rollback on two CloudWatch alarms Slipway creates for the
  new variant (invocation 5xx errors; ModelLatency p99 against the gate's SLO). The endpoint is
  followed through ``Updating`` / ``RollingBack`` to its end (``targets._sagemaker_rollout``): an
  alarm rollback raises ``GuardrailRollback`` (recorded as rejected, naming the alarm), any other
  rollback or failure a ``TargetError`` saying what serves. Then the new variant gets the spec's
  Application Auto Scaling, the previous variant's scaling and alarms go, and releases beyond
  ``keep_releases`` lose their Model and config.
* ``rollback`` is an ``UpdateEndpoint`` (all at once, alarms on) to the release's retained config.
* ``discard`` deletes a candidate's config, Model and alarms (and the endpoint if it only ever held
  the candidate); ``teardown`` deletes the endpoint, every config, Model, alarm and scaling target of
  the stage. Model data stays in S3 (it is shared by digest across stages and releases).

Data capture is written into every config from the spec, so an update never drops it silently; a
spec without it against an endpoint that captures is refused before anything changes. Callers reach
the stage through SageMaker Runtime's ``InvokeEndpoint`` (``POST /endpoints/<name>/invocations``),
signed with SigV4 (``AuthScheme.AWS_SIGV4``), which IAM checks at SageMaker's edge.
"""

from __future__ import annotations

import contextlib
import json
from functools import cached_property
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError

from serving.contract import SAGEMAKER
from serving.manifest import read_manifest
from slipway.costs import Usage
from slipway.errors import At, ConfigError, GuardrailRollback, TargetError
from slipway.modeldata import model_data
from slipway.release import ArtifactKind, Auth, AuthScheme, Endpoint, Release
from slipway.spec import SageMakerTarget as SageMakerConfig
from slipway.spec import Timeouts
from targets import _sagemaker_objects as obj
from targets._sagemaker_rollout import (
    container_log_tail,
    ensure_model_data,
    fired_alarms,
    follow,
    require_model_data,
)
from targets.aws import ServiceCodes, aws_errors, check_region, session
from targets.base import Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, no_shift, put_live

SAGEMAKER_CODES = ServiceCodes(
    limits=frozenset({"ResourceLimitExceeded"}),
    config=frozenset({"ResourceNotFound"}),
    hints={
        "ResourceLimitExceeded": "an account quota of SageMaker is reached (instances of this type for endpoint "
        "usage, or endpoints): request more in the Service Quotas console, or use another instance_type",
        "ValidationException": "SageMaker refused the request: fix the named setting of the stage in the spec (an "
        "instance_type the region does not offer, a role SageMaker cannot assume, ...); see docs/targets/sagemaker.md",
    },
)
ARTIFACTS = frozenset({ArtifactKind.SERVER_IMAGE, ArtifactKind.MODEL_DATA})


class SageMakerEndpointTarget:
    kind = "sagemaker"
    capabilities = Capabilities(artifacts=ARTIFACTS, traffic_split=False, stable_endpoint=True)

    def __init__(self, config: SageMakerConfig, ctx: TargetContext) -> None:
        check_region(config.region, at=At(self.kind, "config", config.region))
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.name = obj.endpoint_name(config, ctx)
        self.location = f"sagemaker {config.region} endpoint {self.name}"

    # --- clients ----------------------------------------------------------------------------

    def _client(self, service: str, endpoint_url: str = "") -> Any:
        retries = Config(retries={"mode": "standard", "max_attempts": self.config.api_attempts})
        url = endpoint_url or self.config.endpoint_url
        client: Any = session(self.config.region).client(service, config=retries, endpoint_url=url or None)  # type: ignore[call-overload]
        return client

    @cached_property
    def sagemaker(self) -> Any:
        return self._client("sagemaker")

    @cached_property
    def runtime(self) -> Any:
        return self._client("sagemaker-runtime", self.config.runtime_endpoint_url)

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    @cached_property
    def cloudwatch(self) -> Any:
        return self._client("cloudwatch")

    @cached_property
    def autoscaling(self) -> Any:
        return self._client("application-autoscaling")

    @cached_property
    def logs(self) -> Any:
        return self._client("logs")

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        release.require_image(ArtifactKind.SERVER_IMAGE)
        data = model_data(release.package_dir)
        name = obj.release_name(self.name, release.id)
        at = At(self.kind, "deploy", name)
        with self._aws("deploy", name):
            current = self._describe_endpoint()
            if current is not None:
                self._check_data_capture(current)
            key = obj.model_data_key(self.config, self.ctx, data.sha256)
            url = ensure_model_data(self.s3, self.config.bucket, key, data, self.config.kms_key_id, at=at)
            self.ctx.progress(f"{self.stage.value}: model data {url} ({data.size} bytes, sha256 {data.sha256[:12]})")
            if not self._exists(self.sagemaker.describe_model, ModelName=name):
                self.sagemaker.create_model(**obj.model_request(self.config, self.ctx, release, name, url, data.sha256))
            if not self._exists(self.sagemaker.describe_endpoint_config, EndpointConfigName=name):
                request = obj.endpoint_config_request(self.config, self.ctx, release, name, name)
                if "DataCaptureConfig" in request:
                    request["DataCaptureConfig"]["DestinationS3Uri"] = obj.data_capture_uri(self.config, self.ctx)
                try:
                    self.sagemaker.create_endpoint_config(**request)
                except ClientError:  # refused (an instance type the region lacks, ...): the Model goes too
                    with contextlib.suppress(ClientError):
                        self.sagemaker.delete_model(ModelName=name)
                    raise
            first = current is None or (current["EndpointStatus"] == "Failed" and not self._live_release())
            if first:
                if current is not None:  # a failed first endpoint nothing ever served: made again
                    self._delete_endpoint()
                self.sagemaker.create_endpoint(EndpointName=self.name, EndpointConfigName=name,
                                               Tags=obj.tags(self.ctx, None))  # fmt: skip
                self.ctx.progress(f"{self.stage.value}: creating endpoint {self.name} with {name}")
            else:
                self.ctx.progress(f"{self.stage.value}: model and endpoint config {name} made; nothing serves them yet")
        handle = {"endpoint": self.name, "config": name, "model": name, "variant": obj.variant_name(release.id),
                  "model_data": url, "model_data_sha256": data.sha256, "first": "1" if first else ""}  # fmt: skip
        return Deployment(release, self.stage, self._stage_endpoint(), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        h = deployment.handle
        at = At(self.kind, "wait_ready", h["config"])
        with self._aws("wait_ready", h["config"]):
            if not h["first"]:
                require_model_data(self.s3, h["model_data"], h["model_data_sha256"], at=at)
                return deployment
            end = follow(self.sagemaker, self.name, h["config"], timeout_s=timeout_s, progress=self.ctx.progress, at=at)
            if end.status != "InService" or end.config != h["config"]:
                tail = container_log_tail(self.logs, self.name, h["variant"])
                raise TargetError(
                    f"release {deployment.release.id}: endpoint {self.name} is {end.status}: "
                    f"{end.reason or 'no reason given'}\n{tail}", at=at,
                    hint="read the container's output above (it is in CloudWatch Logs); fix and deploy again",
                )  # fmt: skip
            self._report_invocation(deployment.release)
        return deployment

    def shift(self, deployment: Deployment, weight: float) -> None:
        raise no_shift(self)  # SageMaker's own guardrails shift the traffic (rollout: canary / linear) in promote

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        h = deployment.handle
        with self._aws("promote", self.name):
            if not h["first"]:
                self._update(deployment.release, h["config"], timeout_s, all_at_once=False)
            self._settle(deployment.release)
        return Deployment(deployment.release, self.stage, self._stage_endpoint(), {**h, "first": ""})

    def discard(self, deployment: Deployment) -> None:
        h = deployment.handle
        with self._aws("discard", h["config"]):
            current = self._describe_endpoint()
            if current is not None and current.get("EndpointConfigName") == h["config"]:
                if self._live_release() == deployment.release.id:
                    return  # it went live: not a candidate any more
                self._delete_endpoint()  # the endpoint only ever held this candidate
            self._delete_release(deployment.release.id, keep_alarms=False)
        self.ctx.progress(f"{self.stage.value}: candidate {h['config']} removed")

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        name = obj.release_name(self.name, release.id)
        with self._aws("rollback", name):
            retained = self._exists(self.sagemaker.describe_endpoint_config, EndpointConfigName=name)
            model = self._describe(self.sagemaker.describe_model, ModelName=name) if retained else None
            if model is None or self._describe_endpoint() is None:
                return put_live(self, release, timeouts)
            container = model["PrimaryContainer"]
            model_tags = obj.tag_map(self.sagemaker.list_tags(ResourceArn=model["ModelArn"])["Tags"])
            sha = model_tags.get(obj.MODEL_DATA_TAG, "")
            require_model_data(self.s3, container["ModelDataUrl"], sha, at=At(self.kind, "rollback", name))
            self.ctx.progress(f"{self.stage.value}: back to the retained endpoint config {name}")
            self._update(release, name, timeouts.promote_s, all_at_once=True)
            self._settle(release)
        handle = {"endpoint": self.name, "config": name, "model": name, "variant": obj.variant_name(release.id),
                  "model_data": container["ModelDataUrl"], "model_data_sha256": sha, "first": ""}  # fmt: skip
        return Deployment(release, self.stage, self._stage_endpoint(), handle)

    def endpoint(self) -> Endpoint | None:
        with self._aws("describe", self.name):
            return self._stage_endpoint() if self._live_release() else None

    def teardown(self) -> None:
        with self._aws("teardown", self.name):
            if self._describe_endpoint() is not None:
                self._delete_endpoint()
            for release_id in self._releases():
                self._delete_release(release_id, keep_alarms=False)

    def describe(self) -> StageStatus:
        with self._aws("describe", self.name):
            ep = self._describe_endpoint()
            live = self._live_release() if ep is not None else None
        if ep is None or not live:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        variants = ", ".join(f"{v['VariantName']} weight {v.get('CurrentWeight')} x{v.get('CurrentInstanceCount', 0)}"
                             for v in ep.get("ProductionVariants", []))  # fmt: skip
        detail = f"endpoint {self.name} {ep['EndpointStatus']} on {ep.get('EndpointConfigName')}: {variants}"
        if ep.get("FailureReason"):
            detail += f"; last failure: {ep['FailureReason']}"
        healthy = ep["EndpointStatus"] == "InService"
        return StageStatus(self.stage, self.kind, live, self._stage_endpoint(), healthy, detail)

    def facts(self) -> Facts:
        c = self.config
        alarms = obj.alarm_names(self.name, "<release>")
        monitoring: tuple[str, ...] = (
            "CloudWatch metrics (AWS/SageMaker)",
            f"alarms {alarms[0]} and {alarms[1]} (auto rollback)",
            f"container logs in CloudWatch Logs /aws/sagemaker/Endpoints/{self.name}",
        )
        if c.data_capture is not None and c.data_capture.enabled:
            monitoring += (f"data capture of {c.data_capture.sampling_percent} % of requests",)
        encryption = f"SSE-KMS {c.kms_key_id}" if c.kms_key_id else "SSE-S3"
        at_rest: tuple[str, ...] = (f"model data in S3 s3://{c.bucket} ({encryption})",)
        if c.kms_key_id:
            at_rest += ("the instances' storage volumes (the KMS key)",)
        if c.serverless is not None:
            usage = Usage(per_request_second={"sagemaker.serverless.gb_second": c.serverless.memory_mb / 1024})
            return Facts(0, c.serverless.max_concurrency, f"serverless: up to {c.serverless.max_concurrency} "
                         "concurrent invocations", True, None, True, monitoring, tls=True, public=True,
                         at_rest=at_rest, usage=usage)  # fmt: skip
        scaling, low, high = "", c.instance_count, c.instance_count
        if c.autoscaling is not None:
            a = c.autoscaling
            low, high = a.min_instances, a.max_instances
            scaling = (f"Application Auto Scaling: {low}-{high} instances at {a.invocations_per_instance:g} "
                       "invocations per instance a minute")  # fmt: skip
        zones = 1 if low < 2 else min(low, 3)  # SageMaker spreads 2+ instances across availability zones
        usage = Usage(hourly={f"sagemaker.{c.instance_type}": float(low)})
        return Facts(low, high, scaling, True, zones, True, monitoring, tls=True, public=True, at_rest=at_rest,
                     usage=usage)  # fmt: skip

    def changes(self) -> list[Change]:
        c = self.config
        name = f"{self.name}-<release>"
        size = f"serverless {c.serverless.memory_mb} MB" if c.serverless else f"{c.instance_count} x {c.instance_type}"
        out = [Change("create", f"model data s3://{c.bucket}/{obj.model_data_key(c, self.ctx, '<sha256>')}",
                      "unless it is there with that digest"),
               Change("create", f"model {name}", "the server-only image by digest, the model data at /opt/ml/model"),
               Change("create", f"endpoint config {name}", f"variant <release>: {size}"),
               Change("create", f"alarms {', '.join(obj.alarm_names(self.name, '<release>'))}",
                      "5xx errors; p99 model latency above "
                      f"{c.alarms.latency_p99_ms:g} ms")]  # fmt: skip
        with self._aws("plan", self.name):
            ep = self._describe_endpoint()
            if ep is None:
                out.append(Change("create", f"endpoint {self.name}", "on the first release's config"))
            else:
                r = c.rollout
                how = r.type.upper() + (f" {r.size} {r.size_type}" if r.type != "all_at_once" else "")
                out.append(Change("change", f"endpoint {self.name}", f"UpdateEndpoint from "
                                  f"{ep.get('EndpointConfigName')}: blue/green {how}, {r.wait_interval_s} s bake, "
                                  "auto rollback on the alarms"))  # fmt: skip
                kept = sorted(self._releases())
                old = kept[: -c.keep_releases] if len(kept) > c.keep_releases else []
                out += [Change("delete", f"model and endpoint config {obj.release_name(self.name, rid)}",
                               f"beyond keep_releases ({c.keep_releases})") for rid in old]  # fmt: skip
        if c.autoscaling is not None:
            out.append(Change("change", "scalable target of the live variant", f"{c.autoscaling.min_instances}-"
                              f"{c.autoscaling.max_instances} instances, target tracking"))  # fmt: skip
        if self.stage.value == "production" and c.serverless is None and c.instance_count < 2:
            out.append(Change("change", f"endpoint {self.name}", f"WARNING: {c.instance_count} instance in one "
                              "availability zone: set instance_count: 2 (or more), which SageMaker spreads across "
                              "zones"))  # fmt: skip
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _aws(self, operation: str, resource: str) -> contextlib.AbstractContextManager[None]:
        return aws_errors(At(self.kind, operation, resource), SAGEMAKER_CODES)

    def _stage_endpoint(self) -> Endpoint:
        base = self.config.runtime_endpoint_url or f"https://runtime.sagemaker.{self.config.region}.amazonaws.com"
        auth = Auth(AuthScheme.AWS_SIGV4, aws_service="sagemaker", aws_region=self.config.region)
        return Endpoint(f"{base.rstrip('/')}/endpoints/{self.name}", auth, routes=SAGEMAKER)

    @staticmethod
    def _describe(call: Any, **kwargs: Any) -> Any:
        try:
            return call(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
                return None  # SageMaker answers "Could not find ..." as a ValidationException
            raise

    def _exists(self, call: Any, **kwargs: Any) -> bool:
        return self._describe(call, **kwargs) is not None

    def _describe_endpoint(self) -> Any:
        return self._describe(self.sagemaker.describe_endpoint, EndpointName=self.name)

    def _live_release(self) -> str:
        """The release the endpoint serves: the release tag of its current config ('' if none)."""
        ep = self._describe_endpoint()
        if ep is None or not ep.get("EndpointConfigName"):
            return ""
        config = self._describe(self.sagemaker.describe_endpoint_config, EndpointConfigName=ep["EndpointConfigName"])
        if config is None:
            return ""
        endpoint_tags = obj.tag_map(self.sagemaker.list_tags(ResourceArn=ep["EndpointArn"])["Tags"])
        config_tags = obj.tag_map(self.sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"])
        release = config_tags.get(obj.RELEASE_TAG, "")
        return release if endpoint_tags.get(obj.LIVE_TAG) and release else ""

    def _check_data_capture(self, endpoint: Any) -> None:
        live = endpoint.get("DataCaptureConfig") or {}
        wanted = self.config.data_capture
        if live.get("EnableCapture") and wanted is None:
            raise ConfigError(
                f"endpoint {self.name} captures {live.get('CurrentSamplingPercentage')} % of its requests to "
                f"{live.get('DestinationS3Uri')}, and this spec has no data_capture: the update would drop it",
                at=At(self.kind, "deploy", self.name),
                hint=f"set {self.stage.value}.data_capture (the same sampling and destination to keep it), or "
                "data_capture: {enabled: false} to stop capturing deliberately",
            )

    def _update(self, release: Release, config: str, timeout_s: float, *, all_at_once: bool) -> None:
        """UpdateEndpoint to ``config`` through the guardrails, followed to its end; raises unless it is live."""
        at = At(self.kind, "promote", self.name)
        alarms = self._put_alarms(release.id)
        request: dict[str, Any] = {"EndpointName": self.name, "EndpointConfigName": config}
        if self.config.serverless is None:
            request["DeploymentConfig"] = obj.deployment_config(self.config, alarms, all_at_once=all_at_once)
        self.sagemaker.update_endpoint(**request)
        r = self.config.rollout
        sized = f" {r.size} {r.size_type}" if r.type != "all_at_once" else ""
        how = "ALL_AT_ONCE" if all_at_once else r.type.upper() + sized
        self.ctx.progress(f"{self.stage.value}: UpdateEndpoint {self.name} → {config} (blue/green {how}, alarms "
                          f"{', '.join(alarms)})")  # fmt: skip
        end = follow(self.sagemaker, self.name, config, timeout_s=timeout_s, progress=self.ctx.progress, at=at)
        if end.status == "InService" and end.config == config:
            return
        serving = f"production serves {end.config}" if end.status == "InService" else f"the endpoint is {end.status}"
        fired = fired_alarms(self.cloudwatch, alarms, end.started)
        if fired and end.status == "InService":
            raise GuardrailRollback(release.id, fired, f"{end.reason or 'rolled back'}; {serving}", at=at)
        tail = container_log_tail(self.logs, self.name, obj.variant_name(release.id))
        if end.status == "UpdateRollbackFailed":
            raise TargetError(
                f"the update to {config} failed and so did SageMaker's rollback: {end.reason}", at=at,
                hint="the endpoint may serve a mix of fleets: check it in the console and roll back with "
                "`slipway rollback` once it is InService",
            )  # fmt: skip
        raise TargetError(
            f"release {release.id}: the update to {config} did not complete ({end.reason or end.status}); {serving}\n"
            f"{tail}", at=at,
            hint="read SageMaker's reason and the container's output above; a timeout is the rollout's "
            "max_execution_timeout_s",
        )  # fmt: skip

    def _put_alarms(self, release_id: str) -> list[str]:
        requests = obj.alarm_requests(self.config, self.ctx, self.name, release_id)
        for request in requests:
            self.cloudwatch.put_metric_alarm(**request)
        return [r["AlarmName"] for r in requests]

    def _settle(self, release: Release) -> None:
        """What follows a switch: the live tag, alarms and scaling on the new variant only, old releases pruned."""
        ep = self.sagemaker.describe_endpoint(EndpointName=self.name)
        self.sagemaker.add_tags(ResourceArn=ep["EndpointArn"], Tags=[{"Key": obj.LIVE_TAG, "Value": release.id}])
        self._put_alarms(release.id)
        variant = obj.variant_name(release.id)
        for other in self._releases():
            if other != release.id:
                self._unscale(obj.variant_name(other))
                self.cloudwatch.delete_alarms(AlarmNames=list(obj.alarm_names(self.name, other)))
        if self.config.autoscaling is not None:
            a = self.config.autoscaling
            self.autoscaling.register_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=obj.resource_id(self.name, variant),
                ScalableDimension=obj.SCALABLE_DIMENSION, MinCapacity=a.min_instances, MaxCapacity=a.max_instances,
            )  # fmt: skip
            self.autoscaling.put_scaling_policy(**obj.scaling_policy(self.config, self.name, variant))
        older = [r for r in sorted(self._releases()) if r != release.id]
        for old in older[: max(0, len(older) - self.config.keep_releases)]:
            self._delete_release(old, keep_alarms=False)
        self.ctx.progress(f"{self.stage.value}: endpoint {self.name} serves release {release.id} (variant {variant})")

    def _unscale(self, variant: str) -> None:
        rid = obj.resource_id(self.name, variant)
        found = self.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])
        if found.get("ScalableTargets"):
            self.autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid,
                                                        ScalableDimension=obj.SCALABLE_DIMENSION)  # fmt: skip

    def _releases(self) -> list[str]:
        """Releases of this stage with an endpoint config here (by their tags)."""
        out = []
        pages = self.sagemaker.get_paginator("list_endpoint_configs").paginate(NameContains=self.name)
        for page in pages:
            for config in page["EndpointConfigs"]:
                tags = obj.tag_map(self.sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"])
                if tags.get("slipway:service") == self.ctx.service and tags.get("slipway:stage") == self.stage.value:
                    out.append(tags.get(obj.RELEASE_TAG, ""))
        return [r for r in out if r]

    def _delete_release(self, release_id: str, *, keep_alarms: bool) -> None:
        name = obj.release_name(self.name, release_id)
        with contextlib.suppress(ClientError):
            self.sagemaker.delete_endpoint_config(EndpointConfigName=name)
        with contextlib.suppress(ClientError):
            self.sagemaker.delete_model(ModelName=name)
        self._unscale(obj.variant_name(release_id))
        if not keep_alarms:
            self.cloudwatch.delete_alarms(AlarmNames=list(obj.alarm_names(self.name, release_id)))

    def _delete_endpoint(self) -> None:
        self.sagemaker.delete_endpoint(EndpointName=self.name)
        waiter = self.sagemaker.get_waiter("endpoint_deleted")
        waiter.wait(EndpointName=self.name, WaiterConfig={"Delay": 2, "MaxAttempts": 300})

    def _report_invocation(self, release: Release) -> None:
        """One InvokeEndpoint with the first golden sample: the variant that answered, as progress."""
        samples = read_manifest(release.package_dir).samples
        if not samples:
            return
        body = json.dumps({SAGEMAKER.request_key: [samples[0].input]})
        answer = self.runtime.invoke_endpoint(EndpointName=self.name, Body=body, ContentType="application/json")
        self.ctx.progress(f"{self.stage.value}: InvokeEndpoint {self.name} answered from variant "
                          f"{answer.get('InvokedProductionVariant', '?')}")  # fmt: skip
