"""What every benchmark here shares: a clean environment, starting and stopping servers,
CPU accounting, and wrk.

The scripts in benchmarks/ import this as ``common`` (their own folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SERVER_CPU, CLIENT_CPU = "0", "1"


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    env["PATH"] = f"{Path(PY).parent}:{env.get('PATH', '')}"  # mlflow runs `uvicorn` from PATH
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, **extra)
    return env


def cpu_seconds(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (all cores)."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


LUA = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SLIPWAY_RESULT %d %d %d %d %d %d %d %d\\n", latency:percentile(50),
    latency:percentile(95), latency:percentile(99), summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(99.9), latency.max))
end
"""


def run_wrk(url: str, body: str, key: str | None, seconds: float, workdir: Path, pinned: bool = True,
            connections: int = 64) -> dict[str, Any]:  # fmt: skip
    script = workdir / "post.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    script.write_text(LUA.format(body=body, auth=auth))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), url]
    if pinned:
        cmd = ["taskset", "-c", CLIENT_CPU, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    match = re.search(r"SLIPWAY_RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if proc.returncode != 0 or not match or not rps:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    p50, p95, p99, requests, status_errors, socket_errors, p999, slowest = map(int, match.groups())
    return {
        "rps": float(rps.group(1)), "p50_ms": p50 / 1000, "p95_ms": p95 / 1000, "p99_ms": p99 / 1000,
        "p999_ms": p999 / 1000, "max_ms": slowest / 1000, "requests": requests,
        "errors": status_errors + socket_errors, "client_cpu": (usage.ru_utime + usage.ru_stime) / seconds, "raw": out,
    }  # fmt: skip


@contextlib.contextmanager
def started(cmd: list[str], url: str, body: str, key: str | None, workdir: Path, name: str,
            timeout: float = 90, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """Start a server, wait until ``url`` answers ``body`` with 200, stop it (SIGTERM, then SIGKILL)."""
    import httpx

    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env or bench_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        deadline, last = time.monotonic() + timeout, "no answer"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {(workdir / f'{name}.log').read_text()}")
            try:
                response = httpx.post(url, content=body, headers=headers, timeout=5)
                if response.status_code == 200:
                    print(f"  {name}: up, answers {response.text.strip()[:80]}", flush=True)
                    break
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.TransportError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer 200 within {timeout} s (last: {last})")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this run started
                proc.wait()
        log.close()
