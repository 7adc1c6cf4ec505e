"""The raw ASGI app: /predict, /health, /ready, /metadata, /metrics, and its contract's routes.

The routes of the platform contract (``serving.contract.Routes``: SageMaker's /ping and
/invocations, Vertex AI's health and predict routes with ``instances``) are served in addition to
the generic ones, and through the same code: the contract's predict route differs from /predict only
in its path and the JSON key holding the rows.

No framework: ``POST /predict`` is one header scan (auth + content-length), one ``receive``, orjson
parse, ``LoadedModel.to_matrix``, ``model.predict`` called inline on the event loop (a 1-row
predict is far cheaper than a threadpool hop), orjson dump and two ``send`` calls. Every problem
with a request is a 4xx with ``{"error": "..."}``; a model that raises on valid input is a 500.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any

import orjson

from serving import SERVER_NAME, __version__
from serving.batching import Batcher, BatchSettings, Matrix
from serving.contract import GENERIC, Routes
from serving.metrics import Metrics
from serving.model import InputError, LoadedModel, framework_report, runtime_versions

Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]

_log = logging.getLogger("slipway.serving")
_perf_counter = time.perf_counter
_OPT_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_CONTENT_JSON = (b"content-type", b"application/json")
_CONTENT_TEXT = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
_CHALLENGE = (b"www-authenticate", b'Bearer realm="slipway"')
_GET = ("GET", "HEAD")
_OTHER_PATH = "other"  # the metrics label for unknown paths, so clients cannot blow up label cardinality


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays of unsupported dtypes, numpy scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class SlipwayApp:
    """ASGI 3 app serving one loaded, verified model."""

    def __init__(
        self,
        model: LoadedModel,
        api_key: str | None,
        max_body_bytes: int,
        routes: Routes = GENERIC,
        batching: BatchSettings | None = None,
    ) -> None:
        manifest = model.manifest
        self.model = model
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.ready = True  # the model is loaded and self-checked; the launcher clears it when draining
        self._key = api_key.encode() if api_key is not None else None
        self.auth = self._key is not None
        self._to_matrix = model.to_matrix
        self._predict = model.model.predict
        self.batching = batching or BatchSettings()
        batched, self.batching_reason = self.batching.decide(model.model)
        settings = self.batching
        self.batcher = Batcher(self._predict, settings.max_rows, settings.max_wait_us / 1e6) if batched else None
        self.metrics = Metrics({"name": manifest.name, "version": manifest.version, "sha256": manifest.sha256},
                               self.batcher)  # fmt: skip
        self._expected = f"{model.expected}; send it as JSON with POST /predict"
        self._last_error_log = 0.0
        self._routes: dict[str, tuple[tuple[str, ...], Callable[[], Response]]] = {
            "/health": (_GET, self._health),
            "/ready": (_GET, self._ready),
            "/metadata": (_GET, self._metadata),
            "/metrics": (_GET, self._metrics),
        }
        # the contract's routes, besides the generic ones (a contract's health route that is also
        # its readiness route answers readiness: SageMaker's /ping, Vertex's health route)
        contract_routes = {
            routes.ready: self._ready,
            **({routes.health: self._health} if routes.health != routes.ready else {}),
            **({routes.metadata: self._metadata} if routes.metadata else {}),
            **({routes.metrics: self._metrics} if routes.metrics else {}),
        }
        for path, handler in contract_routes.items():
            self._routes.setdefault(path, (_GET, handler))
        self._open_paths = frozenset({"/health", "/ready", routes.health, routes.ready})
        # /predict takes "inputs" unless the contract's predict route is /predict itself
        self._predict_key = routes.request_key if routes.predict == "/predict" else "inputs"
        self._contract_predict = routes.predict if routes.predict != "/predict" else None
        self._metadata_base: dict[str, Any] = {
            "name": manifest.name,
            "version": manifest.version,
            "sha256": manifest.sha256,
            "artifact_file": manifest.artifact_file,
            "artifact_format": manifest.artifact_format,
            "source": manifest.source,
            "created_at": manifest.created_at,
            "schema": {
                "n_features": manifest.schema.n_features,
                "feature_names": manifest.schema.feature_names,
                "task": manifest.schema.task,
            },
            "framework": framework_report(manifest),
            "runtime": runtime_versions(),
            "server": {"name": SERVER_NAME, "version": __version__},
            "auth": self._key is not None,
            "max_body_bytes": max_body_bytes,
            "routes": asdict(routes),
            "batching": {
                "enabled": batched, "why": self.batching_reason, "mode": self.batching.mode,
                "max_rows": self.batching.max_rows, "max_wait_us": self.batching.max_wait_us,
            },
        }  # fmt: skip

    def stop_batching(self, reason: str) -> None:
        """Predict every request on its own from now on (Lambda: one event at a time, answered without
        suspending)."""
        if self.batcher is not None:
            self.batcher = self.metrics.batcher = None
            self.batching_reason = reason
            self._metadata_base["batching"] |= {"enabled": False, "why": reason}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        start = _perf_counter()
        path = scope["path"]
        try:
            if path == "/predict":
                if not self._authorized(scope):
                    response = self._unauthorized()
                elif scope["method"] != "POST":
                    response = (
                        405,
                        _error(f"{scope['method']} is not allowed on /predict; use POST. {self._expected}"),
                        [_CONTENT_JSON, (b"allow", b"POST")],
                    )
                else:
                    response = await self._handle_predict(scope, receive, self._predict_key)
            elif path == self._contract_predict:
                response = await self._predict_route(scope, receive, path)
            else:
                if path not in self._routes:
                    path = _OTHER_PATH
                response = self._dispatch(scope, scope["path"])
        except Exception as exc:  # a bug must cost one request, never the process or a bare 500
            _log.exception("internal error on %s", scope["path"])
            response = (500, _error(f"internal server error: {type(exc).__name__}"), [_CONTENT_JSON])
        status, body, headers = response
        headers.append((b"content-length", b"%d" % len(body)))
        if not self.ready:  # draining: have keep-alive clients reconnect (to the next release)
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(path, status, _perf_counter() - start)

    def _authorized(self, scope: Scope) -> bool:
        key = self._key
        if key is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer " and hmac.compare_digest(value[7:].strip(), key):
                    return True
            elif name == b"x-api-key" and hmac.compare_digest(value.strip(), key):
                return True
        return False

    def _unauthorized(self) -> Response:
        return (
            401,
            _error(
                "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                "with the key the server was started with (SLIPWAY_API_KEY)"
            ),
            [_CONTENT_JSON, _CHALLENGE],
        )

    async def _predict_route(self, scope: Scope, receive: Receive, path: str) -> Response:
        """The contract's predict route (e.g. SageMaker's /invocations): /predict under another path."""
        if not self._authorized(scope):
            return self._unauthorized()
        key = self.routes.request_key
        if scope["method"] != "POST":
            message = f"{scope['method']} is not allowed on {path}; use POST. {self._expectation(key)}"
            return 405, _error(message), [_CONTENT_JSON, (b"allow", b"POST")]
        return await self._handle_predict(scope, receive, key)

    async def _handle_predict(self, scope: Scope, receive: Receive, key: str) -> Response:
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                if int(value) > limit:
                    return self._too_large()
                break
        message = await receive()
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):
            parts = [body]
            size = len(body)
            while message.get("more_body", False):
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return self._too_large()
                parts.append(chunk)
            body = b"".join(parts)
        elif len(body) > limit:
            return self._too_large()
        status, out = self.predict_bytes(body, key) if self.batcher is None else await self.predict_batched(body, key)
        return status, out, [_CONTENT_JSON]

    def _too_large(self) -> Response:
        message = f"request body is larger than the limit of {self.max_body_bytes} bytes; send smaller batches"
        return 413, _error(message), [_CONTENT_JSON, (b"connection", b"close")]

    def predict_bytes(self, body: bytes, key: str = "inputs") -> tuple[int, bytes]:
        """JSON request body → (status, JSON response body). The whole predict path minus HTTP, one
        request per ``model.predict`` call (the batched path is ``predict_batched``).

        ``key`` is the JSON key holding the rows: "inputs" (Slipway, SageMaker), "instances" (Vertex
        AI), "features" (one row, in Lambda's direct invokes). The answer is ``{"predictions": [...]}``.
        """
        matrix = self._parse(body, key)
        if isinstance(matrix, tuple):
            return matrix
        try:
            predictions = self._predict(matrix)
        except Exception as exc:
            return self._model_failed(exc)
        return self._answer(predictions, len(matrix))

    async def predict_batched(self, body: bytes, key: str = "inputs") -> tuple[int, bytes]:
        """``predict_bytes`` through the batcher: the request's rows share a ``model.predict`` call
        with the other requests waiting at the same time (``serving.batching``)."""
        matrix = self._parse(body, key)
        if isinstance(matrix, tuple):
            return matrix
        assert self.batcher is not None
        try:
            predictions = await self.batcher.submit(matrix)
        except Exception as exc:
            return self._model_failed(exc)
        return self._answer(predictions, len(matrix))

    def _parse(self, body: bytes, key: str) -> Matrix | tuple[int, bytes]:
        """The request's feature matrix, or the (status, body) that answers a bad request."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            what = "empty" if not body else f"not valid JSON ({exc})"
            return 400, _error(f"request body is {what}; {self._expectation(key)}")
        if type(payload) is not dict or key not in payload:
            what = f'has no "{key}" key' if type(payload) is dict else "is not a JSON object"
            return 400, _error(f"request body {what}; {self._expectation(key)}")
        try:
            return self._to_matrix(payload[key])
        except InputError as exc:
            message = str(exc) if key == "inputs" else str(exc).replace('"inputs"', f'"{key}"')
            return exc.status, _error(message)

    def _answer(self, predictions: Any, rows: int) -> tuple[int, bytes]:
        self.metrics.predictions += rows
        try:
            return 200, orjson.dumps({"predictions": predictions}, option=_OPT_NUMPY)
        except TypeError:  # an array dtype orjson cannot serialize (str, object) or a non-array
            return self._encode_slow(predictions)

    def _expectation(self, key: str) -> str:
        """What a request should look like (error path only)."""
        if key == "inputs":
            return self._expected
        expected = self.model.expected.replace('"inputs"', f'"{key}"')
        if key == self.routes.request_key:
            return f"{expected}; send it as JSON with POST {self.routes.predict}"
        return expected

    def _encode_slow(self, predictions: Any) -> tuple[int, bytes]:
        try:
            values = predictions.tolist() if hasattr(predictions, "tolist") else list(predictions)
            return 200, orjson.dumps({"predictions": values}, default=_json_default, option=_OPT_NUMPY)
        except TypeError as exc:
            return self._model_failed(exc, "returned predictions that cannot be encoded as JSON")

    def _model_failed(self, exc: Exception, what: str = "raised") -> tuple[int, bytes]:
        self.metrics.prediction_errors += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:  # a broken model under load must not flood the log
            self._last_error_log = now
            _log.warning("the model %s %s: %s (logged at most once a second)", what, type(exc).__name__, exc)
        return 500, _error(f"the model {what} {type(exc).__name__}: {exc}")

    def _dispatch(self, scope: Scope, path: str) -> Response:
        if path not in self._open_paths and not self._authorized(scope):
            return self._unauthorized()
        route = self._routes.get(path)
        if route is None:
            posts = ["/predict", *([self._contract_predict] if self._contract_predict else [])]
            known = ", ".join([*(f"POST {p}" for p in posts), *(f"GET {p}" for p in self._routes)])
            return 404, _error(f"no such path {path!r}; this server answers {known}"), [_CONTENT_JSON]
        methods, handler = route
        if scope["method"] not in methods:
            allow = ", ".join(methods)
            message = f"{scope['method']} is not allowed on {path}; use {allow}"
            return 405, _error(message), [_CONTENT_JSON, (b"allow", allow.encode())]
        return handler()

    def _health(self) -> Response:
        return 200, b'{"status":"ok"}', [_CONTENT_JSON]

    def _ready(self) -> Response:
        if self.ready:
            return 200, b'{"status":"ready"}', [_CONTENT_JSON]
        body = b'{"status":"draining","error":"this server is shutting down; send traffic elsewhere"}'
        return 503, body, [_CONTENT_JSON]

    def _metadata(self) -> Response:
        body = orjson.dumps({**self._metadata_base, "pid": os.getpid(), "ready": self.ready})
        return 200, body, [_CONTENT_JSON]

    def _metrics(self) -> Response:
        return 200, self.metrics.render(self.ready), [_CONTENT_TEXT]


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer a lifespan protocol (when run under a server with lifespan on): nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
