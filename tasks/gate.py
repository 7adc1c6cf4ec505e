"""Gate step: Locust, as its own process, against the staging endpoint; figures judged by the SLOs.

Two phases, each a ``locust --headless`` subprocess (importing locust here would monkey-patch
this process with gevent):

  smoke  ``SmokeUser`` sends every golden sample once and checks each prediction
  load   ``LoadUser`` (``FastHttpUser``, no think time) with the spec's users, spawn rate,
         duration and ``--processes``

Both get the endpoint (its URL, authentication, headers and routes) and the key through
``gate_env``. On targets that start execution environments on demand (serverless), the first request
of a fresh environment is a **cold start**: the server marks its answer, the locustfile files it
apart, and the report gives cold starts (with the init duration reported, and those the target saw
getting the release ready) beside the warm figures, which the latency SLOs judge; ``slo.cold_start_ms``
judges the slowest cold start. Requests the platform throttled (HTTP 429) are reported as throttling,
with the setting that limits it.

With ``gate.where: in_target`` the load phase runs next to staging instead, where its
target can run a load generator (``targets.base.LoadRunner``: Kubernetes runs it as a Job in the
namespace, against the Service by its cluster DNS name), from the same locustfile, the modules it
imports and the package manifest (``load_job``); the smoke phase stays here, through the target's
endpoint. Figures are Locust's own final stats, written by load_tests/predict.py as Locust exits (its CSV,
kept for people, is rewritten once a second and misses the end of a run). The gate also measures
its own CPU (from the kernel's accounting of the Locust processes): a load generator near 100 % of
its cores measures itself, not the server, and the report says so. It measures how busy the whole machine was as well:
Locust starved by other work (or by the server, when it runs on the same machine) does not reach
100 % of its cores, but its figures are bounded all the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from pydantic import SecretStr

from serving.manifest import MANIFEST
from slipway.costs import Price, Usage, per_thousand
from slipway.errors import At, GateError, GateFailed
from slipway.ports import free_port
from slipway.release import Endpoint
from slipway.spec import GateSettings, LoadProfile, Slo
from targets.base import ColdStart, Deployment, LoadJob, LoadRunner

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "load_tests" / "predict.py"
# What the locustfile imports of Slipway's own code (the spine and serving, no more: tests/slipway/test_layers.py),
# shipped with it to a load generator next to the target; the image there has Locust, pydantic and httpx.
LOCUSTFILE_MODULES = (
    "load_tests/__init__.py", "load_tests/predict.py", "serving/__init__.py", "serving/contract.py",
    "serving/manifest.py", "slipway/__init__.py", "slipway/errors.py", "slipway/http.py", "slipway/release.py",
)  # fmt: skip
IN_TARGET_SLACK_S = 180.0  # beyond the load's duration: scheduling, the image pull, Locust's start and stop
COLD, THROTTLED = "cold start", "throttled (HTTP 429)"  # the locustfile's names for them
SATURATED_CPU_PCT = 90.0


@dataclass(frozen=True)
class Check:
    name: str
    limit: str
    actual: str
    ok: bool


@dataclass(frozen=True)
class LoadResult:
    """What the load phase measured: Locust's final figures, and how busy the gate and the machine were."""

    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    gate_cpu_pct: float  # of the cores given to Locust (one per process)
    machine_busy_pct: float  # of all this machine's cores, during the load phase
    throttled: int = 0  # requests the platform answered 429 (counted in failures)

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class ColdStarts:
    """The cold starts measured: the first requests of fresh execution environments, apart from warm ones."""

    seen: tuple[ColdStart, ...]

    @property
    def count(self) -> int:
        return len(self.seen)

    @property
    def p50_ms(self) -> float:
        ordered = sorted(c.latency_ms for c in self.seen)
        return ordered[(len(ordered) - 1) // 2] if ordered else 0.0

    @property
    def max_ms(self) -> float:
        return max((c.latency_ms for c in self.seen), default=0.0)

    @property
    def init_max_ms(self) -> float | None:
        inits = [c.init_ms for c in self.seen if c.init_ms is not None]
        return max(inits) if inits else None

    def describe(self) -> str:
        if not self.seen:
            return "none measured"
        by = ", ".join(f"{n} by the {who}" for who, n in sorted(Counter(c.by for c in self.seen).items()))
        init = f"; init (as reported) up to {self.init_max_ms:.0f} ms" if self.init_max_ms is not None else ""
        return f"{self.count} ({by}): p50 {self.p50_ms:.0f} ms, slowest {self.max_ms:.0f} ms{init}"


@dataclass(frozen=True)
class GateReport:
    release_id: str
    profile: LoadProfile
    smoke_failures: list[str]
    load: LoadResult | None  # None when the smoke phase failed: the load phase is skipped
    checks: list[Check] = field(default_factory=list)
    html_report: str = ""
    cost_per_1000_usd: float | None = None  # on production's sizing, at the throughput measured here
    cost_note: str = ""  # how it was computed, or why it was not
    where: str = "local"  # where the load phase's Locust ran: this machine, or next to the target
    cold: ColdStarts = ColdStarts(())  # cold starts (targets that start environments on demand)
    throttling: str = ""  # what limits the deployment's concurrency (the target's words), for 429s

    @property
    def passed(self) -> bool:
        return self.load is not None and not self.smoke_failures and all(c.ok for c in self.checks)

    @property
    def violations(self) -> list[str]:
        out = [f"smoke: {f}" for f in self.smoke_failures]
        out += [f"{c.name}: {c.actual} (limit {c.limit})" for c in self.checks if not c.ok]
        if out and self.load is not None and self.load.throttled:
            out.append(
                f"throttled: {self.load.throttled} of {self.load.requests} requests were answered 429 by the "
                f"platform (its concurrency limit, not the model): {self.throttling or 'raise the target concurrency'}"
            )
        if out and self.saturated and self.load:
            out.append(
                f"note: the gate's own CPU was {self.load.gate_cpu_pct:.0f}% of {self.profile.processes} core(s): "
                "it measured itself; raise gate.load.processes"
            )
        elif out and self.machine_saturated and self.load:
            out.append(
                f"note: this machine's CPUs were {self.load.machine_busy_pct:.0f}% busy during the load phase (Locust, "
                "the server if it runs here, anything else): the figures may be the machine's limit, not the release's"
            )
        return out

    @property
    def saturated(self) -> bool:
        return self.load is not None and self.load.gate_cpu_pct >= SATURATED_CPU_PCT

    @property
    def machine_saturated(self) -> bool:
        return self.load is not None and self.load.machine_busy_pct >= SATURATED_CPU_PCT

    def figures(self) -> dict[str, Any]:
        """The report as the ledger keeps it: one flat record."""
        load = self.load or LoadResult(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return {
            "release_id": self.release_id, "smoke_failures": self.smoke_failures, **asdict(load),
            "error_rate": load.error_rate, "processes": self.profile.processes, "users": self.profile.users,
            "duration_s": self.profile.duration_s if self.load else 0.0, "html_report": self.html_report,
            "passed": self.passed, "checks": [asdict(c) for c in self.checks],
            "cost_per_1000_usd": self.cost_per_1000_usd, "cost_note": self.cost_note, "where": self.where,
            "cold_starts": self.cold.count, "cold_p50_ms": self.cold.p50_ms, "cold_max_ms": self.cold.max_ms,
            "cold_init_max_ms": self.cold.init_max_ms,
        }  # fmt: skip

    def to_markdown(self) -> str:
        rows = [f"| {c.name} | {c.actual} | {c.limit} | {'pass' if c.ok else '**FAIL**'} |" for c in self.checks]
        smoke = "pass" if not self.smoke_failures else "**FAIL**: " + "; ".join(self.smoke_failures)
        lines = [
            f"### Gate of release `{self.release_id}`: {'passed' if self.passed else 'FAILED'}",
            "",
            f"Smoke (golden samples): {smoke}",
        ]
        if self.load is None:
            return "\n".join([*lines, "", "The load phase was skipped: the smoke phase failed."])
        load, profile = self.load, self.profile
        return "\n".join(
            [
                *lines,
                "",
                "| check | measured | limit | result |",
                "|---|---|---|---|",
                *rows,
                "",
                f"{load.requests} requests, {load.failures} failed, {profile.users} users for "
                f"{profile.duration_s:.0f} s; p50 {load.p50_ms:.1f} ms; Locust ran {self.where}; gate CPU "
                f"{load.gate_cpu_pct:.0f}% of {profile.processes} core(s), machine {load.machine_busy_pct:.0f}% busy"
                + (" — **saturated: figures bounded by the load generator**" if self.saturated else "")
                + (" — **machine saturated**" if self.machine_saturated and not self.saturated else ""),
                "",
                f"Cost per 1,000 predictions: {_usd(self.cost_per_1000_usd)} ({self.cost_note})",
                *(
                    [
                        f"Cold starts (the first request of a fresh execution environment): {self.cold.describe()}; "
                        f"warm p50 {load.p50_ms:.1f} ms, p95 {load.p95_ms:.1f} ms"
                    ]
                    if self.cold.count
                    else []
                ),
                *([f"Throttled (HTTP 429): {load.throttled} requests ({self.throttling})"] if load.throttled else []),
            ]
        )


def _usd(value: float | None) -> str:
    return "not estimated" if value is None else f"${value:,.6f}"


@dataclass(frozen=True)
class CostBasis:
    """What the cost of a prediction is computed from: production's usage, the prices, and how many
    instances served the gate (staging) and will serve production."""

    usage: Usage | None
    prices: Mapping[str, Price]
    staging_instances: int
    production_instances: int


def priced(report: GateReport, basis: CostBasis) -> GateReport:
    """The report with the cost of 1,000 predictions on production's sizing, at the throughput per
    instance the gate measured (always-on capacity) and its median duration (per-request billing)."""
    if report.load is None:
        return report
    if basis.usage is None:
        return replace(report, cost_per_1000_usd=0.0, cost_note="production runs on this machine: nothing is billed")
    rps = report.load.rps / max(basis.staging_instances, 1) * max(basis.production_instances, 1)
    estimate = per_thousand(basis.usage, basis.prices, rps, report.load.p50_ms / 1000)
    if estimate.usd is None:
        note = "; ".join(estimate.lines) or f"no price for {', '.join(estimate.missing)}: set costs.prices in the spec"
        return replace(report, cost_note=note)
    note = f"{rps:,.0f} req/s on {basis.production_instances} instance(s): " + "; ".join(estimate.lines)
    return replace(report, cost_per_1000_usd=estimate.usd, cost_note=note)


def gate_env(endpoint: Endpoint, package_dir: Path, api_key: SecretStr | None, batch_size: int = 1) -> dict[str, str]:
    """The environment of a Locust process of the gate (load_tests/predict.py reads it): the endpoint,
    the package's golden samples, the batch size and the key; no other copy of the key."""
    env = {k: v for k, v in os.environ.items() if k != "SLIPWAY_API_KEY"}
    env |= {"SLIPWAY_GATE_ENDPOINT": endpoint.to_json(), "SLIPWAY_GATE_PACKAGE": str(package_dir),
            "SLIPWAY_GATE_BATCH": str(batch_size)}  # fmt: skip
    if api_key is not None:
        env["SLIPWAY_API_KEY"] = api_key.get_secret_value()
    return env


def run_gate(
    deployment: Deployment,
    package_dir: Path,
    gate: GateSettings,
    api_key: SecretStr | None,
    report_dir: Path,
    runner: LoadRunner | None = None,
) -> GateReport:
    """Run smoke then load against ``deployment``'s endpoint; return the report, judged by the SLOs.

    With ``runner`` (the staging target, when ``gate.where`` is ``in_target``) the load phase runs next
    to the target, against its own address for the release (``LoadRunner.load_endpoint``).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    endpoint, load = deployment.endpoint, gate.load
    cold_file = report_dir / "cold.jsonl"
    cold_file.unlink(missing_ok=True)
    env = gate_env(endpoint, package_dir, api_key, load.batch_size) | {"SLIPWAY_GATE_COLD": str(cold_file)}
    if gate.smoke:
        smoke_failures = run_smoke(endpoint.url, env, report_dir)
        if smoke_failures:  # wrong answers fail the gate whatever the load figures: skip the load phase
            return GateReport(deployment.release.id, load, smoke_failures, None, cold=_cold(deployment, cold_file),
                              throttling=deployment.throttling)  # fmt: skip
    if runner is not None:
        measured, where = _load_in_target(runner, deployment, package_dir, load, report_dir)
    else:
        measured, where = _load_here(endpoint, env, load, report_dir), "on this machine"
    cold = _cold(deployment, cold_file)
    return GateReport(deployment.release.id, load, [], measured, _judge(measured, gate.slo, cold),
                      str(report_dir / "locust.html"), where=where, cold=cold,
                      throttling=deployment.throttling)  # fmt: skip


def _load_here(endpoint: Endpoint, env: dict[str, str], load: LoadProfile, report_dir: Path) -> LoadResult:
    busy_before = _machine_busy_s()
    cpu_s, wall_s = _locust(
        endpoint.url,
        "LoadUser",
        [*_load_args(load), "--html", str(report_dir / "locust.html")],
        env | {"SLIPWAY_GATE_STATS": str(report_dir / "load.json")},
        report_dir / "load",
    )
    busy = 100.0 * (_machine_busy_s() - busy_before) / wall_s / (os.cpu_count() or 1) if wall_s else 0.0
    return _measured(load_figures(report_dir / "load.json"), cpu_s, wall_s, load.processes, busy)


def _load_in_target(
    runner: LoadRunner, deployment: Deployment, package_dir: Path, load: LoadProfile, report_dir: Path
) -> tuple[LoadResult, str]:
    endpoint = runner.load_endpoint(deployment)
    out = runner.run_load(deployment, load_job(endpoint, package_dir, load), load.duration_s + IN_TARGET_SLACK_S)
    (report_dir / "load.log").write_text(out.log_tail)
    for name, text in out.outputs.items():
        (report_dir / name).write_text(text)
    if out.exit_code != 0:
        raise GateError(f"Locust (LoadUser) exited with code {out.exit_code} in {out.where}:\n{out.log_tail[-2000:]}",
                        at=At("gate", "LoadUser", endpoint.url), hint=f"read {report_dir / 'load.log'}")  # fmt: skip
    figures = load_figures(report_dir / "load.json")
    return _measured(figures, out.cpu_s, out.wall_s, load.processes, out.machine_busy_pct), out.where


def load_job(endpoint: Endpoint, package_dir: Path, load: LoadProfile) -> LoadJob:
    """The load phase as a job for a load generator next to the target: the locustfile and the modules it
    imports, the package manifest (its golden samples), Locust's arguments and environment; no key
    (the target sets SLIPWAY_API_KEY from where it keeps it)."""
    files = {path: (ROOT / path).read_text() for path in LOCUSTFILE_MODULES}
    files[f"package/{MANIFEST}"] = (package_dir / MANIFEST).read_text()
    argv = ("-m", "locust", "-f", "load_tests/predict.py", "LoadUser", *_common_args(endpoint.url, "load"),
            *_load_args(load), "--html", "locust.html")  # fmt: skip
    env = {"SLIPWAY_GATE_ENDPOINT": endpoint.to_json(), "SLIPWAY_GATE_PACKAGE": "package",
           "SLIPWAY_GATE_BATCH": str(load.batch_size), "SLIPWAY_GATE_STATS": "load.json"}  # fmt: skip
    key_env = "SLIPWAY_API_KEY" if endpoint.requires_auth else None
    return LoadJob("load", files, argv, env, key_env, ("load.json", "locust.html"), load.processes)


def _load_args(load: LoadProfile) -> list[str]:
    return ["-u", str(load.users), "-r", str(load.spawn_rate), "-t", f"{load.duration_s:g}s",
            *_processes(load.processes)]  # fmt: skip


def _measured(figures: LoadFigures, cpu_s: float, wall_s: float, processes: int, busy_pct: float) -> LoadResult:
    return LoadResult(
        requests=figures.requests,
        failures=figures.failures,
        rps=figures.rps,
        p50_ms=figures.percentile(0.50),
        p95_ms=figures.percentile(0.95),
        p99_ms=figures.percentile(0.99),
        gate_cpu_pct=100.0 * cpu_s / wall_s / processes if wall_s else 0.0,
        machine_busy_pct=busy_pct,
        throttled=figures.throttled,
    )


def _cold(deployment: Deployment, path: Path) -> ColdStarts:
    """The cold starts the target saw getting the release ready, and those the gate's requests met."""
    seen = list(deployment.cold_starts)
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                raw = json.loads(line)
                seen.append(ColdStart(float(raw["latency_ms"]), float(raw["init_ms"]), "gate"))
    return ColdStarts(tuple(seen))


def check(report: GateReport) -> GateReport:
    """The report if it passed; ``GateFailed`` listing every violation if not."""
    if not report.passed:
        raise GateFailed(report.release_id, report.violations, report_path=report.html_report)
    return report


def _judge(m: LoadResult, slo: Slo, cold: ColdStarts = ColdStarts(())) -> list[Check]:
    checks = [] if slo.cold_start_ms is None else [
        Check("cold start", f"≤ {slo.cold_start_ms:g} ms", f"{cold.max_ms:.0f} ms (slowest of {cold.count})"
              if cold.count else "none measured", cold.max_ms <= slo.cold_start_ms),
    ]  # fmt: skip
    return [
        *checks,
        Check("p95 latency", f"≤ {slo.p95_ms:g} ms", f"{m.p95_ms:g} ms", m.p95_ms <= slo.p95_ms),
        Check("p99 latency", f"≤ {slo.p99_ms:g} ms", f"{m.p99_ms:g} ms", m.p99_ms <= slo.p99_ms),
        Check(
            "error rate",
            f"≤ {slo.max_error_rate:.2%}",
            f"{m.error_rate:.2%} ({m.failures}/{m.requests})",
            m.requests > 0 and m.error_rate <= slo.max_error_rate,
        ),
        Check("throughput", f"≥ {slo.min_rps:g} req/s", f"{m.rps:.0f} req/s", m.rps >= slo.min_rps),
    ]


def _processes(n: int) -> list[str]:
    """Locust's flags for ``n`` load processes. One is a plain local runner (a master and a forked
    worker would cost ~3 s of start and stop per gate); more get a master on a free port of
    127.0.0.1: its default, *:5557, would make two gates on one machine fail each other."""
    if n == 1:
        return []
    port = free_port()
    bind = ["--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
    return ["--processes", str(n), *bind, "--master-port", str(port)]  # the forked workers connect to it


def _locust(url: str, user: str, args: list[str], env: dict[str, str], prefix: Path) -> tuple[float, float]:
    """Run one headless Locust; return (CPU seconds of it and its workers, wall seconds)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), user, *_common_args(url, str(prefix)), *args]
    log = prefix.with_suffix(".log")
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise GateError(f"Locust ({user}) exited with code {proc.returncode}:\n{tail}", at=At("gate", user, url),
                        hint=f"read {log}")  # fmt: skip
    return usage.ru_utime + usage.ru_stime, wall


def _common_args(url: str, csv_prefix: str) -> list[str]:
    return ["--headless", "--only-summary", "--host", url, "--csv", csv_prefix, "--exit-code-on-error", "0",
            "--stop-timeout", "5", "--loglevel", "WARNING"]  # fmt: skip


def _machine_busy_s() -> float:
    """CPU-seconds all of this machine's cores have spent busy since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass(frozen=True)
class LoadFigures:
    """A load phase's totals, from the stats load_tests/predict.py writes as Locust exits (its CSV is
    rewritten once a second, so it can miss the last second of a run)."""

    requests: int
    failures: int
    rps: float
    response_times: dict[float, int]  # milliseconds (rounded as Locust rounds them) → count; warm requests only
    throttled: int = 0  # requests the platform answered 429

    def percentile(self, fraction: float) -> float:
        """Locust's own percentile: the smallest time that all but ``1 - fraction`` of requests beat."""
        total = sum(self.response_times.values())
        counted = 0
        for ms in sorted(self.response_times, reverse=True):
            counted += self.response_times[ms]
            if total - counted <= int(total * fraction):
                return ms
        return 0.0


def load_figures(path: Path) -> LoadFigures:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GateError(f"Locust left no readable stats at {path}: {exc}", at=At("gate", "read", str(path)),
                        hint=f"read {path.with_suffix('.log')}") from exc  # fmt: skip
    times: dict[float, int] = {}
    for entry in entries:
        if entry.get("name") in (COLD, THROTTLED):  # reported apart: the latency figures are the warm ones
            continue
        for ms, count in entry["response_times"].items():
            times[float(ms)] = times.get(float(ms), 0) + count
    requests = sum(int(e["num_requests"]) for e in entries)
    span = max((e["last_request_timestamp"] or 0 for e in entries), default=0) - min(
        (e["start_time"] for e in entries), default=0
    )
    throttled = sum(int(e["num_requests"]) for e in entries if e.get("name") == THROTTLED)
    return LoadFigures(requests, sum(int(e["num_failures"]) for e in entries), requests / span if span > 0 else 0.0,
                       times, throttled)  # fmt: skip


def run_smoke(url: str, env: dict[str, str], report_dir: Path) -> list[str]:
    """The smoke phase alone: every golden sample once; returns the failures (empty: passed)."""
    verdict = report_dir / "smoke.json"
    verdict.unlink(missing_ok=True)
    _locust(url, "SmokeUser", ["-u", "1", "-r", "1", "-t", "120s"], env | {"SLIPWAY_GATE_SMOKE_REPORT": str(verdict)},
            report_dir / "smoke")  # fmt: skip
    result = json.loads(verdict.read_text())
    failures: list[str] = result["failures"]
    if not result["requests"]:
        failures.append("no smoke request was sent")
    return failures


@task(name="gate", cache_policy=NONE)
def gate(
    deployment: Deployment,
    package_dir: Path,
    settings: GateSettings,
    api_key: SecretStr | None,
    report_dir: Path,
    cost: CostBasis,
    runner: LoadRunner | None = None,
) -> GateReport:
    """The gate as a Prefect task: runs it, prices a prediction, publishes the table as a markdown artifact."""
    report = priced(run_gate(deployment, package_dir, settings, api_key, report_dir, runner), cost)
    create_markdown_artifact(
        key=f"gate-{deployment.release.service}",
        markdown=report.to_markdown(),
        description=f"Locust gate of release {deployment.release.id}",
    )
    return report
