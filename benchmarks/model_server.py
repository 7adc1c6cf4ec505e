"""Benchmark Slipway's model server against MLflow's and BentoML's, and against its own limits, in one run.

    .venv/bin/python benchmarks/model_server.py [--duration 10] [--repeat 3] [--skip-mlflow] [--skip-bentoml]
                                                [--only NAME] [--baseline REV] [--models iris,gbm] [--rows 1,100]
                                                [--connections 8,64]

Two models: the example model (logistic regression on iris, 4 features) and a heavier one
(gradient boosting, 100 trees of depth 3, on 20 features of sklearn's ``make_classification``, 4,000
samples, fixed seeds), each packaged like the tests package models. A matrix of cells: model × rows
per request (1, 100) × wrk connections (8, 64). Every server gets the same JSON body,
``{"inputs": [[...], ...]}``, rows drawn from the model's training data, and every server's answer
is checked against ``model.predict`` before anything is measured. wrk runs with 1 thread pinned to
core 1, servers pinned to core 0 (``taskset``; their child processes inherit it). All servers start
first and are measured in ``--repeat`` rounds (each round visits every row, so load from the rest
of a shared machine spreads over all rows); a warm-up run precedes each server's first run in a
round; the tables show each row's median round. Rows of a cell:

  in-process     the predict path without HTTP (JSON bytes → parse → validate → predict → JSON
                 bytes via ``SlipwayApp.predict_bytes``) for the cell's body, and its parts:
                 ``model.predict`` alone, and everything but ``model.predict``: the ceiling for any
                 server of this model (measured once per body, shown at both connection levels)
  empty ASGI     a raw ASGI app that reads the body and returns a constant, on the same uvicorn
                 setup as Slipway: the ceiling of the web stack for that body
  slipway        ``python -m serving`` (the real launcher, auth on; adaptive batching on, its default for
                 scikit-learn models, no added wait); after each run its /metrics say how many requests
                 shared a predict call ("req/call")
  unbatched      the same server with ``--batching off``: one predict call per request, measured next to it
  baseline       (with ``--baseline REV``) the same launcher and model on the ``serving/`` code of git
                 revision REV: a change to the server measured against what it replaces, in one run
  sagemaker      (iris, 64 connections) the same server under SageMaker's contract (``serve``): POST
                 /invocations with the same body
  vertex         (iris, 64 connections) under Vertex AI's contract (AIP_* variables): POST to
                 AIP_PREDICT_ROUTE with ``{"instances": [...]}``
  ablations      (iris, 1 row, 64 connections only) Slipway's app with uvicorn's access log on; with
                 asyncio + h11 instead of uvloop + httptools; with asyncio only (httptools kept);
                 the same model behind a FastAPI sync endpoint (pydantic body)
  mlflow         ``mlflow models serve --env-manager local`` on the same model, saved with a tensor
                 signature so that it takes the same body; its defaults: 1 uvicorn worker, access log on
  bentoml        ``bentoml serve`` of benchmarks/bentoml_service.py (one sync ``@bentoml.api`` taking
                 an ndarray) on the same artifact; its defaults: 1 worker, sync calls on 1 thread,
                 access log and Prometheus metrics on
  bentoml batch  the same with BentoML's adaptive batching on (``batchable=True``, at most 256 rows per
                 call like Slipway's, its default latency bound)
  2 workers      (1 row, 64 connections) ``python -m serving --workers 2`` unpinned: shares both cores
                 with wrk (also unpinned)

Latency percentiles (p50, p95, p99, p99.9) and the slowest request come from wrk's own histogram
(its ``done()`` hook, since ``--latency`` prints no p95). "rows/s" is req/s × rows per request. CPU
columns are CPU-seconds per wall-second (1.00 = one core busy); "CPU µs/req" is the server's CPU
time per request (for in-process rows: per call); "other CPU" is what the rest of the machine used
meanwhile (noise: on a shared machine req/s moves with it). A summary per cell follows the tables,
then the batching summary (batched against unbatched measured next to each other in every round,
the in-process one-call rate, MLflow and BentoML with batching; the tail as p99 and p99.9 over p95;
where a batched request's CPU goes). MLflow's and BentoML's usage telemetry is turned off. Every
process started here is stopped in a ``finally``. Raw results go to
benchmarks/out/serving-<time>.json.
"""

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from common import PY, ROOT, SERVER_CPU, bench_env, busy_seconds, cpu_seconds, run_wrk, started

from slipway.ports import free_port

