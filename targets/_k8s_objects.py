"""The objects of a release, as plain manifests: Deployment, Service, PodDisruptionBudget,
HorizontalPodAutoscaler and the Secret holding the API key. Every object carries the labels that
tie it to its service, model, version and release, so teardown finds everything by label.

Pods are labelled ``slipway.io/role``: ``serving`` for pods that may take the stage's traffic,
``candidate`` for the one pod that checks a release before a rolling update. The Service selects
the live release's pods (blue/green), or every serving pod (rolling, and a blue/green split).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from serving.contract import PORT, SERVER_UID
from slipway.release import Release
from slipway.spec import KubernetesTarget as KubernetesConfig

MANAGED = {"app.kubernetes.io/managed-by": "slipway"}
SERVICE = "slipway.io/service"
MODEL = "slipway.io/model"
RELEASE = "slipway.io/release"
VERSION = "slipway.io/version"
STAGE = "slipway.io/stage"
ROLE = "slipway.io/role"
SERVING, CANDIDATE = "serving", "candidate"


def slug(text: str, limit: int) -> str:
    """A DNS-1123 label of at most ``limit`` characters; a hash keeps shortened names distinct."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63].strip("_.-") or "none"


@dataclass(frozen=True)
class Names:
    """Where the objects of one release on one stage live, and what they are called."""

    service: str
    model: str
    stage: str
    release: Release

    @property
    def release_label(self) -> str:
        return label_value(self.release.id)

    @property
    def workload(self) -> str:
        """The release's own Deployment: blue/green's per release, or a rolling update's candidate."""
        return slug(f"{self.service}-{self.release.id}", 53)

    @property
    def stage_workload(self) -> str:
        """The stage's one Deployment of the rolling strategy, updated in place by each promotion."""
        return slug(self.service, 53)

    @property
    def secret(self) -> str:
        return slug(f"{self.service}-{self.release.id}", 53) + "-key"

    def labels(self, role: str = SERVING) -> dict[str, str]:
        return {
            **MANAGED,
            "app.kubernetes.io/name": label_value(self.service),
            SERVICE: label_value(self.service),
            MODEL: label_value(self.model),
            STAGE: self.stage,
            RELEASE: self.release_label,
            VERSION: label_value(self.release.version),
            ROLE: role,
        }

    def release_selector(self, role: str = SERVING) -> dict[str, str]:
        return release_selector(self.service, self.release.id, role)

    def serving_selector(self) -> dict[str, str]:
        return serving_selector(self.service)

    def meta(self, name: str, role: str = SERVING) -> dict[str, Any]:
        return {"name": name, "labels": self.labels(role), "annotations": {"slipway.io/release-id": self.release.id}}


def release_selector(service: str, release_id: str, role: str = SERVING) -> dict[str, str]:
    """The pods of one release (in a role): blue/green's Service selector, and its Deployments' selector."""
    return {**MANAGED, SERVICE: label_value(service), RELEASE: label_value(release_id), ROLE: role}


def serving_selector(service: str) -> dict[str, str]:
    """Every pod that may take the stage's traffic: rolling's Service selector, and a blue/green split's."""
    return {**MANAGED, SERVICE: label_value(service), ROLE: SERVING}


def stage_selector(service: str) -> str:
    """Label selector of everything Slipway created for ``service`` in a namespace."""
    return f"app.kubernetes.io/managed-by=slipway,{SERVICE}={label_value(service)}"


def secret(n: Names, api_key: str | None) -> dict[str, Any]:
    return {"metadata": n.meta(n.secret), "type": "Opaque", "stringData": {"api-key": api_key or ""}}


