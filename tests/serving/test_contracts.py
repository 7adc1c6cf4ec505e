"""The serving image under each platform's container contract: the real image on the real engine.

One image of the example model is built (and pushed) per session by tests/images.image_of (the
packages are the session's, tests/targets/fixtures.py, so the contract tests of the targets reuse it),
then started the way each platform starts it, with nothing changed but the platform's arguments
and environment: Cloud Run (PORT, K_SERVICE; SIGTERM, then SIGKILL 10 s later), SageMaker
(``IMAGE serve``, port 8080, model data in /opt/ml/model), Vertex AI (AIP_* variables), Lambda
(under the Runtime Interface Emulator, which scripts/images/lambda-rie.sh fetches) and a plain run.
All containers start at once (their model loads overlap) with ports published on 127.0.0.1 only,
and are removed afterwards, whatever happened. Everything is judged by requests.

Needs the Docker Engine, the registry on 127.0.0.1:5000, the base image and the emulator
(scripts/services/test-services.sh); without them the tests fail, never skip.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
from docker.models.containers import Container

from serving.contract import EXIT_CONFIG, SAGEMAKER_MODEL_DIR
from slipway.http import tls
from tasks.package import ModelPackage

pytestmark = pytest.mark.docker

RIE = Path("/var/tmp/slipway/lambda-rie/aws-lambda-rie")
BASE = "slipway/python-base:bookworm"
KEY = "contract-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
INVOKE = "/2015-03-31/functions/function/invocations"
VERTEX = {
    "AIP_MODE": "PREDICTION",
    "AIP_HTTP_PORT": "8080",
    "AIP_HEALTH_ROUTE": "/v1/endpoints/7/deployedModels/42",
    "AIP_PREDICT_ROUTE": "/v1/endpoints/7/deployedModels/42:predict",
    "AIP_DEPLOYED_MODEL_ID": "42",
}
SIX_MB = 6 * 1024 * 1024


@dataclass
class Run:
    """How a platform starts the image: its arguments, environment, mounts, the port it publishes."""

    command: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    port: int | None = 8000
    entrypoint: list[str] | None = None
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Started:
    name: str
    container: Container
    url: str  # http://127.0.0.1:<published port>, "" when nothing is published

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")


# --- session: the engine, two packages of the example model, one image ---------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"the Docker Engine does not answer ({exc}): run scripts/services/test-services.sh")
    if not client.images.list(name=BASE):
        pytest.fail(f"image {BASE} is missing: run scripts/images/base.sh")
    if not RIE.is_file():
        pytest.fail(f"the Lambda Runtime Interface Emulator {RIE} is missing: run scripts/images/lambda-rie.sh")
    yield client
    client.close()


@pytest.fixture(scope="module")
def packages(packaged: dict[str, ModelPackage]) -> dict[str, ModelPackage]:
    return {"v1": packaged["v1"], "v2": packaged["v2"]}


@pytest.fixture(scope="module")
def image(engine: docker.DockerClient, packages: dict[str, ModelPackage]) -> str:
    from tests.images import image_of

    return str(image_of(packages["v1"].dir))


@pytest.fixture(scope="module")
def model_data(packages: dict[str, ModelPackage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v2 as SageMaker extracts model.tar.gz into /opt/ml/model: package.json and the artifact."""
    v2 = packages["v2"]
    out = tmp_path_factory.mktemp("sagemaker-model-data") / "model"
    out.mkdir()
    for name in ("package.json", v2.manifest.artifact_file):
        shutil.copyfile(v2.dir / name, out / name)
        (out / name).chmod(0o644)  # readable by the image's user
    out.chmod(0o755)
    return out


# --- every container, started at once -----------------------------------------------------------


