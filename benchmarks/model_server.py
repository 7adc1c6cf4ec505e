"""Benchmark Slipway's model server: its limits, ablations, and MLflow's scoring server, in one run.

    .venv/bin/python benchmarks/model_server.py [--duration 10] [--skip-mlflow]

Logistic regression on iris, 1-row JSON POSTs, wrk with 1 thread and 64 connections pinned to
core 1, servers pinned to core 0 (``taskset``), a warm-up run before each measured run. All servers
start first and are measured in ``--repeat`` rounds (each round visits every row, so load from the
rest of a shared machine spreads over all rows); the table shows each row's median round. Rows:

  in-process     the predict path without HTTP (JSON bytes → parse → validate → predict → JSON
                 bytes via ``SlipwayApp.predict_bytes``), and its parts: ``model.predict`` alone,
                 and everything but ``model.predict``: the ceiling for any server of this model
  empty ASGI     a raw ASGI app that reads the body and returns a constant, on the same uvicorn
                 setup as Slipway: the ceiling of the web stack
  slipway        ``python -m serving`` (the real launcher, auth on)
  ablations      Slipway's app with uvicorn's access log on; with asyncio + h11 instead of
                 uvloop + httptools; with asyncio only (httptools kept); the same model behind a
                 FastAPI sync endpoint (pydantic body)
  mlflow         ``mlflow models serve --env-manager local`` on the same model (its defaults)
  2 workers      ``python -m serving --workers 2`` unpinned: shares both cores with wrk

Latency percentiles come from wrk's own histogram (its ``done()`` hook, since ``--latency`` prints
no p95). CPU columns are CPU-seconds per wall-second (1.00 = one core busy); "CPU µs/req" is the
server's CPU time per request (for in-process rows: per call); "other CPU" is what the rest of the
machine used meanwhile (noise: on a shared machine req/s moves with it). Every process started
here is stopped in a ``finally``. Raw results go to benchmarks/out/serving-<time>.json.
"""

import argparse
import contextlib
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

from common import PY, ROOT, SERVER_CPU, bench_env, busy_seconds, cpu_seconds, free_port, run_wrk, started

