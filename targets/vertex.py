"""``kind: vertex`` — the managed ML platform pattern on Google Vertex AI (``aiplatform_v1``).

Each release is one **version of one Vertex Model** (``<service>`` unless configured): the serving image
by digest as a custom container, with Vertex's container contract (``AIP_HTTP_PORT`` 8080, the predict
and health routes given in the model's container spec, ``{"instances": [...]}`` in and
``{"predictions": [...]}`` out), the release's alias ``r-<release id>`` and labels tying it to model,
version and release. Each stage is one **Endpoint** (``<service>-<stage>`` unless configured) in its
own project and region; a release on it is one **deployed model** (display name ``slipway-<release>``)
with its machine type and replica counts. Traffic is the endpoint's ``traffic_split``, by deployed model id:

* ``deploy`` uploads the model version if the stage's project does not hold it yet (followed to its
  end), then starts ``DeployModel`` with the candidate at 0 % and the split of what serves unchanged;
  an empty endpoint (the first release) is created first, and its candidate gets the whole (empty) split.
* ``wait_ready`` follows that operation: Vertex starts the replicas and checks the health route; a
  deployment that fails is reported with Vertex's message and the container's last lines from
  Cloud Logging.
* ``shift`` splits the traffic between the live and the candidate deployed model, by percent;
  ``promote`` gives 100 % to exactly the candidate's deployed model (the etag makes a change made
  since the read fail, and it is retried from a fresh read), records it in the endpoint's labels, and
  keeps the previous one deployed at 0 % for ``retain_previous_s``: a rollback within that window is a
  traffic change; deployed models retired longer than that are undeployed by the next promotion (each
  replica is billed per hour). A rollback after it deploys the release's model version again.
* ``discard`` undeploys a candidate that never went live; ``teardown`` undeploys Slipway's deployed
  models, deletes the endpoint and the model versions no other endpoint uses. Deployed models Slipway
  did not create are never undeployed, and an endpoint that has some is not deleted.

Authentication is Vertex's: every predict call carries an OAuth 2.0 access token of an identity with
``aiplatform.endpoints.predict`` (``roles/aiplatform.user``), checked by Google before the container
sees it; the server inside runs with SLIPWAY_AUTH=none. There is no unauthenticated mode.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.operation import Operation
from google.api_core.retry import Retry, if_exception_type
from google.cloud import aiplatform_v1 as vx
from google.protobuf import duration_pb2, field_mask_pb2

from serving.contract import GENERIC, Routes
from slipway.costs import Usage
from slipway.errors import At, ConfigError, TargetError
from slipway.http import answers
from slipway.release import Auth, AuthScheme, Endpoint, Release
from slipway.spec import Timeouts
from slipway.spec import VertexTarget as VertexConfig
from targets._cloudrun_objects import label_value
from targets.base import IMAGE, Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, put_live
from targets.gcp import credentials, follow, google_errors, log_tail, status_name

ROLES = "roles/aiplatform.user and roles/iam.serviceAccountUser"
PORT = 8080
MANAGED = ("managed-by", "slipway")
LIVE = "slipway-live"  # endpoint label: the deployed model id that serves
LIVE_RELEASE = "slipway-live-release"  # endpoint label: its release (as a label value)
RETIRED = "slipway-retired-"  # endpoint label prefix + deployed model id: when it stopped serving (unix s)
DISPLAY = "slipway-"  # a deployed model's display name: slipway-<release id>


def alias(release_id: str) -> str:
    """The model version's alias for a release: a letter first, as Vertex requires."""
    return "r-" + release_id.lower()


