"""``kind: kubernetes`` — any cluster reached through a kubeconfig and context.

Each stage lives in its own namespace (``slipway-<stage>`` unless configured). Per release:
a Deployment (image by digest, probes, limits, non-root, read-only root filesystem), a Secret with
the API key, a PodDisruptionBudget and a HorizontalPodAutoscaler (newest autoscaling API served).
Per stage: a Service named after the model whose annotation names the live release.

* **blue_green** — ``deploy`` creates the release's own Deployment beside the live one;
  ``promote`` switches the Service selector to it once it is ready, then deletes the previous
  release's objects.
* **rolling** — one Deployment per stage, updated in place (``maxSurge 1, maxUnavailable 0``):
  old pods serve until new ones are ready; ``discard`` restores the previous pod template.

The stage is reached through 127.0.0.1 only: the target owns a local port forwarded over the API
server to ready pods (``targets._k8s_forward``), closed by ``teardown`` or with the process.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.errors import ConfigError, TargetError
from slipway.spec import KubernetesTarget as KubernetesConfig
from targets import _k8s_objects as obj
from targets._k8s_api import HPA_VERSIONS, PDB_VERSIONS, RawResource, calls, connect, served_version
from targets._k8s_forward import Forwarder
from targets._k8s_pods import diagnose, summary
from targets.base import Capabilities, Deployment, Endpoint, Release, StageStatus, TargetContext, put_live

_LIVE = "slipway.io/release-id"


class KubernetesClusterTarget:
    kind = "kubernetes"
    capabilities = Capabilities(needs_image=True, zero_downtime_promotion=True)

    def __init__(self, config: KubernetesConfig, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.namespace = config.namespace or f"slipway-{ctx.stage.value}"
        self.service = obj.slug(ctx.model, 63)
        self.blue_green = config.strategy == "blue_green"
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
    def hpas(self) -> RawResource:
        with calls("discover", "autoscaling"):
            return RawResource(self.api, served_version(self.api, HPA_VERSIONS), "horizontalpodautoscalers")

    @cached_property
    def pdbs(self) -> RawResource:
        with calls("discover", "policy"):
            return RawResource(self.api, served_version(self.api, PDB_VERSIONS), "poddisruptionbudgets")

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        if release.image is None:
            raise ConfigError(
                f"[kubernetes deploy {self.namespace}] release {release.id} has no image",
                hint="the kubernetes target runs images: the pipeline builds and pushes one first",
            )
        n = self._names(release)
        handle = {"namespace": self.namespace, "workload": n.workload, "secret": n.secret}
        with calls("deploy", f"{self.namespace}/{n.workload}"):
            self._ensure_namespace()
            key = self.ctx.key_for_deploy()
            self._apply_secret(obj.secret(n, key.get_secret_value() if key else None))
            manifest = obj.deployment(n, self.config, key is not None)
            if self.blue_green:
                self._apply_deployment(manifest)
            else:
                handle["previous"] = self._roll(manifest)
            self.pdbs.apply(self.namespace, obj.pdb(n))
            self.hpas.apply(self.namespace, obj.hpa(n, self.config, self.hpas.group_version))
        forwarder = self._forwarder(release.id if self.blue_green else "", n.pod_selector)
        return Deployment(release, self.stage, Endpoint(forwarder.url, self.ctx.requires_auth), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        n = self._names(deployment.release)
        selector = ",".join(f"{k}={v}" for k, v in {**n.pod_selector(), obj.RELEASE: n.release_label}.items())
        deadline = time.monotonic() + timeout_s
        rid = deployment.release.id
        while True:
            with calls("wait_ready", f"{self.namespace}/{n.workload}"):
                d = self.apps.read_namespaced_deployment(n.workload, self.namespace)
                if _rolled_out(d):
                    return deployment
                failure = diagnose(self.core, self.namespace, selector)
                if failure is None and time.monotonic() > deadline:
                    pods = summary(self.core, self.namespace, selector)
                    raise TargetError(
                        f"release {rid} was not ready after {timeout_s:.0f} s:\n{pods}", target=self.kind,
                        operation="wait_ready", resource=f"{self.namespace}/{n.workload}",
                        hint="raise ready_timeout_s if the model loads slowly; "
                        f"kubectl -n {self.namespace} describe pods -l {selector}",
                    )  # fmt: skip
            if failure is not None:
                raise TargetError(
                    f"release {rid} cannot become ready: {failure}", target=self.kind, operation="wait_ready",
                    resource=f"{self.namespace}/{n.workload}", hint=failure.hint,
                )  # fmt: skip
            time.sleep(0.5)

    def promote(self, deployment: Deployment) -> Deployment:
        n = self._names(deployment.release)
        with calls("promote", f"{self.namespace}/service/{self.service}"):
            manifest = obj.service(n, self.service)
            try:
                self.core.create_namespaced_service(self.namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_namespaced_service(self.service, self.namespace, {
                    "metadata": {"labels": manifest["metadata"]["labels"],
                                 "annotations": manifest["metadata"]["annotations"]},
                    "spec": {"selector": manifest["spec"]["selector"]},
                })  # fmt: skip
            if self._forwarders.get(""):
                self._forwarders[""].refresh()
            self._retire(keep_workload=n.workload, keep_secret=n.secret)
        for rid in [r for r in self._forwarders if r not in ("", deployment.release.id)]:
            self._forwarders.pop(rid).close()
        return Deployment(deployment.release, self.stage, self._stable(), deployment.handle)

    def discard(self, deployment: Deployment) -> None:
        n = self._names(deployment.release)
        live = self._live_release()
        with calls("discard", f"{self.namespace}/{n.workload}"):
            previous = deployment.handle.get("previous", "")
            if previous:  # rolling: back to the pod template that served before
                d = self.apps.read_namespaced_deployment(n.workload, self.namespace)
                body = self.api.sanitize_for_serialization(d)
                body["spec"]["template"] = json.loads(previous)
                self.apps.replace_namespaced_deployment(n.workload, self.namespace, body)
            elif live != deployment.release.id:
                self._delete_workload(n.workload)
            if live != deployment.release.id:
                self._delete(self.core.delete_namespaced_secret, n.secret)
        if self.blue_green and live != deployment.release.id and deployment.release.id in self._forwarders:
            self._forwarders.pop(deployment.release.id).close()

    def rollback(self, release: Release, timeout_s: float) -> Deployment:
        if release.image is None:
            raise ConfigError(
                f"[kubernetes rollback {self.namespace}] release {release.id} has no image in the ledger",
                hint="deploy that model version again instead (slipway deploy)",
            )
        return put_live(self, release, timeout_s)

    def endpoint(self) -> Endpoint | None:
        return self._stable() if self._live_release() else None

    def teardown(self) -> None:
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()
        selector = obj.stage_selector(self.ctx.model)
        with calls("teardown", self.namespace):
            try:
                self.core.read_namespace(self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            for svc in self.core.list_namespaced_service(self.namespace, label_selector=selector).items:
                self._delete(self.core.delete_namespaced_service, svc.metadata.name)
            self._retire(keep_workload=None, keep_secret=None)

    def describe(self) -> StageStatus:
        live = self._live_release()
        if live is None:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        with calls("describe", self.namespace):
            deps = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=obj.stage_selector(self.ctx.model)
            ).items
        d = next((d for d in deps if (d.metadata.annotations or {}).get(_LIVE) == live), None)
        if d is None:
            return StageStatus(self.stage, self.kind, live, self._stable(), False, "the live Deployment is gone")
        available = d.status.available_replicas or 0
        version = (d.metadata.labels or {}).get(obj.VERSION)
        detail = (
            f"namespace {self.namespace}, deployment {d.metadata.name}: {available}/{d.spec.replicas} available, "
            f"version {version}, strategy {self.config.strategy}"
        )
        return StageStatus(self.stage, self.kind, live, self._stable(), available > 0, detail)

    # --- helpers ----------------------------------------------------------------------------

    def _names(self, release: Release) -> obj.Names:
        return obj.Names(self.ctx.model, self.stage.value, release, self.blue_green)

    def _stable(self) -> Endpoint:
        served_at = f"service {self.ctx.model} in namespace {self.namespace}, port 80"
        return Endpoint(self._forwarder("", self._service_selector).url, self.ctx.requires_auth, served_at)

    def _forwarder(self, key: str, selector: Any) -> Forwarder:
        if key not in self._forwarders:
            port = self.config.local_port if key == "" else 0
            self._forwarders[key] = Forwarder(self.api, self.namespace, selector, obj.SERVER_PORT, port)
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

    def _roll(self, body: dict[str, Any]) -> str:
        """Rolling: update the stage's Deployment in place; returns the previous pod template (JSON)."""
        name = body["metadata"]["name"]
        try:
            current = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.apps.create_namespaced_deployment(self.namespace, body)
            return ""
        previous = json.dumps(self.api.sanitize_for_serialization(current.spec.template))
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        self.apps.replace_namespaced_deployment(name, self.namespace, body)
        return previous

    def _retire(self, keep_workload: str | None, keep_secret: str | None) -> None:
        selector = obj.stage_selector(self.ctx.model)
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
