"""Benchmark the gate's own capacity: the highest requests/s its Locust can send on this machine.

    .venv/bin/python benchmarks/gate_capacity.py [--duration 10] [--users 32 128] [--repeat 1]

A gate can only prove a throughput SLO below what its load generator sends. To measure that
ceiling, Locust runs against a target far faster than itself: the empty raw-ASGI endpoint of
benchmarks/model_server.py (``--serve empty``: uvicorn + uvloop + httptools, reads the body and
answers a constant), pinned to core 0. So each Locust row's req/s is Locust's limit, not the
server's. Rows, at each ``--users`` count:

  wrk             ``wrk -t1`` with as many connections as users, pinned to core 1: what the target
                  answers when the client is not the bound (the reference ceiling)
  FastHttpUser    the gate's own ``LoadUser`` (load_tests/predict.py), with the environment the gate
                  sets (``tasks.gate.gate_env``: the endpoint, the package, batch size 1, the key)
  HttpUser        benchmarks/locust_http_user.py: the same request through Locust's plain
                  ``HttpUser`` (python-requests) instead of ``FastHttpUser`` (geventhttpclient)
                  Both with 1 process pinned to core 1, and with ``--processes 2`` unpinned (the
                  master and its 2 workers share both cores with the server).
  run_gate        ``tasks.gate.run_gate`` itself (load phase only: smoke off, the empty endpoint
                  answers a constant), FastHttpUser, 1 process, pinned to core 1 through this
                  process's CPU affinity, which the Locust it starts inherits

Locust runs as the gate runs it: ``locust -f FILE USER --headless --only-summary --host --csv
--html --exit-code-on-error 0 --stop-timeout 5 --loglevel WARNING -u USERS -r USERS -t DURATION``
and the gate's own process flags (``tasks.gate._processes``: none for 1 process, a plain local
runner; for more, ``--processes N`` with a master on a free port of 127.0.0.1), spawn rate = users
(every user starts within the first second). req/s, percentiles and failures are Locust's own,
read from the final stats the gate's locustfile writes as Locust exits, as the gate reads them
(so the ramp-up second is in them).
"gate CPU %" is the figure the gate reports about itself (wait4 CPU of Locust and its workers over
wall time, per process; it flags ≥ 90 % as saturated): startup and shutdown are in it. The other
CPU columns are core-seconds per second sampled with psutil over the steady part of each run (while
the server is busy, less the first second and the last half second): "client CPU" is Locust's (or
wrk's) process tree, "server CPU" the endpoint's, "other CPU" the rest of the machine (noise from a
shared machine: req/s moves with it). "req/s per client core" is req/s over client CPU: what the
client sends per core it gets, much steadier than req/s when the machine is busy.

Rows are measured in ``--repeat`` rounds (each round visits every row); the table shows each row's
median round. Every process started here is stopped in a ``finally``. Raw results go to
benchmarks/out/gate-capacity-<time>.json.
"""

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from common import CLIENT_CPU, PY, ROOT, SERVER_CPU, bench_env, busy_seconds, cpu_seconds, run_wrk, started
from model_server import KEY, _kit
from pydantic import SecretStr

from slipway.ports import free_port
from slipway.release import Endpoint, Release, Stage
from slipway.spec import GateSettings, LoadProfile
from targets.base import Deployment
from tasks.gate import LOCUSTFILE, _processes, gate_env, load_figures, run_gate

HTTP_LOCUSTFILE = Path(__file__).resolve().with_name("locust_http_user.py")
FAST_1 = "FastHttpUser (gate's LoadUser), 1 process, core 1"
FAST_2 = "FastHttpUser (gate's LoadUser), --processes 2, unpinned"
PLAIN_1 = "HttpUser (same request), 1 process, core 1"
PLAIN_2 = "HttpUser (same request), --processes 2, unpinned"
GATE = "tasks.gate.run_gate: FastHttpUser, 1 process, core 1"
SHARED = "master + 2 workers share both cores with the server"
BUSY_SERVER = 0.05  # server CPU (cores) above which a sampling interval counts as under load
NOISY = 0.25  # other CPU (cores) above which the take-away warns that the machine was busy


