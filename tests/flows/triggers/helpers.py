"""Reading the real services: flow runs of a deployment, Prefect events, signed deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def release_runs() -> list[FlowRun]:
    """Every flow run of the `release` deployment, oldest first."""
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("release/release")
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    return sorted(runs, key=lambda r: r.created or datetime.min.replace(tzinfo=UTC))


def runs_for(version: str) -> list[FlowRun]:
    return [r for r in release_runs() if r.parameters.get("version") == version]


def final_run_for(version: str, timeout: float) -> FlowRun:
    def probe() -> FlowRun | None:
        runs = runs_for(version)
        return runs[0] if runs and runs[0].state and runs[0].state.is_final() else None

    return wait_for(f"a finished release run for version {version}", probe, timeout, every=2)


def events_of(api: str, resource_id: str, since: datetime) -> list[dict[str, Any]]:
    body = {"filter": {"resource": {"id": [resource_id]}, "occurred": {"since": since.isoformat()}}, "limit": 50}
    resp = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    resp.raise_for_status()
    return list(resp.json()["events"])


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def delivery(
    secret: str, payload: dict[str, Any], *, age_s: float = 0, delivery_id: str = ""
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a delivery signed the way MLflow signs (mlflow/webhooks/delivery.py)."""
    body = json.dumps(payload)
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time() - age_s))
    mac = hmac.new(secret.encode(), f"{delivery_id}.{ts}.{body}".encode(), hashlib.sha256).digest()
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": "v1," + base64.b64encode(mac).decode(),
    }
    return headers, body.encode()