KEY = "bench-key-0123456789abcdef"
BATCH = 100
MODELS = {
    "iris": "iris: LogisticRegression, 4 features",
    "gbm": "gbm: GradientBoostingClassifier, 20 features, 100 trees of depth 3",
}
ROWS = (1, BATCH)
CONNECTIONS = (8, 64)
CELLS = [(model, rows, connections) for model in MODELS for rows in ROWS for connections in CONNECTIONS]
INPROCESS = "in-process: JSON → parse → predict → JSON"
EMPTY = "empty raw-ASGI endpoint (same uvicorn setup)"
SLIPWAY = "slipway (python -m serving, auth on)"
UNBATCHED = "slipway --batching off"
BASELINE = "slipway baseline (serving/ of --baseline REV)"
SAGEMAKER = "slipway, SageMaker contract: POST /invocations"
VERTEX = "slipway, Vertex contract: POST AIP_PREDICT_ROUTE, instances"
ACCESS_LOG = "ablation: + uvicorn access log"
ASYNCIO = "ablation: asyncio loop + h11"
ASYNCIO_HTTPTOOLS = "ablation: asyncio loop (httptools kept)"
FASTAPI = "ablation: FastAPI sync endpoint"
MLFLOW = "mlflow models serve (defaults: 1 worker)"
BENTOML = "bentoml serve (defaults: 1 worker)"
BENTOML_BATCHED = "bentoml serve, adaptive batching on"
WORKERS = "slipway --workers 2 (unpinned)"
PREDICT_BATCH = "in-process: model.predict of a 64-row call"
ORDER = [INPROCESS, EMPTY, SLIPWAY, UNBATCHED, BASELINE, SAGEMAKER, VERTEX, ACCESS_LOG, ASYNCIO, ASYNCIO_HTTPTOOLS,
         FASTAPI, MLFLOW, BENTOML, BENTOML_BATCHED, WORKERS]  # fmt: skip
ONLY_IN = {  # rows measured in some cells only; every other row is in every cell
    **{name: [("iris", 1, 64)] for name in (ACCESS_LOG, ASYNCIO, ASYNCIO_HTTPTOOLS, FASTAPI)},
    **{name: [("iris", 1, 64), ("iris", BATCH, 64)] for name in (SAGEMAKER, VERTEX)},
    WORKERS: [("iris", 1, 64), ("gbm", 1, 64)],  # the heavier model is where a second worker should matter
}
VERTEX_ROUTE = "/v1/endpoints/1/deployedModels/2:predict"
VERTEX_ENV = {"AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2", "AIP_PREDICT_ROUTE": VERTEX_ROUTE}
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true", "DO_NOT_TRACK": "true"}


# --- helpers ---------------------------------------------------------------------------------------


