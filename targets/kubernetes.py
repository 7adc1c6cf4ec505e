"""``kind: kubernetes`` — any cluster reached through a kubeconfig and context.

Each stage lives in its own namespace (``slipway-<stage>`` unless configured). Per release: a
Deployment (image by digest, probes, limits, non-root, read-only root filesystem) and a Secret with
the API key; per live workload a PodDisruptionBudget and a HorizontalPodAutoscaler (newest
autoscaling API served). Per stage: a Service named after the service, whose annotation names the
live release.

* **blue_green** — ``deploy`` creates the release's own Deployment beside the live one;
  ``shift`` puts both releases' pods behind the Service, the candidate scaled to the weight's
  share of pods (a split of N live pods is in steps of 1/(N+c)); ``promote`` switches the Service
  selector to the candidate alone once all its pods are ready, gives it its PDB and HPA, then
  deletes the previous release's objects.
* **rolling** — ``deploy`` creates a one-pod candidate Deployment (not behind the Service) that
  proves the release starts and gets ready; ``promote`` then updates the stage's one Deployment in
  place (``maxSurge 1, maxUnavailable 0``: old pods serve until new ones are ready) and, if the
  update does not complete in time, restores the previous pod template before it raises. Nothing
  of the live release changes before ``promote``.

The stage is reached through 127.0.0.1 only: the target owns a local port forwarded over the API
server to ready pods (``targets._k8s_forward``), closed by ``teardown`` or with the process; the
endpoint's ``public_url`` is the Service's address inside the cluster.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from serving.contract import PORT
from slipway.costs import Usage
from slipway.errors import At, ConfigError, TargetError
from slipway.release import Endpoint, Release
from slipway.spec import KubernetesTarget as KubernetesConfig
from slipway.spec import Timeouts
from targets import _k8s_objects as obj
from targets._k8s_api import HPA_VERSIONS, PDB_VERSIONS, RawResource, calls, connect, served_version
from targets._k8s_forward import Forwarder
from targets._k8s_load import run_job
from targets._k8s_pods import diagnose, summary
from targets.base import (
    IMAGE,
    Capabilities,
    Change,
    Deployment,
    Facts,
    LoadJob,
    LoadOutput,
    StageStatus,
    TargetContext,
    no_shift,
    put_live,
)

_LIVE = "slipway.io/release-id"


class KubernetesClusterTarget:
    kind = "kubernetes"

    def __init__(self, config: KubernetesConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.namespace = config.namespace or f"slipway-{ctx.stage.value}"
        self.service = obj.slug(ctx.service, 63)
        self.blue_green = config.strategy == "blue_green"
        self.capabilities = Capabilities(artifacts=IMAGE, traffic_split=self.blue_green)
        self.location = f"kubernetes {config.context or '(current context)'} namespace {self.namespace}"
        self._forwarders: dict[str, Forwarder] = {}  # "" is the stage's, else a candidate's release id

    # --- clients ----------------------------------------------------------------------------

    @cached_property
    def api(self) -> client.ApiClient:
        return connect(self.config.kubeconfig, self.config.context)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @cached_property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @cached_property
    def hpas(self) -> RawResource:
        with calls("discover", "autoscaling"):
            return RawResource(self.api, served_version(self.api, HPA_VERSIONS), "horizontalpodautoscalers")

    @cached_property
    def pdbs(self) -> RawResource:
        with calls("discover", "policy"):
            return RawResource(self.api, served_version(self.api, PDB_VERSIONS), "poddisruptionbudgets")

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        """The release's own Deployment: all its pods (blue/green), or one candidate pod (rolling)."""
        release.require_image()
        n = self._names(release)
        role = obj.SERVING if self.blue_green else obj.CANDIDATE
        with calls("deploy", f"{self.namespace}/{n.workload}"):
            self._ensure_namespace()
            key = self.ctx.key_for_deploy()
            self._apply_secret(obj.secret(n, key.get_secret_value() if key else None))
            self._apply_deployment(obj.deployment(
                n, self.config, key is not None, name=n.workload, role=role, selector=n.release_selector(role),
                replicas=self.config.replicas if self.blue_green else 1, server_args=self.ctx.server_args,
            ))  # fmt: skip
        forwarder = self._forwarder(release.id, lambda: n.release_selector(role))
        handle = {"namespace": self.namespace, "workload": n.workload, "secret": n.secret}
        return Deployment(release, self.stage, Endpoint(forwarder.url, self.ctx.auth), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        n = self._names(deployment.release)
        role = obj.SERVING if self.blue_green else obj.CANDIDATE
        self._wait_rolled_out(deployment.release.id, n.workload, n.release_selector(role), timeout_s, "wait_ready")
        return deployment

    def shift(self, deployment: Deployment, weight: float) -> None:
        """Blue/green: the Service selects both releases' pods, the candidate scaled to ``weight``'s share."""
        if not self.blue_green:
            raise no_shift(self)
        if not 0 <= weight <= 1:
            raise ConfigError(f"a traffic weight is between 0 and 1, not {weight}", at=self._at("shift"))
        n = self._names(deployment.release)
        live = self._live_release()
        if live is None or live == deployment.release.id:
            raise ConfigError(f"nothing else is live on {self.stage.value} to split traffic with",
                              at=self._at("shift"), hint="promote the first release all at once")  # fmt: skip
        with calls("shift", f"{self.namespace}/service/{self.service}"):
            if weight == 0:
                self._select(self._live_selector(live))
                self.ctx.progress(f"{self.stage.value}: all traffic to release {live}")
                return
            pods = self._live_pods(live)
            candidate = pods if weight == 1 else max(1, round(pods * weight / (1 - weight)))
            self.apps.patch_namespaced_deployment_scale(n.workload, self.namespace, {"spec": {"replicas": candidate}})
            self._wait_rolled_out(deployment.release.id, n.workload, n.release_selector(), self.config.ready_timeout_s,
                                  "shift")  # fmt: skip
            self._select(n.release_selector() if weight == 1 else n.serving_selector())
        share = 1.0 if weight == 1 else candidate / (candidate + pods)
        self.ctx.progress(f"{self.stage.value}: {share:.0%} of pods ({candidate} of {candidate + pods}) serve release "
                          f"{deployment.release.id}")  # fmt: skip

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        n = self._names(deployment.release)
        if self.blue_green:
            self._promote_blue_green(n, timeout_s)
        else:
            self._promote_rolling(n, timeout_s)
        for rid in [r for r in self._forwarders if r != ""]:
            self._forwarders.pop(rid).close()
        return Deployment(deployment.release, self.stage, self._stable(), deployment.handle)

    def discard(self, deployment: Deployment) -> None:
        n = self._names(deployment.release)
        live = self._live_release()
        if live == deployment.release.id:
            return  # it went live: not a candidate any more
        with calls("discard", f"{self.namespace}/{n.workload}"):
            if live is not None and self.blue_green and self._service_selector() != self._live_selector(live):
                self._select(self._live_selector(live))  # a split: all traffic back to the live release
            self._delete_workload(n.workload)
            self._delete(self.core.delete_namespaced_secret, n.secret)
        if deployment.release.id in self._forwarders:
            self._forwarders.pop(deployment.release.id).close()

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        return put_live(self, release, timeouts)

    # --- the gate next to the stage (targets.base.LoadRunner) --------------------------------------

    def load_endpoint(self, deployment: Deployment) -> Endpoint:
        """The stage's Service by its cluster DNS name, once ``deployment`` is what it serves."""
        live = self._live_release()
        if live != deployment.release.id:
            raise ConfigError(
                f"the in-cluster gate measures the stage's Service, and it serves {live or 'nothing'}, not release "
                f"{deployment.release.id}", at=self._at("gate"), hint="put the release live on the stage first",
            )  # fmt: skip
        return Endpoint(self._service_url(), self.ctx.auth)

    def run_load(self, deployment: Deployment, job: LoadJob, timeout_s: float) -> LoadOutput:
        """``job`` as a Job of one pod in the stage's namespace (``targets._k8s_load``), the API key
        from the release's Secret, the Service addressed by its cluster DNS name."""
        n = self._names(deployment.release)
        svc = self._service()
        if svc is None or not svc.spec.cluster_ip or svc.spec.cluster_ip == "None":
            raise ConfigError("the stage has no Service with a cluster IP for the in-cluster gate", at=self._at("gate"),
                              hint="put a release live on the stage first")  # fmt: skip
        key = self.ctx.key_for_deploy()

        def manifest(**kw: Any) -> dict[str, Any]:
            return obj.gate_job(n, self.config, **kw)

        return run_job(
            self.core, self.batch, n, self.namespace, manifest, job, secret=n.secret if key else None,
            host=self._service_host(), service_ip=str(svc.spec.cluster_ip), timeout_s=timeout_s,
            progress=self.ctx.progress, delete=self._delete,
        )  # fmt: skip

    def endpoint(self) -> Endpoint | None:
        return self._stable() if self._live_release() else None

    def teardown(self) -> None:
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()
        selector = obj.stage_selector(self.ctx.service)
        with calls("teardown", self.namespace):
            try:
                self.core.read_namespace(self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            for svc in self.core.list_namespaced_service(self.namespace, label_selector=selector).items:
                self._delete(self.core.delete_namespaced_service, svc.metadata.name)
            for job in self.batch.list_namespaced_job(self.namespace, label_selector=selector).items:
                self._delete(self.batch.delete_namespaced_job, job.metadata.name)  # an in-cluster gate a kill left
            for cm in self.core.list_namespaced_config_map(self.namespace, label_selector=selector).items:
                self._delete(self.core.delete_namespaced_config_map, cm.metadata.name)
            self._retire(keep_workload=None, keep_secret=None)

    def describe(self) -> StageStatus:
        live = self._live_release()
        if live is None:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        with calls("describe", self.namespace):
            deps = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=obj.stage_selector(self.ctx.service)
            ).items
        d = next((d for d in deps if (d.metadata.annotations or {}).get(_LIVE) == live
                  and (d.metadata.labels or {}).get(obj.ROLE) == obj.SERVING), None)  # fmt: skip
        if d is None:
            return StageStatus(self.stage, self.kind, live, self._stable(), False, "the live Deployment is gone")
        available = d.status.available_replicas or 0
        version = (d.metadata.labels or {}).get(obj.VERSION)
        detail = (
            f"namespace {self.namespace}, deployment {d.metadata.name}: {available}/{d.spec.replicas} available, "
            f"version {version}, strategy {self.config.strategy}"
        )
        if self.blue_green and self._service_selector() not in (None, self._live_selector(live)):
            detail += "; traffic split with a candidate"
        return StageStatus(self.stage, self.kind, live, self._stable(), available > 0, detail)

    def facts(self) -> Facts:
        c = self.config
        scaling = (
            f"HPA: {c.replicas}-{c.max_replicas} pods at {c.target_cpu_percent} % CPU"
            if c.max_replicas > c.replicas
            else ""
        )
        monitoring = ("startup, readiness and liveness probes", "/metrics", "PodDisruptionBudget maxUnavailable 1")
        cpu, gib = _cpu(c.cpu_request), _gib(c.memory_request)
        usage = Usage(hourly={"kubernetes.vcpu_hour": cpu * c.replicas, "kubernetes.gib_hour": gib * c.replicas})
        return Facts(c.replicas, c.max_replicas, scaling, True, None, True, monitoring, tls=False, public=False,
                     at_rest=("Secret per release (etcd encryption is the cluster's)",), usage=usage)  # fmt: skip

    def changes(self) -> list[Change]:
        live = self._live_release()
        name = f"{self.service}-<release>"
        if self.blue_green:
            out = [Change("create", f"Deployment {self.namespace}/{name}", f"{self.config.replicas} pods, the image "
                          "by digest"), Change("create", f"Secret {self.namespace}/{name}-key")]  # fmt: skip
        else:
            out = [Change("create", f"Deployment {self.namespace}/{name}", "one candidate pod, removed after"),
                   Change("change" if live else "create", f"Deployment {self.namespace}/{self.service}",
                          "rolling update to the new pod template")]  # fmt: skip
        out.append(Change("change" if live else "create", f"Service {self.namespace}/{self.service}",
                          "selects the new release's pods"))  # fmt: skip
        if live:
            out.append(Change("delete", f"objects of release {live}", "Deployment, Secret, PDB, HPA"))
        return out

    # --- promotion --------------------------------------------------------------------------

    def _promote_blue_green(self, n: obj.Names, timeout_s: float) -> None:
        """All of the candidate's pods ready, the Service switched to them, its PDB and HPA, the rest retired."""
        with calls("promote", f"{self.namespace}/{n.workload}"):
            self.apps.patch_namespaced_deployment_scale(
                n.workload, self.namespace, {"spec": {"replicas": self.config.replicas}}
            )  # a shift may have scaled it down
        self._wait_rolled_out(n.release.id, n.workload, n.release_selector(), timeout_s, "promote")
        with calls("promote", f"{self.namespace}/service/{self.service}"):
            self._apply_service(n, n.release_selector())
            self._autoscale(n, n.workload, n.release_selector())
            self._retire(keep_workload=n.workload, keep_secret=n.secret)
        self.ctx.progress(f"{self.stage.value}: the Service serves release {n.release.id}")

    def _promote_rolling(self, n: obj.Names, timeout_s: float) -> None:
        """The stage's Deployment updated in place; restored to its previous template if the update fails."""
        key = self.ctx.key_for_deploy()
        stage = obj.deployment(
            n, self.config, key is not None, name=n.stage_workload, replicas=self.config.replicas,
            role=obj.SERVING, selector=n.serving_selector(), server_args=self.ctx.server_args,
        )  # fmt: skip
        with calls("promote", f"{self.namespace}/{n.stage_workload}"):
            previous = self._roll(stage)
        self.ctx.progress(f"{self.stage.value}: rolling update of {n.stage_workload} to release {n.release.id}")
        try:
            self._wait_rolled_out(n.release.id, n.stage_workload, n.serving_selector(), timeout_s, "promote")
        except BaseException:
            with calls("promote", f"{self.namespace}/{n.stage_workload}"):
                if previous is None:  # nothing served before: nothing to keep
                    self._delete_workload(n.stage_workload)
                else:  # back to the pod template (and release) that served before
                    self.apps.replace_namespaced_deployment(n.stage_workload, self.namespace, previous)
            self.ctx.progress(f"{self.stage.value}: the rolling update did not complete; the stage is as it was")
            raise
        with calls("promote", f"{self.namespace}/{n.stage_workload}"):
            self._apply_service(n, n.serving_selector())
            self._autoscale(n, n.stage_workload, n.serving_selector())
            self._retire(keep_workload=n.stage_workload, keep_secret=n.secret)
        self.ctx.progress(f"{self.stage.value}: {n.stage_workload} serves release {n.release.id}")

    def _wait_rolled_out(
        self, release_id: str, workload: str, selector: dict[str, str], timeout_s: float, operation: str
    ) -> None:
        """Until every pod of ``workload`` runs its current template and is available, or raise why not."""
        pods = ",".join(f"{k}={v}" for k, v in {**selector, obj.RELEASE: obj.label_value(release_id)}.items())
        resource = f"{self.namespace}/{workload}"
        deadline = time.monotonic() + timeout_s
        while True:
            with calls(operation, resource):
                d = self.apps.read_namespaced_deployment(workload, self.namespace)
                if _rolled_out(d):
                    return
                failure = diagnose(self.core, self.namespace, pods)
                if failure is None and time.monotonic() > deadline:
                    raise TargetError(
                        f"release {release_id} was not ready after {timeout_s:.0f} s:\n"
                        f"{summary(self.core, self.namespace, pods)}", at=At(self.kind, operation, resource),
                        hint=f"raise {self.stage.value}.ready_timeout_s (or promote_timeout_s) if the model loads "
                        f"slowly; kubectl -n {self.namespace} describe pods -l {pods}",
                    )  # fmt: skip
            if failure is not None:
                raise TargetError(f"release {release_id} cannot become ready: {failure}",
                                  at=At(self.kind, operation, resource), hint=failure.hint)  # fmt: skip
            time.sleep(0.5)

    # --- helpers ----------------------------------------------------------------------------

    def _at(self, operation: str) -> At:
        return At(self.kind, operation, f"{self.namespace}/{self.service}")

    def _names(self, release: Release) -> obj.Names:
        return obj.Names(self.ctx.service, self.ctx.model, self.stage.value, release)

    def _service_host(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"

    def _service_url(self) -> str:
        return f"http://{self._service_host()}"

    def _stable(self) -> Endpoint:
        return Endpoint(self._forwarder("", self._service_selector).url, self.ctx.auth, public_url=self._service_url())

    def _forwarder(self, key: str, selector: Any) -> Forwarder:
        if key not in self._forwarders:
            port = self.config.local_port if key == "" else 0
            self._forwarders[key] = Forwarder(self.api, self.namespace, selector, PORT, port)
        return self._forwarders[key]

    def _service(self) -> client.V1Service | None:
        with calls("describe", f"{self.namespace}/service/{self.service}"):
            try:
                svc: client.V1Service = self.core.read_namespaced_service(self.service, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
        return svc

    def _service_selector(self) -> dict[str, str] | None:
        svc = self._service()
        return dict(svc.spec.selector or {}) if svc else None

    def _live_release(self) -> str | None:
        svc = self._service()
        return (svc.metadata.annotations or {}).get(_LIVE) if svc else None

    def _live_selector(self, live: str) -> dict[str, str]:
        """The Service selector while ``live`` alone takes the traffic."""
        return (
            obj.release_selector(self.ctx.service, live) if self.blue_green else obj.serving_selector(self.ctx.service)
        )

    def _live_pods(self, live: str) -> int:
        selector = ",".join(f"{k}={v}" for k, v in self._live_selector(live).items())
        return sum(
            d.spec.replicas or 0
            for d in self.apps.list_namespaced_deployment(self.namespace, label_selector=selector).items
        )

    def _select(self, selector: dict[str, str]) -> None:
        patch = _replacing(self._service_selector() or {}, selector)
        self.core.patch_namespaced_service(self.service, self.namespace, {"spec": {"selector": patch}})
        if self._forwarders.get(""):
            self._forwarders[""].refresh()

    def _apply_service(self, n: obj.Names, selector: dict[str, str]) -> None:
        manifest = obj.service(n, self.service, selector)
        try:
            self.core.create_namespaced_service(self.namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_namespaced_service(self.service, self.namespace, {
                "metadata": {"labels": manifest["metadata"]["labels"],
                             "annotations": manifest["metadata"]["annotations"]},
                "spec": {"selector": _replacing(self._service_selector() or {}, selector)},
            })  # fmt: skip
        if self._forwarders.get(""):
            self._forwarders[""].refresh()

    def _autoscale(self, n: obj.Names, workload: str, selector: dict[str, str]) -> None:
        self.pdbs.apply(self.namespace, obj.pdb(n, workload, selector))
        self.hpas.apply(self.namespace, obj.hpa(n, workload, self.config, self.hpas.group_version))

    def _ensure_namespace(self) -> None:
        try:
            self.core.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status != 404 or not self.config.create_namespace:
                if exc.status == 404:
                    raise ConfigError(f"namespace {self.namespace} does not exist",
                                      hint="create it, or set create_namespace: true") from exc  # fmt: skip
                raise
            meta = {"name": self.namespace, "labels": obj.MANAGED}
            self.core.create_namespace({"metadata": meta})

    def _apply_secret(self, body: dict[str, Any]) -> None:
        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(body["metadata"]["name"], self.namespace, body)

    def _apply_deployment(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        try:
            self.apps.create_namespaced_deployment(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self.apps.read_namespaced_deployment(name, self.namespace)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            self.apps.replace_namespaced_deployment(name, self.namespace, body)

    def _roll(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Rolling: update the stage's Deployment in place. Returns what restores it (its previous
        labels, annotations and pod template, on top of the updated object), or None if it was created."""
        name = body["metadata"]["name"]
        try:
            current = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.apps.create_namespaced_deployment(self.namespace, body)
            return None
        before = self.api.sanitize_for_serialization(current)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        body["spec"]["replicas"] = current.spec.replicas  # the autoscaler's count stays
        updated = self.api.sanitize_for_serialization(
            self.apps.replace_namespaced_deployment(name, self.namespace, body)
        )
        restore = json.loads(json.dumps(updated))
        restore["metadata"]["labels"] = before["metadata"].get("labels", {})
        restore["metadata"]["annotations"] = before["metadata"].get("annotations", {})
        restore["spec"]["template"] = before["spec"]["template"]
        restore["metadata"].pop("resourceVersion", None)  # replace the latest: the controller updated status
        return dict(restore)

    def _retire(self, keep_workload: str | None, keep_secret: str | None) -> None:
        selector = obj.stage_selector(self.ctx.service)
        for d in self.apps.list_namespaced_deployment(self.namespace, label_selector=selector).items:
            if d.metadata.name != keep_workload:
                self._delete_workload(d.metadata.name)
        for name in self.pdbs.names(self.namespace, selector) + self.hpas.names(self.namespace, selector):
            if name != keep_workload:
                self.pdbs.delete(self.namespace, name)
                self.hpas.delete(self.namespace, name)
        for s in self.core.list_namespaced_secret(self.namespace, label_selector=selector).items:
            if s.metadata.name != keep_secret:
                self._delete(self.core.delete_namespaced_secret, s.metadata.name)

    def _delete_workload(self, name: str) -> None:
        self._delete(self.apps.delete_namespaced_deployment, name)
        self.pdbs.delete(self.namespace, name)
        self.hpas.delete(self.namespace, name)

    def _delete(self, method: Any, name: str) -> None:
        try:
            method(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def _cpu(quantity: str) -> float:
    """A Kubernetes CPU quantity ("250m", "1") in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _gib(quantity: str) -> float:
    """A Kubernetes memory quantity ("256Mi", "1Gi", "512Ki", bytes) in GiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    unit = quantity[-2:]
    return float(quantity[:-2]) * units[unit] / 2**30 if unit in units else float(quantity) / 2**30


def _replacing(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str | None]:
    """A strategic-merge patch of a map that makes it ``wanted``: merging keeps keys it does not name,
    so those are named with null (deleted)."""
    return {**dict.fromkeys(current), **wanted}


def _rolled_out(d: client.V1Deployment) -> bool:
    """The rollout is complete: every pod runs the current template and is available."""
    st, want = d.status, d.spec.replicas or 0
    if (st.observed_generation or 0) < (d.metadata.generation or 0):
        return False
    for cond in st.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            return False  # reported by the timeout with the pods' states
    updated = st.updated_replicas or 0
    return updated >= want and (st.available_replicas or 0) >= want and (st.replicas or 0) == updated