class VertexEndpointTarget:
    kind = "vertex"
    capabilities = Capabilities(artifacts=IMAGE, traffic_split=True, stable_endpoint=True)

    def __init__(self, config: VertexConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.endpoint_id = config.endpoint or f"{ctx.service}-{ctx.stage.value}"[:63].rstrip("-")
        self.model_id = config.model or ctx.service.replace(".", "_")[:63]
        self.parent = f"projects/{config.project}/locations/{config.region}"
        self.name = f"{self.parent}/endpoints/{self.endpoint_id}"
        self.model_name = f"{self.parent}/models/{self.model_id}"
        self.location = f"vertex {config.project}/{config.region} endpoint {self.endpoint_id}"
        self._operations: dict[str, tuple[Operation, float]] = {}  # release → DeployModel and when it began
        self._retry = Retry(
            predicate=if_exception_type(gexc.TooManyRequests, gexc.ServiceUnavailable),
            initial=0.5,
            maximum=4.0,
            multiplier=2.0,
            timeout=config.api_retry_s,
        )

    # --- clients ----------------------------------------------------------------------------

    @cached_property
    def _credentials(self) -> Any:
        return credentials(self.config.credentials, at=At(self.kind, "credentials", self.config.credentials or "ADC"))[
            0
        ]

    @cached_property
    def _api(self) -> str:
        return self.config.api_endpoint or f"https://{self.config.region}-aiplatform.googleapis.com"

    @cached_property
    def endpoints(self) -> vx.EndpointServiceClient:
        return vx.EndpointServiceClient(
            credentials=self._credentials, transport="rest", client_options=ClientOptions(api_endpoint=self._api)
        )

    @cached_property
    def models(self) -> vx.ModelServiceClient:
        return vx.ModelServiceClient(
            credentials=self._credentials, transport="rest", client_options=ClientOptions(api_endpoint=self._api)
        )

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        release.require_image()
        with self._call("deploy", self.name):
            model = self._model_version(release) or self._upload(release)
            endpoint = self._endpoint() or self._create_endpoint()
            kept = self._deployed(release.id, endpoint)
            if kept is not None:  # deployed already (retained at 0 %, or live): the same deployed model again
                handle = {"endpoint": self.name, "model": model.name, "version": model.version_id,
                          "deployed_model_id": kept.id}  # fmt: skip
                return Deployment(release, self.stage, self._stage_endpoint(), handle)
            split = dict(endpoint.traffic_split)
            deployed = vx.DeployedModel(
                model=f"{model.name}@{model.version_id}",  # this version: the bare name is the default one
                display_name=DISPLAY + release.id,
                dedicated_resources=vx.DedicatedResources(
                    machine_spec=vx.MachineSpec(machine_type=self.config.machine_type),
                    min_replica_count=self.config.min_replicas,
                    max_replica_count=self.config.max_replicas,
                ),
                service_account=self.config.service_account,
            )
            started = time.time()
            operation = self.endpoints.deploy_model(
                endpoint=self.name,
                deployed_model=deployed,
                traffic_split={**split, "0": 0 if split else 100},
                retry=self._retry,
            )
        self._operations[release.id] = (operation, started)
        self.ctx.progress(
            f"{self.stage.value}: deploying model {self.model_id}@{model.version_id} (release "
            f"{release.id}) on endpoint {self.endpoint_id}, {self.config.min_replicas}-"
            f"{self.config.max_replicas} × {self.config.machine_type}, with no traffic"
        )
        handle = {"endpoint": self.name, "model": model.name, "version": model.version_id, "deployed_model_id": ""}
        return Deployment(release, self.stage, self._stage_endpoint(), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        rid = deployment.release.id
        at = At(self.kind, "wait_ready", f"{self.name} release {rid}")
        operation, started = self._operations.pop(rid, (None, time.time()))
        try:
            with self._call("wait_ready", self.name):
                if operation is not None:
                    follow(
                        operation,
                        retry=self._retry,
                        timeout_s=timeout_s,
                        at=at,
                        progress=self.ctx.progress,
                        describe=_stage_line,
                    )
                deployed = self._deployed(rid)
        except Exception as exc:
            tail = log_tail(
                self.config.project,
                self._credentials,
                self.config.logging_endpoint,
                f'resource.type="aiplatform.googleapis.com/Endpoint" AND resource.labels.endpoint_id='
                f'"{self.endpoint_id}" AND timestamp>="{_rfc3339(started - 1)}"',
            )
            raise TargetError(
                f"release {rid} did not deploy on endpoint {self.endpoint_id}: {exc}\n{tail}",
                at=at,
                hint=f"read the container's output above (it must answer {GENERIC.ready} on port {PORT} within the "
                f"deployment's timeout); fix and deploy again, or raise {self.stage.value}.ready_timeout_s",
            ) from exc
        if deployed is None:
            raise TargetError(
                f"release {rid} has no deployed model on endpoint {self.endpoint_id}",
                at=at,
                hint="the deployment was undeployed since it started: deploy again",
            )
        handle = {**deployment.handle, "deployed_model_id": deployed.id}
        return Deployment(deployment.release, self.stage, self._stage_endpoint(), handle)

    def shift(self, deployment: Deployment, weight: float) -> None:
        if not 0 <= weight <= 1:
            raise ConfigError(
                f"a traffic weight is between 0 and 1, not {weight}", at=At(self.kind, "shift", self.name)
            )
        candidate = deployment.handle["deployed_model_id"]
        percent = 0 if weight == 0 else min(100, max(1, round(weight * 100)))
        with self._call("shift", self.name):
            endpoint = self._require_endpoint("shift")
            live = endpoint.labels.get(LIVE, "")
            if not live or live == candidate:
                raise ConfigError(
                    f"nothing else is live on {self.stage.value} to split traffic with",
                    at=At(self.kind, "shift", self.name),
                    hint="promote the first release all at once",
                )
            split = {d.id: 0 for d in endpoint.deployed_models} | {live: 100 - percent, candidate: percent}
            self._set_split(endpoint, split, endpoint.labels)
        self.ctx.progress(
            f"{self.stage.value}: {percent}% of requests to deployed model {candidate}, the rest to {live}"
        )

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        return self._switch(deployment.release, deployment.handle["deployed_model_id"], "promote")

    def discard(self, deployment: Deployment) -> None:
        rid = deployment.release.id
        operation, _ = self._operations.pop(rid, (None, 0.0))
        with self._call("discard", self.name):
            if operation is not None:  # a deployment still starting is let finish (or fail), then undeployed
                with contextlib.suppress(Exception):
                    operation.result(timeout=self.config.ready_timeout_s, retry=self._retry)  # type: ignore[no-untyped-call]
            endpoint = self._endpoint()
            deployed = self._deployed(rid, endpoint)
            if endpoint is None or deployed is None or endpoint.labels.get(LIVE) == deployed.id:
                return  # nothing to discard, or it went live: not a candidate any more
            self._undeploy(endpoint, deployed.id, "discard")
            if not endpoint.labels.get(LIVE) and len(endpoint.deployed_models) == 1:  # nothing else ever served
                self._wait(self.endpoints.delete_endpoint(name=self.name, retry=self._retry), "discard")
        self.ctx.progress(f"{self.stage.value}: candidate deployed model {deployed.id} (release {rid}) undeployed")

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        with self._call("rollback", self.name):
            retained = self._deployed(release.id)
        if retained is not None:  # still deployed at 0 %: a traffic change back to it
            return self._switch(release, retained.id, "rollback")
        return put_live(self, release, timeouts)

    def endpoint(self) -> Endpoint | None:
        with self._call("describe", self.name):
            found = self._endpoint()
        return self._stage_endpoint() if found is not None and found.labels.get(LIVE) else None

    def teardown(self) -> None:
        self._operations.clear()
        with self._call("teardown", self.name):
            endpoint = self._endpoint()
            if endpoint is not None:
                foreign = [d for d in endpoint.deployed_models if not d.display_name.startswith(DISPLAY)]
                ours = [d for d in endpoint.deployed_models if d.display_name.startswith(DISPLAY)]
                split = dict(endpoint.traffic_split)
                for d in sorted(ours, key=lambda d: split.get(d.id, 0)):  # the serving one last
                    endpoint = self._undeploy(endpoint, d.id, "teardown")
                if foreign:
                    self.ctx.progress(
                        f"{self.stage.value}: endpoint {self.endpoint_id} kept: it serves "
                        f"{len(foreign)} deployed model(s) Slipway did not create"
                    )
                else:
                    self._wait(self.endpoints.delete_endpoint(name=self.name, retry=self._retry), "teardown")
            self._delete_versions()

    def describe(self) -> StageStatus:
        with self._call("describe", self.name):
            found = self._endpoint()
        live = found.labels.get(LIVE) if found is not None else None
        if found is None or not live:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        by_id = {d.id: d for d in found.deployed_models}
        split = ", ".join(
            f"{by_id[i].display_name.removeprefix(DISPLAY) if i in by_id else i} {p}%"
            for i, p in sorted(found.traffic_split.items())
            if p
        )
        release = by_id[live].display_name.removeprefix(DISPLAY) if live in by_id else None
        endpoint = self._stage_endpoint()
        healthy = live in by_id and answers(endpoint, endpoint.routes.health, timeout_s=5)
        detail = f"endpoint {self.endpoint_id}, deployed model {live}; traffic: {split}"
        return StageStatus(self.stage, self.kind, release, endpoint, healthy, detail)

    def facts(self) -> Facts:
        c = self.config
        usage = Usage(hourly={f"vertex.{c.machine_type}": float(c.min_replicas)})
        return Facts(
            c.min_replicas,
            c.max_replicas,
            f"Vertex AI: {c.min_replicas}-{c.max_replicas} replicas of {c.machine_type} (autoscaling on CPU)",
            True,
            c.min_replicas,
            False,
            ("the health route, checked by Vertex AI", "Cloud Monitoring metrics, Cloud Logging"),
            tls=True,
            public=False,  # every call carries an IAM-checked access token
            at_rest=("images in Artifact Registry and model versions (Google-managed encryption)",),
            usage=usage,
        )

    def changes(self) -> list[Change]:
        """What exists and what is left alone: the endpoint, and deployed models Slipway did not create."""
        version = f"model {self.model_id} version r-<release>"
        with self._call("plan", self.name):
            endpoint = self._endpoint()
        if endpoint is None:
            out = [
                Change("create", f"endpoint {self.endpoint_id}", "IAM-authenticated (access tokens)"),
                Change("create", version, "the image by digest"),
                Change(
                    "create",
                    "deployed model slipway-<release>",
                    f"{self.config.min_replicas}-"
                    f"{self.config.max_replicas} × {self.config.machine_type}, 100 % of the traffic",
                ),
            ]
        else:
            foreign = [
                d.display_name or d.id for d in endpoint.deployed_models if not d.display_name.startswith(DISPLAY)
            ]
            out = [
                Change("create", version, "the image by digest"),
                Change(
                    "create",
                    "deployed model slipway-<release>",
                    "at 0 %, checked, then 100 % of the "
                    "traffic; the previous one kept at 0 % for retain_previous_s, for rollback",
                ),
            ]
            if foreign:
                out.append(
                    Change(
                        "change",
                        f"endpoint {self.endpoint_id}",
                        f"{len(foreign)} deployed model(s) "
                        f"Slipway did not create are kept, with no traffic: {', '.join(foreign[:5])}",
                    )
                )
        if self.stage.value == "production" and self.config.min_replicas < 2:
            out.append(
                Change(
                    "change",
                    f"endpoint {self.endpoint_id}",
                    f"WARNING: min_replicas is "
                    f"{self.config.min_replicas}: one replica is a single point of failure; set 2 or more",
                )
            )
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _call(self, operation: str, resource: str) -> contextlib.AbstractContextManager[None]:
        return google_errors(At(self.kind, operation, resource), ROLES)

    def _stage_endpoint(self) -> Endpoint:
        """Vertex's predict (the rows under "instances"), under the region's endpoints; the endpoint resource
        itself answers GET while it exists (Vertex has no health route of its own for callers)."""
        own = f"/{self.endpoint_id}"
        routes = Routes(predict=f"{own}:predict", health=own, ready=own, metadata=None, metrics=None,
                        request_key="instances")  # fmt: skip
        url = f"{self._api.rstrip('/')}/v1/{self.parent}/endpoints"
        return Endpoint(url, Auth(AuthScheme.GOOGLE_ACCESS_TOKEN), routes=routes)

    def _wait(self, operation: Operation, name: str, timeout_s: float | None = None) -> Any:
        return follow(
            operation,
            retry=self._retry,
            timeout_s=timeout_s or self.config.promote_timeout_s,
            at=At(self.kind, name, self.name),
            progress=self.ctx.progress,
        )

    def _labels(self, release: Release | None = None) -> dict[str, str]:
        labels = {
            **self.config.labels,
            MANAGED[0]: MANAGED[1],
            "slipway-service": label_value(self.ctx.service),
            "slipway-model": label_value(self.ctx.model),
        }
        if release is not None:
            labels |= {"slipway-version": label_value(release.version), "slipway-release": label_value(release.id)}
        return labels

    def _endpoint(self) -> vx.Endpoint | None:
        try:
            return self.endpoints.get_endpoint(name=self.name, retry=self._retry)
        except gexc.NotFound:
            return None

    def _require_endpoint(self, op: str) -> vx.Endpoint:
        found = self._endpoint()
        if found is None:
            raise TargetError(
                f"endpoint {self.endpoint_id} does not exist",
                at=At(self.kind, op, self.name),
                hint="deploy again: the endpoint was deleted since the candidate started",
            )
        return found

    def _create_endpoint(self) -> vx.Endpoint:
        endpoint = vx.Endpoint(display_name=f"Slipway: {self.ctx.service} {self.stage.value}", labels=self._labels())
        self.ctx.progress(f"{self.stage.value}: creating endpoint {self.endpoint_id}")
        operation = self.endpoints.create_endpoint(
            parent=self.parent, endpoint=endpoint, endpoint_id=self.endpoint_id, retry=self._retry
        )
        created: vx.Endpoint = self._wait(operation, "deploy")
        return created

    def _model_version(self, release: Release) -> vx.Model | None:
        try:
            return self.models.get_model(name=f"{self.model_name}@{alias(release.id)}", retry=self._retry)
        except gexc.NotFound:
            return None

    def _upload(self, release: Release) -> vx.Model:
        """The release's model version: the image by digest under Vertex's container contract."""
        env = {**self.config.env, "SLIPWAY_AUTH": "none"}
        container = vx.ModelContainerSpec(
            image_uri=str(release.require_image()),
            args=["--workers", str(self.config.workers), *self.ctx.server_args],
            env=[vx.EnvVar(name=k, value=v) for k, v in sorted(env.items())],
            ports=[vx.Port(container_port=PORT)],
            predict_route=GENERIC.predict,
            health_route=GENERIC.ready,
            deployment_timeout=duration_pb2.Duration(seconds=int(min(self.config.ready_timeout_s, 7200))),
        )
        model = vx.Model(
            display_name=self.model_id,
            description=f"Slipway: {self.ctx.model} version {release.version}",
            version_aliases=[alias(release.id)],
            version_description=f"release {release.id}",
            container_spec=container,
            labels=self._labels(release),
        )
        try:
            self.models.get_model(name=self.model_name, retry=self._retry)
            request = vx.UploadModelRequest(parent=self.parent, parent_model=self.model_name, model=model)
        except gexc.NotFound:
            request = vx.UploadModelRequest(parent=self.parent, model_id=self.model_id, model=model)
        self.ctx.progress(f"{self.stage.value}: uploading model {self.model_id} version for release {release.id}")
        uploaded = self._wait(self.models.upload_model(request=request, retry=self._retry), "deploy")
        found: vx.Model = self.models.get_model(name=f"{uploaded.model}@{uploaded.model_version_id}", retry=self._retry)
        return found

    def _delete_versions(self) -> None:
        """The model's versions Slipway made for this service, then the model once it holds no other; a version
        another endpoint (the other stage) serves is kept, as Vertex refuses to delete it."""
        try:
            versions = list(self.models.list_model_versions(name=self.model_name, retry=self._retry))
        except gexc.NotFound:
            return
        ours = [v for v in versions if v.labels.get("slipway-service") == label_value(self.ctx.service)]
        kept = len(versions) - len(ours)
        for v in sorted(ours, key=lambda v: "default" in v.version_aliases):  # the default one goes with the model
            try:
                if "default" in v.version_aliases:
                    if kept:
                        continue
                    operation = self.models.delete_model(name=self.model_name, retry=self._retry)
                else:
                    operation = self.models.delete_model_version(
                        name=f"{self.model_name}@{v.version_id}", retry=self._retry
                    )
                self._wait(operation, "teardown")
            except gexc.BadRequest as exc:  # FAILED_PRECONDITION (HTTP 400): deployed on another endpoint
                if status_name(exc) != "FAILED_PRECONDITION":
                    raise
                kept += 1

    def _deployed(self, release_id: str, endpoint: vx.Endpoint | None = None) -> vx.DeployedModel | None:
        found = endpoint if endpoint is not None else self._endpoint()
        if found is None:
            return None
        return next((d for d in found.deployed_models if d.display_name == DISPLAY + release_id), None)

    def _set_split(self, endpoint: vx.Endpoint, split: Mapping[str, int], labels: Mapping[str, str]) -> vx.Endpoint:
        """The endpoint's traffic split and labels (all of them), against the etag it was read with."""
        change = vx.Endpoint(name=endpoint.name, etag=endpoint.etag, traffic_split=dict(split), labels=dict(labels))
        mask = field_mask_pb2.FieldMask(paths=["traffic_split", "labels"])
        updated: vx.Endpoint = self.endpoints.update_endpoint(endpoint=change, update_mask=mask, retry=self._retry)
        return updated

    def _undeploy(self, endpoint: vx.Endpoint, deployed_id: str, op: str) -> vx.Endpoint:
        """Undeploy one deployed model; the traffic it had goes to what is live (or stays on the others)."""
        rest = {k: v for k, v in endpoint.traffic_split.items() if k != deployed_id}
        gone = endpoint.traffic_split.get(deployed_id, 0)
        live = endpoint.labels.get(LIVE, "")
        if gone and rest:  # its share goes to what is live, else to the newest of those that stay
            heir = live if live in rest else max(rest, key=int)
            rest[heir] += gone
        with contextlib.suppress(gexc.NotFound):
            operation = self.endpoints.undeploy_model(
                endpoint=endpoint.name, deployed_model_id=deployed_id, traffic_split=rest, retry=self._retry
            )
            self._wait(operation, op)
        return self._require_endpoint(op)

    def _switch(self, release: Release, deployed_id: str, op: str) -> Deployment:
        """100 % of the traffic to ``deployed_id``, the one switch; then the retention window's clean-up."""
        with self._call(op, self.name):
            endpoint = self._require_endpoint(op)
            previous = endpoint.labels.get(LIVE, "")
            now = int(time.time())
            present = {d.id for d in endpoint.deployed_models}
            labels = {k: v for k, v in endpoint.labels.items()
                      if not k.startswith(RETIRED) or k.removeprefix(RETIRED) in present - {deployed_id}}  # fmt: skip
            labels |= {LIVE: deployed_id, LIVE_RELEASE: label_value(release.id)}
            if previous and previous != deployed_id:
                labels[RETIRED + previous] = str(now)
            split = {d.id: 0 for d in endpoint.deployed_models} | {deployed_id: 100}
            endpoint = self._set_split(endpoint, split, labels)
        self.ctx.progress(
            f"{self.stage.value}: 100% of requests to deployed model {deployed_id} (release {release.id})"
        )
        self._retire(endpoint, now)
        return Deployment(
            release, self.stage, self._stage_endpoint(), {"endpoint": self.name, "deployed_model_id": deployed_id}
        )

    def _retire(self, endpoint: vx.Endpoint, now: int) -> None:
        """Undeploy Slipway's deployed models at 0 % retired longer than ``retain_previous_s`` ago (and those
        never recorded as retired: a candidate left by a run that was killed). A failure here is reported
        and left for the next promotion: what serves is already switched."""
        live = endpoint.labels.get(LIVE, "")
        for d in endpoint.deployed_models:
            retired = endpoint.labels.get(RETIRED + d.id, "")
            due = not retired or now - int(retired) >= self.config.retain_previous_s
            if d.id == live or not d.display_name.startswith(DISPLAY) or not due or endpoint.traffic_split.get(d.id):
                continue
            try:
                with self._call("promote", self.name):
                    endpoint = self._undeploy(endpoint, d.id, "promote")
                    if retired:
                        endpoint = self._set_split(
                            endpoint,
                            endpoint.traffic_split,
                            {k: v for k, v in endpoint.labels.items() if k != RETIRED + d.id},
                        )
            except Exception as exc:
                self.ctx.progress(
                    f"{self.stage.value}: deployed model {d.id} stays at 0 % ({exc}); the next promotion undeploys it"
                )
                continue
            self.ctx.progress(f"{self.stage.value}: deployed model {d.id} ({d.display_name}) undeployed")


def _stage_line(metadata: Any) -> list[str]:
    stage = getattr(metadata, "deployment_stage", 0)
    return [f"Vertex AI: {vx.DeploymentStage(stage).name.lower().replace('_', ' ')}"] if stage else []


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