def _kit() -> ModuleType:
    """tests/serving/conftest.py: the package builder the tests use."""
    spec = importlib.util.spec_from_file_location("slipway_serving_kit", ROOT / "tests" / "serving" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Model:
    """A packaged model, the rows its requests carry and the predictions they must get back."""

    name: str
    package: Path
    batch: list[list[float]]
    expected: list[Any]

    def body(self, rows: int, key: str = "inputs") -> str:
        return json.dumps({key: self.batch[:rows]})


def _batch(x: Any) -> list[list[float]]:
    """BATCH rows of a training set in random order (fixed seed): mixed classes, so the answer check means something."""
    import numpy as np

    rows: list[list[float]] = x[np.random.default_rng(0).permutation(len(x))[:BATCH]].tolist()
    return rows


def build_models(kit: ModuleType, work: Path) -> dict[str, Model]:
    import numpy as np
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import GradientBoostingClassifier

    iris, samples = kit.train_iris(work / "iris-train")
    iris_batch = _batch(load_iris().data)
    x, y = make_classification(n_samples=4000, n_features=20, n_informative=10, random_state=0)
    gbm = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    gbm_batch = _batch(x)
    packages = {
        "iris": kit.build_package(work / "iris-pkg", iris, samples),
        "gbm": kit.build_package(work / "gbm-pkg", gbm, gbm_batch[:5], name="gbm", feature_names=None),
    }
    return {
        name: Model(name, packages[name], batch, model.predict(np.asarray(batch, dtype=np.float64)).tolist())
        for name, model, batch in (("iris", iris, iris_batch), ("gbm", gbm, gbm_batch))
    }


def cells(name: str) -> list[tuple[str, int, int]]:
    return ONLY_IN.get(name, CELLS)


@dataclass
class Result:
    name: str
    rps: float
    model: str = ""
    rows: int = 1
    connections: int | None = None  # None: in-process, the same at every connection level
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    errors: int = 0
    requests: int = 0
    server_cpu: float | None = None
    client_cpu: float | None = None
    other_cpu: float | None = None  # CPU used by the rest of the machine during the run: noise
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Server:
    """A started server: wrk POSTs to ``url``."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    key: str | None
    pinned: bool
    note: str = ""
    body_key: str = "inputs"  # the JSON key of the rows on this server's route
    metrics_url: str = ""  # Slipway's /metrics: how many requests shared each predict call


@dataclass
class Target:
    """One row of one cell: a server, the body for a model and a row count, a connection count."""

    server: Server
    model: str
    rows: int
    connections: int
    body: str
    warm_up: bool = False  # the server's first target in a round
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model}, {self.rows} row(s), {self.connections} conn: {self.server.name}"


def baseline_code(rev: str, work: Path) -> Path:
    """``serving/`` as of git revision ``rev``, written under ``work``: the directory for PYTHONPATH.

    Checked: ``python -m serving`` run from ``work`` with that PYTHONPATH imports this copy, not the
    tree's (which the editable install also offers).
    """
    out = work / "baseline"
    if (out / "serving").is_dir():
        return out
    git = ["git", "-C", str(ROOT)]
    names = subprocess.run([*git, "ls-tree", "--name-only", f"{rev}:serving"], check=True, capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    (out / "serving").mkdir(parents=True)
    for name in names:
        if name.endswith(".py"):
            code = subprocess.run([*git, "show", f"{rev}:serving/{name}"], check=True, capture_output=True).stdout
            (out / "serving" / name).write_bytes(code)
    probe = subprocess.run([PY, "-c", "import serving; print(serving.__file__)"], cwd=work, check=True, text=True,
                           capture_output=True, env=bench_env(PYTHONPATH=str(out))).stdout.strip()  # fmt: skip
    if Path(probe).parent != out / "serving":
        raise RuntimeError(f"the baseline server would import {probe}, not the code of {rev} in {out}")
    return out


def check_answer(target: Target, expected: list[Any]) -> None:
    """The server must answer the body with the model's predictions, not just with 200."""
    import httpx

    server = target.server
    headers = {"Content-Type": "application/json"}
    if server.key:
        headers["Authorization"] = f"Bearer {server.key}"
    answer = httpx.post(server.url, content=target.body, headers=headers, timeout=30).json()
    got = answer["predictions"] if isinstance(answer, dict) else answer  # BentoML answers the bare array
    if got != expected:
        raise RuntimeError(f"{target.label} answered {str(got)[:200]}, expected {str(expected)[:200]}")


def batch_counts(server: Server) -> tuple[float, float] | None:
    """(requests batched, predict calls) so far, from Slipway's /metrics; None without batching."""
    import httpx

    if not server.metrics_url:
        return None
    text = httpx.get(server.metrics_url, headers={"Authorization": f"Bearer {server.key}"}, timeout=10).text
    found = dict(line.split() for line in text.splitlines() if line.startswith("slipway_batch_requests_"))
    if "slipway_batch_requests_sum" not in found:
        return None
    return float(found["slipway_batch_requests_sum"]), float(found["slipway_batch_requests_count"])


def measure_once(target: Target, args: argparse.Namespace, workdir: Path) -> None:
    server = target.server
    if target.warm_up:
        run_wrk(server.url, target.body, server.key, args.warmup, workdir, server.pinned, target.connections)
    batches0 = batch_counts(server)
    cpu0, busy0 = cpu_seconds(server.proc.pid), busy_seconds()
    stats = run_wrk(server.url, target.body, server.key, args.duration, workdir, server.pinned, target.connections)
    stats["server_cpu"] = (cpu_seconds(server.proc.pid) - cpu0) / args.duration
    other = (busy_seconds() - busy0) / args.duration - stats["server_cpu"] - stats["client_cpu"]
    stats["other_cpu"] = max(0.0, other)
    batches1 = batch_counts(server)
    if batches0 and batches1 and batches1[1] > batches0[1]:
        stats["per_call"] = (batches1[0] - batches0[0]) / (batches1[1] - batches0[1])
    target.runs.append(stats)
    per_call = f", {stats['per_call']:.1f} req/call" if "per_call" in stats else ""
    print(f"  {target.label}: {stats['rps']:,.0f} req/s, p95 {stats['p95_ms']:.2f} ms, p99.9 {stats['p999_ms']:.2f} "
          f"ms, errors {stats['errors']}, other CPU {stats['other_cpu']:.2f}{per_call}", flush=True)  # fmt: skip


def summarize(target: Target) -> Result:
    """The median run (by req/s) of a target."""
    runs = target.runs
    stats = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    raw = stats.pop("raw")
    per_call = stats.pop("per_call", None)
    note = target.server.note
    if per_call is not None:
        note = f"{per_call:.1f} req/call; {note}".rstrip("; ")
    if len(runs) > 1:
        rates = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        note = f"{note}; runs {rates}".lstrip("; ")
    extra = {"wrk": raw, "runs": [r["rps"] for r in runs], "cpu_us": [1e6 * r["server_cpu"] / r["rps"] for r in runs],
             "p99": [r["p99_ms"] for r in runs], "per_call": per_call}  # fmt: skip
    return Result(target.server.name, model=target.model, rows=target.rows, connections=target.connections,
                  note=note, extra=extra, **stats)  # fmt: skip


SIDE_BY_SIDE = (SLIPWAY, UNBATCHED, BASELINE, SAGEMAKER, VERTEX)  # one server's variants, compared with each other


def paired(targets: list[Target], round_: int) -> list[Target]:
    """The round's visiting order: the variants of SIDE_BY_SIDE one after the other for each cell,
    in an order rotated every round, so that their ratios compare runs under the same machine load."""
    twins: dict[tuple[str, int, int], list[Target]] = {}
    for target in targets:
        if target.server.name in SIDE_BY_SIDE[1:]:
            twins.setdefault((target.model, target.rows, target.connections), []).append(target)
    order: list[Target] = []
    for target in targets:
        if target.server.name in SIDE_BY_SIDE[1:]:
            continue
        group = [target]
        if target.server.name == SLIPWAY:
            group += twins.get((target.model, target.rows, target.connections), [])
        shift = round_ % len(group)
        order += group[shift:] + group[:shift]
    return order


# --- server variants (run as `benchmarks/model_server.py --serve VARIANT ...`; ablations live here) -----


async def _empty_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    body = b'{"predictions":[0]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _fastapi_app(package: Path, key: str) -> Any:
    import numpy as np
    from fastapi import FastAPI, Header, HTTPException
    from pydantic import BaseModel

    from serving.model import load_package

    model = load_package(package).model

    class PredictRequest(BaseModel):
        inputs: list[list[float]] | list[float]

    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        if authorization != f"Bearer {key}":
            raise HTTPException(status_code=401, detail="missing or wrong API key")
        rows = request.inputs if request.inputs and isinstance(request.inputs[0], list) else [request.inputs]
        return {"predictions": model.predict(np.asarray(rows, dtype=np.float64)).tolist()}

    return app


def serve_variant(variant: str, package: Path, port: int) -> None:
    import uvicorn

    from serving import create_app
    from serving.model import configure_sklearn

    settings: dict[str, Any] = {
        "loop": "uvloop", "http": "httptools", "ws": "none", "lifespan": "off", "access_log": False,
        "log_level": "warning", "proxy_headers": False, "server_header": False,
    }  # fmt: skip
    app: Any
    if variant == "empty":
        app = _empty_app
    elif variant == "fastapi":
        app = _fastapi_app(package, KEY)
        settings["lifespan"] = "on"
    else:
        app = create_app(package, api_key=KEY)
        if variant == "access-log":
            settings.update(access_log=True, log_level="info")  # uvicorn logs access lines at INFO
        elif variant == "asyncio-h11":
            settings.update(loop="asyncio", http="h11")
        elif variant == "asyncio-httptools":
            settings.update(loop="asyncio")
        else:
            raise SystemExit(f"unknown variant {variant}")
    configure_sklearn()
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **settings)).run()


