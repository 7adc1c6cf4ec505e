"""Clients that keep calling an endpoint while a stage changes under them, counting what they saw."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable

import httpx
from pydantic import SecretStr

from slipway.http import request_headers
from slipway.release import Endpoint

Identify = Callable[[httpx.Response], str]  # the sha256 of the release that gave an answer


def by_metadata(resp: httpx.Response) -> str:
    return str(resp.json()["sha256"])


class Load:
    """Threads sending GET /metadata until stopped; each outcome is counted as the first 12 characters
    of the sha256 of the release that answered, or as the error. Half the threads reuse keep-alive
    connections (what SDK clients do), half open a connection per request (``keepalive=False``: all).

    An endpoint that serves only its platform's predict route (SageMaker's runtime) gets a prediction
    request instead, and ``identify`` tells from the answer which release gave it (the invoked variant)."""

    def __init__(
        self, endpoint: Endpoint, key: str, threads: int = 4, keepalive: bool = True, identify: Identify = by_metadata
    ) -> None:
        self.url, self.stop, self.identify = endpoint.url, threading.Event(), identify
        if endpoint.routes.metadata is None:
            rows = {endpoint.routes.request_key: [[5.1, 3.5, 1.4, 0.2]]}
            self.method, self.path, self.body = "POST", endpoint.routes.predict, json.dumps(rows).encode()
        else:
            self.method, self.path, self.body = "GET", endpoint.routes.metadata, b""
        self.headers = request_headers(endpoint, SecretStr(key), self.method, f"{endpoint.url}{self.path}", self.body)
        if self.body:
            self.headers["Content-Type"] = "application/json"
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        reuse = [keepalive and i % 2 == 0 for i in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(r,), daemon=True) for r in reuse]

    def _run(self, reuse: bool) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if reuse else 0)
        with httpx.Client(headers=self.headers, timeout=10, limits=limits) as http:
            while not self.stop.is_set():
                try:
                    resp = http.request(self.method, f"{self.url}{self.path}", content=self.body or None)
                    outcome = self.identify(resp)[:12] if resp.status_code == 200 else f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    outcome = f"error {type(exc).__name__}: {exc}"[:120]
                with self.lock:
                    self.outcomes[outcome] += 1

    @property
    def failures(self) -> dict[str, int]:
        return {k: v for k, v in self.outcomes.items() if k.startswith(("HTTP ", "error "))}

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)
