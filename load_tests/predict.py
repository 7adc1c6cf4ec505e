"""Locust users of the gate. Run by ``tasks/gate.py`` as ``locust -f load_tests/predict.py USER``.

Never import this module in the flow's process: importing locust monkey-patches the interpreter.

Environment (set by the gate, ``tasks.gate.gate_env``):
  SLIPWAY_GATE_ENDPOINT the endpoint (JSON of ``slipway.release.Endpoint``): how to authenticate, its
                        headers, and its routes (the predict path, the key rows go under)
  SLIPWAY_GATE_PACKAGE  the model package directory (its golden samples and schema)
  SLIPWAY_GATE_BATCH    rows per request in the load phase
  SLIPWAY_API_KEY       the endpoint's API key (absent when the endpoint has no auth)
  SLIPWAY_GATE_SMOKE_REPORT  where the smoke phase writes its verdict (JSON)
  SLIPWAY_GATE_STATS    where the load phase writes its final stats (JSON, Locust's own serialization)
  SLIPWAY_GATE_COLD     where each cold start is appended (JSON lines: its latency, the init it reported)

Requests are counted under three names: the predict route (warm answers), ``cold start`` (an answer
carrying ``x-slipway-cold-start``: the first request of a fresh execution environment, on targets
that start them on demand) and ``throttled (HTTP 429)`` (the platform refused it for concurrency or
rate, not the model): the gate judges latency on warm answers and reports the other two apart.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from pydantic import SecretStr

from serving.contract import COLD_START_HEADER
from serving.manifest import read_manifest
from slipway.http import request_headers
from slipway.release import AuthScheme, Endpoint

_MANIFEST = read_manifest(Path(os.environ["SLIPWAY_GATE_PACKAGE"]))
_BATCH = int(os.environ.get("SLIPWAY_GATE_BATCH", "1"))
_KEY = SecretStr(os.environ["SLIPWAY_API_KEY"]) if os.environ.get("SLIPWAY_API_KEY") else None
_ENDPOINT = Endpoint.from_json(os.environ["SLIPWAY_GATE_ENDPOINT"])
_PREDICT, _ROWS = _ENDPOINT.routes.predict, _ENDPOINT.routes.request_key
_SIGNED = _ENDPOINT.auth.scheme is AuthScheme.AWS_SIGV4  # a signature per request; other schemes: fixed headers
_FIXED = {"Content-Type": "application/json"} | (
    {} if _SIGNED else request_headers(_ENDPOINT, _KEY, "POST", _ENDPOINT.url + _PREDICT)
)
COLD, THROTTLED = "cold start", "throttled (HTTP 429)"


def _sort(resp: Any) -> bool:
    """File a response under its kind (a cold start, a throttled request); True when it was throttled."""
    if resp.status_code == 429:
        resp.request_meta["name"] = THROTTLED
        resp.failure("HTTP 429 (throttled)")
        return True
    init = (resp.headers or {}).get(COLD_START_HEADER)
    if init is not None and resp.status_code == 200:
        resp.request_meta["name"] = COLD
        path = os.environ.get("SLIPWAY_GATE_COLD")
        if path:
            line = json.dumps({"latency_ms": resp.request_meta["response_time"], "init_ms": float(init)})
            with open(path, "a") as out:  # one short append per cold start: whole lines, whatever the processes
                out.write(line + "\n")
    return False


def _headers(body: bytes) -> dict[str, str]:
    if not _SIGNED:
        return _FIXED
    return _FIXED | request_headers(_ENDPOINT, _KEY, "POST", _ENDPOINT.url + _PREDICT, body)


def _same(got: Any, want: Any) -> bool:
    if _MANIFEST.schema.task == "regression" and isinstance(got, (int, float)) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    return bool(got == want)


class SmokeUser(FastHttpUser):
    """Sends every golden sample once, checks each prediction, then ends the run."""

    wait_time = constant(0)

    @task
    def check_every_sample(self) -> None:
        for i, sample in enumerate(_MANIFEST.samples):
            body = json.dumps({_ROWS: [sample.input]}).encode()
            with self.client.post(
                _PREDICT, data=body, headers=_headers(body), name=f"smoke sample {i}", catch_response=True
            ) as resp:
                if _sort(resp):
                    continue
                if resp.status_code != 200:
                    resp.failure(f"sample {i}: HTTP {resp.status_code} {(resp.text or '')[:200]}")
                    continue
                got = (resp.json() or {}).get("predictions", [None])[0]
                if not _same(got, sample.output):
                    resp.failure(f"sample {i}: expected {sample.output!r}, got {got!r}")
        self.environment.runner.quit()  # type: ignore[union-attr]


@events.quitting.add_listener
def _write_smoke_report(environment: Environment, **_: Any) -> None:
    """The smoke phase's verdict, written at shutdown (a quit from a user cuts Locust's CSV short)."""
    path = os.environ.get("SLIPWAY_GATE_SMOKE_REPORT")
    if path:
        stats = environment.stats
        errors = [f"{e.error} (x{e.occurrences})" for e in stats.errors.values()]
        Path(path).write_text(json.dumps({"requests": stats.total.num_requests, "failures": errors}))


_ENVIRONMENT: list[Environment] = []  # Locust's quit event, the last one, does not pass it


@events.init.add_listener
def _remember_environment(environment: Environment, **_: Any) -> None:
    _ENVIRONMENT.append(environment)


@events.quit.add_listener
def _write_final_stats(**_: Any) -> None:
    """The load phase's stats as Locust exits, every request counted (its CSV is rewritten once a second
    and misses the last one; with --processes, the master has the workers' final reports only now).
    Written by the master alone: a worker's stats are partial."""
    path = os.environ.get("SLIPWAY_GATE_STATS")
    if path and _ENVIRONMENT and not isinstance(_ENVIRONMENT[0].runner, WorkerRunner):
        Path(path).write_text(json.dumps(_ENVIRONMENT[0].stats.serialize_stats()))


class LoadUser(FastHttpUser):
    """Posts golden inputs as fast as the server answers (no think time): the load phase."""

    wait_time = constant(0)

    def on_start(self) -> None:
        rows = itertools.cycle([s.input for s in _MANIFEST.samples])
        bodies = [json.dumps({_ROWS: [next(rows) for _ in range(_BATCH)]}).encode() for _ in _MANIFEST.samples]
        self.next_body = itertools.cycle(bodies)  # encoded once: the gate's CPU goes to sending

    @task
    def predict(self) -> None:
        body = next(self.next_body)
        with self.client.post(_PREDICT, data=body, headers=_headers(body), name=_PREDICT, catch_response=True) as resp:
            if not _sort(resp) and resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
