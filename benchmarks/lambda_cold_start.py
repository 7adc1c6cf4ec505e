"""Benchmark the example model's Lambda image: cold start against warm requests, and the image's size.

    .venv/bin/python benchmarks/lambda_cold_start.py [--colds 5] [--warms 200] [--memory-mb 1769]

Needs scripts/services/test-services.sh (Docker Engine, base images, the Lambda Runtime Interface Emulator
in /var/tmp/slipway/lambda-rie). The example model (iris) is trained, packaged and built into its serving
image exactly as the release flow does (tasks.package, tasks.image); that image then runs as Lambda runs
it: the RIE as entry point and the image's own entry point as the runtime, under a memory limit with CPU
in proportion (1,769 MB = 1 vCPU), a read-only root and /tmp a tmpfs, as the tests' data plane does.

Each of ``--colds`` rounds starts a fresh container (a new execution environment) and sends it a function
URL event (GET /metadata, payload 2.0): that first answer is the cold start, timed from the request, and it
carries the init the server reports (``x-slipway-cold-start``: process start to the runtime client's start;
the model's load and self-check). Then ``--warms`` direct invokes with the chapter's ``{"features": ROW}``
on one warm environment, one at a time. Container start (``docker run``) is timed apart: on Lambda it is
the platform's part of a cold start, not the image's. The image's size is the engine's (uncompressed:
what Lambda's 10 GB limit counts). Everything the run makes is removed. Raw results go to
benchmarks/out/lambda-cold-start-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import docker.errors  # noqa: E402
import httpx  # noqa: E402

from examples.iris.train import train  # noqa: E402
from serving.contract import COLD_START_HEADER  # noqa: E402
from slipway.spec import ReleaseSpec  # noqa: E402
from tasks.image import build  # noqa: E402
from tasks.package import package_model  # noqa: E402

RIE = Path("/var/tmp/slipway/lambda-rie/aws-lambda-rie")
INVOKE = "/2015-03-31/functions/function/invocations"
_HTTP_EVENT = {"version": "2.0", "rawPath": "/metadata", "rawQueryString": "", "headers": {}, "isBase64Encoded": False,
               "requestContext": {"http": {"method": "GET", "path": "/metadata"}}}  # fmt: skip


def _spec(model: Path) -> ReleaseSpec:
    stage = {"kind": "docker", "port": 9999}
    return ReleaseSpec.model_validate({
        "model": {"name": "iris", "source": str(model), "samples": str(model.parent / "samples.json")},
        "image": {"repository": "127.0.0.1:5000/slipway-bench/iris-lambda"}, "staging": stage, "production": stage,
    })  # fmt: skip


def _run(client: docker.DockerClient, image: str, command: list[str], memory_mb: int) -> tuple[Any, str, float]:
    started = time.perf_counter()
    container = client.containers.run(
        image, command=command, entrypoint=["/aws-lambda-rie"], detach=True, read_only=True,
        tmpfs={"/tmp": "size=512m"}, mem_limit=f"{memory_mb}m", nano_cpus=int(min(memory_mb / 1769, 2) * 1e9),
        volumes={str(RIE): {"bind": "/aws-lambda-rie", "mode": "ro"}},
        environment={"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb), "AWS_LAMBDA_FUNCTION_TIMEOUT": "300",
                     "SLIPWAY_AUTH": "none"},
        labels={"slipway-bench": "lambda-cold-start"},
    )  # fmt: skip
    container.reload()  # its address on the engine's bridge: a published port would accept before the RIE listens
    address = container.attrs["NetworkSettings"]["IPAddress"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the RIE listens at once; the runtime starts at the first invoke
        with contextlib.suppress(OSError), socket.create_connection((address, 8080), timeout=0.2):
            break
        time.sleep(0.02)
    return container, f"http://{address}:8080{INVOKE}", (time.perf_counter() - started) * 1000


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--colds", type=int, default=5)
    parser.add_argument("--warms", type=int, default=200)
    parser.add_argument("--memory-mb", type=int, default=1769)
    args = parser.parse_args()
    if not RIE.is_file():
        print(f"{RIE} is missing: run scripts/services/test-services.sh", file=sys.stderr)
        return 2
    client = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        work = Path(tmp)
        spec = _spec(train(work / "v1"))
        package = package_model(spec, work / "packages")
        image = build(spec, package, log=lambda _: None)
        inspected = client.api.inspect_image(image)
        command = [*(inspected["Config"].get("Entrypoint") or []), *(inspected["Config"].get("Cmd") or [])]
        size_mb = inspected["Size"] / 1e6
        row = json.dumps({"features": [6.3, 3.3, 6.0, 2.5]})  # the chapter's event shape
        colds: list[dict[str, float]] = []
        warm: list[float] = []
        failed: list[str] = []
        try:
            for i in range(args.colds + 1):
                container, url, start_ms = _run(client, image, command, args.memory_mb)
                try:
                    sent = time.perf_counter()
                    try:
                        answer = httpx.post(url, content=json.dumps(_HTTP_EVENT), timeout=300).json()
                    except httpx.HTTPError as exc:  # reported with the environment's log, and not counted
                        failed.append(f"{type(exc).__name__}: {exc}")
                        print(f"round {i}: {failed[-1]}\n{container.logs().decode(errors='replace')[-1500:]}")
                        continue
                    first_ms = (time.perf_counter() - sent) * 1000
                    assert answer["statusCode"] == 200, answer
                    colds.append({"container_start_ms": start_ms, "first_request_ms": first_ms,
                                  "init_ms": float(answer["headers"][COLD_START_HEADER])})  # fmt: skip
                    if i == args.colds:  # the last environment, warm now: the warm requests
                        with httpx.Client(timeout=30) as http:
                            for _ in range(args.warms):
                                sent = time.perf_counter()
                                resp = http.post(url, content=row)
                                warm.append((time.perf_counter() - sent) * 1000)
                                assert "prediction" in resp.json(), resp.text
                finally:
                    container.remove(force=True)
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(image, force=True)
    colds = colds[1:] or colds  # the first round also warms the engine's page cache for the image: not counted
    firsts = [c["first_request_ms"] for c in colds]
    inits = [c["init_ms"] for c in colds]
    starts = [c["container_start_ms"] for c in colds]
    result = {
        "date": time.strftime("%Y-%m-%d"), "memory_mb": args.memory_mb, "image_mb": round(size_mb, 1),
        "cold_first_request_ms": {"p50": statistics.median(firsts), "max": max(firsts)},
        "cold_init_ms": {"p50": statistics.median(inits), "max": max(inits)},
        "container_start_ms": {"p50": statistics.median(starts)},
        "warm_ms": {"p50": _pct(warm, 0.5), "p95": _pct(warm, 0.95), "p99": _pct(warm, 0.99)},
        "colds": colds, "failed_rounds": failed,
    }  # fmt: skip
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"lambda-cold-start-{time.strftime('%Y%m%dT%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(f"image size            {size_mb:,.0f} MB (Lambda's limit: 10,240 MB)")
    print(f"cold: first request   p50 {result['cold_first_request_ms']['p50']:.0f} ms, max "
          f"{result['cold_first_request_ms']['max']:.0f} ms ({args.colds} fresh environments)")  # fmt: skip
    print(
        f"cold: init reported   p50 {result['cold_init_ms']['p50']:.0f} ms, max {result['cold_init_ms']['max']:.0f} ms"
    )
    print(f"container start       p50 {result['container_start_ms']['p50']:.0f} ms (the platform's part, apart)")
    print(f"warm invoke           p50 {result['warm_ms']['p50']:.1f} ms, p95 {result['warm_ms']['p95']:.1f} ms, "
          f"p99 {result['warm_ms']['p99']:.1f} ms ({args.warms} sequential)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
