"""A front in front of moto that answers what moto's SageMaker lacks, and serves InvokeEndpoint for real.

The SageMaker target talks boto3 with ``endpoint_url`` pointing here and never knows. Every call is
forwarded to moto as it is (models, endpoint configs, tags, S3, CloudWatch alarms, Logs, Application
Auto Scaling are moto's), except:

* **Endpoints' lifecycle.** moto makes an endpoint ``InService`` at once and has no ``UpdateEndpoint``
  (NotImplementedError). Here ``CreateEndpoint`` (forwarded, then) starts each variant on the data
  plane (``hosting.py``: the image run as ``IMAGE serve`` with the model data from moto's S3 at
  /opt/ml/model, read-only) and the endpoint is ``Creating`` until every variant answers ``/ping``,
  then ``InService``, or ``Failed`` with SageMaker's reason and the container's output in CloudWatch Logs.
* **UpdateEndpoint** runs the blue/green state machine of SageMaker's deployment guardrails:
  ``Updating`` while the green fleet starts (a failed ping rolls back: ``InService`` on the old config
  with the reason); then the traffic moves by the ``TrafficRoutingConfiguration`` — ALL_AT_ONCE, CANARY
  (``CanarySize`` first) or LINEAR (``LinearStepSize`` per step), a percent of the capacity or a
  count of instances — each share baking ``WaitIntervalInSeconds`` while the ``AutoRollbackConfiguration``
  alarms are read from moto (a test puts one in ``ALARM`` with ``set_alarm_state``): one in ALARM, or
  the whole update passing ``MaximumExecutionTimeoutInSeconds``, is ``RollingBack`` (all traffic back to
  blue, green stopped), then ``InService`` on the old config with the reason. Otherwise the blue fleet
  stays ``TerminationWaitInSeconds`` and stops, and the endpoint is ``InService`` on the new config.
  ``DescribeEndpoint`` is moto's answer with the status, config, variants' weights and counts,
  ``PendingDeploymentSummary``, ``FailureReason`` and ``DataCaptureConfig`` of this state.
  ``time_scale`` emulated seconds pass per real second in all these waits (a 600 s timeout in 6 s).
* **InvokeEndpoint** (``POST /endpoints/<name>/invocations``, SageMaker Runtime) needs a SigV4
  ``Authorization`` for the service ``sagemaker`` (its signature is not verified), routes by the
  variants' current weights (or ``X-Amzn-SageMaker-Target-Variant``) to the variant's container and
  answers its body with ``X-Amzn-Invoked-Production-Variant``.
* **CreateEndpointConfig** refuses an instance type the region does not offer (``offered``), as a
  ValidationException.
* **Faults**: ``throttle(action, times)`` answers the next calls of an action (or ``InvokeEndpoint``)
  with ``ThrottlingException``; ``calls`` counts every action.
"""

from __future__ import annotations

import http.server
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.targets.sagemaker.hosting import Fleet, FleetFailed, Hosting

_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_INVOKE = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_REGION = re.compile(r"Credential=[^/]+/[0-9]+/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request")
OFFERED = frozenset({
    "ml.t2.medium", "ml.t2.large", "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.large", "ml.c5.xlarge",
    "ml.c6i.large", "ml.g4dn.xlarge", "ml.g5.xlarge",
})  # fmt: skip


@dataclass
class EndpointState:
    name: str
    region: str
    arn: str
    status: str = "Creating"
    config: str = ""
    reason: str = ""
    fleets: dict[str, Fleet] = field(default_factory=dict)  # variant → its fleet, of what serves
    weights: dict[str, float] = field(default_factory=dict)  # variant → configured weight
    routes: list[tuple[Fleet, float]] = field(default_factory=list)  # where requests go now, by share
    pending: dict[str, Any] | None = None
    capture: dict[str, Any] | None = None
    modified: float = field(default_factory=time.time)
    deleted: bool = False
    shares: list[float] = field(default_factory=list)  # the green fleet's share at each step of every update