def _runs(model_data: Path) -> dict[str, Run]:
    cloud_run = {"PORT": "9090", "K_SERVICE": "iris", "K_REVISION": "iris-00001-abc", "K_CONFIGURATION": "iris"}
    no_auth = {"SLIPWAY_AUTH": "none"}  # as the SageMaker and Vertex targets set it: their platforms authenticate
    key = {"SLIPWAY_API_KEY": KEY}
    opt_ml_model = {str(model_data): {"bind": str(SAGEMAKER_MODEL_DIR), "mode": "ro"}}
    rie = {str(RIE): {"bind": "/aws-lambda-rie", "mode": "ro"}}
    image_command = ["python3", "-m", "serving", "--package", "/srv/package"]  # the image's own start command
    return {
        "cloudrun": Run(environment={**cloud_run, **key}, port=9090),
        "sagemaker": Run(["serve"], no_auth, 8080),
        "sagemaker-v2": Run(["serve"], no_auth, 8080, volumes=opt_ml_model),
        "vertex": Run(environment={**VERTEX, **no_auth}, port=8080),
        "lambda": Run(image_command, key, 8080, entrypoint=["/aws-lambda-rie"], volumes=rie),
        "plain": Run(environment=key),
        # no key and no SLIPWAY_AUTH=none: no contract serves unauthenticated by default
        "refused-sagemaker": Run(["serve"], port=None),
        "refused-vertex": Run(environment=VERTEX, port=None),
        "refused-cloudrun": Run(environment=cloud_run, port=None),
    }


def _start(client: docker.DockerClient, image: str, name: str, run: Run, tag: str) -> Started:
    container = client.containers.run(
        image, run.command, entrypoint=run.entrypoint, environment=run.environment, volumes=run.volumes,
        ports={f"{run.port}/tcp": ("127.0.0.1", None)} if run.port else {},
        name=f"slipway-contract-{name}-{tag}", labels={"io.slipway.test": "contracts"}, detach=True,
    )  # fmt: skip
    url = ""
    if run.port:
        container.reload()
        url = f"http://127.0.0.1:{container.attrs['NetworkSettings']['Ports'][f'{run.port}/tcp'][0]['HostPort']}"
    return Started(name, container, url)


@pytest.fixture(scope="module")
def running(engine: docker.DockerClient, image: str, model_data: Path) -> Iterator[dict[str, Started]]:
    tag = uuid.uuid4().hex[:8]
    runs = _runs(model_data)
    started: dict[str, Started] = {}
    try:
        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {name: pool.submit(_start, engine, image, name, run, tag) for name, run in runs.items()}
            errors = []
            for name, future in futures.items():
                try:
                    started[name] = future.result()
                except docker.errors.DockerException as exc:
                    errors.append(f"{name}: {exc}")
            assert not errors, errors
        yield started
    finally:
        for container in engine.containers.list(all=True, filters={"name": f"slipway-contract-.*-{tag}"}):
            container.remove(force=True)


