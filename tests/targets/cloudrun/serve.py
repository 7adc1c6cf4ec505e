"""Run the Cloud Run emulator on its own, for `make demo TARGET=cloudrun` (scripts/services/cloudrun-emulator.sh).

    python -m tests.targets.cloudrun.serve --port 8790 --dir DIR [--project slipway-demo]

Writes the deployer's service-account key file to DIR/deployer.json (point GOOGLE_APPLICATION_CREDENTIALS
at it) once it answers, and runs until SIGTERM, when it removes every container and router it started.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from tests.targets.cloudrun.emulator import CloudRunEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--project", action="append", default=[])
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    emulator = CloudRunEmulator(args.dir).start(args.port)
    for project in args.project or ["slipway-demo"]:
        emulator.add_project(project)
        key = emulator.deployer(project, args.dir / "deployer.json.tmp")
        key.replace(args.dir / "deployer.json")
    print(f"Cloud Run emulator on {emulator.url}; key file {args.dir / 'deployer.json'}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    emulator.stop()


if __name__ == "__main__":
    main()