class SageMakerFront:
    def __init__(self, moto_url: str, region: str, root: Path) -> None:
        self.moto_url, self.region = moto_url, region
        self.id = f"{random.getrandbits(32):08x}"
        self.hosting = Hosting(self.id, moto_url, region, root)
        self.endpoints: dict[str, EndpointState] = {}
        self.lock = threading.RLock()
        self.time_scale = 1.0
        self.offered = set(OFFERED)
        self.faults: Counter[str] = Counter()  # action → throttled answers still to give
        self.calls: Counter[str] = Counter()
        self.errors: list[str] = []  # what the emulator itself failed at (reported by the fixture)
        self._http = httpx.Client(base_url=moto_url, timeout=120)
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    status, out_headers, content = front.dispatch(self.command, self.path, headers, body)
                except Exception as exc:  # the emulator's own fault: a 500 the test sees, and a record
                    front.errors.append(f"{self.command} {self.path}: {type(exc).__name__}: {exc}")
                    status, out_headers, content = 500, {"Content-Type": "text/plain"}, str(exc).encode()
                self.send_response(status)
                for k, v in out_headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sagemaker-front", daemon=True)

    # --- control -------------------------------------------------------------------------------

    def start(self) -> SageMakerFront:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.hosting.stop_all()
        self._http.close()

    def throttle(self, action: str, times: int) -> None:
        self.faults[action] = times

    def reset(self) -> None:
        """Between tests: every endpoint's containers stopped, no fault left."""
        self.faults.clear()
        with self.lock:
            states = list(self.endpoints.values())
            self.endpoints.clear()
        for state in states:
            state.deleted = True
        self.hosting.stop_all()

    def _aws(self, service: str, region: str) -> Any:
        return boto3.client(service, endpoint_url=self.moto_url, region_name=region, **_CREDENTIALS)

    def _sleep(self, emulated_s: float) -> None:
        time.sleep(max(0.0, emulated_s) / self.time_scale)

    # --- dispatch --------------------------------------------------------------------------------

    def dispatch(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        scope = _REGION.search(headers.get("Authorization", ""))
        region = scope["region"] if scope else self.region
        invoke = _INVOKE.match(path.partition("?")[0])
        if invoke and method == "POST":
            self.calls["InvokeEndpoint"] += 1
            if self._throttled("InvokeEndpoint"):
                return _error(400, "ThrottlingException", "Rate exceeded", rest=True)
            if scope is None or scope["service"] != "sagemaker":
                return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token", rest=True)
            return self._invoke(invoke["name"], headers, body)
        target = headers.get("X-Amz-Target", "")
        if target.startswith("SageMaker."):
            action = target.removeprefix("SageMaker.")
            self.calls[action] += 1
            if self._throttled(action):
                return _error(400, "ThrottlingException", "Rate exceeded")
            handler = getattr(self, f"_{_snake(action)}", None)
            if handler is not None:
                result: tuple[int, dict[str, str], bytes] = handler(json.loads(body or b"{}"), region, headers, body)
                return result
        return self._forward(method, path, headers, body)

    def _throttled(self, action: str) -> bool:
        with self.lock:
            if self.faults[action] > 0:
                self.faults[action] -= 1
                return True
        return False

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
        resp = self._http.request(method, path, content=body, headers=sent)
        return resp.status_code, dict(resp.headers), resp.content

    # --- SageMaker actions moto lacks or gets wrong -------------------------------------------------

    def _create_endpoint_config(self, req: dict[str, Any], region: str, headers: dict[str, str], body: bytes) -> Any:
        for variant in req.get("ProductionVariants", []):
            itype = variant.get("InstanceType")
            if itype and itype not in self.offered:
                return _error(400, "ValidationException", f"The instance type {itype} is not supported in region "
                              f"{region} for production variant {variant.get('VariantName')}.")  # fmt: skip
        return self._forward("POST", "/", headers, body)

    def _create_endpoint(self, req: dict[str, Any], region: str, headers: dict[str, str], body: bytes) -> Any:
        status, out, content = self._forward("POST", "/", headers, body)
        if status != 200:
            return status, out, content
        state = EndpointState(
            req["EndpointName"], region, json.loads(content)["EndpointArn"], config=req["EndpointConfigName"]
        )
        with self.lock:
            self.endpoints[state.name] = state
        threading.Thread(target=self._create, args=(state,), daemon=True, name=f"create-{state.name}").start()
        return status, out, content

    def _describe_endpoint(self, req: dict[str, Any], region: str, headers: dict[str, str], body: bytes) -> Any:
        status, out, content = self._forward("POST", "/", headers, body)
        state = self.endpoints.get(req.get("EndpointName", ""))
        if status != 200 or state is None:
            return status, out, content
        answer = json.loads(content)
        with self.lock:
            answer |= {"EndpointStatus": state.status, "EndpointConfigName": state.config,
                       "LastModifiedTime": state.modified,
                       "ProductionVariants": [_variant(v, f, state) for v, f in state.fleets.items()]}  # fmt: skip
            if not state.fleets:
                answer["ProductionVariants"] = [
                    {"VariantName": v, "CurrentWeight": w, "DesiredWeight": w, "CurrentInstanceCount": 0}
                    for v, w in state.weights.items()
                ]
            answer.pop("FailureReason", None)
            if state.reason:
                answer["FailureReason"] = state.reason
            answer.pop("PendingDeploymentSummary", None)
            if state.pending is not None:
                answer["PendingDeploymentSummary"] = state.pending
            answer.pop("DataCaptureConfig", None)
            if state.capture:
                answer["DataCaptureConfig"] = state.capture
        return status, out, json.dumps(answer).encode()

    def _update_endpoint(self, req: dict[str, Any], region: str, headers: dict[str, str], body: bytes) -> Any:
        state = self.endpoints.get(req.get("EndpointName", ""))
        if state is None:
            return _error(400, "ValidationException", f'Could not find endpoint "{req.get("EndpointName")}".')
        if state.status != "InService":
            return _error(400, "ValidationException", f'Cannot update in-progress endpoint "{state.arn}".')
        try:
            self._aws("sagemaker", region).describe_endpoint_config(EndpointConfigName=req["EndpointConfigName"])
        except Exception:
            return _error(
                400, "ValidationException", f'Could not find endpoint configuration "{req["EndpointConfigName"]}".'
            )
        timeout = (
            req.get("DeploymentConfig", {}).get("BlueGreenUpdatePolicy", {}).get("MaximumExecutionTimeoutInSeconds")
        )
        if timeout is not None and not 600 <= int(timeout) <= 28800:
            return _error(400, "ValidationException", "MaximumExecutionTimeoutInSeconds must be between 600 and 28800.")
        with self.lock:
            state.status, state.reason, state.modified = "Updating", "", time.time()
        threading.Thread(target=self._update, args=(state, req), daemon=True, name=f"update-{state.name}").start()
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps({"EndpointArn": state.arn}).encode()

    def _delete_endpoint(self, req: dict[str, Any], region: str, headers: dict[str, str], body: bytes) -> Any:
        status, out, content = self._forward("POST", "/", headers, body)
        with self.lock:
            state = self.endpoints.pop(req.get("EndpointName", ""), None)
        if state is not None:
            state.deleted = True
            for fleet in list(state.fleets.values()):
                self.hosting.stop(fleet, state.region)
        return status, out, content

    # --- the state machine ------------------------------------------------------------------------

    def _config(self, name: str, region: str) -> Any:
        return self._aws("sagemaker", region).describe_endpoint_config(EndpointConfigName=name)

    def _start_fleets(self, state: EndpointState, config: Any) -> dict[str, Fleet]:
        started: dict[str, Fleet] = {}
        try:
            for variant in config["ProductionVariants"]:
                budget = float(variant.get("ContainerStartupHealthCheckTimeoutInSeconds") or 600)
                budget = min(budget / self.time_scale, 120.0)  # a real minute at most here
                name = config["EndpointConfigName"]
                fleet = self.hosting.start(state.name, name, variant, state.region, max(budget, 30.0))
                started[variant["VariantName"]] = fleet
        except FleetFailed:
            for fleet in started.values():
                self.hosting.stop(fleet, state.region)
            raise
        return started

    def _create(self, state: EndpointState) -> None:
        try:
            config = self._config(state.config, state.region)
            weights = {
                v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in config["ProductionVariants"]
            }
            with self.lock:
                state.weights, state.capture = weights, _capture(config)
            fleets = self._start_fleets(state, config)
        except FleetFailed as exc:
            with self.lock:
                state.status, state.reason, state.modified = "Failed", str(exc), time.time()
            return
        except Exception as exc:
            if not state.deleted:  # DeleteEndpoint while Creating is allowed: what failed then is no fault
                self.errors.append(f"creating {state.name}: {type(exc).__name__}: {exc}")
            with self.lock:
                state.status, state.reason = "Failed", f"emulator: {exc}"
            return
        with self.lock:
            if state.deleted:
                for fleet in fleets.values():
                    self.hosting.stop(fleet, state.region)
                return
            state.fleets = fleets
            total = sum(weights.values()) or 1.0
            state.routes = [(f, weights[v] / total) for v, f in fleets.items()]
            state.status, state.modified = "InService", time.time()

    def _update(self, state: EndpointState, req: dict[str, Any]) -> None:
        try:
            self._run_update(state, req)
        except Exception as exc:
            self.errors.append(f"updating {state.name}: {type(exc).__name__}: {exc}")
            with self.lock:
                state.status, state.reason, state.pending = "InService", f"emulator: {exc}", None

    def _run_update(self, state: EndpointState, req: dict[str, Any]) -> None:
        began = time.monotonic()
        policy = req.get("DeploymentConfig", {}).get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
        alarms = [a["AlarmName"] for a in req.get("DeploymentConfig", {}).get("AutoRollbackConfiguration", {})
                  .get("Alarms", [])]  # fmt: skip
        limit = float(policy.get("MaximumExecutionTimeoutInSeconds", 28800))
        config = self._config(req["EndpointConfigName"], state.region)
        variants = config["ProductionVariants"]
        with self.lock:
            state.pending = {"EndpointConfigName": config["EndpointConfigName"], "StartTime": time.time(),
                             "ProductionVariants": [_pending(v, 0.0, "Creating") for v in variants]}  # fmt: skip
        try:
            green = self._start_fleets(state, config)
        except FleetFailed as exc:
            self._roll_back(state, {}, str(exc))
            return
        blue = dict(state.fleets)
        total = sum(float(v.get("InitialVariantWeight", 1.0)) for v in variants) or 1.0
        green_weights = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) / total for v in variants}
        capacity = sum(int(v.get("InitialInstanceCount") or 1) for v in variants)
        for share in _shares(routing, capacity):
            self._route(state, blue, green, green_weights, share, variants)
            failure = self._bake(state, float(routing.get("WaitIntervalInSeconds", 0)), alarms, began, limit)
            if failure:
                self._roll_back(state, green, failure)
                return
        with self.lock:
            if state.deleted:
                return
            state.fleets, state.weights = green, green_weights
            state.config, state.capture = config["EndpointConfigName"], _capture(config)
            state.routes = [(f, green_weights[v]) for v, f in green.items()]
            state.pending = {**(state.pending or {}),
                             "ProductionVariants": [_pending(v, green_weights[v["VariantName"]], "Baking")
                                                    for v in variants]}  # fmt: skip
        self._sleep(float(policy.get("TerminationWaitInSeconds", 0)))  # the blue fleet is kept for this long
        self._retire(state, blue.values())
        with self.lock:
            state.pending, state.status, state.modified = None, "InService", time.time()

    def _route(self, state: EndpointState, blue: dict[str, Fleet], green: dict[str, Fleet],
               green_weights: dict[str, float], share: float, variants: list[Any]) -> None:  # fmt: skip
        with self.lock:
            state.shares.append(share)
            blue_total = sum(state.weights.values()) or 1.0
            state.routes = [(f, (1 - share) * state.weights.get(v, 0) / blue_total) for v, f in blue.items()]
            state.routes += [(f, share * green_weights[v]) for v, f in green.items()]
            state.pending = {**(state.pending or {}),
                             "ProductionVariants": [_pending(v, share * green_weights[v["VariantName"]], "Baking")
                                                    for v in variants]}  # fmt: skip

    def _bake(self, state: EndpointState, wait_s: float, alarms: list[str], began: float, limit: float) -> str:
        """Watch the alarms for ``wait_s`` emulated seconds; the reason to roll back, or ''."""
        cloudwatch = self._aws("cloudwatch", state.region)
        end = time.monotonic() + wait_s / self.time_scale
        while True:
            if state.deleted:
                return "the endpoint was deleted"
            if alarms:
                fired = [a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNames=alarms)["MetricAlarms"]
                         if a["StateValue"] == "ALARM"]  # fmt: skip
                if fired:
                    names = ", ".join(fired)
                    return f"Rolled back: the CloudWatch alarm(s) {names} went into ALARM during the deployment."
            if (time.monotonic() - began) * self.time_scale > limit:
                return (f"The update did not complete within MaximumExecutionTimeoutInSeconds ({limit:g} s) and "
                        "was rolled back.")  # fmt: skip
            if time.monotonic() >= end:
                return ""
            time.sleep(0.1)

    def _roll_back(self, state: EndpointState, green: dict[str, Fleet], reason: str) -> None:
        with self.lock:
            state.status, state.modified = "RollingBack", time.time()
            blue_total = sum(state.weights.values()) or 1.0
            state.routes = [(f, state.weights.get(v, 0) / blue_total) for v, f in state.fleets.items()]
        self._retire(state, green.values())
        with self.lock:
            state.status, state.reason, state.pending, state.modified = "InService", reason, None, time.time()

    def _retire(self, state: EndpointState, fleets: Any) -> None:
        """Stop fleets that no route names any more, once the requests sent to them have had time to finish."""
        time.sleep(1.0)  # draining, as SageMaker's load balancer does
        for fleet in list(fleets):
            self.hosting.stop(fleet, state.region)

    # --- the runtime ---------------------------------------------------------------------------------

    def _invoke(self, name: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        state = self.endpoints.get(name)
        if state is None or state.status not in ("InService", "Updating", "RollingBack"):
            return _error(400, "ValidationError", f"Endpoint {name} of account 123456789012 not found.", rest=True)
        with self.lock:
            routes = [(f, w) for f, w in state.routes if w > 0]
        wanted = lowered.get("x-amzn-sagemaker-target-variant")
        if wanted:
            routes = [(f, 1.0) for f, _ in routes if f.variant == wanted]
            if not routes:
                return _error(400, "ValidationError", f"Variant {wanted} not found for endpoint {name}.", rest=True)
        if not routes:
            return _error(400, "ValidationError", f"Endpoint {name} has no variant that takes traffic.", rest=True)
        fleet = random.choices([f for f, _ in routes], weights=[w for _, w in routes])[0]
        try:
            resp = self.hosting.invoke(fleet, body, lowered.get("content-type", ""), lowered.get("accept", ""))
        except httpx.HTTPError as exc:
            return _error(424, "ModelError", f'Received server error from primary with message "{exc}".', rest=True)
        if resp.status_code >= 400:
            message = f'Received client error ({resp.status_code}) from primary with message "{resp.text[:500]}".'
            return _error(424, "ModelError", message, rest=True)
        out = {"Content-Type": resp.headers.get("content-type", "application/json"),
               "x-Amzn-Invoked-Production-Variant": fleet.variant}  # fmt: skip
        return 200, out, resp.content


def _variant(name: str, fleet: Fleet, state: EndpointState) -> dict[str, Any]:
    weight = state.weights.get(name, 0.0)
    return {"VariantName": name, "CurrentWeight": weight, "DesiredWeight": weight,
            "CurrentInstanceCount": fleet.instances, "DesiredInstanceCount": fleet.instances}  # fmt: skip


def _pending(variant: Any, weight: float, status: str) -> dict[str, Any]:
    count = int(variant.get("InitialInstanceCount") or 1)
    return {"VariantName": variant["VariantName"], "DesiredWeight": weight, "CurrentWeight": weight,
            "CurrentInstanceCount": count, "DesiredInstanceCount": count,
            "VariantStatus": [{"Status": status, "StartTime": time.time()}]}  # fmt: skip


def _capture(config: Any) -> dict[str, Any] | None:
    dc = config.get("DataCaptureConfig")
    if not dc or not dc.get("EnableCapture"):
        return None
    percent = dc["InitialSamplingPercentage"]
    return {"EnableCapture": True, "CaptureStatus": "Started", "CurrentSamplingPercentage": percent,
            "DestinationS3Uri": dc["DestinationS3Uri"]}  # fmt: skip


def _shares(routing: dict[str, Any], capacity: int) -> list[float]:
    """The green fleet's share of the traffic at each step, ending at 1."""
    kind = routing.get("Type", "ALL_AT_ONCE")
    size = routing.get("CanarySize") if kind == "CANARY" else routing.get("LinearStepSize")
    if kind == "ALL_AT_ONCE" or not size:
        return [1.0]
    step = size["Value"] / 100 if size["Type"] == "CAPACITY_PERCENT" else size["Value"] / max(capacity, 1)
    step = min(max(step, 0.01), 1.0)
    if kind == "CANARY":
        return [step, 1.0] if step < 1 else [1.0]
    shares = []
    share = step
    while share < 1:
        shares.append(round(share, 4))
        share += step
    return [*shares, 1.0]


def _error(status: int, code: str, message: str, *, rest: bool = False) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json" if rest else "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    return status, headers, json.dumps({"__type": code, "message": message}).encode()


def _snake(action: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()