def wait_answering(started: Started, path: str, timeout: float = 90) -> httpx.Response:
    """Poll ``path`` until it answers 200; fail with the container's output if it exits or never does."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(started.url + path, timeout=5, verify=tls())
            if response.status_code == 200:
                return response
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        started.container.reload()
        if started.container.status in ("exited", "dead"):
            break
        time.sleep(0.2)
    pytest.fail(f"{started.name}: {path} did not answer 200 (last: {last}); output:\n{started.logs()}")


def golden(package: ModelPackage) -> tuple[list[Any], list[Any]]:
    samples = package.manifest.samples
    return [s.input for s in samples], [s.output for s in samples]


# --- Cloud Run ------------------------------------------------------------------------------------


def test_cloud_run_listens_on_port(running: dict[str, Started], packages: dict[str, ModelPackage]) -> None:
    run = running["cloudrun"]
    assert wait_answering(run, "/health").json() == {"status": "ok"}
    inputs, outputs = golden(packages["v1"])
    assert httpx.post(f"{run.url}/predict", json={"inputs": inputs}, headers=AUTH).json() == {"predictions": outputs}
    assert httpx.post(f"{run.url}/predict", json={"inputs": inputs}).status_code == 401
    assert "on 0.0.0.0:9090" in run.logs() and "graceful shutdown 8 s" in run.logs()


# --- SageMaker ------------------------------------------------------------------------------------


def test_sagemaker_serve(running: dict[str, Started], packages: dict[str, ModelPackage]) -> None:
    run = running["sagemaker"]
    assert wait_answering(run, "/ping").json() == {"status": "ready"}
    inputs, outputs = golden(packages["v1"])
    response = httpx.post(f"{run.url}/invocations", json={"inputs": inputs})
    assert response.status_code == 200 and response.json() == {"predictions": outputs}
    assert httpx.post(f"{run.url}/predict", json={"inputs": inputs}).json() == {"predictions": outputs}
    assert httpx.get(f"{run.url}/metadata").json()["sha256"] == packages["v1"].sha256  # the baked-in package


def test_sagemaker_accepts_a_6_mb_body(running: dict[str, Started], packages: dict[str, ModelPackage]) -> None:
    run = running["sagemaker"]
    wait_answering(run, "/ping")
    inputs, outputs = golden(packages["v1"])
    per_copy = len(json.dumps(inputs)[1:-1]) + 2
    copies = (SIX_MB - 20) // per_copy
    body = json.dumps({"inputs": inputs * copies}).encode()
    body += b" " * (SIX_MB - len(body))  # exactly 6 MiB, SageMaker's limit for a request
    assert len(body) == SIX_MB
    response = httpx.post(f"{run.url}/invocations", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)  # fmt: skip
    assert response.status_code == 200, response.text[:300]
    assert response.json()["predictions"] == outputs * copies


def test_sagemaker_serves_the_model_data_in_opt_ml_model(
    running: dict[str, Started], packages: dict[str, ModelPackage]
) -> None:
    run = running["sagemaker-v2"]
    wait_answering(run, "/ping")
    v2 = packages["v2"]
    assert v2.sha256 != packages["v1"].sha256
    assert httpx.get(f"{run.url}/metadata").json()["sha256"] == v2.sha256
    inputs, outputs = golden(v2)
    assert httpx.post(f"{run.url}/invocations", json={"inputs": inputs}).json() == {"predictions": outputs}
    assert f"serving the SageMaker model data in {SAGEMAKER_MODEL_DIR}" in run.logs()


# --- Vertex AI ------------------------------------------------------------------------------------


def test_vertex_routes_and_instances(running: dict[str, Started], packages: dict[str, ModelPackage]) -> None:
    run = running["vertex"]
    assert wait_answering(run, VERTEX["AIP_HEALTH_ROUTE"]).json() == {"status": "ready"}
    inputs, outputs = golden(packages["v1"])
    predict = run.url + VERTEX["AIP_PREDICT_ROUTE"]
    response = httpx.post(predict, json={"instances": inputs, "parameters": {}})
    assert response.status_code == 200 and response.json() == {"predictions": outputs}
    wrong = httpx.post(predict, json={"inputs": inputs})
    assert wrong.status_code == 400 and '"instances"' in wrong.json()["error"]


# --- Lambda ---------------------------------------------------------------------------------------


def function_url_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """What a Lambda function URL delivers (payload format 2.0)."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.lambda-url.eu-west-1.on.aws", **(headers or {})},
        "requestContext": {"http": {"method": method, "path": path, "sourceIp": "203.0.113.9"}, "stage": "$default"},
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False,
    }  # fmt: skip


def invoke(run: Started, event: Any) -> Any:
    response = httpx.post(run.url + INVOKE, json=event, timeout=90)  # the first invoke is the cold start
    assert response.status_code == 200, response.text
    return response.json()


def test_lambda_under_the_runtime_interface_emulator(
    running: dict[str, Started], packages: dict[str, ModelPackage]
) -> None:
    run = running["lambda"]
    inputs, outputs = golden(packages["v1"])
    for row, want in zip(inputs, outputs, strict=True):
        assert invoke(run, {"features": row}) == {"prediction": want}
    assert invoke(run, {"inputs": inputs}) == {"predictions": outputs}
    answer = invoke(run, function_url_event("POST", "/predict", {"inputs": inputs}, {"x-api-key": KEY}))
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"predictions": outputs}
    denied = invoke(run, function_url_event("POST", "/predict", {"inputs": inputs}))
    assert denied["statusCode"] == 401 and "API key" in json.loads(denied["body"])["error"]
    assert invoke(run, function_url_event("GET", "/health"))["statusCode"] == 200
    metadata = invoke(run, function_url_event("GET", "/metadata", headers={"authorization": f"Bearer {KEY}"}))
    assert json.loads(metadata["body"])["sha256"] == packages["v1"].sha256
    logs = run.logs()
    assert logs.count("slipway-serving: lambda: loaded iris") == 1, logs  # once per cold start
    assert "init " in logs and " ms;" in logs