KEY = "bench-key-0123456789abcdef"
ROW = [5.1, 3.5, 1.4, 0.2]
INPROCESS = "in-process: JSON → parse → predict → JSON"
EMPTY = "empty raw-ASGI endpoint (same uvicorn setup)"
SLIPWAY = "slipway (python -m serving, auth on)"
ACCESS_LOG = "ablation: + uvicorn access log"
ASYNCIO = "ablation: asyncio loop + h11"
ASYNCIO_HTTPTOOLS = "ablation: asyncio loop (httptools kept)"
FASTAPI = "ablation: FastAPI sync endpoint"
MLFLOW = "mlflow models serve (defaults: 1 worker)"
WORKERS = "slipway --workers 2 (unpinned)"
ORDER = [INPROCESS, EMPTY, SLIPWAY, ACCESS_LOG, ASYNCIO, ASYNCIO_HTTPTOOLS, FASTAPI, MLFLOW, WORKERS]


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
class Result:
    name: str
    rps: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    requests: int = 0
    server_cpu: float | None = None
    client_cpu: float | None = None
    other_cpu: float | None = None  # CPU used by the rest of the machine during the run: noise
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """A started server to measure: wrk goes to ``url`` with ``body``."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    body: str
    key: str | None
    pinned: bool
    note: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


def measure_once(target: Target, args: argparse.Namespace, workdir: Path) -> None:
    run_wrk(target.url, target.body, target.key, args.warmup, workdir, target.pinned)
    cpu0, busy0 = cpu_seconds(target.proc.pid), busy_seconds()
    stats = run_wrk(target.url, target.body, target.key, args.duration, workdir, target.pinned)
    stats["server_cpu"] = (cpu_seconds(target.proc.pid) - cpu0) / args.duration
    other = (busy_seconds() - busy0) / args.duration - stats["server_cpu"] - stats["client_cpu"]
    stats["other_cpu"] = max(0.0, other)
    target.runs.append(stats)
    print(f"  {target.name}: {stats['rps']:,.0f} req/s, p95 {stats['p95_ms']:.2f} ms, errors {stats['errors']}, "
          f"other CPU {stats['other_cpu']:.2f}", flush=True)  # fmt: skip


def summarize(target: Target) -> Result:
    """The median run (by req/s) of a target."""
    runs = target.runs
    stats = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    raw = stats.pop("raw")
    note = target.note
    if len(runs) > 1:
        rates = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        note = f"{note}; runs {rates}".lstrip("; ")
    return Result(target.name, note=note, extra={"wrk": raw, "runs": [r["rps"] for r in runs]}, **stats)


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


def inprocess(package: Path, seconds: float) -> dict[str, float]:
    """Calls per second of the predict path and its parts, in this (pinned) process."""
    import numpy as np
    import orjson
    import sklearn

    from serving import create_app
    from serving.model import configure_sklearn

    app = create_app(package, api_key=None)
    configure_sklearn()
    body = orjson.dumps({"inputs": ROW})
    matrix = np.asarray([ROW], dtype=np.float64)
    predict = app.model.model.predict
    fixed = predict(matrix)
    to_matrix = app.model.to_matrix

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

    out = {
        "full": rate(lambda: app.predict_bytes(body), seconds / 2),
        "predict_only": rate(lambda: predict(matrix), seconds / 4),
        "without_predict": rate(without_predict, seconds / 8),
    }
    with sklearn.config_context(assume_finite=False):
        out["predict_only_finite_check"] = rate(lambda: predict(matrix), seconds / 8)
    return out


def save_mlflow_model(package: Path, out: Path) -> None:
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    from serving.model import load_package

    model = load_package(package).model
    x = np.asarray([ROW], dtype=np.float64)
    mlflow.sklearn.save_model(model, str(out), signature=infer_signature(x, model.predict(x)))


# --- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Result]:
    """Start every server first, then measure in rounds (each round visits every target), so that
    load from the rest of a shared machine spreads over all rows instead of hitting one; the table
    shows each row's median round."""
    kit = _kit()
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    body = json.dumps({"inputs": ROW})
    me = [PY, str(Path(__file__).resolve())]
    wanted = [name for name in ORDER if args.only.lower() in name.lower()]
    if args.skip_mlflow or not shutil.which("mlflow", path=str(Path(PY).parent)):
        wanted = [name for name in wanted if name != MLFLOW]
    if not importlib.util.find_spec("fastapi"):
        wanted = [name for name in wanted if name != FASTAPI]
    try:
        model, rows = kit.train_iris(work / "train")
        package = kit.build_package(work / "pkg", model, rows)
        with contextlib.ExitStack() as stack:

            def start(name: str, cmd: list[str], url: str, body: str, key: str | None, pinned: bool = True,
                      env: dict[str, str] | None = None, note: str = "") -> Target:  # fmt: skip
                if pinned:
                    cmd = ["taskset", "-c", SERVER_CPU, *cmd]
                proc = stack.enter_context(started(cmd, url, body, key, work, re.sub(r"\W+", "-", name), env=env))
                return Target(name, proc, url, body, key, pinned, note)

            def variant(name: str, which: str, note: str) -> Target:
                port = free_port()
                cmd = [*me, "--serve", which, "--package", str(package), "--port", str(port)]
                url = f"http://127.0.0.1:{port}/predict"
                return start(name, cmd, url, body, None if which == "empty" else KEY, note=note)

            def slipway(name: str, workers: int, pinned: bool, note: str = "") -> Target:
                port = free_port()
                cmd = [PY, "-m", "serving", "--package", str(package), "--port", str(port), "--workers", str(workers)]
                url = f"http://127.0.0.1:{port}/predict"
                return start(name, cmd, url, body, KEY, pinned, bench_env(SLIPWAY_API_KEY=KEY), note)

            def mlflow() -> Target:
                mlflow_dir = work / "mlflow-model"
                subprocess.run([*me, "--save-mlflow", str(package), str(mlflow_dir)], cwd=work, env=bench_env(),
                               check=True, capture_output=True, timeout=300)  # fmt: skip
                port = free_port()
                cmd = [str(Path(PY).parent / "mlflow"), "models", "serve", "-m", str(mlflow_dir), "--env-manager",
                       "local", "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
                url = f"http://127.0.0.1:{port}/invocations"
                return start(MLFLOW, cmd, url, json.dumps({"inputs": [ROW]}), None,
                             note="uvicorn, access log on (its default)")  # fmt: skip

            starters: dict[str, Callable[[], Target]] = {
                EMPTY: lambda: variant(EMPTY, "empty", "web stack ceiling"),
                SLIPWAY: lambda: slipway(SLIPWAY, 1, True),
                ACCESS_LOG: lambda: variant(ACCESS_LOG, "access-log", "access lines to a file"),
                ASYNCIO: lambda: variant(ASYNCIO, "asyncio-h11", "instead of uvloop + httptools"),
                ASYNCIO_HTTPTOOLS: lambda: variant(ASYNCIO_HTTPTOOLS, "asyncio-httptools", "instead of uvloop"),
                FASTAPI: lambda: variant(FASTAPI, "fastapi", "pydantic body, threadpool"),
                MLFLOW: mlflow,
                WORKERS: lambda: slipway(WORKERS, 2, False, "shares both cores with wrk"),
            }
            print("starting servers", flush=True)
            targets = [starters[name]() for name in wanted if name in starters]
            inproc_runs: list[dict[str, float]] = []
            for round_ in range(args.repeat):
                print(f"round {round_ + 1}/{args.repeat}", flush=True)
                if INPROCESS in wanted:
                    inproc_runs.append(_inprocess_run(me, package, args))
                for target in targets:
                    measure_once(target, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = _inprocess_results(inproc_runs) if inproc_runs else []
    return results + [summarize(t) for t in targets]


def _inprocess_run(me: list[str], package: Path, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", SERVER_CPU, *me, "--inprocess", str(package), "--duration", str(args.duration)],
        cwd=ROOT, env=bench_env(), capture_output=True, text=True, check=True, timeout=args.duration * 3 + 60,
    )  # fmt: skip
    rates: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  in-process: {rates['full']:,.0f}/s full path, {rates['predict_only']:,.0f}/s predict", flush=True)
    return rates


def _inprocess_results(runs: list[dict[str, float]]) -> list[Result]:
    median = sorted(runs, key=lambda r: r["full"])[len(runs) // 2]
    finite = f"{median['predict_only_finite_check']:,.0f}/s with sklearn's finite check"
    rates = ", ".join(f"{r['full']:,.0f}" for r in runs)
    note = f"SlipwayApp.predict_bytes, no HTTP; runs {rates}"
    return [
        Result(INPROCESS, median["full"], extra={"runs": runs}, note=note),
        Result("in-process: model.predict alone", median["predict_only"], note=finite),
        Result("in-process: everything but model.predict", median["without_predict"],
               note="orjson + validation + np.asarray + orjson"),
    ]  # fmt: skip


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

    lines = [
        "| variant | req/s | p50 ms | p95 ms | p99 ms | errors | server CPU | CPU µs/req | wrk CPU | other CPU "
        "| note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        errors = r.errors if r.p50_ms is not None else ""
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {ms(r.p50_ms)} | {ms(r.p95_ms)} | {ms(r.p99_ms)} | {errors} | "
            f"{cpu(r.server_cpu)} | {per_request(r)} | {cpu(r.client_cpu)} | {cpu(r.other_cpu)} | {r.note} |"
        )
    ours = next((r for r in results if r.name == SLIPWAY), None)
    theirs = next((r for r in results if r.name == MLFLOW), None)
    limit = next((r for r in results if r.name == INPROCESS), None)
    if ours and theirs:
        lines.append(f"\nslipway / mlflow: {ours.rps / theirs.rps:.1f}x req/s; p95 {ours.p95_ms:.2f} ms vs "
                     f"{theirs.p95_ms:.2f} ms")  # fmt: skip
    if ours and limit:
        lines.append(f"slipway / in-process: {100 * ours.rps / limit.rps:.0f} %")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all servers; the median is shown")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--only", default="", help="run only variants whose name contains this (e.g. slipway)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--package", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inprocess", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save-mlflow", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_variant(args.serve, args.package, args.port)
    if args.inprocess:
        print(json.dumps(inprocess(args.inprocess, args.duration)))
        return None
    if args.save_mlflow:
        return save_mlflow_model(*args.save_mlflow)
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results = run(args)
    print(f"\n{started_at}; {platform.node()}; {os.cpu_count()} cores; duration {args.duration:g} s, "
          f"64 connections, wrk -t1\n")  # fmt: skip
    print(table(results))
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"serving-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": started_at, "args": vars(args) | {"package": None, "inprocess": None},
                               "results": [asdict(r) for r in results]}, indent=2, default=str))  # fmt: skip
    print(f"\nraw results: {out}")
    return None


if __name__ == "__main__":
    main()
