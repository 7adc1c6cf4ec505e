"""Flow runs as Kubernetes Jobs, for real: a Prefect server (scripts/services/prefect.sh, no worker of
its own), a work pool of type ``kubernetes`` made from deploy/k8s/base-job-template.json, and
Prefect's Kubernetes worker on this host (KUBECONFIG of scripts/k8s) starting each flow run as a Job
on the project's cluster, in the image of scripts/images/slipway.sh, as the service account of
deploy/k8s/flow-runner.yaml. The Job's pod builds the serving image through the host's Docker Engine
(DOCKER_HOST, the socket mounted), reaches the cluster in-cluster, and keeps its state where any
machine sees it: the ledger on PostgreSQL, packages and reports in the moto server's S3. Its
credentials come from a Secret, never from the deployment.

The tests build on each other in file order (one production, one history): two releases, then a
rollback, each a Job; then the RBAC the Jobs ran with."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from slipway.ledger import Outcome
from slipway.ledgers import ledger_at
from slipway.release import Stage
from slipway.spec import KubernetesTarget
from targets import make_target
from targets.base import Target
from tests.conftest import REPO, free_port, fresh_database, spec_file
from tests.images import TEST_REPOSITORY
from tests.targets.ec2.fixtures import new_bucket
from tests.targets.fixtures import context
from tests.targets.kubernetes.cluster import K8S, KUBECONFIG, ensure_cluster, namespace

pytestmark = [pytest.mark.prefect, pytest.mark.kubernetes, pytest.mark.postgres, pytest.mark.moto]

SCRIPTS = REPO / "scripts" / "services"
POOL = "slipway-k8s"
IMAGE = "127.0.0.1:5000/slipway/flow-runner:bookworm"
SERVICE_ACCOUNT = "slipway-flow-runner"
RUN_TIMEOUT_S = 420


@dataclass(frozen=True)
class Pool:
    tmp: Path
    v1: Path  # in the specs folder the Jobs mount at the same path
    v2: Path
    ledger_url: str
    api_key: str
    flows_ns: str
    stage_ns: dict[str, str]
    production: Target  # this process's view of production, for its own forward (the Job's is gone)

    @property
    def ledger(self) -> Any:
        return ledger_at(self.ledger_url)

    def served_sha(self) -> str:
        endpoint = self.production.endpoint()
        assert endpoint is not None, "production has no endpoint"
        resp = httpx.get(f"{endpoint.url}/metadata", headers={"X-API-Key": self.api_key}, timeout=10)
        return str(resp.json()["sha256"])


def _script(path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["bash", str(path), *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{path.name} {' '.join(args)} failed:\n{proc.stdout}{proc.stderr[-3000:]}"
    return proc.stdout.strip()


def _apply_flow_runner(api: client.ApiClient, flows_ns: str, stage_ns: list[str]) -> None:
    """deploy/k8s/flow-runner.yaml, its namespaces renamed to this run's (the RoleBindings one per stage)."""
    from kubernetes.utils import create_from_dict

    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "flow-runner.yaml").read_text()))
    rbac = client.RbacAuthorizationV1Api(api)
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    for doc in docs:
        if doc["kind"] == "RoleBinding" or (doc["kind"] == "Namespace" and doc["metadata"]["name"] != "slipway-flows"):
            continue  # the example's stage namespaces: this run's are made below
        doc = json.loads(json.dumps(doc).replace('"slipway-flows"', json.dumps(flows_ns)))
        if doc["kind"] == "ClusterRoleBinding":
            doc["metadata"]["name"] += f"-{flows_ns}"
        if doc["kind"] == "ClusterRole":  # shared by the runs: (re)applied as the file says
            try:
                rbac.replace_cluster_role(doc["metadata"]["name"], doc)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                rbac.create_cluster_role(doc)
            continue
        create_from_dict(api, doc)
    for ns in stage_ns:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        doc = json.loads(json.dumps(binding).replace('"slipway-flows"', json.dumps(flows_ns)))
        doc["metadata"]["namespace"] = ns
        create_from_dict(api, doc)


def _pool_template(tmp: Path, flows_ns: str, specs: Path) -> Path:
    template = json.loads((REPO / "deploy" / "k8s" / "base-job-template.json").read_text())
    props = template["variables"]["properties"]
    props["namespace"]["default"] = flows_ns
    props["specs_dir"]["default"] = str(specs)
    props["image_pull_policy"]["default"] = "IfNotPresent"  # pulled once below, by the digest pushed last
    path = tmp / "base-job-template.json"
    path.write_text(json.dumps(template))
    return path


