"""What the SageMaker target does besides writing resources: model data in S3, following an endpoint
through its statuses, which alarm rolled an update back, and a failed container's last lines.

* **Model data** is stored by its sha256 (``<prefix>/<service>/<sha256>/model.tar.gz``): an object
  that is there with that digest is not uploaded again; one that is there with another digest (someone
  overwrote it) is refused, never replaced under a live endpoint. Uploads carry ``ChecksumSHA256`` (S3
  checks the bytes it received) and the digest as metadata; SSE-KMS with the stage's key, else SSE-S3.
* **Following** an endpoint: ``Creating`` / ``Updating`` / ``SystemUpdating`` / ``RollingBack`` go on;
  ``InService`` on the wanted config is done; ``InService`` on another config after an update is a
  rollback (the guardrail's, or a failed green fleet's); ``Failed`` and ``UpdateRollbackFailed`` are
  failures that say what the endpoint serves. Each new status, and each change of the variants'
  weights and instance counts, is reported as progress.
* **Container logs**: SageMaker writes a container's output to CloudWatch Logs
  (``/aws/sagemaker/Endpoints/<endpoint>``, a stream per variant and instance); the last lines of the
  variant's streams go into the error of an endpoint whose container failed its ping health check.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from slipway.errors import At, ConfigError, TargetError
from slipway.modeldata import ModelData

IN_PROGRESS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
_TAIL = 15


def ensure_model_data(s3: Any, bucket: str, key: str, data: ModelData, kms_key_id: str, *, at: At) -> str:
    """The release's model data at ``s3://bucket/key``, uploaded unless it is there with its digest."""
    url = f"s3://{bucket}/{key}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        head = None
    if head is not None:
        check_model_data(head, url, data.sha256, at=at)
        return url
    extra: dict[str, Any] = (
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
        if kms_key_id
        else {"ServerSideEncryption": "AES256"}
    )
    with data.path.open("rb") as body:
        s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/gzip", Metadata={"sha256": data.sha256},
            ChecksumSHA256=base64.b64encode(bytes.fromhex(data.sha256)).decode(), **extra,
        )  # fmt: skip
    check_model_data(s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"), url, data.sha256, at=at)
    return url


def check_model_data(head: Any, url: str, sha256: str, *, at: At) -> None:
    """Refuse model data whose recorded digest is not the release's (S3's checksum, else the metadata)."""
    checksum = head.get("ChecksumSHA256")
    found = base64.b64decode(checksum).hex() if checksum else str(head.get("Metadata", {}).get("sha256", ""))
    if found != sha256:
        raise ConfigError(
            f"the model data at {url} has sha256 {found[:12] or '(none recorded)'}, not the release's "
            f"{sha256[:12]}: it was overwritten or is not Slipway's",
            at=at,
            hint="nothing was changed on the endpoint; delete that object (or give the stage another prefix) "
            "and release again: Slipway uploads model data only under its own digest",
        )


def require_model_data(s3: Any, url: str, sha256: str, *, at: At) -> None:
    """The model data of a Model that is about to serve is there, with the digest it was made with."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    try:
        head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise ConfigError(
                f"the model data {url} is missing from S3", at=at,
                hint="it was deleted (a lifecycle rule?); nothing was changed on the endpoint: release that "
                "model version again (slipway deploy), which uploads it",
            ) from exc  # fmt: skip
        raise
    check_model_data(head, url, sha256, at=at)


@dataclass(frozen=True)
class Outcome:
    status: str
    config: str  # the endpoint config the endpoint is on at the end
    reason: str  # FailureReason, when SageMaker gave one
    started: datetime | None


def follow(
    sagemaker: Any,
    endpoint: str,
    wanted_config: str,
    *,
    timeout_s: float,
    progress: Callable[[str], None],
    at: At,
    poll_s: float = 0.25,
    max_poll_s: float = 5.0,
) -> Outcome:
    """Poll DescribeEndpoint until it is no longer in progress (or ``timeout_s``), reporting changes;
    the polls space out from ``poll_s`` to ``max_poll_s`` (an update takes minutes on SageMaker)."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    started: datetime | None = None
    while True:
        ep = sagemaker.describe_endpoint(EndpointName=endpoint)
        status = str(ep["EndpointStatus"])
        started = started or ep.get("LastModifiedTime")
        for line in _lines(ep):
            if line not in seen:
                seen.add(line)
                progress(f"{endpoint}: {line}")
        if status not in IN_PROGRESS:
            return Outcome(status, str(ep.get("EndpointConfigName", "")), str(ep.get("FailureReason", "")), started)
        if time.monotonic() > deadline:
            raise TargetError(
                f"endpoint {endpoint} is still {status} after {timeout_s:.0f} s (towards {wanted_config})", at=at,
                hint="SageMaker goes on with it: it rolls the update back by itself after the rollout's "
                "max_execution_timeout_s; run `slipway status` to see where it ends",
            )  # fmt: skip
        time.sleep(poll_s)
        poll_s = min(max_poll_s, poll_s * 1.5)


def _lines(ep: Any) -> list[str]:
    lines = [f"status {ep['EndpointStatus']}" + (f" ({ep['FailureReason']})" if ep.get("FailureReason") else "")]
    pending = ep.get("PendingDeploymentSummary") or {}
    for label, variants in (("serving", ep.get("ProductionVariants") or []),
                            ("pending", pending.get("ProductionVariants") or [])):  # fmt: skip
        for v in variants:
            weight = v.get("CurrentWeight", v.get("DesiredWeight"))
            count = v.get("CurrentInstanceCount", v.get("DesiredInstanceCount"))
            statuses = ", ".join(s.get("Status", "") for s in v.get("VariantStatus") or [])
            lines.append(f"{label} variant {v['VariantName']}: weight {weight}, instances {count}"
                         + (f" ({statuses})" if statuses else ""))  # fmt: skip
    return lines


def fired_alarms(cloudwatch: Any, names: list[str], since: datetime | None) -> list[str]:
    """Which of ``names`` are in ALARM, or went into ALARM since ``since`` (the update's start)."""
    if not names:
        return []
    fired = []
    for alarm in cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", []):
        updated = alarm.get("StateUpdatedTimestamp")
        recent = since is None or updated is None or updated >= since
        if alarm.get("StateValue") == "ALARM" and recent:
            reason = alarm.get("StateReason", "")
            fired.append(f"{alarm['AlarmName']} ({reason})" if reason else str(alarm["AlarmName"]))
    return fired


def container_log_tail(logs: Any, endpoint: str, variant: str) -> str:
    """The variant's last container lines from CloudWatch Logs, as ``  | line``; a note if none."""
    group = f"/aws/sagemaker/Endpoints/{endpoint}"
    try:
        events = logs.filter_log_events(logGroupName=group, logStreamNamePrefix=f"{variant}/", limit=1000)["events"]
    except Exception as exc:  # the logs are extra information: their absence never hides the failure
        return f"  (the container's logs could not be read from CloudWatch Logs {group}: {type(exc).__name__})"
    lines = [f"  | {line}" for e in sorted(events, key=lambda e: e["timestamp"])
             for line in str(e["message"]).rstrip().splitlines()]  # fmt: skip
    return "\n".join(lines[-_TAIL:]) or f"  (no container output in CloudWatch Logs {group})"