@dataclass
class Row:
    """One configuration to measure: ``run`` does one measured run and returns its figures."""

    name: str
    users: int
    run: Callable[[], dict[str, Any]]
    note: str = ""
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Result:
    name: str
    users: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int
    failures: int
    client_cpu: float
    server_cpu: float
    other_cpu: float
    rps_per_client_core: float  # req/s over client CPU: the client's capacity per core it gets, less noisy
    gate_cpu_pct: float | None = None  # what the gate reports about itself (Locust rows only)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --- measuring -------------------------------------------------------------------------------------


@contextlib.contextmanager
def sampled(server_pid: int, interval: float = 0.25) -> Iterator[list[tuple[float, float, float, float]]]:
    """Sample (time, client CPU, server CPU, machine busy) CPU-seconds while the block runs; the
    client is every child of this process but the server (with their own children)."""
    import psutil

    me, stop = psutil.Process(), threading.Event()
    samples: list[tuple[float, float, float, float]] = []

    def sample() -> None:
        while True:
            clients = sum(cpu_seconds(child.pid) for child in me.children() if child.pid != server_pid)
            samples.append((time.monotonic(), clients, cpu_seconds(server_pid), busy_seconds()))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, daemon=True)  # started before any pinning: never pinned
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def steady_cpu(samples: list[tuple[float, float, float, float]]) -> dict[str, float]:
    """Client, server and other CPU (cores) while the server was busy, less the first second (users
    starting) and the last half second (stopping)."""
    busy = [i for i in range(1, len(samples))
            if samples[i][2] - samples[i - 1][2] > BUSY_SERVER * (samples[i][0] - samples[i - 1][0])]  # fmt: skip
    if not busy:
        raise RuntimeError("the server never got busy: no load reached it")
    begin, end = samples[busy[0] - 1][0] + 1.0, samples[busy[-1]][0] - 0.5
    window = [s for s in samples if begin <= s[0] <= end]
    if len(window) < 2:
        raise RuntimeError("no steady window: raise --duration")
    (t0, client0, server0, busy0), (t1, client1, server1, busy1) = window[0], window[-1]
    client, server = (client1 - client0) / (t1 - t0), (server1 - server0) / (t1 - t0)
    return {
        "client_cpu": client,
        "server_cpu": server,
        "other_cpu": max(0.0, (busy1 - busy0) / (t1 - t0) - client - server),
    }


def run_locust(locustfile: Path, user: str, processes: int, url: str, users: int, duration: float,
               env: dict[str, str], workdir: Path) -> dict[str, Any]:  # fmt: skip
    """One headless Locust with the gate's flags (tasks/gate.py), pinned to the client core when it
    is 1 process; Locust's own figures and the gate's CPU figure (wait4)."""
    prefix = workdir / f"{user}-{processes}p-{users}u-{time.monotonic_ns()}"
    cmd = [
        PY, "-m", "locust", "-f", str(locustfile), user, "--headless", "--only-summary", "--host", url,
        "--csv", str(prefix), "--html", f"{prefix}.html", "--exit-code-on-error", "0", "--stop-timeout", "5",
        "--loglevel", "WARNING", "-u", str(users), "-r", str(users), "-t", f"{duration:g}s", *_processes(processes),
    ]  # fmt: skip
    if processes == 1:
        cmd = ["taskset", "-c", CLIENT_CPU, *cmd]
    log = prefix.with_suffix(".log")
    begin = time.monotonic()
    with log.open("wb") as out:
        stats_env = env | {"SLIPWAY_GATE_STATS": f"{prefix}.json"}
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=stats_env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - begin
    if code := os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"locust {user} exited with {code}: {log.read_text(errors='replace')[-2000:]}")
    figures = load_figures(Path(f"{prefix}.json"))
    return {
        "rps": figures.rps, "p50_ms": figures.percentile(0.5), "p95_ms": figures.percentile(0.95),
        "p99_ms": figures.percentile(0.99), "requests": figures.requests, "failures": figures.failures,
        "gate_cpu_pct": 100 * (usage.ru_utime + usage.ru_stime) / wall / processes,
    }  # fmt: skip


