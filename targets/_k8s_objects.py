"""The objects of a release, as plain manifests: Deployment, Service, PodDisruptionBudget,
HorizontalPodAutoscaler and the Secret holding the API key. Every object carries the labels that
tie it to its model, version and release, so teardown finds everything by label."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from slipway.spec import KubernetesTarget as KubernetesConfig
from targets.base import Release

MANAGED = {"app.kubernetes.io/managed-by": "slipway"}
MODEL = "slipway.io/model"
RELEASE = "slipway.io/release"
VERSION = "slipway.io/version"
STAGE = "slipway.io/stage"
SERVER_PORT = 8000
SERVER_UID = 10001  # the user the serving image runs as (tasks/_build.py)


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

    model: str
    stage: str
    release: Release
    blue_green: bool

    @property
    def release_label(self) -> str:
        return label_value(self.release.id)

    @property
    def workload(self) -> str:
        """Deployment, PDB and HPA: per release (blue/green) or the stage's one (rolling)."""
        return slug(f"{self.model}-{self.release.id}", 53) if self.blue_green else slug(self.model, 53)

    @property
    def secret(self) -> str:
        return slug(f"{self.model}-{self.release.id}", 53) + "-key"

    def labels(self) -> dict[str, str]:
        return {
            **MANAGED,
            "app.kubernetes.io/name": label_value(self.model),
            MODEL: label_value(self.model),
            STAGE: self.stage,
            RELEASE: self.release_label,
            VERSION: label_value(self.release.version),
        }

    def pod_selector(self) -> dict[str, str]:
        base = {**MANAGED, MODEL: label_value(self.model)}
        return {**base, RELEASE: self.release_label} if self.blue_green else base

    def meta(self, name: str) -> dict[str, Any]:
        return {"name": name, "labels": self.labels(), "annotations": {"slipway.io/release-id": self.release.id}}


def stage_selector(model: str) -> str:
    """Label selector of everything Slipway created for ``model`` in a namespace."""
    return f"app.kubernetes.io/managed-by=slipway,{MODEL}={label_value(model)}"


def secret(n: Names, api_key: str | None) -> dict[str, Any]:
    return {"metadata": n.meta(n.secret), "type": "Opaque", "stringData": {"api-key": api_key or ""}}


def deployment(n: Names, cfg: KubernetesConfig, authenticated: bool) -> dict[str, Any]:
    assert n.release.image is not None
    args = ["--workers", str(cfg.workers)] + ([] if authenticated else ["--no-auth"])
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
        "image": str(n.release.image),
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
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
        "metadata": n.meta(n.workload),
        "spec": {
            "replicas": cfg.replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": max(60, int(cfg.ready_timeout_s)),
            "selector": {"matchLabels": n.pod_selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": n.labels()}, "spec": pod_spec},
        },
    }


def service(n: Names, name: str) -> dict[str, Any]:
    meta = n.meta(name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": n.pod_selector(),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pdb(n: Names) -> dict[str, Any]:
    return {
        "kind": "PodDisruptionBudget",
        "metadata": n.meta(n.workload),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": n.pod_selector()}},
    }


def hpa(n: Names, cfg: KubernetesConfig, group_version: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": n.workload},
        "minReplicas": cfg.replicas,
        "maxReplicas": cfg.max_replicas,
    }
    if group_version == "autoscaling/v1":
        spec["targetCPUUtilizationPercentage"] = cfg.target_cpu_percent
    else:
        target = {"type": "Utilization", "averageUtilization": cfg.target_cpu_percent}
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    return {"kind": "HorizontalPodAutoscaler", "metadata": n.meta(n.workload), "spec": spec}
