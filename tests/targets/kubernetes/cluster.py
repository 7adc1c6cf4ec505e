"""The real single-node cluster for the Kubernetes tests, brought up by the project's scripts, and the
settings of a test's kubernetes target. Nothing here skips: a script that fails fails the run with
the script's output."""

from __future__ import annotations

import atexit
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from slipway.release import ImageRef
from slipway.spec import KubernetesTarget
from tests.conftest import REPO

K8S = Path("/var/tmp/slipway/k8s")
KUBECONFIG = K8S / "kubeconfig"
SCRIPTS = (
    ("scripts/services/docker.sh", "up"),
    ("scripts/images/base.sh",),
    ("scripts/images/locust.sh",),  # the in-cluster gate's image (gate.where: in_target); ~0.3 s when current
    ("scripts/k8s/build.sh",),  # nothing to do when the binaries are there; ~16 min when not
    ("scripts/k8s/up.sh",),  # ~10 s warm, ~1 s when up
)
# A cold machine builds Kubernetes inside the first test's setup: give that test the time.
FIRST_RUN_TIMEOUT_S = 300 if (K8S / "bin" / "kubelet").exists() else 2400
RUN_ID = secrets.token_hex(3)
_up = False
_pulled: set[str] = set()


def ensure_cluster() -> Path:
    global _up
    if not _up:
        for script in SCRIPTS:
            proc = subprocess.run(["bash", *script], cwd=REPO, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
                pytest.fail(f"{' '.join(script)} failed (exit {proc.returncode}):\n{tail}", pytrace=False)
        _up = True
        atexit.register(delete_namespaces)
    return KUBECONFIG


def core() -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(ensure_cluster())))


def namespace(name: str) -> str:
    """A namespace of this run (each test its own: namespaces being deleted linger)."""
    from targets._k8s_objects import slug

    return slug(f"slipway-t{RUN_ID}-{name.replace('test_', '')}", 63)


def delete_namespaces() -> None:
    api = core()
    for ns in api.list_namespace().items:
        if ns.metadata.name.startswith(f"slipway-t{RUN_ID}-"):
            api.delete_namespace(ns.metadata.name)


def config_for(ns: str, **overrides: Any) -> KubernetesTarget:
    values: dict[str, Any] = {
        "kubeconfig": str(ensure_cluster()), "namespace": ns, "replicas": 1, "max_replicas": 2,
        "cpu_request": "50m", "memory_request": "128Mi", "drain_s": 1, "ready_timeout_s": 60,
    }  # fmt: skip
    return KubernetesTarget.model_validate({**values, **overrides})


def prepull(image: ImageRef) -> None:
    """Pull an image into the cluster's containerd once, so readiness timings exclude the pull."""
    if str(image) in _pulled:
        return
    cmd = ["ctr", "--address", str(K8S / "run" / "containerd.sock"), "-n", "k8s.io", "images", "pull",
           "--plain-http", str(image)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    _pulled.add(str(image))


def gate_leftovers(cfg: KubernetesTarget) -> list[str]:
    """Names of the in-cluster gate's Jobs and ConfigMaps still in ``cfg``'s namespace."""
    api = config.new_client_from_config(cfg.kubeconfig)
    jobs = client.BatchV1Api(api).list_namespaced_job(cfg.namespace).items
    maps = client.CoreV1Api(api).list_namespaced_config_map(cfg.namespace, label_selector="slipway.io/role=gate").items
    return [o.metadata.name for o in [*jobs, *maps]]
