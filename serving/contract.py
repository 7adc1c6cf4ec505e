"""The model server's container contract: ports, routes, exit codes, authentication, platforms.

The one definition of the server's interface: targets import it rather than restate a port, a
route or an exit code. It imports only the standard library, so importing it is cheap anywhere.

One image runs unchanged under every platform's contract; ``detect`` tells which applies from the
server's arguments and environment, as the platform starts it (first match wins):

    contract   recognized by                       HTTP port               served besides the generic routes
    lambda     AWS_LAMBDA_RUNTIME_API is set       none (the runtime API)  events → ``serving.lambda_runtime``
    sagemaker  the argument ``serve``              8080                    GET /ping, POST /invocations
    vertex     AIP_PREDICT_ROUTE is set            AIP_HTTP_PORT (8080)    AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE
    cloudrun   K_SERVICE is set                    $PORT (8080)            none; shuts down within Cloud Run's 10 s
    generic    anything else (Kubernetes, Docker)  $PORT, else 8000        none

Vertex AI always sets all three AIP_ variables; AIP_PREDICT_ROUTE decides, since a Kubernetes
Service named ``aip-http`` would also put an AIP_HTTP_PORT in every pod's environment. An explicit
``--port`` or ``--graceful-timeout`` wins over the contract's. The generic routes
(/predict, /health, /ready, /metadata, /metrics) are served under every HTTP contract.

Authentication is the same everywhere: on, with ``SLIPWAY_API_KEY``, unless turned off
deliberately (``SLIPWAY_AUTH=none`` or ``--no-auth``). Platforms that authenticate at their edge
(SageMaker, Vertex) are configured with ``SLIPWAY_AUTH=none`` explicitly; no contract is
unauthenticated by default.

Adaptive batching (``serving.batching``) is the same under every HTTP contract, and per worker with
``--workers N``: ``--batching auto|on|off`` (``SLIPWAY_BATCHING``), ``--max-batch-rows``
(``SLIPWAY_MAX_BATCH_ROWS``), ``--max-batch-wait-us`` (``SLIPWAY_MAX_BATCH_WAIT_US``). Under Lambda
a process answers one event at a time: nothing to batch, so it is off.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

PORT = 8000
SAGEMAKER_PORT = 8080
CLOUD_RUN_PORT = 8080  # Cloud Run always sets PORT; this is its documented default
VERTEX_PORT = 8080
SERVER_UID = 10001  # the user the serving image runs as
PACKAGE_DIR = "/srv/package"  # the package baked into the image
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")  # where SageMaker extracts model.tar.gz
SAGEMAKER_COMMAND = "serve"

GRACEFUL_TIMEOUT_S = 30
CLOUD_RUN_GRACEFUL_TIMEOUT_S = 8  # SIGKILL 10 s after SIGTERM; the 0.5 s drain and the exit fit in the rest
SAGEMAKER_GRACEFUL_TIMEOUT_S = 25  # SIGKILL 30 s after SIGTERM

API_KEY_ENV = "SLIPWAY_API_KEY"
AUTH_ENV = "SLIPWAY_AUTH"
LAMBDA_ENV = "AWS_LAMBDA_RUNTIME_API"
# Adaptive batching (serving.batching), for platforms that start the image with their own arguments
# (SageMaker's "serve", Vertex AI's none); the launcher's --batching, --max-batch-rows and
# --max-batch-wait-us win over them.
BATCHING_ENV = "SLIPWAY_BATCHING"  # auto | on | off
MAX_BATCH_ROWS_ENV = "SLIPWAY_MAX_BATCH_ROWS"
MAX_BATCH_WAIT_US_ENV = "SLIPWAY_MAX_BATCH_WAIT_US"
_OPTION_ENV = {"--batching": BATCHING_ENV, "--max-batch-rows": MAX_BATCH_ROWS_ENV,
               "--max-batch-wait-us": MAX_BATCH_WAIT_US_ENV}  # fmt: skip
# Lambda: what the function reads from AWS at a cold start (serving.aws), named by its configuration
API_KEY_SECRET_ENV = "SLIPWAY_API_KEY_SECRET"  # the API key in a Secrets Manager secret (ARN or name)
API_KEY_SECRET_VERSION_ENV = "SLIPWAY_API_KEY_SECRET_VERSION"  # the secret's version the release reads
API_KEY_PARAMETER_ENV = "SLIPWAY_API_KEY_PARAMETER"  # or in an SSM SecureString parameter
PACKAGE_S3_ENV = "SLIPWAY_PACKAGE_S3"  # s3://bucket/prefix/ of the package served instead of the image's
PACKAGE_SHA256_ENV = "SLIPWAY_PACKAGE_SHA256"  # the artifact's sha256 the fetched package must have
COLD_START_HEADER = "x-slipway-cold-start"  # on the first HTTP answer of an execution environment: its init ms

EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_PACKAGE, EXIT_BIND = 0, 1, 2, 3, 4
EXIT_REASONS: dict[int, str] = {
    EXIT_OK: "the server shut down gracefully",
    EXIT_ERROR: "the server failed with an unexpected error (its last output line says which)",
    EXIT_CONFIG: (
        "the server refused to start: no API key (set SLIPWAY_API_KEY, or SLIPWAY_AUTH=none to serve "
        "without authentication deliberately) or bad arguments"
    ),
    EXIT_PACKAGE: "the package failed its start-up check (unreadable, artifact checksum or golden samples)",
    EXIT_BIND: "the server could not bind its port",
}

ContractName = Literal["generic", "cloudrun", "sagemaker", "vertex", "lambda"]
_AUTH_ON = frozenset({"", "key", "bearer", "on"})
_FLAGS = frozenset({"--no-auth", "--hold", "-h", "--help"})  # the launcher's options that take no value


def options_environment(options: Sequence[str]) -> dict[str, str]:
    """The launcher's options (``--max-batch-rows 128 ...``) as the environment it reads instead, for a
    platform that runs the image with its own arguments."""
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    unknown = sorted(set(pairs) - set(_OPTION_ENV))
    if unknown:
        raise ValueError(f"no environment variable stands for the server's option(s) {', '.join(unknown)}")
    return {_OPTION_ENV[option]: value for option, value in pairs.items()}


def exit_reason(code: int) -> str:
    """What a server's exit code (or a negative / 128+N signal status) means, for users."""
    if code in EXIT_REASONS:
        return EXIT_REASONS[code]
    signum = -code if code < 0 else code - 128 if code > 128 else 0
    if signum == signal.SIGKILL:
        return "killed (SIGKILL: out of memory, a failed liveness probe, or a stop that timed out)"
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"killed by {name}"
    return f"exit code {code}"