def run_product_gate(package: Path, url: str, users: int, duration: float, workdir: Path) -> dict[str, Any]:
    """``tasks.gate.run_gate``'s load phase, its Locust pinned to the client core by inheritance."""
    report_dir = workdir / f"gate-{users}u-{time.monotonic_ns()}"
    release = Release("gate-capacity", "iris", "iris", "1", "", package, "")
    deployment = Deployment(release, Stage.STAGING, Endpoint(url))
    settings = GateSettings(smoke=False, load=LoadProfile(users=users, spawn_rate=users, duration_s=duration))
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    try:
        report = run_gate(deployment, package, settings, SecretStr(KEY), report_dir)
    finally:
        os.sched_setaffinity(0, affinity)
    figures = report.figures()
    return {key: figures[key] for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "requests", "failures", "gate_cpu_pct")}


def wrk_run(body: str, url: str, users: int, duration: float, workdir: Path) -> dict[str, Any]:
    stats = run_wrk(f"{url}/predict", body, KEY, duration, workdir, connections=users)
    stats["failures"] = stats.pop("errors")
    for key in ("p999_ms", "max_ms"):  # this table compares clients by Locust's own percentiles
        stats.pop(key)
    return stats


def measure_once(row: Row, server_pid: int) -> None:
    with sampled(server_pid) as samples:
        stats = row.run()
    stats |= steady_cpu(samples)
    stats["rps_per_client_core"] = stats["rps"] / stats["client_cpu"]
    row.runs.append(stats)
    print(f"  {row.name}, {row.users} users: {stats['rps']:,.0f} req/s, p95 {stats['p95_ms']:.1f} ms, "
          f"client CPU {stats['client_cpu']:.2f}, server CPU {stats['server_cpu']:.2f}, "
          f"other CPU {stats['other_cpu']:.2f}", flush=True)  # fmt: skip


def summarize(row: Row) -> Result:
    """The median run (by req/s) of a row."""
    runs = row.runs
    stats = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    extra = {"runs": [r["rps"] for r in runs]} | ({"wrk": stats.pop("raw")} if "raw" in stats else {})
    note = row.note
    if len(runs) > 1:
        rates = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        note = f"{note}; runs {rates}".lstrip("; ")
    return Result(row.name, row.users, note=note, extra=extra, **stats)


