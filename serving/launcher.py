"""The command line: bind the sockets, load and verify the model, serve it with uvicorn.

    python -m serving --package DIR [--host 127.0.0.1] [--port N] [--control-port 0] [--hold]
                      [--ready-file PATH] [--workers 1] [--no-auth] [--max-body-bytes N]
                      [--batching auto|on|off] [--max-batch-rows 256] [--max-batch-wait-us 0]
                      [--graceful-timeout S] [--loop uvloop|asyncio] [--log-level warning] [serve]

The platform's contract (``serving.contract.detect``: generic, Cloud Run, SageMaker, Vertex AI,
Lambda) decides the default port, the routes served besides the generic ones, the graceful timeout
and, on SageMaker, the package (/opt/ml/model when it holds one). Under Lambda
(``AWS_LAMBDA_RUNTIME_API`` set) no socket is bound: the model is loaded the same way and the
runtime interface client runs in this process (``serving.lambda_runtime``).

Order matters: the public socket is bound (SO_REUSEPORT) first, so a taken port fails fast, but it
listens only once the model is loaded and self-checked; a bound socket that is not listening gets no
connections, so a new release joining a port under traffic never queues requests behind its model
load. With ``--hold`` the public port is bound but served only from SIGUSR1 on (the control port at
once): a candidate started beside the live release on the same port (``kind: local``) takes no
traffic until it is promoted; the ready file then says ``"serving": true``.

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 unexpected error, 2 bad
configuration (usage, no API key), 3 the package cannot be served (unreadable, sha256 mismatch,
golden sample mismatch), 4 a port cannot be bound (``serving.contract.EXIT_REASONS``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import importlib.util
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving import DEFAULT_MAX_BODY_BYTES, SERVER_NAME
from serving.contract import (
    BATCHING_ENV,
    EXIT_BIND,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_PACKAGE,
    MAX_BATCH_ROWS_ENV,
    MAX_BATCH_WAIT_US_ENV,
    PACKAGE_S3_ENV,
    PACKAGE_SHA256_ENV,
    SAGEMAKER_COMMAND,
    SAGEMAKER_MODEL_DIR,
    Contract,
    Routes,
    api_key,
    detect,
)

if TYPE_CHECKING:
    import uvicorn

    from serving.app import SlipwayApp
    from serving.batching import BatchSettings
    from serving.workers import Held

_BACKLOG = 2048


class Fatal(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Bound:
    public: socket.socket
    control: socket.socket | None

    @property
    def sockets(self) -> list[socket.socket]:
        return [self.public] if self.control is None else [self.public, self.control]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve one Slipway model package.", allow_abbrev=False
    )  # no abbreviations: serving.contract.detect reads the same arguments
    parser.add_argument("--package", type=Path, required=True, help="package directory (with package.json)")
    parser.add_argument("--host", default="127.0.0.1", help="public address (0.0.0.0 in images)")
    parser.add_argument(
        "--port", type=int, default=None, help="public port, SO_REUSEPORT (default: the contract's; 0 = ephemeral)"
    )
    parser.add_argument("--control-port", type=int, default=None, help="extra 127.0.0.1 port (0 = ephemeral)")
    parser.add_argument("--ready-file", type=Path, default=None, help="JSON written once serving")
    parser.add_argument(
        "--hold", action="store_true", help="serve the public port only from SIGUSR1 on (needs --control-port)"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the sockets")
    parser.add_argument("--no-auth", action="store_true", help="serve without API key (deliberately)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--batching", default=None, choices=["auto", "on", "off"],
        help=f"requests waiting together share one predict call (default: ${BATCHING_ENV}, else auto: "
        "models known to predict each row on its own)",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-rows", type=int, default=None,
        help=f"most rows in one batched call (default: ${MAX_BATCH_ROWS_ENV}, else 256)",
    )  # fmt: skip
    parser.add_argument(
        "--max-batch-wait-us", type=int, default=None,
        help=f"how long a batch waits for company, µs (default: ${MAX_BATCH_WAIT_US_ENV}, else 0: never)",
    )  # fmt: skip
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=None,
        help="seconds to finish requests on SIGTERM (default: the contract's)",
    )
    parser.add_argument(
        "--loop", default="uvloop", choices=["uvloop", "asyncio"], help="event loop (default uvloop; see BENCHMARKS)"
    )
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument(
        "command", nargs="?", choices=[SAGEMAKER_COMMAND], help="SageMaker's start argument (port 8080, /ping)"
    )
    return parser


def _bind(host: str, port: int, what: str, reuseport: bool) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
    except socket.gaierror as exc:
        raise Fatal(EXIT_BIND, f"cannot bind the {what} port {port}: cannot resolve host {host!r} ({exc})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        reason = {
            errno.EADDRINUSE: "the port is in use by a process that did not set SO_REUSEPORT (or another user)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
            errno.EADDRNOTAVAIL: "the address does not belong to this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise Fatal(EXIT_BIND, f"cannot bind the {what} port {port} on {host}: {reason}") from None
    return sock


def _batching(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> BatchSettings:
    """The batch settings: the options, else the contract's environment, else the defaults."""
    from serving.batching import DEFAULT_MAX_ROWS, MODES, BatchSettings

    mode = args.batching or environ.get(BATCHING_ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise Fatal(EXIT_CONFIG, f"{BATCHING_ENV}={mode!r} is not one of {', '.join(MODES)}")

    def number(value: int | None, env: str, default: int, least: int, option: str) -> int:
        text = str(value) if value is not None else environ.get(env, "").strip()
        if not text:
            return default
        if not text.lstrip("-").isdigit() or int(text) < least:
            source = option if value is not None else env
            raise Fatal(EXIT_CONFIG, f"{source}={text!r} is not a whole number of at least {least}")
        return int(text)

    rows = number(args.max_batch_rows, MAX_BATCH_ROWS_ENV, DEFAULT_MAX_ROWS, 1, "--max-batch-rows")
    wait = number(args.max_batch_wait_us, MAX_BATCH_WAIT_US_ENV, 0, 0, "--max-batch-wait-us")
    return BatchSettings(mode, rows, wait)


def _load(
    package: Path, key: str | None, routes: Routes, max_body_bytes: int, batching: BatchSettings | None = None
) -> SlipwayApp:
    from serving import create_app
    from serving.model import PackageError, configure_sklearn

    try:
        app = create_app(package, api_key=key, max_body_bytes=max_body_bytes, routes=routes, batching=batching)
    except PackageError as exc:
        raise Fatal(EXIT_PACKAGE, f"refusing to serve {package}: {exc}") from None
    configure_sklearn()  # after the load: a package refused early never pays for importing sklearn
    # What is loaded now (~135,000 objects with scikit-learn) lives as long as the process: out of the
    # collector's sight, a full collection walks only what serving allocates (66 ms → 0.2 ms, BENCHMARKS.md),
    # and forked workers keep sharing those pages.
    gc.collect()
    gc.freeze()
    return app


def _config(app: SlipwayApp, args: argparse.Namespace) -> uvicorn.Config:
    import uvicorn

    have = importlib.util.find_spec
    return uvicorn.Config(
        app,
        loop=args.loop if have(args.loop) else "asyncio",
        http="httptools" if have("httptools") else "h11",
        ws="none",
        lifespan="off",
        interface="asgi3",
        access_log=False,
        log_level=args.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=args.contract.graceful_timeout_s,
    )


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _ready(app: SlipwayApp, bound: Bound, args: argparse.Namespace, serving: bool) -> None:
    if args.ready_file is not None:
        manifest = app.model.manifest
        control_port = bound.control.getsockname()[1] if bound.control is not None else None
        _write_ready_file(args.ready_file, {
            "pid": args.leader_pid,  # the process to signal: the supervisor when there are workers
            "port": bound.public.getsockname()[1], "control_port": control_port, "sha256": manifest.sha256,
            "name": manifest.name, "version": manifest.version, "workers": args.workers, "host": args.host,
            "contract": args.contract.name, "serving": serving,
        })  # fmt: skip


def _announce(app: SlipwayApp, bound: Bound, args: argparse.Namespace) -> None:
    """Once every socket is listening and the server accepts: write the ready file, say so on stderr."""
    manifest = app.model.manifest
    port = bound.public.getsockname()[1]
    control_port = bound.control.getsockname()[1] if bound.control is not None else None
    contract: Contract = args.contract
    _ready(app, bound, args, serving=not args.hold)
    control = f", control 127.0.0.1:{control_port}" if control_port is not None else ""
    auth = "on" if app.auth else "OFF (--no-auth or SLIPWAY_AUTH=none)"
    routes, extra = contract.routes, ""
    if contract.name != "generic":
        extra = f"; {contract.name} contract: POST {routes.predict}, GET {routes.ready}"
    held = " (held until SIGUSR1)" if args.hold else ""
    b = app.batching
    batching = (f"batching on (≤ {b.max_rows} rows, wait ≤ {b.max_wait_us} µs)" if app.batcher is not None
                else "batching off") + f": {app.batching_reason}"  # fmt: skip
    print(
        f"{SERVER_NAME}: serving {manifest.name} {manifest.version} (sha256 {manifest.sha256[:12]}) on "
        f"{args.host}:{port}{held}{control}; {args.workers} worker(s); auth {auth}{extra}; "
        f"graceful shutdown {contract.graceful_timeout_s} s; {batching}",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def _held(app: SlipwayApp, bound: Bound, args: argparse.Namespace) -> Held | None:
    """The public socket, held until SIGUSR1 (``--hold``); None when it is served at once."""
    from serving.workers import Held

    def serving() -> None:
        _ready(app, bound, args, serving=True)
        _say(f"now serving {args.host}:{bound.public.getsockname()[1]} (pid {os.getpid()})")

    return Held(bound.public, serving) if args.hold else None


def _serve_one(app: SlipwayApp, bound: Bound, args: argparse.Namespace) -> int:
    from serving.workers import serve

    sockets = [s for s in bound.sockets if not (args.hold and s is bound.public)]
    serve(app, _config(app, args), sockets, lambda: _announce(app, bound, args), _held(app, bound, args))
    return 0


def _package(contract: Contract, args: argparse.Namespace) -> Path:
    """The package to serve: the contract's (SageMaker model data) or ``--package``; says which on SageMaker."""
    if contract.name == "sagemaker":
        if contract.package_dir == SAGEMAKER_MODEL_DIR:
            _say(f"serving the SageMaker model data in {SAGEMAKER_MODEL_DIR} instead of {args.package}")
        else:
            with contextlib.suppress(OSError):
                if any(SAGEMAKER_MODEL_DIR.iterdir()):
                    _say(f"{SAGEMAKER_MODEL_DIR} holds no package.json: serving the image's package {args.package}")
    return contract.package_dir or args.package


def _serve_lambda(package: Path, key: str | None, args: argparse.Namespace, batching: BatchSettings) -> int:
    """Load the model once (the cold start's init), then answer Lambda's events with it in this process.

    With ``SLIPWAY_PACKAGE_S3`` (``model_location: s3``) the package is first fetched from S3 into
    ``/tmp/slipway-package`` and its artifact checked against ``SLIPWAY_PACKAGE_SHA256`` (``serving.aws``)."""
    if importlib.util.find_spec("awslambdaric") is None:
        raise Fatal(EXIT_CONFIG, "AWS_LAMBDA_RUNTIME_API is set but awslambdaric (the runtime client) is not installed")
    started = time.perf_counter()
    if os.environ.get(PACKAGE_S3_ENV):
        from serving.aws import AwsError, fetch_package

        try:
            into = Path(tempfile.gettempdir()) / "slipway-package"  # Lambda's only writable place: /tmp
            package = fetch_package(os.environ[PACKAGE_S3_ENV], os.environ.get(PACKAGE_SHA256_ENV, ""), into)
        except AwsError as exc:
            raise Fatal(EXIT_PACKAGE, f"refusing to serve the package {os.environ[PACKAGE_S3_ENV]}: {exc}") from None
        _say(f"lambda: fetched the package from {os.environ[PACKAGE_S3_ENV]} in "
             f"{1000 * (time.perf_counter() - started):.0f} ms (sha256 checked)")  # fmt: skip
    app = _load(package, key, args.contract.routes, args.max_body_bytes, batching)  # run() turns batching off
    manifest = app.model.manifest
    auth = "HTTP events need the API key" if app.auth else "auth OFF (--no-auth or SLIPWAY_AUTH=none)"
    _say(
        f"lambda: loaded {manifest.name} {manifest.version} (sha256 {manifest.sha256[:12]}) from {package}; "
        f"init {1000 * (time.perf_counter() - started):.0f} ms; {auth}"
    )
    from serving.lambda_runtime import run

    return run(app)


def _lambda_environ() -> dict[str, str]:
    """The environment, with the API key read from Secrets Manager or SSM when the function's
    configuration names one (once per cold start: never a plain environment value)."""
    from serving.aws import AwsError, api_key_environ

    try:
        return api_key_environ(os.environ)
    except AwsError as exc:
        raise ValueError(f"cannot read the API key: {exc}") from None


def _say(message: str) -> None:
    print(f"{SERVER_NAME}: {message}", file=sys.stderr, flush=True)


def _exit_on(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    # Until it serves: SIGTERM ends a starting server at once (PID 1 in a container ignores it by
    # default), and SIGUSR1 (serve the held port) waits for the handler serving installs.
    signal.signal(signal.SIGTERM, _exit_on)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    args.leader_pid = os.getpid()
    try:
        if args.workers < 1:
            raise Fatal(EXIT_CONFIG, f"--workers must be at least 1, not {args.workers}")
        if args.max_body_bytes < 1:
            raise Fatal(EXIT_CONFIG, f"--max-body-bytes must be positive, not {args.max_body_bytes}")
        try:
            args.contract = contract = detect(argv, os.environ)
            key = api_key(_lambda_environ() if contract.name == "lambda" else os.environ, args.no_auth)
        except ValueError as exc:
            raise Fatal(EXIT_CONFIG, str(exc)) from None
        package = _package(contract, args)
        batching = _batching(args, os.environ)
        if contract.port is None:
            return _serve_lambda(package, key, args, batching)
        if args.ready_file is not None and not args.ready_file.parent.is_dir():
            raise Fatal(EXIT_CONFIG, f"--ready-file directory {args.ready_file.parent} does not exist")
        if args.hold and args.control_port is None:
            raise Fatal(EXIT_CONFIG, "--hold needs --control-port: a held server is checked on its control port")
        public = _bind(args.host, contract.port, "public", reuseport=True)
        control = None if args.control_port is None else _bind("127.0.0.1", args.control_port, "control", False)
        bound = Bound(public, control)
        app = _load(package, key, contract.routes, args.max_body_bytes, batching)
        served = [s for s in bound.sockets if not (args.hold and s is bound.public)]
        for sock in served:
            sock.listen(_BACKLOG)
        if args.workers == 1:
            return _serve_one(app, bound, args)
        from serving.workers import run_workers

        return run_workers(
            args.workers, lambda: _config(app, args), app, served, lambda: _announce(app, bound, args),
            _held(app, bound, args),
        )  # fmt: skip
    except Fatal as exc:
        print(f"{SERVER_NAME}: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except Exception as exc:  # no traceback spam at startup: one line that says what happened
        print(f"{SERVER_NAME}: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
