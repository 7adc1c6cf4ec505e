"""The model server's interface, as targets see it: port, routes, exit codes.

(Placeholder until the platform contracts land; the names are those the rest of the tree uses.)
"""

from __future__ import annotations

from dataclasses import dataclass

PORT = 8000
SERVER_UID = 10001
EXIT_ERROR, EXIT_CONFIG, EXIT_PACKAGE, EXIT_BIND = 1, 2, 3, 4
EXIT_REASONS = {
    EXIT_ERROR: "the server failed with an unexpected error",
    EXIT_CONFIG: "the server refused to start: no API key or bad arguments",
    EXIT_PACKAGE: "the package failed its start-up check (artifact sha256 or golden samples)",
    EXIT_BIND: "the server could not bind its port",
}


def exit_reason(code: int) -> str:
    return EXIT_REASONS.get(code, f"exit code {code}")


@dataclass(frozen=True)
class Routes:
    predict: str = "/predict"
    health: str = "/health"
    ready: str = "/ready"
    metadata: str | None = "/metadata"
    metrics: str | None = "/metrics"
    request_key: str = "inputs"


GENERIC = Routes()
