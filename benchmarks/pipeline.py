"""Benchmark the release pipeline's overhead: the wall time of every step of a full `slipway deploy`.

    .venv/bin/python benchmarks/pipeline.py [--repeat 3] [--targets local,docker] [--prefect both] [--cold 1]

Needs scripts/services/test-services.sh up (Docker Engine, registry, base and nginx images) for
``docker``. Each round releases the example model (examples/iris/train.py, logistic regression on
iris) through the real CLI (``slipway deploy``, a subprocess) under a model name of its own, with a
fresh SLIPWAY_STATE_DIR and a copy of the example spec (examples/iris/slipway.yaml for ``local``,
slipway-docker.yaml for ``docker``) that changes only:

  ports        free ones below the kernel's ephemeral range: no other program's bind(0) is handed
               them (the local target binds with SO_REUSEPORT, so a stranger on the same port would
               silently take part of the gate's traffic, as happened in a trial: 43 % HTTP 401)
  model name   ``pb<4 hex><round>``: a ledger, image repository and containers of its own per round
  SLO limits   p95 and p99 ≤ 10 s, no minimum req/s (error rate still 0): the gate does the same
               work, but noise on this shared machine cannot cut a deploy short before promote
  images       pushed to ``127.0.0.1:5000/slipway-pipebench``

A round is two deploys, then ``slipway teardown`` of both stages:

  first        version 1 of the model: nothing deployed before (docker: a new image repository,
               production's network and nginx proxy created); the dependency image exists already
  repeat       version 2 (retrained, same dependencies) over version 1: the realistic release
  first-ever   docker only, ``--cold`` rounds of one deploy: version 1 on a base image the engine has
               never built the dependency layer for (a fresh tag of slipway/python-base with one
               label: a new image id), so the build also builds the dependency virtualenv layer and
               the push uploads it. Its wheels are copied from a local wheel cache
               (/var/tmp/slipway/test-wheels or the default state dir), nothing is downloaded: a
               truly first run also pays ``pip download`` once per requirement set

in three Prefect modes (``--prefect``):

  ephemeral    no PREFECT_API_URL and SLIPWAY_PREFECT_SERVER=temporary: every CLI call starts and stops Prefect's
               temporary server, on the SQLite database of this run's PREFECT_HOME. That database
               is created first (``prefect server database upgrade``, timed): the temporary server
               allows 20 s for its start-up, migrations included, which a busy machine exceeded
  server       PREFECT_API_URL at a ``prefect server start`` this script starts (start-up timed) on
               the same database, once every ephemeral round is done: what a team runs
  slipway      no PREFECT_API_URL, as ``make demo`` runs: the CLI's own long-lived local server
               (slipway.localserver), started first by ``slipway server start`` (timed: what the
               first command of a machine pays once), reused by every round, stopped at the end

Step times come from Prefect's own records, read with Prefect's client from that server after all
rounds: start and end of each task run of the flow run (the ledger names each release's flow run).
The gate task is split into smoke (gate start → last write of Locust's smoke files) and load (→ gate
end), next to the configured ``gate.load.duration_s``. Staging and promote are split further at the
Docker Engine's container events (``docker events``, recorded during each docker deploy: a
container's start, the proxy's first event) and, on local, at the promoted server's ready file.
"between steps" is the flow run's time outside its task runs (spec, ledger, lock, Prefect's task
orchestration); "CLI before/after flow" is the CLI's wall time outside the flow run (imports, the
temporary server, the run's creation, the result table); the temporary server's own share is timed
from its "Starting temporary server" log line. Overhead = wall time − the configured load duration:
smoke has no configured duration and counts as overhead. The issue's goal: ≤ 30 s of overhead on
docker. Cells: median (range) over the rounds; step rows pool both Prefect modes.

Every process, container, network and image started or built here is stopped or removed in a
``finally`` (pushed layers stay in the registry). Raw results, with each flow run's task runs, logs
and container events, go to benchmarks/out/pipeline-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import docker
import docker.errors
import httpx
import yaml
from common import PY, ROOT

sys.path.insert(0, str(ROOT))

from examples.iris.train import train
from slipway.ledgers import open_ledger
from slipway.ports import free_port
from slipway.settings import Settings
from slipway.spec import load_spec
from tasks._build import deps_key, requirements
from tasks.package import package_model

BIN = Path(PY).parent
KEY = "bench-key-0123456789abcdef"
REPOSITORY = "127.0.0.1:5000/slipway-pipebench"
BASE = "slipway/python-base:bookworm"
WHEEL_CACHES = (Path("/var/tmp/slipway/test-wheels"), Settings().path("wheels"))
SPECS = {"local": "slipway.yaml", "docker": "slipway-docker.yaml"}
STEPS = [  # (Prefect task name, row)
    ("package model", "package"),
    ("build image", "build image"),
    ("push image", "push"),
    ("deploy to staging", "deploy staging (to ready)"),
    ("gate", "gate"),
    ("promote to production", "promote"),
    ("tear down", "tear down staging"),
]
TEMP_SERVER = "… of which temporary server start → flow run starts"
STAGING_SUB = ("… staging: until its container starts", "… staging: container start → ready")
PROMOTE_SUB = (
    "… promote: until the new server is ready",  # local
    "… promote: after ready (previous server stopped, ledger)",  # local
    "… promote: until the candidate container starts",  # docker
    "… promote: candidate start → ready",  # docker
    "… promote: proxy switch, ledger",  # docker
)
CASES = [("local", "first"), ("local", "repeat"), ("docker", "first"), ("docker", "repeat"), ("docker", "first-ever")]


@dataclass
class Deploy:
    """One `slipway deploy`: the CLI's wall clock, then what Prefect and the ledger recorded."""

    kind: str
    case: str
    mode: str
    model: str
    gate_s: float
    t0: float
    t1: float
    rc: int
    load_avg: list[float]
    output_tail: str = ""
    flow_run_id: str = ""
    release_id: str = ""
    smoke_end: float | None = None
    server_starting: float | None = None  # when the CLI began starting Prefect's temporary server
    production_ready: float | None = None  # local: when the promoted server wrote its ready file
    events: list[dict[str, Any]] = field(default_factory=list)  # docker: the engine's container events
    flow: dict[str, Any] = field(default_factory=dict)
    task_runs: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        """Seconds per row of the table (only rows this deploy has a figure for)."""
        tasks = {t["name"].rsplit("-", 1)[0]: t for t in self.task_runs if t["start"] and t["end"]}
        out = {row: tasks[name]["end"] - tasks[name]["start"] for name, row in STEPS if name in tasks}
        if "deploy to staging" in tasks and "promote to production" in tasks:
            out |= self.sub_steps(tasks["deploy to staging"], tasks["promote to production"])
        gate = tasks.get("gate")
        if gate and self.smoke_end:
            out["gate: smoke"] = self.smoke_end - gate["start"]
            out["gate: load"] = gate["end"] - self.smoke_end
        start, end = self.flow.get("start"), self.flow.get("end")
        if start and end:
            flow = end - start
            out["between steps"] = flow - sum(tasks[name]["end"] - tasks[name]["start"] for name, _ in STEPS
                                              if name in tasks)  # fmt: skip
            out["flow total"] = flow
            out["overhead: flow − gate duration"] = flow - self.gate_s
            out[f"CLI before flow ({self.mode})"] = start - self.t0
            if self.server_starting:
                out[TEMP_SERVER] = start - self.server_starting
            out[f"CLI after flow ({self.mode})"] = self.t1 - end
        out[f"CLI wall ({self.mode})"] = self.t1 - self.t0
        out[f"overhead: CLI − gate duration ({self.mode})"] = self.t1 - self.t0 - self.gate_s
        return out

    def sub_steps(self, staging: dict[str, Any], promote: dict[str, Any]) -> dict[str, float]:
        """Staging and promote split at the instants the server's files or the engine's events show."""
        if self.kind == "local":
            ready = self.production_ready
            if ready is None:
                return {}
            return dict(zip(PROMOTE_SUB[:2], (ready - promote["start"], promote["end"] - ready), strict=True))

        def first(after: float, before: float, stage: str, role: str) -> float | None:
            return next((e["t"] for e in self.events if after <= e["t"] <= before and e["stage"] == stage
                         and e["role"] == role and (role == "proxy" or e["action"] == "start")), None)  # fmt: skip

        out = {}
        if started := first(staging["start"], staging["end"], "staging", "release"):
            out |= dict(zip(STAGING_SUB, (started - staging["start"], staging["end"] - started), strict=True))
        candidate = first(promote["start"], promote["end"], "production", "release")
        switch = candidate and first(candidate, promote["end"], "production", "proxy")
        if candidate and switch:
            parts = (candidate - promote["start"], switch - candidate, promote["end"] - switch)
            out |= dict(zip(PROMOTE_SUB[2:], parts, strict=True))
        return out