def inprocess(package: Path, body_file: Path, seconds: float) -> dict[str, float]:
    """Calls per second of the predict path for one request body and its parts, in this (pinned) process."""
    import numpy as np
    import orjson
    import sklearn

    from serving import create_app
    from serving.model import configure_sklearn

    app = create_app(package, api_key=None)
    configure_sklearn()
    body = body_file.read_bytes()
    to_matrix = app.model.to_matrix
    matrix = to_matrix(orjson.loads(body)["inputs"])
    predict = app.model.model.predict
    fixed = predict(matrix)

    def without_predict() -> None:
        to_matrix(orjson.loads(body)["inputs"])
        orjson.dumps({"predictions": fixed}, option=orjson.OPT_SERIALIZE_NUMPY)

    def rate(fn: Any, budget: float) -> float:
        for _ in range(200):
            fn()
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget:
            for _ in range(200):
                fn()
            n += 200
        return n / elapsed

    batch = np.resize(matrix, (64, matrix.shape[1]))  # what one call of a 64-request batch of 1-row requests gets
    out = {
        "full": rate(lambda: app.predict_bytes(body), seconds / 2),
        "predict_only": rate(lambda: predict(matrix), seconds / 4),
        "without_predict": rate(without_predict, seconds / 8),
        "predict_64": rate(lambda: predict(batch), seconds / 8),
    }
    with sklearn.config_context(assume_finite=False):
        out["predict_only_finite_check"] = rate(lambda: predict(matrix), seconds / 8)
    return out


def save_mlflow_model(package: Path, out: Path) -> None:
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    from serving.model import load_package

    loaded = load_package(package)
    x = np.asarray([sample.input for sample in loaded.manifest.samples], dtype=np.float64)
    # a tensor signature (from an ndarray): /invocations then takes {"inputs": [[...], ...]} like the others.
    # MLflow's default format, skops, refuses to load gradient boosting's trees unless their type is trusted.
    signature = infer_signature(x, loaded.model.predict(x))
    mlflow.sklearn.save_model(loaded.model, str(out), signature=signature,
                              skops_trusted_types=["sklearn.tree._tree.Tree"])  # fmt: skip