def test_plain_run_serves_http_without_the_runtime_client(
    running: dict[str, Started], packages: dict[str, ModelPackage]
) -> None:
    run = running["plain"]
    assert wait_answering(run, "/ready").json() == {"status": "ready"}
    inputs, outputs = golden(packages["v1"])
    assert httpx.post(f"{run.url}/predict", json={"inputs": inputs}, headers=AUTH).json() == {"predictions": outputs}
    assert httpx.post(f"{run.url}/predict", json={"inputs": inputs}).status_code == 401
    assert "lambda" not in run.logs() and "on 0.0.0.0:8000" in run.logs()


# --- every contract -------------------------------------------------------------------------------


@pytest.mark.fault("bad input")
@pytest.mark.parametrize("name", ["refused-sagemaker", "refused-vertex", "refused-cloudrun"])
def test_no_contract_serves_without_a_key_by_default(running: dict[str, Started], name: str) -> None:
    run = running[name]
    assert run.container.wait(timeout=60)["StatusCode"] == EXIT_CONFIG
    assert "SLIPWAY_API_KEY is not set" in run.logs()


def test_the_image_health_check_follows_each_contract(running: dict[str, Started]) -> None:
    """Docker's HEALTHCHECK (every 10 s) probes each contract's own port and route."""
    names = ["cloudrun", "sagemaker", "sagemaker-v2", "vertex", "plain"]
    deadline, status = time.monotonic() + 45, {}
    while time.monotonic() < deadline:
        for name in names:
            running[name].container.reload()
        status = {name: running[name].container.attrs["State"]["Health"]["Status"] for name in names}
        if set(status.values()) == {"healthy"}:
            return
        time.sleep(0.5)
    pytest.fail(f"not all healthy: {status}")


def test_cloud_run_sigterm_under_load(running: dict[str, Started], packages: dict[str, ModelPackage]) -> None:
    """``docker stop -t 10`` is Cloud Run's shutdown: SIGTERM, then SIGKILL 10 s later.

    Client threads send back to back on keep-alive connections (one of them 20,000-row batches, so
    requests are in flight when the signal lands). Like Cloud Run's front end, a client sends no new
    request to a server that answered ``Connection: close`` (it is draining). Every request sent must
    get its predictions, every client must have been answered after the SIGTERM (that answer says
    ``Connection: close``), and the server must exit 0 well before the SIGKILL.
    """
    run = running["cloudrun"]
    wait_answering(run, "/health")
    inputs, outputs = golden(packages["v1"])
    big = (inputs * (20_000 // len(inputs) + 1))[:20_000]
    big_out = (outputs * (20_000 // len(outputs) + 1))[:20_000]
    results: list[str] = []
    drained: list[bool] = []  # per client: it ended on a draining answer (else: on the stop flag)
    stop = threading.Event()

    def client(rows: list[Any], want: list[Any]) -> None:
        with httpx.Client(base_url=run.url, headers=AUTH, timeout=15) as http:
            while not stop.is_set():
                try:
                    response = http.post("/predict", json={"inputs": rows})
                except httpx.HTTPError as exc:
                    results.append(f"{type(exc).__name__}: {exc}")
                    return
                ok = response.status_code == 200 and response.json() == {"predictions": want}
                results.append("ok" if ok else f"{response.status_code} {response.text[:100]}")
                if response.headers.get("connection") == "close":
                    drained.append(True)
                    return
            drained.append(False)

    threads = [threading.Thread(target=client, args=(inputs, outputs)) for _ in range(4)]
    threads.append(threading.Thread(target=client, args=(big, big_out)))
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)  # steady load
        before = len(results)
        started = time.monotonic()
        run.container.stop(timeout=10)
        stopped_in = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    run.container.reload()
    state = run.container.attrs["State"]
    failures = [r for r in results if r != "ok"]
    assert not failures, failures[:5]
    assert drained == [True] * len(threads), drained
    assert before > 50, f"only {before} requests before the stop: no steady load"
    assert state["ExitCode"] == 0 and not state["OOMKilled"], state
    assert stopped_in < 5, f"the server took {stopped_in:.1f} s to stop; Cloud Run kills it at 10 s"
    assert "Traceback" not in run.logs()