@dataclass(frozen=True)
class Routes:
    """The HTTP paths of a contract; ``request_key`` is the JSON key holding the rows on ``predict``."""

    predict: str = "/predict"
    health: str = "/health"
    ready: str = "/ready"
    metadata: str | None = "/metadata"
    metrics: str | None = "/metrics"
    request_key: str = "inputs"


GENERIC = Routes()
SAGEMAKER = Routes(predict="/invocations", health="/ping", ready="/ping", metadata=None, metrics=None)


def vertex(health_route: str, predict_route: str) -> Routes:
    """Vertex AI's routes: ``{"instances": [...], "parameters": {...}}`` → ``{"predictions": [...]}``."""
    for what, route in (("AIP_HEALTH_ROUTE", health_route), ("AIP_PREDICT_ROUTE", predict_route)):
        if not route.startswith("/"):
            raise ValueError(f"{what}={route!r} is not a path; it must start with '/'")
    return Routes(predict=predict_route, health=health_route, ready=health_route, metadata=None, metrics=None,
                  request_key="instances")  # fmt: skip


@dataclass(frozen=True)
class Contract:
    """What the server does under one platform: where it listens, what it answers, how it stops.

    ``port`` is None under Lambda (no HTTP listener: the runtime client polls the runtime API).
    ``package_dir`` is the package to serve when the contract supplies one (SageMaker model data
    in /opt/ml/model), else the ``--package`` argument, else None.
    """

    name: ContractName
    port: int | None
    routes: Routes = GENERIC
    graceful_timeout_s: int = GRACEFUL_TIMEOUT_S
    package_dir: Path | None = None