def _pull_into_cluster(image: str) -> None:
    """The runner image into the node's containerd once (~40 s cold), so each Job starts at once."""
    proc = subprocess.run(["ctr", "--address", str(K8S / "run" / "containerd.sock"), "-n", "k8s.io", "images",
                           "pull", "--plain-http", image], capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def pool(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: tuple[str, str],
    moto_url: str,
    iris_model: Path,
    iris_model_v2: Path,
) -> Iterator[Pool]:

    api = config.new_client_from_config(str(ensure_cluster()))
    _script(REPO / "scripts" / "images" / "slipway.sh")  # ~1 s when the image is current
    _pull_into_cluster(IMAGE)
    tmp = tmp_path_factory.mktemp("k8s-pool")
    specs = tmp / "specs"
    bucket, aws = new_bucket(moto_url, "slipway-k8s")
    flows_ns = namespace("pool-flows")
    stage_ns = {s: namespace(f"pool-{s}") for s in ("staging", "production")}
    stages = {
        s: {"kind": "kubernetes", "namespace": ns, "create_namespace": False, "replicas": 1, "cpu_request": "50m",
            "memory_request": "128Mi", "drain_s": 1, "ready_timeout_s": 120}
        for s, ns in stage_ns.items()
    }  # fmt: skip
    gate = {"load": {"users": 2, "spawn_rate": 2, "duration_s": 2},
            "slo": {"p95_ms": 2000, "p99_ms": 4000, "max_error_rate": 0.0, "min_rps": 1}}  # fmt: skip
    paths = []
    for folder, model in ((specs, iris_model), (specs / "v2", iris_model_v2)):  # sync reads the folder, not below
        folder.mkdir(parents=True, exist_ok=True)
        for f in (model, model.parent / "samples.json"):
            shutil.copy(f, folder / f.name)
        paths.append(spec_file(folder / "iris.yaml", folder / model.name, image={"repository": TEST_REPOSITORY},
                               gate=gate, **stages))  # fmt: skip
    api_key = secrets.token_hex(16)
    prefect_port = str(free_port())
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PREFECT_", "MLFLOW_", "SLIPWAY_", "PG", "AWS_", "KUBECONFIG"))}  # fmt: skip
    path_env = f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"
    server_env = base | {
        "SLIPWAY_VAR": str(tmp / "var"), "SLIPWAY_PREFECT_PORT": prefect_port, "SLIPWAY_SPEC": str(paths[0]),
        "SLIPWAY_WORKER": "0", "PATH": path_env,
    }  # fmt: skip
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    env = base | {"PATH": path_env, "PREFECT_API_URL": prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                  "PREFECT_WORKER_QUERY_SECONDS": "1", "KUBECONFIG": str(KUBECONFIG),
                  "PREFECT_HOME": str(tmp / "prefect")}  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    core = client.CoreV1Api(api)
    with fresh_database(postgres_server) as ledger_url:
        try:
            _apply_flow_runner(api, flows_ns, list(stage_ns.values()))
            core.create_namespaced_secret(flows_ns, {"metadata": {"name": "slipway-flow-runner"}, "stringData": {
                "SLIPWAY_LEDGER_URL": ledger_url, "PGPASSWORD": postgres_server[1], "SLIPWAY_API_KEY": api_key,
                "SLIPWAY_STORE_URL": f"s3://{bucket}/k8s", **aws}})  # fmt: skip
            _script(SCRIPTS / "prefect.sh", "up", env=server_env)
            prefect = str(REPO / ".venv" / "bin" / "prefect")
            template = _pool_template(tmp, flows_ns, specs)
            subprocess.run([prefect, "work-pool", "create", POOL, "--type", "kubernetes", "--base-job-template",
                            str(template)], env=env, check=True, capture_output=True)  # fmt: skip
            synced = subprocess.run([str(REPO / ".venv" / "bin" / "slipway"), "deployments", "sync", str(specs),
                                     "--work-pool", POOL], env=env, capture_output=True, text=True)  # fmt: skip
            assert synced.returncode == 0, synced.stdout + synced.stderr
            with open(tmp / "worker.log", "wb") as log:
                worker = subprocess.Popen([prefect, "worker", "start", "--pool", POOL, "--type", "kubernetes",
                                           "--name", "k8s-worker"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)  # fmt: skip
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings({PREFECT_API_URL: prefect_api}), pytest.MonkeyPatch.context() as mp:
                mp.setenv("PGPASSWORD", postgres_server[1])  # this process reads the shared ledger too
                mp.setenv("KUBECONFIG", str(KUBECONFIG))
                cfg = KubernetesTarget(namespace=stage_ns["production"], kubeconfig=str(KUBECONFIG))
                production = make_target(cfg, context(Stage.PRODUCTION, tmp / "probe", api_key))
                yield Pool(tmp, paths[0], paths[1], ledger_url, api_key, flows_ns, stage_ns, production)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
            # everything the runs made is in this run's namespaces: deleting them leaves nothing behind
            for ns in (flows_ns, *stage_ns.values()):
                with contextlib.suppress(ApiException):
                    core.delete_namespace(ns)
            with contextlib.suppress(ApiException):
                client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(
                    f"slipway-flow-runner-namespaces-{flows_ns}"
                )
            _script(SCRIPTS / "prefect.sh", "down", env=server_env)


def _run(pool: Pool, deployment: str, spec: Path) -> Any:
    """A flow run of ``deployment`` on the pool, to its end; the worker's log when it did not complete."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={"spec_path": str(spec)}, timeout=0)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            run = prefect.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                break
            time.sleep(1)
    log = (pool.tmp / "worker.log").read_text(errors="replace")[-6000:]
    assert run.state is not None and run.state.is_completed(), f"{deployment}: {run.state}\n{log}"
    return run


def _job_pod(pool: Pool, run: Any) -> client.V1Pod:
    """The pod of the run's Job, once it has exited (the run is Completed just before the process ends)."""
    core = client.CoreV1Api(config.new_client_from_config(str(KUBECONFIG)))
    deadline = time.monotonic() + 60
    while True:
        (pod,) = core.list_namespaced_pod(pool.flows_ns, label_selector=f"prefect.io/flow-run-id={run.id}").items
        if pod.status.phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            return pod
        time.sleep(0.5)


@pytest.mark.timeout(900)  # a cold machine builds the runner image (~3 min) in this test's setup
def test_two_releases_run_as_kubernetes_jobs(pool: Pool) -> None:
    first = _run(pool, "release/iris", pool.v1)
    second = _run(pool, "release/iris", pool.v2)
    for run in (first, second):
        pod = _job_pod(pool, run)
        assert pod.status.phase == "Succeeded"
        assert pod.spec.containers[0].image == IMAGE and pod.spec.host_network
    history = pool.ledger.releases("iris")
    assert [r.outcome for r in history] == [Outcome.PROMOTED, Outcome.PROMOTED]
    assert [r.flow_run_id for r in history] == [str(first.id), str(second.id)]  # recorded by the Jobs' runs
    assert pool.ledger.live("iris", Stage.PRODUCTION).id == history[-1].id
    assert pool.served_sha() == history[-1].release.package_sha256


def test_a_rollback_runs_as_a_kubernetes_job(pool: Pool) -> None:
    v1, v2 = pool.ledger.releases("iris")[:2]
    _run(pool, "rollback/iris", pool.v1)
    assert pool.ledger.live("iris", Stage.PRODUCTION).id == v1.id
    assert pool.served_sha() == v1.release.package_sha256 != v2.release.package_sha256


def _documented_rules() -> list[dict[str, Any]]:
    doc = (REPO / "docs" / "targets" / "kubernetes.md").read_text()
    block = re.search(r"## RBAC the kubeconfig's user needs.*?```yaml\n(.*?)```", doc, re.S)
    assert block, "docs/targets/kubernetes.md has no RBAC block"
    return list(yaml.safe_load(block.group(1))["rules"])


def test_the_jobs_ran_with_only_the_rbac_the_target_documents(pool: Pool) -> None:
    api = config.new_client_from_config(str(KUBECONFIG))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    pods = core.list_namespaced_pod(pool.flows_ns, label_selector="prefect.io/flow-run-id").items
    assert len(pods) == 3 and {p.spec.service_account_name for p in pods} == {SERVICE_ACCOUNT}
    subject = (SERVICE_ACCOUNT, pool.flows_ns)

    def bound(bindings: list[Any]) -> list[Any]:
        return [b for b in bindings if any((s.name, s.namespace) == subject for s in b.subjects or [])]

    def rules(kind: str, name: str) -> list[dict[str, Any]]:
        role = rbac.read_cluster_role(name) if kind == "ClusterRole" else None
        assert role is not None, f"bound to a {kind} {name}"
        return [{"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs} for r in role.rules]

    granted = {(b.metadata.namespace, b.role_ref.name): rules(b.role_ref.kind, b.role_ref.name)
               for b in bound(rbac.list_role_binding_for_all_namespaces().items)}  # fmt: skip
    assert set(granted) == {(ns, "slipway-target") for ns in pool.stage_ns.values()}
    assert all(r == _documented_rules() for r in granted.values())
    (cluster,) = bound(rbac.list_cluster_role_binding().items)
    assert rules("ClusterRole", cluster.role_ref.name) == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}
    ]
    user = f"system:serviceaccount:{pool.flows_ns}:{SERVICE_ACCOUNT}"
    auth = client.AuthorizationV1Api(api)

    def can(verb: str, resource: str, ns: str = "", group: str = "") -> bool:
        attributes = {"verb": verb, "resource": resource, "namespace": ns, "group": group}
        groups = ["system:serviceaccounts", "system:authenticated"]
        review = {"spec": {"user": user, "groups": groups, "resourceAttributes": attributes}}
        return bool(auth.create_subject_access_review(review).status.allowed)

    assert can("create", "deployments", pool.stage_ns["staging"], "apps")
    assert not can("create", "deployments", "kube-system", "apps")
    assert not can("get", "secrets", pool.flows_ns)  # not even its own credentials' Secret
    assert not can("create", "namespaces") and not can("list", "nodes")