# --- the run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> list[Result]:
    """Start the endpoint, then measure every row in rounds (load from the rest of a shared machine
    spreads over all rows instead of hitting one)."""
    kit = _kit()
    work = Path(tempfile.mkdtemp(prefix="slipway-gate-bench-"))
    try:
        model, inputs = kit.train_iris(work / "train")
        package = kit.build_package(work / "pkg", model, inputs)
        body = json.dumps({"inputs": [inputs[0]]})  # what LoadUser sends at batch size 1
        port = free_port()
        host = f"http://127.0.0.1:{port}"
        cmd = ["taskset", "-c", SERVER_CPU, PY, str(ROOT / "benchmarks" / "model_server.py"), "--serve", "empty",
               "--package", str(package), "--port", str(port)]  # fmt: skip
        gate = gate_env(Endpoint(host), package, SecretStr(KEY))  # exactly what the gate gives its Locust
        env = bench_env(**{k: v for k, v in gate.items() if k.startswith("SLIPWAY_")})
        fast, plain = (LOCUSTFILE, "LoadUser"), (HTTP_LOCUSTFILE, "PlainLoadUser")
        rows: list[Row] = []
        for users in args.users:
            rest = (host, users, args.duration)
            rows += [
                Row(f"wrk -t1 -c{users}, core 1", users, partial(wrk_run, body, *rest, work),
                    "reference ceiling of the endpoint"),
                Row(FAST_1, users, partial(run_locust, *fast, 1, *rest, env, work)),
                Row(FAST_2, users, partial(run_locust, *fast, 2, *rest, env, work), SHARED),
                Row(PLAIN_1, users, partial(run_locust, *plain, 1, *rest, env, work)),
                Row(PLAIN_2, users, partial(run_locust, *plain, 2, *rest, env, work), SHARED),
                Row(GATE, users, partial(run_product_gate, package, *rest, work), "the product's code path; smoke off"),
            ]  # fmt: skip
        print("starting the empty endpoint", flush=True)
        with started(cmd, f"{host}/predict", body, None, work, "empty-asgi") as server:
            run_wrk(f"{host}/predict", body, KEY, args.warmup, work)
            for round_ in range(args.repeat):
                print(f"round {round_ + 1}/{args.repeat}", flush=True)
                for row in rows:
                    measure_once(row, server.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [summarize(row) for row in rows]


def table(results: list[Result]) -> str:
    lines = [
        "| client | users | req/s | p50 ms | p95 ms | p99 ms | failures | client CPU | req/s per client core "
        "| gate CPU % | server CPU | other CPU | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        gate_cpu = "" if r.gate_cpu_pct is None else f"{r.gate_cpu_pct:.0f}"
        lines.append(
            f"| {r.name} | {r.users} | {r.rps:,.0f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.p99_ms:.1f} | {r.failures} "
            f"| {r.client_cpu:.2f} | {r.rps_per_client_core:,.0f} | {gate_cpu} | {r.server_cpu:.2f} "
            f"| {r.other_cpu:.2f} | {r.note} |"
        )
    return "\n".join(lines)


def takeaway(results: list[Result]) -> str:
    def top(name: str) -> Result:
        return max((r for r in results if r.name == name), key=lambda r: r.rps)

    def best(name: str) -> float:
        return top(name).rps

    def about(rps: float) -> str:
        return f"{float(f'{rps:.2g}'):,.0f}"  # two significant digits: the machine is noisy

    locust = [r for r in results if not r.name.startswith("wrk")]
    wrk = max(r.rps for r in results if r.name.startswith("wrk"))
    noise = max(r.other_cpu for r in locust)
    busy = (f"the rest of the machine used up to {noise:.2f} of its {os.cpu_count()} cores meanwhile: these req/s are "
            "lower bounds, req/s per client core is the steadier figure") if noise > NOISY else ""  # fmt: skip
    return "\n".join([
        f"a 1-process FastHttpUser gate can prove at most ~{about(best(FAST_1))} req/s on this machine; "
        f"with --processes 2, ~{about(best(FAST_2))}",
        f"(1-process FastHttpUser: {top(FAST_1).rps_per_client_core:,.0f} req/s per core of CPU it got; it got "
        f"{top(FAST_1).client_cpu:.2f} of its core while the rest of the machine used {top(FAST_1).other_cpu:.2f})",
        f"(plain HttpUser: ~{about(best(PLAIN_1))} req/s with 1 process, ~{about(best(PLAIN_2))} with --processes 2; "
        f"tasks.gate.run_gate: {best(GATE):,.0f} req/s)",
        f"the endpoint was not the bound: wrk got {wrk:,.0f} req/s from it ({wrk / max(r.rps for r in locust):.1f}x "
        f"the best Locust row), and its CPU stayed at or below {max(r.server_cpu for r in locust):.2f} of its core "
        "under Locust",
        busy,
    ]).rstrip()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (Locust's -t)")
    parser.add_argument("--users", type=int, nargs="+", default=[32, 128], help="Locust users (wrk connections)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up of the endpoint")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all rows; the median is shown")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed")
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    versions = {name: importlib.metadata.version(name) for name in ("locust", "geventhttpclient", "requests")}
    results = run(args)
    print(f"\n{started_at}; {platform.node()}; {os.cpu_count()} cores; duration {args.duration:g} s; "
          f"{', '.join(f'{k} {v}' for k, v in versions.items())}\n")  # fmt: skip
    print(table(results))
    print(f"\n{takeaway(results)}")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"gate-capacity-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": started_at, "args": vars(args), "versions": versions,
                               "results": [asdict(r) for r in results]}, indent=2))  # fmt: skip
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