def detect(
    argv: Sequence[str], environ: Mapping[str, str], *, sagemaker_model_dir: Path = SAGEMAKER_MODEL_DIR
) -> Contract:
    """The contract the server runs under, from its arguments (``python -m serving ARGS``) and environment.

    Raises ``ValueError`` (saying which variable or option to fix) for a port that is not a number.
    Looks at the file system only for SageMaker: /opt/ml/model serves when it holds a package.json.
    """
    options, positionals = _scan(argv)
    package = Path(options["--package"]) if options.get("--package") else None
    contract: Contract
    if environ.get(LAMBDA_ENV):
        contract = Contract("lambda", None, package_dir=package)
    elif SAGEMAKER_COMMAND in positionals:
        if (sagemaker_model_dir / "package.json").is_file():
            package = sagemaker_model_dir
        contract = Contract("sagemaker", SAGEMAKER_PORT, SAGEMAKER, SAGEMAKER_GRACEFUL_TIMEOUT_S, package)
    elif environ.get("AIP_PREDICT_ROUTE"):
        routes = vertex(environ.get("AIP_HEALTH_ROUTE") or GENERIC.health,
                        environ.get("AIP_PREDICT_ROUTE") or GENERIC.predict)  # fmt: skip
        port = _port(environ.get("AIP_HTTP_PORT"), "AIP_HTTP_PORT", VERTEX_PORT)
        contract = Contract("vertex", port, routes, package_dir=package)
    elif environ.get("K_SERVICE"):
        port = _port(environ.get("PORT"), "PORT", CLOUD_RUN_PORT)
        contract = Contract("cloudrun", port, graceful_timeout_s=CLOUD_RUN_GRACEFUL_TIMEOUT_S, package_dir=package)
    else:
        contract = Contract("generic", _port(environ.get("PORT"), "PORT", PORT), package_dir=package)
    if contract.port is not None and "--port" in options:
        contract = replace(contract, port=_port(options["--port"], "--port", PORT))
    if "--graceful-timeout" in options:
        contract = replace(contract, graceful_timeout_s=_int(options["--graceful-timeout"], "--graceful-timeout"))
    return contract


def api_key(environ: Mapping[str, str], no_auth: bool = False) -> str | None:
    """The API key clients must send, or None when authentication is turned off deliberately.

    Raises ``ValueError`` when authentication is on but no key is set, or SLIPWAY_AUTH is unknown:
    a server never starts unauthenticated by accident.
    """
    mode = environ.get(AUTH_ENV, "").strip().lower()
    if no_auth or mode == "none":
        return None
    if mode not in _AUTH_ON:
        raise ValueError(f"{AUTH_ENV}={mode!r} is not understood; unset it, or set 'none' to disable auth")
    key = environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ValueError(
            f"authentication is on but {API_KEY_ENV} is not set: set {API_KEY_ENV} to the key clients "
            f"must send, or pass --no-auth (or {AUTH_ENV}=none) to serve without authentication deliberately"
        )
    return key


def _scan(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The launcher's ``--option value`` / ``--option=value`` pairs and its positional arguments."""
    options: dict[str, str] = {}
    positionals: list[str] = []
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            positionals.extend(tokens)
        elif token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            if eq:
                options[name] = value
            elif name not in _FLAGS:
                options[name] = next(tokens, "")
        else:
            positionals.append(token)
    return options, positionals


def _int(value: str, what: str) -> int:
    value = value.strip()
    if not value.isdigit():
        raise ValueError(f"{what}={value!r} is not a non-negative whole number")
    return int(value)


def _port(value: str | None, what: str, default: int) -> int:
    if value is None or not value.strip():
        return default
    if not value.strip().isdigit() or int(value) > 65535:
        raise ValueError(f"{what}={value!r} is not a port number (0-65535); fix {what} or pass --port")
    return int(value)
