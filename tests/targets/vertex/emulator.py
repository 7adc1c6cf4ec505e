"""Vertex AI for the Google emulator of the tests (tests/targets/cloudrun/emulator.py serves it on the same
port, with the same identities, IAM policies and faults): the ``aiplatform_v1`` REST API as the unchanged
GAPIC clients speak it (models, model versions, endpoints, deploy / undeploy, long-running operations,
Google error bodies), ``:predict``, and the container logs Cloud Logging would hold.

There is no official emulator. This one follows the v1 REST reference:

* **Models.** ``models:upload`` is a long-running operation answering ``{model, modelVersionId}``; a
  ``parentModel`` makes a new version (ids 1, 2, ...; the first one holds the alias ``default``);
  ``models/ID@ALIAS`` and ``models/ID@VERSION`` name one version; an alias two versions share is a 400;
  a version that is deployed cannot be deleted, nor the default one (delete the model), nor a model
  with a deployed version (400 FAILED_PRECONDITION).
* **Endpoints.** Create and delete are operations; an endpoint with deployed models cannot be deleted.
  ``PATCH`` (``updateMask``) changes ``trafficSplit``, ``labels``, ``displayName``; a stale ``etag`` is
  409 ABORTED. A traffic split must name deployed models only and sum to 100 (0 with none deployed),
  as Vertex checks, else 400 INVALID_ARGUMENT naming ``traffic_split``.
* **Deploy.** ``:deployModel`` validates the machine type (``MACHINE_TYPES``; another is 400 naming
  ``deployed_model.dedicated_resources.machine_spec.machine_type``), replica counts and the split
  (key ``"0"`` is the model being deployed), then, in the operation, runs the model version's image
  for real on the Docker Engine under Vertex's contract (``AIP_HTTP_PORT=8080``, ``AIP_HEALTH_ROUTE``,
  ``AIP_PREDICT_ROUTE``, ``AIP_MODE=ONLINE``, ``AIP_DEPLOYED_MODEL_ID``, the container spec's env and
  args) and checks its health route until the container spec's ``deploymentTimeout``; the operation's
  ``deploymentStage`` moves through Vertex's stages. A container that exits or never answers fails
  the operation (FAILED_PRECONDITION, Vertex's message) and leaves the endpoint as it was.
  ``:undeployModel`` stops it.
* **Predict.** ``:predict`` (``aiplatform.endpoints.predict``) picks a deployed model by the traffic
  split, forwards ``{"instances", "parameters"}`` to its predict route and answers Vertex's
  ``PredictResponse`` (``predictions``, ``deployedModelId``, ``model``, ``modelVersionId``); a
  container error is passed on as Google's error body with the container's text.

What it does not reproduce is listed in docs/targets/vertex.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import docker.errors
import httpx

from slipway.http import tls
from tests.targets.cloudrun.dataplane import LABEL, now_rfc3339
from tests.targets.google_api import ApiError, etag, invalid

if TYPE_CHECKING:
    from tests.targets.cloudrun.emulator import CloudRunEmulator

AIP = "type.googleapis.com/google.cloud.aiplatform.v1."
MACHINE_TYPES = {"n1-standard-2", "n1-standard-4", "n1-standard-8", "e2-standard-2", "e2-standard-4", "n2-standard-4"}
PORT = 8080
_PATH = re.compile(r"/v1/projects/([^/]+)/locations/([^/]+)/(models|endpoints)(?:/([^/:]+))?(?::(\w+))?")
# the REST transport polls an operation under /ui/ (the first of its http rules that matches the name)
_OPERATION = re.compile(
    r"/(?:v1|ui)/(projects/([^/]+)/locations/([^/]+)/(?:(?:endpoints|models)/[^/]+/)?operations/\d+)"
)
NOT_MINE = object()
DISPLAY_NAMES: dict[str, str] = {}  # deployed model id → its display name, for tests that tell who answered


@dataclass
class VxOperation:
    name: str
    metadata_type: str
    response_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    done: bool = False
    response: dict[str, Any] | None = None
    error: ApiError | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "done": self.done,
            "metadata": {"@type": AIP + self.metadata_type, **self.metadata},
        }
        if self.error is not None:
            out["error"] = {"code": 9, "message": self.error.message, "details": self.error.details}
        elif self.response is not None:
            kind = (
                "type.googleapis.com/google.protobuf.Empty"
                if self.response_type == "Empty"
                else AIP + self.response_type
            )
            out["response"] = {"@type": kind, **self.response}
        return out


@dataclass
class Replica:
    container: str
    port: int = 0
    logs: list[tuple[str, str]] = field(default_factory=list)


class VertexAI:
    def __init__(self, google: CloudRunEmulator) -> None:
        self.g = google
        self.models: dict[str, dict[str, dict[str, Any]]] = {}  # model name → version id → Model JSON
        self.endpoints: dict[str, dict[str, Any]] = {}  # name → Endpoint JSON
        self.operations: dict[str, VxOperation] = {}
        self.replicas: dict[str, Replica] = {}  # "<endpoint>/<deployed model id>" → its container
        self.logs: dict[str, list[tuple[str, str]]] = {}  # endpoint id → (timestamp, line) of its containers
        self.predictions: list[str] = []  # the deployed model id of each prediction, in order
        self._ids = itertools.count(int(time.time()) % 10**6 * 1000)

    # --- what tests read --------------------------------------------------------------------

    def resources(self) -> dict[str, list[str]]:
        with self.g.lock:
            return {
                "models": sorted(f"{m}@{v}" for m, vs in self.models.items() for v in vs),
                "endpoints": sorted(self.endpoints),
                "deployed": sorted(self.replicas),
                "pending_operations": sorted(n for n, o in self.operations.items() if not o.done),
            }

    # --- dispatch ---------------------------------------------------------------------------

    def dispatch(self, method: str, path: str, query: dict[str, str], body: Any, caller: str) -> Any:
        if (o := _OPERATION.fullmatch(path)) is not None and method == "GET":
            self.g._require(caller, o.group(2), "aiplatform.operations.get", o.group(1), o.group(3))
            with self.g.lock:
                op = self.operations.get(o.group(1))
            if op is None:
                raise ApiError(404, "NOT_FOUND", f"Operation {o.group(1)} not found.")
            return op.to_json()
        m = _PATH.fullmatch(path)
        if m is None:
            return NOT_MINE
        project, region, collection, item, verb = m.groups()
        parent = f"projects/{project}/locations/{region}"

        def need(permission: str, resource: str) -> None:
            self.g._require(caller, project, permission, resource, region)

        if collection == "models":
            return self._models(method, parent, item, verb, query, body, need)
        name = f"{parent}/endpoints/{item}" if item else ""
        match (method, item, verb):
            case ("POST", None, None):
                need("aiplatform.endpoints.create", parent)
                return self._create_endpoint(parent, query.get("endpointId", ""), body)
            case ("GET", str(), None):
                need("aiplatform.endpoints.get", name)
                return self._endpoint(name)
            case ("PATCH", str(), None):
                need("aiplatform.endpoints.update", name)
                return self._update_endpoint(name, body, query.get("updateMask", ""))
            case ("DELETE", str(), None):
                need("aiplatform.endpoints.delete", name)
                return self._delete_endpoint(name)
            case ("POST", str(), "deployModel"):
                need("aiplatform.endpoints.deploy", name)
                return self._deploy(name, body, project)
            case ("POST", str(), "undeployModel"):
                need("aiplatform.endpoints.undeploy", name)
                return self._undeploy(name, body)
            case ("POST", str(), "predict"):
                need("aiplatform.endpoints.predict", name)
                return self._predict(name, body)
        raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    # --- models -----------------------------------------------------------------------------

    def _models(
        self,
        method: str,
        parent: str,
        item: str | None,
        verb: str | None,
        query: dict[str, str],
        body: Any,
        need: Callable[[str, str], None],
    ) -> Any:
        if method == "POST" and item is None and verb == "upload":
            need("aiplatform.models.upload", parent)
            return self._upload(parent, body)
        if item is None:
            raise ApiError(404, "NOT_FOUND", "listing models is not emulated")
        model_id, _, version = item.partition("@")
        name = f"{parent}/models/{model_id}"
        match (method, verb):
            case ("GET", None):
                need("aiplatform.models.get", name)
                return self._version(name, version)
            case ("GET", "listVersions"):
                need("aiplatform.models.list", name)
                with self.g.lock:
                    if name not in self.models:
                        raise ApiError(404, "NOT_FOUND", f"Model {name} is not found.")
                    return {"models": [dict(v) for _, v in sorted(self.models[name].items(), key=lambda i: int(i[0]))]}
            case ("DELETE", "deleteVersion"):
                need("aiplatform.models.delete", name)
                return self._delete_version(name, version)
            case ("DELETE", None):
                need("aiplatform.models.delete", name)
                return self._delete_model(name)
        raise ApiError(404, "NOT_FOUND", f"{method} models {verb or ''} is not emulated")

    def _version(self, name: str, version: str) -> dict[str, Any]:
        with self.g.lock:
            versions = self.models.get(name)
            if versions is None:
                raise ApiError(404, "NOT_FOUND", f"Model {name} is not found.")
            wanted = version or "default"
            for vid, model in versions.items():
                if wanted == vid or wanted in model.get("versionAliases", []):
                    return dict(model)
        raise ApiError(404, "NOT_FOUND", f"Model {name}@{version} is not found.")

    def _upload(self, parent: str, body: dict[str, Any]) -> dict[str, Any]:
        model = dict(body.get("model") or {})
        if not model.get("containerSpec", {}).get("imageUri"):
            raise invalid("model.container_spec.image_uri", "Container image URI must be set.")
        with self.g.lock:
            if body.get("parentModel"):
                name = body["parentModel"]
                if name not in self.models:
                    raise ApiError(404, "NOT_FOUND", f"Parent model {name} is not found.")
            else:
                name = f"{parent}/models/{body.get('modelId') or next(self._ids)}"
                if name in self.models:
                    raise ApiError(409, "ALREADY_EXISTS", f"Model {name} already exists.")
            versions = self.models.setdefault(name, {})
            taken = {a for v in versions.values() for a in v.get("versionAliases", [])}
            aliases = list(model.get("versionAliases", [])) + ([] if versions else ["default"])
            clash = sorted(taken & set(aliases))
            if clash:
                if not versions:
                    del self.models[name]
                raise invalid("model.version_aliases", f"Alias {clash[0]} is already used by another version.")
            vid = str(len(versions) + 1 if not versions else max(int(v) for v in versions) + 1)
            now = now_rfc3339()
            versions[vid] = {
                **model,
                "name": name,
                "versionId": vid,
                "versionAliases": aliases,
                "createTime": now,
                "updateTime": now,
                "versionCreateTime": now,
                "etag": etag(),
            }
            op = self._operation(name, "UploadModelOperationMetadata", "UploadModelResponse")
            self._finish(op, {"model": name, "modelVersionId": vid})
        return op.to_json()

    def _deployed_versions(self, model: str) -> set[str]:
        return {
            d.get("modelVersionId", "")
            for e in self.endpoints.values()
            for d in e.get("deployedModels", [])
            if d.get("model") == model
        }

    def _delete_version(self, name: str, version: str) -> dict[str, Any]:
        with self.g.lock:
            found = self._version(name, version)
            vid = found["versionId"]
            if "default" in found.get("versionAliases", []):
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"Model version {name}@{vid} is the default version "
                    "and cannot be deleted; delete the model instead.",
                )
            if vid in self._deployed_versions(name):
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"Model version {name}@{vid} is deployed to an endpoint; undeploy it first.",
                )
            del self.models[name][vid]
            op = self._operation(name, "DeleteOperationMetadata", "Empty")
            self._finish(op, {})
        return op.to_json()

    def _delete_model(self, name: str) -> dict[str, Any]:
        with self.g.lock:
            if name not in self.models:
                raise ApiError(404, "NOT_FOUND", f"Model {name} is not found.")
            if self._deployed_versions(name):
                raise ApiError(400, "FAILED_PRECONDITION", f"Model {name} has deployed versions; undeploy them first.")
            del self.models[name]
            op = self._operation(name, "DeleteOperationMetadata", "Empty")
            self._finish(op, {})
        return op.to_json()

    # --- endpoints --------------------------------------------------------------------------

    def _endpoint(self, name: str) -> dict[str, Any]:
        with self.g.lock:
            found = self.endpoints.get(name)
            if found is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            return json.loads(json.dumps(found))

    def _create_endpoint(self, parent: str, endpoint_id: str, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = endpoint_id or str(next(self._ids))
        if not re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?|[0-9]{1,9}", endpoint_id):
            raise invalid("endpoint_id", f"Endpoint id {endpoint_id!r} is not valid.")
        name = f"{parent}/endpoints/{endpoint_id}"
        with self.g.lock:
            if name in self.endpoints:
                raise ApiError(409, "ALREADY_EXISTS", f"Endpoint {name} already exists.")
            now = now_rfc3339()
            self.endpoints[name] = {
                **body,
                "name": name,
                "etag": etag(),
                "createTime": now,
                "updateTime": now,
                "deployedModels": [],
                "trafficSplit": {},
            }
            op = self._operation(name, "CreateEndpointOperationMetadata", "Endpoint")
            self._finish(op, dict(self.endpoints[name]))
        return op.to_json()

    def _update_endpoint(self, name: str, body: dict[str, Any], mask: str) -> dict[str, Any]:
        fields = {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f) for f in mask.split(",") if f}
        with self.g.lock:
            found = self.endpoints.get(name)
            if found is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            if body.get("etag") and body["etag"] != found["etag"]:
                raise ApiError(409, "ABORTED", "The etag of the endpoint does not match: it changed since it was read.")
            unknown = fields - {"trafficSplit", "labels", "displayName", "description"}
            if unknown:
                raise invalid("update_mask", f"Updating {', '.join(sorted(unknown))} is not supported.")
            if "trafficSplit" in fields:
                self._check_split(body.get("trafficSplit") or {}, {d["id"] for d in found["deployedModels"]})
            for f in fields:
                found[f] = body.get(f) or {}
            found["etag"], found["updateTime"] = etag(), now_rfc3339()
            return json.loads(json.dumps(found))

    def _delete_endpoint(self, name: str) -> dict[str, Any]:
        with self.g.lock:
            found = self.endpoints.get(name)
            if found is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            if found["deployedModels"]:
                raise ApiError(400, "FAILED_PRECONDITION", f"Endpoint {name} has deployed models; undeploy them first.")
            del self.endpoints[name]
            op = self._operation(name, "DeleteOperationMetadata", "Empty")
            self._finish(op, {})
        return op.to_json()

    @staticmethod
    def _check_split(split: dict[str, Any], ids: set[str]) -> None:
        stray = sorted(set(split) - ids)
        if stray:
            raise invalid("traffic_split", f"Deployed model {stray[0]} is not deployed on the endpoint.")
        total = sum(int(v) for v in split.values())
        if ids and total != 100:
            raise invalid("traffic_split", f"The traffic split must sum to 100, not {total}.")

    # --- deploy and undeploy ----------------------------------------------------------------

    def _deploy(self, name: str, body: dict[str, Any], project: str) -> dict[str, Any]:
        wanted = dict(body.get("deployedModel") or {})
        resources = wanted.get("dedicatedResources") or {}
        machine = (resources.get("machineSpec") or {}).get("machineType", "")
        field_name = "deployed_model.dedicated_resources.machine_spec.machine_type"
        if machine not in MACHINE_TYPES:
            raise invalid(field_name, f'Machine type "{machine}" is not supported in this region.')
        low, high = int(resources.get("minReplicaCount") or 0), int(resources.get("maxReplicaCount") or 0)
        if low < 1 or (high and high < low):
            raise invalid(
                "deployed_model.dedicated_resources.min_replica_count",
                f"min_replica_count {low} must be at least 1 and at most max_replica_count {high}.",
            )
        model_name, _, version = str(wanted.get("model", "")).partition("@")
        model = self._version(model_name, version)
        with self.g.lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            ids = {d["id"] for d in endpoint["deployedModels"]}
            split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
            if not split:  # the endpoint's split is kept; the new model gets none of it (all, on an empty endpoint)
                split = {k: int(v) for k, v in endpoint["trafficSplit"].items()} | {"0": 0 if ids else 100}
            self._check_split(split, ids | {"0"})
            deployed_id = str(next(self._ids))
            op = self._operation(
                name.partition("/endpoints/")[0], "DeployModelOperationMetadata", "DeployModelResponse"
            )
            op.metadata = {"deploymentStage": "STARTING_DEPLOYMENT"}
        DISPLAY_NAMES[deployed_id] = str(wanted.get("displayName", ""))
        deployed = {
            **wanted,
            "id": deployed_id,
            "model": model_name,
            "modelVersionId": model["versionId"],
            "createTime": now_rfc3339(),
        }
        threading.Thread(target=self._bring_up, args=(op, name, deployed, model, split, project), daemon=True).start()
        return op.to_json()

    def _bring_up(
        self,
        op: VxOperation,
        name: str,
        deployed: dict[str, Any],
        model: dict[str, Any],
        split: dict[str, int],
        project: str,
    ) -> None:
        spec = model.get("containerSpec") or {}
        endpoint_id = name.rpartition("/")[2]
        key = f"{name}/{deployed['id']}"
        op.metadata = {"deploymentStage": "GETTING_CONTAINER_IMAGE"}
        env = {e["name"]: e.get("value", "") for e in spec.get("env", [])}
        env |= {
            "AIP_HTTP_PORT": str(PORT),
            "AIP_HEALTH_ROUTE": spec.get("healthRoute") or "/health",
            "AIP_PREDICT_ROUTE": spec.get("predictRoute") or "/predict",
            "AIP_MODE": "ONLINE",
            "AIP_DEPLOYED_MODEL_ID": deployed["id"],
            "AIP_ENDPOINT_ID": endpoint_id,
            "AIP_PROJECT_NUMBER": self.g.projects[project].number,
            "AIP_MACHINE_TYPE": deployed["dedicatedResources"]["machineSpec"]["machineType"],
        }
        timeout = float(str(spec.get("deploymentTimeout") or "1200s").rstrip("s"))
        plane = self.g.plane
        container_name = f"vertex-{self.g.id}-{deployed['id']}"
        try:
            op.metadata = {"deploymentStage": "STARTING_MODEL_SERVER"}
            container = plane.docker.containers.run(
                spec["imageUri"],
                command=spec.get("args") or None,
                entrypoint=spec.get("command") or None,
                detach=True,
                name=container_name,
                environment=env,
                ports={f"{PORT}/tcp": ("127.0.0.1", None)},
                labels={LABEL: self.g.id, f"{LABEL}.vertex": key},
            )
        except docker.errors.DockerException as exc:
            self._fail(op, f"Failed to pull or start the container image {spec['imageUri']}: {exc}")
            return
        replica = Replica(container_name)
        with self.g.lock:
            self.replicas[key] = replica
        deadline = time.monotonic() + timeout
        health = env["AIP_HEALTH_ROUTE"]
        while True:
            container.reload()
            published = (container.ports or {}).get(f"{PORT}/tcp") or []
            if published and not replica.port:
                replica.port = int(published[0]["HostPort"])
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                self._stop(key, endpoint_id)
                self._fail(
                    op,
                    "Model server exited unexpectedly. Model server logs can be found at Cloud Logging."
                    if container.status in ("exited", "dead")
                    else "Model server never became ready. "
                    "Please validate that your model file or container configuration are valid.",
                )
                return
            if replica.port:
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        httpx.get(f"http://127.0.0.1:{replica.port}{health}", timeout=1, verify=tls()).status_code
                        == 200
                    ):
                        break
            time.sleep(0.2)
        with self.g.lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                self._stop(key, endpoint_id)
                self._fail(op, f"Endpoint {name} was deleted during the deployment.")
                return
            endpoint["deployedModels"].append(deployed)
            endpoint["trafficSplit"] = {(deployed["id"] if k == "0" else k): v for k, v in split.items()}
            endpoint["etag"] = etag()
            op.metadata = {"deploymentStage": "SUCCESSFULLY_DEPLOYED"}
            self._finish(op, {"deployedModel": deployed})

    def _undeploy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        deployed_id = str(body.get("deployedModelId", ""))
        with self.g.lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            ids = {d["id"] for d in endpoint["deployedModels"]}
            if deployed_id not in ids:
                raise ApiError(404, "NOT_FOUND", f"Deployed model {deployed_id} is not found on {name}.")
            rest = ids - {deployed_id}
            split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
            if not split:  # the split stays as it is without it: it must have had no traffic
                if endpoint["trafficSplit"].get(deployed_id) and rest:
                    raise invalid(
                        "traffic_split",
                        f"Deployed model {deployed_id} has traffic: give the traffic "
                        "split of the deployed models that stay.",
                    )
                split = {k: int(v) for k, v in endpoint["trafficSplit"].items() if k != deployed_id}
            self._check_split(split, rest)
            endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
            endpoint["trafficSplit"] = split
            endpoint["etag"] = etag()
            op = self._operation(
                name.partition("/endpoints/")[0], "UndeployModelOperationMetadata", "UndeployModelResponse"
            )
        self._stop(f"{name}/{deployed_id}", name.rpartition("/")[2])
        self._finish(op, {})
        return op.to_json()

    # --- predict ----------------------------------------------------------------------------

    def _predict(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.g.lock:
            endpoint = self.endpoints.get(name)
            if endpoint is None:
                raise ApiError(404, "NOT_FOUND", f"Endpoint {name} is not found.")
            weights = [(k, int(v)) for k, v in endpoint["trafficSplit"].items() if int(v) > 0]
            if not weights:
                raise ApiError(
                    400, "FAILED_PRECONDITION", f"Endpoint {name} does not have a model deployed with traffic."
                )
            chosen = random.choices([k for k, _ in weights], weights=[w for _, w in weights])[0]
            deployed = next(d for d in endpoint["deployedModels"] if d["id"] == chosen)
            model = self.models.get(deployed["model"], {}).get(deployed["modelVersionId"], {})
            replica = self.replicas.get(f"{name}/{chosen}")
        route = (model.get("containerSpec") or {}).get("predictRoute") or "/predict"
        if replica is None or not replica.port:
            raise ApiError(503, "UNAVAILABLE", "The model is not ready to serve.")
        try:
            resp = httpx.post(f"http://127.0.0.1:{replica.port}{route}", json=body, timeout=60, verify=tls())
        except httpx.HTTPError as exc:
            raise ApiError(503, "UNAVAILABLE", f"The model server did not answer: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            status = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED"}.get(resp.status_code, "INTERNAL")
            raise ApiError(
                resp.status_code if resp.status_code in (400, 429) else 500,
                status,
                f'{{"detail":"The model server answered {resp.status_code}: {resp.text[:500]}"}}',
            )
        with self.g.lock:
            self.predictions.append(chosen)
        return {
            **resp.json(),
            "deployedModelId": chosen,
            "model": deployed["model"],
            "modelDisplayName": model.get("displayName", ""),
            "modelVersionId": deployed["modelVersionId"],
        }

    # --- logs -------------------------------------------------------------------------------

    def log_entries(self, body: dict[str, Any], project: str) -> dict[str, Any]:
        text = body.get("filter", "")
        endpoint = re.search(r'resource\.labels\.endpoint_id="([^"]+)"', text)
        since = re.search(r'timestamp>="([^"]+)"', text)
        if endpoint is None:
            raise invalid("filter", f"the emulator reads only the target's own filter, not {text!r}")
        with self.g.lock:
            for key, replica in self.replicas.items():
                if key.split("/endpoints/")[1].startswith(endpoint.group(1) + "/"):
                    self._keep_logs(replica, endpoint.group(1))
            lines = list(self.logs.get(endpoint.group(1), []))
        found = sorted(
            {e for e in lines if not since or e[0] >= since.group(1)}, reverse="desc" in body.get("orderBy", "")
        )[: int(body.get("pageSize") or 50)]
        return {
            "entries": [
                {
                    "logName": f"projects/{project}/logs/aiplatform.googleapis.com%2Fprediction_container",
                    "insertId": f"{i:08x}",
                    "textPayload": line,
                    "timestamp": ts,
                    "resource": {
                        "type": "aiplatform.googleapis.com/Endpoint",
                        "labels": {"endpoint_id": endpoint.group(1), "resource_container": project},
                    },
                }
                for i, (ts, line) in enumerate(found)
            ]
        }

    # --- helpers ----------------------------------------------------------------------------

    def _operation(self, resource: str, metadata_type: str, response_type: str) -> VxOperation:
        """An operation named under the resource it works on, as Vertex names them."""
        op = VxOperation(f"{resource}/operations/{uuid.uuid4().int % 10**18}", metadata_type, response_type)
        self.operations[op.name] = op
        return op

    def _finish(self, op: VxOperation, response: dict[str, Any]) -> None:
        with self.g.lock:
            op.done, op.response = True, response

    def _fail(self, op: VxOperation, message: str) -> None:
        with self.g.lock:
            op.metadata = {"deploymentStage": "FAILED_TO_DEPLOY"}
            op.done, op.error = True, ApiError(400, "FAILED_PRECONDITION", message)

    def _keep_logs(self, replica: Replica, endpoint_id: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            raw = self.g.plane.docker.containers.get(replica.container).logs(timestamps=True)
            entries = [
                (line.partition(" ")[0], line.partition(" ")[2]) for line in raw.decode(errors="replace").splitlines()
            ]
            known = self.logs.setdefault(endpoint_id, [])
            known.extend(e for e in entries if e not in known)

    def _stop(self, key: str, endpoint_id: str) -> None:
        with self.g.lock:
            replica = self.replicas.pop(key, None)
        if replica is None:
            return
        self._keep_logs(replica, endpoint_id)
        with contextlib.suppress(docker.errors.DockerException):
            self.g.plane.docker.containers.get(replica.container).remove(force=True)

    def close(self) -> None:
        for key in list(self.replicas):
            self._stop(key, key.split("/endpoints/")[1].partition("/")[0])