# --- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Result]:
    """Start every server first, check its answers, then measure in rounds (each round visits every
    target), so that load from the rest of a shared machine spreads over all rows instead of hitting
    one; the tables show each row's median round."""
    kit = _kit()
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    me = [PY, str(Path(__file__).resolve())]
    wanted = [name for name in ORDER if args.only.lower() in name.lower()]
    if args.skip_mlflow or not shutil.which("mlflow", path=str(Path(PY).parent)):
        wanted = [name for name in wanted if name != MLFLOW]
    if args.skip_bentoml or not shutil.which("bentoml", path=str(Path(PY).parent)):
        wanted = [name for name in wanted if name not in (BENTOML, BENTOML_BATCHED)]
    if not args.baseline:
        wanted = [name for name in wanted if name != BASELINE]
    if not importlib.util.find_spec("fastapi"):
        wanted = [name for name in wanted if name != FASTAPI]
    try:
        print("training and packaging the models", flush=True)
        models = build_models(kit, work)
        with contextlib.ExitStack() as stack:

            def start(name: str, model: Model, cmd: list[str], url: str, key: str | None, pinned: bool = True,
                      env: dict[str, str] | None = None, note: str = "",
                      body_key: str = "inputs") -> Server:  # fmt: skip
                if pinned:
                    cmd = ["taskset", "-c", SERVER_CPU, *cmd]
                log = re.sub(r"\W+", "-", f"{model.name} {name}")
                proc = stack.enter_context(started(cmd, url, model.body(1, body_key), key, work, log, env=env))
                return Server(name, proc, url, key, pinned, note, body_key)

            def variant(name: str, which: str, note: str, model: Model) -> Server:
                port = free_port()
                cmd = [*me, "--serve", which, "--package", str(model.package), "--port", str(port)]
                url = f"http://127.0.0.1:{port}/predict"
                return start(name, model, cmd, url, None if which == "empty" else KEY, note=note)

            def slipway(name: str, workers: int, pinned: bool, model: Model, note: str = "", path: str = "/predict",
                        extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                        body_key: str = "inputs") -> Server:  # fmt: skip
                port = free_port()
                cmd = [PY, "-m", "serving", "--package", str(model.package), "--port", str(port),
                       "--workers", str(workers), *extra]  # fmt: skip
                url = f"http://127.0.0.1:{port}{path}"
                server_env = bench_env(SLIPWAY_API_KEY=KEY, **(env or {}))
                server = start(name, model, cmd, url, KEY, pinned, server_env, note, body_key)
                if workers == 1:  # with more, each /metrics is one worker's
                    server.metrics_url = f"http://127.0.0.1:{port}/metrics"
                return server

            def baseline(model: Model) -> Server:
                env = {"PYTHONPATH": str(baseline_code(args.baseline, work))}
                return slipway(BASELINE, 1, True, model, f"serving/ of {args.baseline}", env=env)

            def mlflow(model: Model) -> Server:
                mlflow_dir = work / f"{model.name}-mlflow-model"
                subprocess.run([*me, "--save-mlflow", str(model.package), str(mlflow_dir)], cwd=work,
                               env=bench_env(**NO_TELEMETRY), check=True, capture_output=True, timeout=300)  # fmt: skip
                port = free_port()
                cmd = [str(Path(PY).parent / "mlflow"), "models", "serve", "-m", str(mlflow_dir), "--env-manager",
                       "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
                url = f"http://127.0.0.1:{port}/invocations"
                return start(MLFLOW, model, cmd, url, None, env=bench_env(**NO_TELEMETRY),
                             note="uvicorn, access log on (its default)")  # fmt: skip

            def bentoml(model: Model, batched: bool = False) -> Server:
                port = free_port()
                service = "SklearnModelBatched" if batched else "SklearnModel"
                cmd = [str(Path(PY).parent / "bentoml"), "serve", f"bentoml_service:{service}", "--working-dir",
                       str(Path(__file__).resolve().parent), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
                env = bench_env(SLIPWAY_BENCH_ARTIFACT=str(model.package / "model.joblib"),
                                BENTOML_HOME=str(work / f"bentoml-home-{service}"), **NO_TELEMETRY)  # fmt: skip
                url = f"http://127.0.0.1:{port}/predict"
                if batched:
                    note = "batchable=True, max_batch_size 256; access log on"
                    return start(BENTOML_BATCHED, model, cmd, url, None, env=env, note=note)
                return start(BENTOML, model, cmd, url, None, env=env, note="access log on, sync API on 1 thread")

            starters: dict[str, Callable[[Model], Server]] = {
                EMPTY: lambda model: variant(EMPTY, "empty", "web stack ceiling", model),
                SLIPWAY: lambda model: slipway(SLIPWAY, 1, True, model, "batching on (auto)"),
                UNBATCHED: lambda model: slipway(
                    UNBATCHED, 1, True, model, "one predict call per request", extra=("--batching", "off")
                ),
                BASELINE: baseline,
                SAGEMAKER: lambda model: slipway(
                    SAGEMAKER, 1, True, model, "python -m serving ... serve", "/invocations", ("serve",)
                ),
                VERTEX: lambda model: slipway(
                    VERTEX, 1, True, model, "AIP_* routes", VERTEX_ROUTE, env=VERTEX_ENV, body_key="instances"
                ),
                ACCESS_LOG: lambda model: variant(ACCESS_LOG, "access-log", "access lines to a file", model),
                ASYNCIO: lambda model: variant(ASYNCIO, "asyncio-h11", "instead of uvloop + httptools", model),
                ASYNCIO_HTTPTOOLS: lambda model: variant(
                    ASYNCIO_HTTPTOOLS, "asyncio-httptools", "instead of uvloop", model
                ),
                FASTAPI: lambda model: variant(FASTAPI, "fastapi", "pydantic body, threadpool", model),
                MLFLOW: mlflow,
                BENTOML: bentoml,
                BENTOML_BATCHED: lambda model: bentoml(model, batched=True),
                WORKERS: lambda model: slipway(WORKERS, 2, False, model, "shares both cores with wrk"),
            }
            print("starting servers", flush=True)
            targets: list[Target] = []
            for name in wanted:
                if name not in starters:
                    continue
                for model in dict.fromkeys(m for m, _, _ in cells(name)):
                    server = starters[name](models[model])
                    mine = [Target(server, model, rows, connections, models[model].body(rows, server.body_key))
                            for m, rows, connections in cells(name) if m == model]  # fmt: skip
                    mine[0].warm_up = True
                    targets += mine
            print("checking every answer against model.predict", flush=True)
            for target in targets:
                if target.server.name != EMPTY:
                    check_answer(target, models[target.model].expected[: target.rows])
            inproc_runs: dict[tuple[str, int], list[dict[str, float]]] = {}
            for round_ in range(args.repeat):
                print(f"round {round_ + 1}/{args.repeat}", flush=True)
                if INPROCESS in wanted:
                    for name, rows in dict.fromkeys((m, r) for m, r, _ in CELLS):
                        runs = inproc_runs.setdefault((name, rows), [])
                        runs.append(_inprocess_run(me, models[name], rows, work, args))
                for target in paired(targets, round_):
                    measure_once(target, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = [r for (model, rows), runs in inproc_runs.items() for r in _inprocess_results(model, rows, runs)]
    return results + [summarize(t) for t in targets]


def _inprocess_run(me: list[str], model: Model, rows: int, work: Path, args: argparse.Namespace) -> dict[str, float]:
    body_file = work / f"{model.name}-{rows}.json"
    body_file.write_text(model.body(rows))
    out = subprocess.run(
        ["taskset", "-c", SERVER_CPU, *me, "--inprocess", str(model.package), str(body_file), "--duration",
         str(args.duration)],
        cwd=ROOT, env=bench_env(), capture_output=True, text=True, check=True, timeout=args.duration * 3 + 60,
    )  # fmt: skip
    rates: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  in-process, {model.name}, {rows} row(s): {rates['full']:,.0f}/s full path, "
          f"{rates['predict_only']:,.0f}/s predict", flush=True)  # fmt: skip
    return rates


def _inprocess_results(model: str, rows: int, runs: list[dict[str, float]]) -> list[Result]:
    median = sorted(runs, key=lambda r: r["full"])[len(runs) // 2]
    finite = f"{median['predict_only_finite_check']:,.0f}/s with sklearn's finite check"
    rates = ", ".join(f"{r['full']:,.0f}" for r in runs)
    note = f"SlipwayApp.predict_bytes, no HTTP; runs {rates}"
    return [
        Result(INPROCESS, median["full"], model, rows, extra={"runs": runs}, note=note),
        Result("in-process: model.predict alone", median["predict_only"], model, rows, note=finite),
        Result("in-process: everything but model.predict", median["without_predict"], model, rows,
               note="orjson + validation + np.asarray + orjson"),
        Result(PREDICT_BATCH, median["predict_64"], model, rows,
               note=f"calls/s; {64 * median['predict_64']:,.0f} rows/s, {1e6 / (64 * median['predict_64']):.1f} µs "
                    "per row"),
    ]  # fmt: skip


def _find(results: list[Result], name: str, cell: tuple[str, int, int]) -> Result | None:
    model, rows, connections = cell
    return next((r for r in results if r.name == name and r.model == model and r.rows == rows
                 and r.connections in (None, connections)), None)  # fmt: skip


def _title(cell: tuple[str, int, int]) -> str:
    model, rows, connections = cell
    return f"{MODELS[model]}; {rows} row{'s' if rows > 1 else ''} per request; {connections} connections"


def table(results: list[Result]) -> str:
    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    def cpu(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    def per_request(r: Result) -> str:
        """Server CPU time per request: less sensitive to a busy machine than req/s."""
        if r.p50_ms is None:  # in-process: one call per 1/rate seconds of one core
            return f"{1e6 / r.rps:,.0f}"
        return "" if not r.server_cpu else f"{1e6 * r.server_cpu / r.rps:,.0f}"

    lines: list[str] = []
    for cell in CELLS:
        rows = [r for r in results if (r.model, r.rows) == cell[:2] and r.connections in (None, cell[2])]
        if not rows:
            continue
        lines += [
            f"\n**{_title(cell)}**\n",
            "| variant | req/s | rows/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors | server CPU "
            "| CPU µs/req | wrk CPU | other CPU | note |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            errors = r.errors if r.p50_ms is not None else ""
            lines.append(
                f"| {r.name} | {r.rps:,.0f} | {r.rps * r.rows:,.0f} | {ms(r.p50_ms)} | {ms(r.p95_ms)} | "
                f"{ms(r.p99_ms)} | {ms(r.p999_ms)} | {ms(r.max_ms)} | {errors} | {cpu(r.server_cpu)} | "
                f"{per_request(r)} | {cpu(r.client_cpu)} | {cpu(r.other_cpu)} | {r.note} |"
            )
    return "\n".join(lines).lstrip("\n")


def summary(results: list[Result]) -> str:
    """Per cell: Slipway against MLflow, BentoML and the in-process rate; the goals are ≥ 4× MLflow's
    req/s at a lower p95 and ≥ 50 % of the in-process rate. Then what a second worker adds."""

    def ratio(ours: Result, theirs: Result | None) -> str:
        return "" if theirs is None else f"{ours.rps / theirs.rps:.1f}x"

    def p95(r: Result | None) -> str:
        return "" if r is None or r.p95_ms is None else f"{r.p95_ms:.2f}"

    lines = [
        "| cell | slipway req/s | ÷ mlflow | p95 slipway / mlflow ms | ÷ bentoml | p95 bentoml ms "
        "| % of in-process | goals met |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cell in CELLS:
        ours = _find(results, SLIPWAY, cell)
        if ours is None:
            continue
        mlflow, bento, limit = (_find(results, name, cell) for name in (MLFLOW, BENTOML, INPROCESS))
        share = "" if limit is None else f"{100 * ours.rps / limit.rps:.0f} %"
        goals = ""
        if mlflow and limit and ours.p95_ms is not None and mlflow.p95_ms is not None:
            met = ours.rps >= 4 * mlflow.rps and ours.p95_ms < mlflow.p95_ms and ours.rps >= limit.rps / 2
            goals = "yes" if met else "no"
        model, rows, connections = cell
        lines.append(
            f"| {model}, {rows} row(s), {connections} conn | {ours.rps:,.0f} | {ratio(ours, mlflow)} | "
            f"{p95(ours)} / {p95(mlflow)} | {ratio(ours, bento)} | {p95(bento)} | {share} | {goals} |"
        )
    for cell in ONLY_IN[WORKERS]:
        one, two = _find(results, SLIPWAY, cell), _find(results, WORKERS, cell)
        if one and two:
            lines.append(
                f"\n{_title(cell)}: 2 workers (unpinned, wrk on the same 2 cores) {two.rps:,.0f} req/s vs 1 pinned "
                f"worker {one.rps:,.0f} ({ratio(two, one)}); p95 {p95(two)} vs {p95(one)} ms; server CPU "
                f"{two.server_cpu or 0:.2f} + wrk CPU {two.client_cpu or 0:.2f} (1 worker: {one.server_cpu or 0:.2f} "
                f"+ {one.client_cpu or 0:.2f})"
            )
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _per_round(ours: Result, theirs: Result, what: str = "runs") -> tuple[float, str]:
    """The median over rounds of ours ÷ theirs measured in the same round, and each round's ratio."""
    ratios = [a / b for a, b in zip(ours.extra[what], theirs.extra[what], strict=True)]
    return _median(ratios), ", ".join(f"{r:.3f}" for r in ratios)


NO_WORSE = 0.95  # paired runs of one round move by a few per cent on this machine: "no worse" means ≥ 0.95


def batching_summary(results: list[Result]) -> str:
    """Batched against unbatched (measured next to each other in every round), against the in-process
    one-call rate, MLflow and BentoML with its adaptive batching; the tail; where a batched request's
    server CPU goes. Goals (the issue): at 64 connections ≥ 2× the in-process one-call rate, ≥ 10×
    MLflow's req/s, p99 no worse than unbatched; at 8 no worse than unbatched; p99 ≤ 2× p95 and
    p99.9 ≤ 4× p95."""

    def x(a: float, b: float) -> str:
        return f"{a / b:.2f}×"

    lines = [
        "| cell | batched req/s | unbatched req/s | ÷ unbatched (per round) | ÷ in-process one-call | ÷ MLflow "
        "| ÷ BentoML batching | p95 / p99 / p99.9 / max ms, batched | same, unbatched | p99 ÷ p95, p99.9 ÷ p95 "
        "| req/call | goals |",
        "|---|---:|---:|---|---:|---:|---:|---|---|---|---:|---|",
    ]
    notes: list[str] = []
    for cell in CELLS:
        ours, off = _find(results, SLIPWAY, cell), _find(results, UNBATCHED, cell)
        if ours is None or off is None or ours.p95_ms is None or off.p95_ms is None:
            continue
        limit, mlflow, bento = (_find(results, name, cell) for name in (INPROCESS, MLFLOW, BENTOML_BATCHED))
        rate, rates = _per_round(ours, off)
        p99_ratio = _median([a / b for a, b in zip(ours.extra["p99"], off.extra["p99"], strict=True)])
        tail99, tail999 = (ours.p99_ms or 0) / ours.p95_ms, (ours.p999_ms or 0) / ours.p95_ms
        goals = []
        if cell[2] >= 64:
            if limit:
                goals.append(("≥ 2× in-process", ours.rps >= 2 * limit.rps))
            if mlflow:
                goals.append(("≥ 10× MLflow", ours.rps >= 10 * mlflow.rps))
            goals.append(("p99 ≤ unbatched", p99_ratio <= 1 / NO_WORSE))
        else:
            goals.append(("req/s no worse", rate >= NO_WORSE))
            goals.append(("p99 no worse", p99_ratio <= 1 / NO_WORSE))
        goals += [("p99 ≤ 2× p95", tail99 <= 2), ("p99.9 ≤ 4× p95", tail999 <= 4)]
        verdict = "; ".join(f"{name}: {'yes' if ok else '**no**'}" for name, ok in goals)
        per_call = ours.extra.get("per_call")
        model, rows, connections = cell

        def tail(r: Result) -> str:
            return " / ".join(f"{v or 0:.1f}" for v in (r.p95_ms, r.p99_ms, r.p999_ms, r.max_ms))

        lines.append(
            f"| {model}, {rows} row(s), {connections} conn | {ours.rps:,.0f} | {off.rps:,.0f} | {rate:.2f}× ({rates}) "
            f"| {x(ours.rps, limit.rps) if limit else ''} | {x(ours.rps, mlflow.rps) if mlflow else ''} "
            f"| {x(ours.rps, bento.rps) if bento else ''} | {tail(ours)} | {tail(off)} "
            f"| {tail99:.2f}, {tail999:.2f} | {per_call or 0:.1f} | {verdict} |"
        )
        empty, one, batch = (_find(results, name, cell) for name in (EMPTY, "in-process: model.predict alone",
                                                                     PREDICT_BATCH))  # fmt: skip
        if rows == 1 and empty and empty.server_cpu and one and batch and per_call and ours.server_cpu:
            server = 1e6 * ours.server_cpu / ours.rps
            stack = 1e6 * empty.server_cpu / empty.rps
            t1, t64 = 1e6 / one.rps, 1e6 / batch.rps  # one predict call of 1 row, of 64 rows (in-process)
            call = t1 + (t64 - t1) * (per_call - 1) / 63  # a call of per_call rows, between the two
            rest = server - stack - call / per_call
            notes.append(
                f"- {model}, {connections} conn: {server:,.0f} µs of server CPU per batched request (unbatched "
                f"{1e6 * (off.server_cpu or 0) / off.rps:,.0f}) = the web stack {stack:,.0f} (uvicorn, httptools, "
                f"uvloop and the kernel: the empty endpoint) + its share of a predict call {call / per_call:,.1f} (a "
                f"call of {per_call:.0f} rows ≈ {call:,.0f} µs in-process; 1 row {t1:,.0f}, 64 rows {t64:,.0f}) + the "
                f"rest {rest:,.0f} (the app: auth, parse, validate, queue, split, encode; cache effects)"
            )
    if notes:
        lines += ["", "Where a batched request's server CPU goes:", "", *notes]
    return "\n".join(lines)


def contract_summary(results: list[Result]) -> str:
    """The same server measured against itself: the baseline revision's code on /predict, and the
    SageMaker and Vertex routes; ratios of runs measured next to each other in the same round,
    median over rounds. Server CPU per request moves less with the rest of the machine than req/s."""
    lines: list[str] = []
    pairs = [(cell, _find(results, SLIPWAY, cell), _find(results, BASELINE, cell)) for cell in CELLS]
    if any(base for _, _, base in pairs):
        lines += [
            "| cell | slipway req/s | baseline req/s | req/s ÷ baseline (per round) | CPU µs/req slipway / baseline "
            "(÷, per round) | p95 ms slipway / baseline |",
            "|---|---:|---:|---|---|---|",
        ]
        for (model, rows, connections), ours, base in pairs:
            if ours is None or base is None:
                continue
            rate, rates = _per_round(ours, base)
            cpu, cpus = _per_round(ours, base, "cpu_us")
            lines.append(
                f"| {model}, {rows} row(s), {connections} conn | {ours.rps:,.0f} | {base.rps:,.0f} | {rate:.3f} "
                f"({rates}) | {_median(ours.extra['cpu_us']):,.0f} / {_median(base.extra['cpu_us']):,.0f} "
                f"({cpu:.3f}: {cpus}) | {ours.p95_ms or 0:.2f} / {base.p95_ms or 0:.2f} |"
            )
    contract_cells = [c for c in ONLY_IN[SAGEMAKER] if _find(results, SLIPWAY, c)]
    if any(_find(results, name, c) for name in (SAGEMAKER, VERTEX) for c in contract_cells):
        lines += [
            "",
            "| cell | /predict req/s | SageMaker /invocations req/s (÷ /predict; CPU µs/req ÷) "
            "| Vertex route req/s (÷ /predict; CPU µs/req ÷) |",
            "|---|---:|---:|---:|",
        ]
        for cell in contract_cells:
            ours = _find(results, SLIPWAY, cell)
            assert ours is not None
            shown = []
            for name in (SAGEMAKER, VERTEX):
                other = _find(results, name, cell)
                if other is None:
                    shown.append("")
                    continue
                rate, cpu = _per_round(other, ours)[0], _per_round(other, ours, "cpu_us")[0]
                shown.append(f"{other.rps:,.0f} ({rate:.3f}; {cpu:.3f})")
            model, rows, connections = cell
            lines.append(f"| {model}, {rows} row(s), {connections} conn | {ours.rps:,.0f} | {' | '.join(shown)} |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("scikit-learn", "uvicorn", "mlflow", "bentoml"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server and round")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all servers; the median is shown")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-bentoml", action="store_true")
    parser.add_argument("--only", default="", help="run only variants whose name contains this (e.g. slipway)")
    parser.add_argument("--baseline", default="", metavar="REV", help="also run the serving/ code of this revision")
    parser.add_argument("--models", default=",".join(MODELS), help="models to measure (iris,gbm)")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)), help="rows per request (1,100)")
    parser.add_argument("--connections", default=",".join(map(str, CONNECTIONS)), help="wrk connections (8,64)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--package", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inprocess", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save-mlflow", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_variant(args.serve, args.package, args.port)
    if args.inprocess:
        print(json.dumps(inprocess(*args.inprocess, args.duration)))
        return None
    if args.save_mlflow:
        return save_mlflow_model(*args.save_mlflow)
    chosen = (args.models.split(","), [int(r) for r in args.rows.split(",")],
              [int(c) for c in args.connections.split(",")])  # fmt: skip
    CELLS[:] = [c for c in CELLS if c[0] in chosen[0] and c[1] in chosen[1] and c[2] in chosen[2]]
    for name, only in ONLY_IN.items():
        ONLY_IN[name] = [c for c in only if c in CELLS]
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    started_at, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.monotonic()
    results = run(args)
    elapsed = time.monotonic() - t0
    versions = _versions()
    print(f"\n{started_at}; {platform.node()}; {os.cpu_count()} cores; duration {args.duration:g} s, "
          f"{args.repeat} round(s), wrk -t1; run took {elapsed / 60:.1f} min; "
          f"{', '.join(f'{k} {v}' for k, v in versions.items())}\n")  # fmt: skip
    print(table(results))
    print(f"\n{summary(results)}")
    if batched := batching_summary(results):
        print(f"\n{batched}")
    if extra := contract_summary(results):
        print(f"\n{extra}")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": started_at, "seconds": round(elapsed), "versions": versions,
                               "args": vars(args) | {"package": None, "inprocess": None},
                               "results": [asdict(r) for r in results]}, indent=2, default=str))  # fmt: skip
    print(f"\nraw results: {out}")
    return None


if __name__ == "__main__":
    main()