def deployment(
    n: Names, cfg: KubernetesConfig, authenticated: bool, *, name: str, replicas: int, role: str,
    selector: dict[str, str], server_args: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """The Deployment ``name`` running the release's image in ``replicas`` pods labelled ``role``;
    ``server_args``: the spec's options of the model server."""
    args = ["--workers", str(cfg.workers), *server_args] + ([] if authenticated else ["--no-auth"])
    env: list[dict[str, Any]] = [{"name": "TMPDIR", "value": "/tmp"}]
    if authenticated:
        ref = {"name": n.secret, "key": "api-key"}
        env.append({"name": "SLIPWAY_API_KEY", "valueFrom": {"secretKeyRef": ref}})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": failures,
        }  # fmt: skip

    container = {
        "name": "server",
        "image": str(n.release.require_image()),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": cfg.cpu_request, "memory": cfg.memory_request},
            "limits": {"cpu": cfg.cpu_limit, "memory": cfg.memory_limit},
        },
        "startupProbe": probe("/health", 1, max(10, int(cfg.ready_timeout_s))),
        "readinessProbe": probe("/ready", 1, 2),
        "livenessProbe": probe("/health", 10, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if cfg.drain_s > 0:  # traffic leaves the pod (endpoints, proxies) before the server stops
        sleep = f"import time; time.sleep({cfg.drain_s})"
        container["lifecycle"] = {"preStop": {"exec": {"command": ["python3", "-c", sleep]}}}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": int(cfg.drain_s) + 30,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": SERVER_UID, "runAsGroup": SERVER_UID, "fsGroup": SERVER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
    }  # fmt: skip
    if cfg.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": cfg.image_pull_secret}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": n.meta(name, role),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": max(60, int(cfg.ready_timeout_s)),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": n.labels(role)}, "spec": pod_spec},
        },
    }


def service(n: Names, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": n.meta(name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pdb(n: Names, workload: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "PodDisruptionBudget",
        "metadata": n.meta(workload),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def hpa(n: Names, workload: str, cfg: KubernetesConfig, group_version: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
        "minReplicas": cfg.replicas,
        "maxReplicas": cfg.max_replicas,
    }
    if group_version == "autoscaling/v1":
        spec["targetCPUUtilizationPercentage"] = cfg.target_cpu_percent
    else:
        target = {"type": "Utilization", "averageUtilization": cfg.target_cpu_percent}
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    return {"kind": "HorizontalPodAutoscaler", "metadata": n.meta(workload), "spec": spec}


GATE = "gate"  # the role of the in-cluster gate's pod: never selected by a Service, a PDB or an HPA
GATE_CONTAINER = "locust"
GATE_SOURCE, GATE_WORK = "/slipway-gate", "/work"


def gate_config_map(n: Names, name: str, data: dict[str, str]) -> dict[str, Any]:
    """The in-cluster gate's files: its runner, the job's description and every file it runs from."""
    return {"metadata": n.meta(name, GATE), "data": data}


def gate_job(
    n: Names, cfg: KubernetesConfig, *, name: str, config_map: str, env: dict[str, str], key_env: str | None,
    secret: str | None, cores: int, host: str, service_ip: str, deadline_s: int,
) -> dict[str, Any]:  # fmt: skip
    """A Job of one pod that runs the gate's load generator (``cfg.gate_image``) next to the stage:
    non-root, read-only root filesystem, no service-account token, the API key from the release's
    Secret, and ``host`` (the Service's cluster DNS name) resolving to its ClusterIP also where the
    cluster has no DNS add-on."""
    variables: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    if key_env and secret:
        variables.append({"name": key_env, "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-key"}}})
    image = cfg.gate_image
    container = {
        "name": GATE_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent" if "@sha256:" in image else "Always",  # a tag may have moved
        "command": ["python3", f"{GATE_SOURCE}/runner.py", GATE_SOURCE, GATE_WORK],
        "env": variables,
        "resources": {"requests": {"cpu": f"{500 * cores}m", "memory": "128Mi"},
                      "limits": {"cpu": str(cores), "memory": f"{256 * (cores + 1)}Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "source", "mountPath": GATE_SOURCE, "readOnly": True},
                         {"name": "work", "mountPath": GATE_WORK}, {"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostAliases": [{"ip": service_ip, "hostnames": [host]}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": SERVER_UID, "runAsGroup": SERVER_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "source", "configMap": {"name": config_map}},
                    {"name": "work", "emptyDir": {"sizeLimit": "64Mi"}},
                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
    }  # fmt: skip
    if cfg.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": cfg.image_pull_secret}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": n.meta(name, GATE),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_s,
            "template": {"metadata": {"labels": n.labels(GATE)}, "spec": pod_spec},
        },
    }
