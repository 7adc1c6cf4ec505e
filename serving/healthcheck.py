"""``python3 -m serving.healthcheck [SERVER ARGS]``: exit 0 when this container's server is healthy.

The image's HEALTHCHECK. It probes the health route on the port of the contract the server runs
under (``serving.contract.detect``), so it follows the server to $PORT on Cloud Run, to 8080 and
/ping on SageMaker, to AIP_HTTP_PORT and AIP_HEALTH_ROUTE on Vertex AI. The environment is the
container's; the server's arguments (``serve``, ``--port``) are read from PID 1's command line
when PID 1 runs ``-m serving`` (directly or under an init), unless they are given here. Under
Lambda there is no HTTP server to probe: healthy by definition (Lambda has no health checks).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from serving import SERVER_NAME
from serving.contract import detect

TIMEOUT_S = 2.0


def server_argv(cmdline: Path = Path("/proc/1/cmdline")) -> list[str]:
    """The arguments after ``-m serving`` on PID 1's command line; [] when PID 1 is something else."""
    try:
        parts = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
    for i in range(len(parts) - 1):
        if parts[i] == "-m" and parts[i + 1] == "serving":
            return [p for p in parts[i + 2 :] if p]
    return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        contract = detect(args or server_argv(), os.environ)
    except ValueError as exc:
        print(f"{SERVER_NAME}: unhealthy: {exc}", file=sys.stderr)
        return 1
    if contract.port is None:
        return 0
    url = f"http://127.0.0.1:{contract.port}{contract.routes.health}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:  # refused, timed out
        print(f"{SERVER_NAME}: unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{SERVER_NAME}: unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
