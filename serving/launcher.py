"""The command line: bind the sockets, load and verify the model, serve it with uvicorn.

    python -m serving --package DIR [--host 127.0.0.1] [--port N] [--control-port 0]
                      [--ready-file PATH] [--workers 1] [--no-auth] [--max-body-bytes N]
                      [--graceful-timeout 30] [--loop uvloop|asyncio] [--log-level warning]

Order matters: the public socket is bound (SO_REUSEPORT) first, so a taken port fails fast, but it
listens only once the model is loaded and self-checked; a bound socket that is not listening gets no
connections, so a new release joining a port under traffic never queues requests behind its model
load. Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT), 1 unexpected error, 2 bad
configuration (usage, no API key), 3 the package cannot be served (unreadable, sha256 mismatch,
golden sample mismatch), 4 a port cannot be bound.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving import DEFAULT_MAX_BODY_BYTES, SERVER_NAME

if TYPE_CHECKING:
    import uvicorn

    from serving.app import SlipwayApp

EXIT_ERROR, EXIT_CONFIG, EXIT_PACKAGE, EXIT_BIND = 1, 2, 3, 4
_AUTH_ON = frozenset({"", "key", "bearer", "on"})
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
    parser = argparse.ArgumentParser(prog="python -m serving", description="Serve one Slipway model package.")
    parser.add_argument("--package", type=Path, required=True, help="package directory (with package.json)")
    parser.add_argument("--host", default="127.0.0.1", help="public address (0.0.0.0 in images)")
    parser.add_argument(
        "--port", type=int, default=None, help="public port, SO_REUSEPORT (default: $PORT, else 8000; 0 = ephemeral)"
    )
    parser.add_argument("--control-port", type=int, default=None, help="extra 127.0.0.1 port (0 = ephemeral)")
    parser.add_argument("--ready-file", type=Path, default=None, help="JSON written once serving")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the sockets")
    parser.add_argument("--no-auth", action="store_true", help="serve without API key (deliberately)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--graceful-timeout", type=int, default=30, help="seconds to finish requests on SIGTERM")
    parser.add_argument(
        "--loop", default="uvloop", choices=["uvloop", "asyncio"], help="event loop (default uvloop; see BENCHMARKS)"
    )
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def _api_key(no_auth: bool) -> str | None:
    mode = os.environ.get("SLIPWAY_AUTH", "").strip().lower()
    if no_auth or mode == "none":
        return None
    if mode not in _AUTH_ON:
        raise Fatal(EXIT_CONFIG, f"SLIPWAY_AUTH={mode!r} is not understood; unset it, or set 'none' to disable auth")
    key = os.environ.get("SLIPWAY_API_KEY", "").strip()
    if not key:
        raise Fatal(
            EXIT_CONFIG,
            "authentication is on but SLIPWAY_API_KEY is not set: set SLIPWAY_API_KEY to the key clients "
            "must send, or pass --no-auth (or SLIPWAY_AUTH=none) to serve without authentication deliberately",
        )
    return key


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


def _load(args: argparse.Namespace, api_key: str | None) -> SlipwayApp:
    from serving import create_app
    from serving.model import PackageError, configure_sklearn

    try:
        app = create_app(args.package, api_key=api_key, max_body_bytes=args.max_body_bytes)
    except PackageError as exc:
        raise Fatal(EXIT_PACKAGE, f"refusing to serve {args.package}: {exc}") from None
    configure_sklearn()  # after the load: a package refused early never pays for importing sklearn
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
        timeout_graceful_shutdown=args.graceful_timeout,
    )


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _announce(app: SlipwayApp, bound: Bound, args: argparse.Namespace) -> None:
    """Once every socket is listening and the server accepts: write the ready file, say so on stderr."""
    manifest = app.model.manifest
    port = bound.public.getsockname()[1]
    control_port = bound.control.getsockname()[1] if bound.control is not None else None
    if args.ready_file is not None:
        _write_ready_file(args.ready_file, {
            "pid": os.getpid(), "port": port, "control_port": control_port, "sha256": manifest.sha256,
            "name": manifest.name, "version": manifest.version, "workers": args.workers, "host": args.host,
        })  # fmt: skip
    control = f", control 127.0.0.1:{control_port}" if control_port is not None else ""
    auth = "on" if app.auth else "OFF (--no-auth)"
    print(
        f"{SERVER_NAME}: serving {manifest.name} {manifest.version} (sha256 {manifest.sha256[:12]}) on "
        f"{args.host}:{port}{control}; {args.workers} worker(s); auth {auth}",
        file=sys.stderr, flush=True,
    )  # fmt: skip


def _serve_one(app: SlipwayApp, bound: Bound, args: argparse.Namespace) -> int:
    from serving.workers import serve

    serve(app, _config(app, args), bound.sockets, on_started=lambda: _announce(app, bound, args))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.workers < 1:
            raise Fatal(EXIT_CONFIG, f"--workers must be at least 1, not {args.workers}")
        if args.max_body_bytes < 1:
            raise Fatal(EXIT_CONFIG, f"--max-body-bytes must be positive, not {args.max_body_bytes}")
        api_key = _api_key(args.no_auth)
        if args.port is None:
            env_port = os.environ.get("PORT", "8000").strip()
            if not env_port.isdigit():
                raise Fatal(EXIT_CONFIG, f"PORT={env_port!r} is not a port number; pass --port or fix PORT")
            args.port = int(env_port)
        if args.ready_file is not None and not args.ready_file.parent.is_dir():
            raise Fatal(EXIT_CONFIG, f"--ready-file directory {args.ready_file.parent} does not exist")
        public = _bind(args.host, args.port, "public", reuseport=True)
        control = None if args.control_port is None else _bind("127.0.0.1", args.control_port, "control", False)
        bound = Bound(public, control)
        app = _load(args, api_key)
        for sock in bound.sockets:
            sock.listen(_BACKLOG)
        if args.workers == 1:
            return _serve_one(app, bound, args)
        from serving.workers import run_workers

        return run_workers(
            args.workers, lambda: _config(app, args), app, bound.sockets, lambda: _announce(app, bound, args)
        )
    except Fatal as exc:
        print(f"{SERVER_NAME}: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except Exception as exc:  # no traceback spam at startup: one line that says what happened
        print(f"{SERVER_NAME}: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