# --- helpers ---------------------------------------------------------------------------------------


def write_spec(kind: str, name: str, model_dir: Path, ports: tuple[int, int], base: str) -> tuple[Path, float]:
    """A copy of the example spec of ``kind`` for model ``name``; returns it and the gate's load duration."""
    raw = yaml.safe_load((ROOT / "examples" / "iris" / SPECS[kind]).read_text())
    raw["model"].update(name=name, source=str(model_dir / "model.joblib"), samples=str(model_dir / "samples.json"))
    raw["service"] = name  # the model's own: state, reports and containers are keyed by the service
    raw["staging"]["port"], raw["production"]["port"] = ports
    raw["gate"]["slo"].update(p95_ms=10_000, p99_ms=10_000, min_rps=0)  # the same work; never cut short by noise
    if kind == "docker":
        raw["image"].update(repository=REPOSITORY, base=base)
    path = model_dir.parent / "slipway.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, float(raw["gate"]["load"]["duration_s"])


def run_cli(args: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[float, float, int]:
    """Run ``slipway ARGS``; returns (start, end, exit code). Killed with its session on timeout."""
    with log.open("wb") as out:
        t0 = time.time()
        proc = subprocess.Popen([str(BIN / "slipway"), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the CLI and its temporary server
            proc.wait()
            raise RuntimeError(f"slipway {' '.join(args)} did not end within {timeout:g} s (log: {log})") from None
    return t0, time.time(), rc


def server_starting(log: Path, t0: float) -> float | None:
    """When the CLI logged "Starting temporary server" (Prefect's console log: local time of day)."""
    found = re.search(r"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| prefect - Starting temporary server",
                      log.read_text(errors="replace"), re.MULTILINE)  # fmt: skip
    if not found:
        return None
    hour, minute, second = found.groups()
    day = datetime.fromtimestamp(t0).replace(hour=int(hour), minute=int(minute), second=0, microsecond=0)
    at = day.timestamp() + float(second)
    return at if at >= t0 - 1 else at + 86400  # past midnight


def create_database(env: dict[str, str], log: Path) -> float:
    """Prefect's database in PREFECT_HOME, as the first CLI call on a machine creates it; returns seconds.

    Done before any round: the temporary server gives its start-up, migrations included, 20 s
    (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS), which a busy machine exceeded in a trial.
    """
    with log.open("wb") as out:
        t0 = time.monotonic()
        subprocess.run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env, stdout=out,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True, timeout=600)  # fmt: skip
    return time.monotonic() - t0


@contextlib.contextmanager
def docker_events(model: str, log: Path) -> Iterator[None]:
    """Record the engine's events of ``model``'s containers (one JSON object a line) while the block runs."""
    with log.open("wb") as out:
        proc = subprocess.Popen(["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
                                 "--filter", f"label=io.slipway.service={model}"],
                                stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            yield
        finally:
            proc.terminate()
            proc.wait()


def read_events(log: Path) -> list[dict[str, Any]]:
    events = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        attrs = event["Actor"]["Attributes"]
        stage, role = attrs.get("io.slipway.stage", ""), attrs.get("io.slipway.role", "")
        events.append({"t": event["timeNano"] / 1e9, "action": event["Action"], "stage": stage, "role": role})
    return sorted(events, key=lambda e: e["t"])


def smoke_end(report_dir: Path) -> float | None:
    """When the smoke phase ended: the last write of Locust's smoke files."""
    times = [p.stat().st_mtime for p in report_dir.glob("smoke*")]
    return max(times) if times else None


@contextlib.contextmanager
def prefect_server(env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, float]]:
    """``prefect server start`` on 127.0.0.1:PORT; yields its API URL and seconds to a healthy API."""
    url = f"http://127.0.0.1:{port}/api"
    with log.open("wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"prefect server exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - t0 > 180:
                    raise RuntimeError(f"prefect server not healthy within 180 s (log: {log})")
                time.sleep(0.2)
            ready = time.monotonic() - t0
            print(f"prefect server {url}: healthy after {ready:.1f} s", flush=True)
            yield url, ready
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its services
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def read_runs(api_url: str, deploys: list[Deploy]) -> None:
    """Fill in each deploy's flow run, task runs and logs from Prefect's records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def ts(value: Any) -> float | None:
        return value.timestamp() if value else None

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            for d in (d for d in deploys if d.flow_run_id):
                run_id = UUID(d.flow_run_id)
                run = await client.read_flow_run(run_id)
                d.flow = {"name": run.name, "state": run.state_type.value if run.state_type else "",
                          "start": ts(run.start_time), "end": ts(run.end_time)}  # fmt: skip
                runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
                d.task_runs = sorted(
                    ({"name": t.name, "start": ts(t.start_time), "end": ts(t.end_time), "runs": t.run_count,
                      "state": t.state_type.value if t.state_type else ""} for t in runs),
                    key=lambda t: t["start"] or 0.0,
                )  # fmt: skip
                logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                              sort=LogSort.TIMESTAMP_ASC)  # fmt: skip
                d.logs = [{"t": ts(log.timestamp), "message": log.message[:300]} for log in logs]


# --- rounds ----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.token = secrets.token_hex(2)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "PREFECT_"))}
        self.env |= {"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "SLIPWAY_API_KEY": KEY}  # fmt: skip
        self.env.pop("CI", None)  # the CLI would not start its local server under CI
        # per mode: Prefect's temporary server per call, or the CLI's own server, one for every round
        self.mode_env = {"ephemeral": {"SLIPWAY_PREFECT_SERVER": "temporary"}, "server": {},
                         "slipway": {"SLIPWAY_PREFECT_SERVER": "auto",
                                     "SLIPWAY_PREFECT_SERVER_DIR": str(work / "slipway-server")}}  # fmt: skip
        self.local_server = False
        self.deploys: list[Deploy] = []
        self.live: dict[Path, dict[str, str]] = {}  # spec → env of rounds not torn down yet
        self.base_tags: list[str] = []
        self.used_docker = False
        self.rounds = 0

    def round(self, kind: str, mode: str, api_url: str = "", cold: bool = False) -> None:
        self.rounds += 1
        self.used_docker |= kind == "docker"
        name = f"pb{self.token}{self.rounds}"  # short: see the docstring
        folder = self.work / name
        model_dir = folder / "model"
        train(model_dir, version=1)
        base = self._cold_base(name) if cold else BASE
        ports = (free_port(), free_port())  # below the ephemeral range (slipway.ports)
        spec, gate_s = write_spec(kind, name, model_dir, ports, base)
        env = self.env | self.mode_env[mode] | {"SLIPWAY_STATE_DIR": str(folder / "state")}
        if api_url:
            env["PREFECT_API_URL"] = api_url
        if cold:
            self._seed_wheels(spec, folder / "state" / "wheels")
        print(f"round {self.rounds}: {kind}, prefect {mode}{', first-ever' if cold else ''} ({name})", flush=True)
        self.live[spec] = env
        cases = ["first-ever"] if cold else ["first", "repeat"]
        for version, case in enumerate(cases, 1):
            if version > 1:
                train(model_dir, version=version)
            self._deploy(kind, case, mode, name, spec, env, gate_s)
        t0, t1, rc = run_cli(["teardown", str(spec)], env, folder / "teardown.log", self.args.timeout)
        if rc != 0:
            raise RuntimeError(f"slipway teardown {spec} failed: {(folder / 'teardown.log').read_text()[-2000:]}")
        del self.live[spec]
        print(f"  teardown: {t1 - t0:.1f} s", flush=True)

    def _deploy(self, kind: str, case: str, mode: str, name: str, spec: Path, env: dict[str, str],
                gate_s: float) -> None:  # fmt: skip
        log, events = spec.parent / f"deploy-{case}.log", spec.parent / f"events-{case}.jsonl"
        with docker_events(name, events) if kind == "docker" else contextlib.nullcontext():
            t0, t1, rc = run_cli(["deploy", str(spec)], env, log, self.args.timeout)
        d = Deploy(kind, case, mode, name, gate_s, t0, t1, rc, list(os.getloadavg()))
        if kind == "docker":
            d.events = read_events(events)
        d.server_starting = server_starting(log, t0)
        if rc != 0:
            d.output_tail = log.read_text(errors="replace")[-3000:]
        settings = Settings(state_dir=Path(env["SLIPWAY_STATE_DIR"]))
        seen = {x.release_id for x in self.deploys}
        record = next((r for r in open_ledger(settings).releases(name) if r.id not in seen), None)
        if record is not None:
            d.flow_run_id, d.release_id = record.flow_run_id, record.id
            d.smoke_end = smoke_end(settings.path("reports", name, record.id))
            ready = settings.path("local", name, "production", f"{record.id}.ready")
            d.production_ready = ready.stat().st_mtime if ready.exists() else None
        self.deploys.append(d)
        outcome = "ok" if rc == 0 else f"FAILED (exit {rc}; see {log})"
        print(f"  deploy {case}: {t1 - t0:.1f} s, {outcome}", flush=True)

    def _cold_base(self, name: str) -> str:
        """A new tag of the base image with one label more: a new image id, so a new dependency key."""
        tag = f"slipway-pipebench/python-base:{name}"
        dockerfile = f"FROM {BASE}\nLABEL io.slipway.pipebench={name}\n"
        subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                       capture_output=True)  # fmt: skip
        self.base_tags.append(tag)
        return tag

    def _seed_wheels(self, spec: Path, wheels: Path) -> None:
        """Put the dependency wheels of the cold round where its build looks, from a local cache."""
        loaded = load_spec(spec)
        with tempfile.TemporaryDirectory() as tmp:
            reqs = requirements(package_model(loaded, Path(tmp)).manifest.framework)
        client = docker.from_env()
        key = deps_key(str(client.images.get(loaded.image.base).id), reqs)
        client.close()
        for cache in WHEEL_CACHES:
            for found in sorted(cache.glob("*/.complete")):
                if found.read_text() == reqs:
                    shutil.copytree(found.parent, wheels / key)
                    print(f"  wheels copied from {found.parent} (no download)", flush=True)
                    return
        raise SystemExit(f"no local wheel cache holds these requirements ({WHEEL_CACHES}): run --cold 0, or "
                         "benchmarks/images.py once to fill one")  # fmt: skip

    def start_local_server(self) -> tuple[float, str]:
        """``slipway server start`` as a machine's first flow command would: (seconds, its API URL)."""
        env = self.env | self.mode_env["slipway"] | {"SLIPWAY_STATE_DIR": str(self.work / "state-server")}
        log = self.work / "slipway-server-start.log"
        self.local_server = True
        t0, t1, rc = run_cli(["server", "start"], env, log, self.args.timeout)
        if rc != 0:
            raise RuntimeError(f"slipway server start failed: {log.read_text()[-2000:]}")
        url = json.loads((self.work / "slipway-server" / "server.json").read_text())["url"]
        print(f"the CLI's local server {url}: ready after {t1 - t0:.1f} s", flush=True)
        return t1 - t0, str(url)

    def cleanup(self) -> None:
        """Tear down what a failed round left, stop the CLI's local server, remove the images this run built."""
        for spec, env in list(self.live.items()):
            run_cli(["teardown", str(spec)], env, spec.parent / "teardown-finally.log", self.args.timeout)
            del self.live[spec]
        if self.local_server:
            env = self.env | self.mode_env["slipway"] | {"SLIPWAY_STATE_DIR": str(self.work / "state-server")}
            run_cli(["server", "stop"], env, self.work / "slipway-server-stop.log", self.args.timeout)
        if not self.used_docker:
            return
        client = docker.from_env()
        try:
            for image in client.images.list(name=f"{REPOSITORY}/pb{self.token}*"):
                for tag in image.tags:  # by tag: parents shared with other builds stay
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag)
            children: dict[str, list[str]] = {}
            for info in client.api.images(all=True):
                children.setdefault(info.get("ParentId", ""), []).append(info["Id"])
            for tag in self.base_tags:  # the cold rounds' bases: all that descends from them is this run's
                for image_id in _descendants(children, str(client.images.get(tag).id)):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(image_id, force=True)
        finally:
            client.close()


def _descendants(children: dict[str, list[str]], image_id: str) -> list[str]:
    """``image_id`` and every image built on it, children before their parents."""
    return [d for child in children.get(image_id, []) for d in _descendants(children, child)] + [image_id]


# --- report ----------------------------------------------------------------------------------------


def cell(values: list[float]) -> str:
    if not values:
        return ""
    med = statistics.median(values)
    return f"{med:.2f}" if len(values) == 1 else f"{med:.2f} ({min(values):.2f}–{max(values):.2f})"


def table(deploys: list[Deploy], modes: list[str]) -> str:
    ok = [d for d in deploys if d.rc == 0 and d.flow]
    cases = [c for c in CASES if any((d.kind, d.case) == c for d in ok)]
    by_case = {c: [d.figures() for d in ok if (d.kind, d.case) == c] for c in cases}
    gate_s = sorted({d.gate_s for d in ok})
    rows = ["package", "build image", "push", "deploy staging (to ready)", *STAGING_SUB, "gate: smoke", "gate: load",
            "promote", *PROMOTE_SUB, "tear down staging", "between steps", "flow total"]  # fmt: skip
    for m in modes:
        rows += [f"CLI before flow ({m})", *([TEMP_SERVER] if m == "ephemeral" else []), f"CLI after flow ({m})"]
        rows.append(f"CLI wall ({m})")
    rows += ["overhead: flow − gate duration"] + [f"overhead: CLI − gate duration ({m})" for m in modes]
    head = [f"{kind} {case} (n={len(by_case[(kind, case)])})" for kind, case in cases]
    lines = ["| seconds | " + " | ".join(head) + " |", "|---|" + "---:|" * len(cases)]
    for row in rows:
        label = f"gate: load (configured {'/'.join(f'{g:g}' for g in gate_s)} s)" if row == "gate: load" else row
        if row.startswith("overhead"):
            label = f"**{label}**"
        values = [cell([f[row] for f in by_case[c] if row in f]) for c in cases]
        if any(values):
            lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines)


# (target, case) → the goal for its overhead (CLI wall − gate duration), in seconds: every docker deploy
# ≤ 30 s (the first pipeline goal), a repeat deploy ≤ 8 s on local and ≤ 12 s on docker (issue 15)
MODES = ("ephemeral", "server", "slipway")
GOALS = {("docker", "first"): 30.0, ("docker", "first-ever"): 30.0, ("local", "repeat"): 8.0,
         ("docker", "repeat"): 12.0}  # fmt: skip


def verdicts(deploys: list[Deploy], modes: list[str]) -> list[str]:
    lines = []
    for (kind, case), goal in GOALS.items():
        for mode in modes:
            values = [d.figures()[f"overhead: CLI − gate duration ({mode})"] for d in deploys
                      if d.rc == 0 and (d.kind, d.case, d.mode) == (kind, case, mode)]  # fmt: skip
            if values:
                med = statistics.median(values)
                verdict = "met" if med <= goal else "NOT met"
                lines.append(f"{kind} {case}, prefect {mode}: overhead (CLI wall − gate duration) median {med:.1f} s, "
                             f"max {max(values):.1f} s → goal ≤ {goal:g} s {verdict}")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per target and Prefect mode")
    parser.add_argument("--targets", default="local,docker", help="comma-separated: local, docker")
    parser.add_argument("--prefect", choices=["all", *MODES], default="all")
    parser.add_argument("--cold", type=int, default=1, help="first-ever docker deploys (dependency layer built)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one CLI call may take")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if unknown := set(targets) - set(SPECS):
        raise SystemExit(f"unknown targets {sorted(unknown)}: use {', '.join(SPECS)}")
    modes = list(MODES) if args.prefect == "all" else [args.prefect]
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slipway-pipebench-") as tmp:
        bench = Bench(Path(tmp), args)
        local_ready: float | None = None
        try:
            database_s = create_database(bench.env, bench.work / "database.log")
            print(f"Prefect's database created (prefect server database upgrade): {database_s:.1f} s", flush=True)
            if "ephemeral" in modes:
                for _ in range(args.repeat):
                    for kind in targets:
                        bench.round(kind, "ephemeral")
            if "docker" in targets:
                for _ in range(args.cold):
                    bench.round("docker", "ephemeral", cold=True)
            port = free_port()
            with prefect_server(bench.env, port, bench.work / "prefect-server.log") as (url, server_ready):
                if "server" in modes:
                    for _ in range(args.repeat):
                        for kind in targets:
                            bench.round(kind, "server", url)
                asyncio.run(read_runs(url, [d for d in bench.deploys if d.mode != "slipway"]))
            if "slipway" in modes:
                local_ready, local_url = bench.start_local_server()
                for _ in range(args.repeat):
                    for kind in targets:
                        bench.round(kind, "slipway")
                asyncio.run(read_runs(local_url, [d for d in bench.deploys if d.mode == "slipway"]))
        finally:
            bench.cleanup()
    elapsed = time.monotonic() - began
    deploys = bench.deploys
    modes = [m for m in MODES if any(d.mode == m for d in deploys)]
    loads = [x for d in deploys for x in d.load_avg[:1]]
    print(f"\n{started_at}; {platform.node()}; {os.cpu_count()} cores; load average (1 min) "
          f"{min(loads, default=0):.1f}–{max(loads, default=0):.1f}; {args.repeat} round(s) per target and "
          f"Prefect mode; benchmark took {elapsed / 60:.1f} min\n")  # fmt: skip
    print(table(deploys, modes))
    print()
    print(f"creating Prefect's database (once per PREFECT_HOME, before any round): {database_s:.1f} s")
    print(f"prefect server start (`prefect server start` → /api/health answers): {server_ready:.1f} s")
    if local_ready is not None:
        print(f"the CLI's local server on first use (`slipway server start`, database created): {local_ready:.1f} s")
    outside = {m: [f[f"CLI wall ({m})"] - f["flow total"] for f in (d.figures() for d in deploys if d.mode == m)
                   if "flow total" in f] for m in modes}  # fmt: skip
    if all(outside.get(m) for m in ("ephemeral", "server")):
        eph, srv = statistics.median(outside["ephemeral"]), statistics.median(outside["server"])
        print(f"CLI wall outside the flow run (median): ephemeral {eph:.1f} s, server {srv:.1f} s → the temporary "
              f"server costs {eph - srv:.1f} s per CLI call")  # fmt: skip
    for line in verdicts(deploys, modes):
        print(line)
    for d in deploys:
        if d.rc != 0:
            print(f"FAILED: {d.kind} {d.case} ({d.mode}, {d.model}): exit {d.rc}\n{d.output_tail[-800:]}")
        elif d.flow and {name for name, _ in STEPS} - {t["name"].rsplit("-", 1)[0] for t in d.task_runs}:
            print(f"note: {d.kind} {d.case} ({d.mode}): task runs missing from Prefect's records")
        if any(log["message"].startswith("downloading dependency wheels") for log in d.logs):
            print(f"note: {d.kind} {d.case} ({d.mode}): the build downloaded its wheels (pip download included)")
    out_dir = ROOT / "benchmarks" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"date": started_at, "args": vars(args), "elapsed_s": elapsed,
                               "database_s": database_s, "prefect_server_ready_s": server_ready,
                               "local_server_ready_s": local_ready,
                               "deploys": [asdict(d) | {"figures": d.figures()} for d in deploys]},
                              indent=2, default=str))  # fmt: skip
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
