"""AWS Lambda: the handler the runtime interface client (awslambdaric) calls, on the same app.

``python -m serving`` (the image's entry point) gets here when ``AWS_LAMBDA_RUNTIME_API`` is set,
which Lambda does and nothing else does: the launcher loads and self-checks the model once, in the
cold start, exactly as for HTTP, then ``run`` hands ``handler`` to awslambdaric in the same process.
Events and answers:

    {"features": ROW}                  → {"prediction": VALUE}       a direct invoke of one row
    {"inputs": ROW | [ROW, ...]}       → {"predictions": [...]}      a direct invoke
    an HTTP event: a function URL or API Gateway (payload 2.0 or 1.0)
                                       → {"statusCode", "headers", "body"}, from the app's own
                                         routes (/predict, /health, /ready, /metadata, /metrics)

A direct invoke that cannot be predicted is answered ``{"error": "...", "status": 4xx or 500}``.
Direct invokes are authorized by the platform (IAM ``lambda:InvokeFunction``) and carry no key. An
HTTP event is a request to the ASGI app itself, so it needs Slipway's API key whenever the server
has one, exactly as over HTTP (a function URL with ``AuthType: NONE`` is public).

Both kinds go through the app's one predict path: ``SlipwayApp.predict_bytes`` for direct invokes,
the ASGI app (which calls it) for HTTP events. A process answers one event at a time, so nothing
waits to share a predict call: the handler turns the app's batching off (``stop_batching``).

Cold starts are visible to callers: the first event an execution environment answers is its cold
start, and when it is an HTTP event its answer carries ``x-slipway-cold-start: <ms>``, the time from
the process's start to the runtime client's start (the init: imports, the model's load and
self-check). The gate measures those requests apart from warm ones.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from serving.app import Headers, Message, SlipwayApp
from serving.contract import COLD_START_HEADER

HANDLER = "serving.lambda_runtime.handler"
_DROPPED = frozenset({b"content-length", b"connection"})  # the platform sets its own
_USAGE = 'expected {"features": ROW}, {"inputs": ROW or [ROW, ...]}, or an HTTP event (function URL, API Gateway)'


class LambdaHandler:
    """Lambda events → the app: direct invokes through ``predict_bytes``, HTTP events through ASGI."""

    def __init__(self, app: SlipwayApp, init_ms: float | None = None) -> None:
        app.stop_batching("Lambda: one event at a time per process, nothing waits together")
        self.app = app
        self.cold_init_ms = init_ms  # until the first event is answered: this environment's init

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        cold, self.cold_init_ms = self.cold_init_ms, None
        if type(event) is dict:
            if "requestContext" in event and ("rawPath" in event or "httpMethod" in event):
                answer = self.http(event)
                if cold is not None:
                    answer["headers"][COLD_START_HEADER] = f"{cold:.0f}"
                return answer
            if "features" in event:
                return self.features(event)
            if "inputs" in event:
                return self.inputs(event)
        return _invoke_error(400, f"the event is not understood; {_USAGE}")

    def features(self, event: dict[str, Any]) -> dict[str, Any]:
        row = event["features"]
        if type(row) is list and row and type(row[0]) in (list, dict):
            return _invoke_error(422, '"features" is one row; send several as {"inputs": [ROW, ...]}')
        status, body = self.app.predict_bytes(orjson.dumps(event), "features")
        answer = orjson.loads(body)
        if status != 200:
            return _invoke_error(status, answer["error"])
        return {"prediction": answer["predictions"][0]}

    def inputs(self, event: dict[str, Any]) -> dict[str, Any]:
        status, body = self.app.predict_bytes(orjson.dumps(event))
        answer: dict[str, Any] = orjson.loads(body)
        return answer if status == 200 else _invoke_error(status, answer["error"])

    def http(self, event: dict[str, Any]) -> dict[str, Any]:
        """A function URL / API Gateway proxy event → the app's answer as a proxy response."""
        context = event.get("requestContext") or {}
        if "rawPath" in event:  # payload 2.0: function URLs, HTTP APIs
            method = str((context.get("http") or {}).get("method", "GET"))
            path, query = str(event["rawPath"] or "/"), str(event.get("rawQueryString") or "")
        else:  # payload 1.0: REST APIs
            method, path = str(event["httpMethod"]), str(event.get("path") or "/")
            query = urlencode(event.get("queryStringParameters") or {})
        stage = context.get("stage")
        if stage and stage != "$default" and (path == f"/{stage}" or path.startswith(f"/{stage}/")):
            path = path[len(stage) + 1 :] or "/"  # an API Gateway stage in front of the app's paths
        body = event.get("body") or ""
        try:
            raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else str(body).encode()
        except (binascii.Error, ValueError):
            error = orjson.dumps({"error": "the event says isBase64Encoded but its body is not base64"})
            return _proxy(400, [(b"content-type", b"application/json")], error)
        headers = [(str(k).lower().encode(), str(v).encode()) for k, v in (event.get("headers") or {}).items()]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
            "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
            "root_path": "", "headers": headers, "client": None, "server": None,
        }  # fmt: skip
        return _proxy(*self._asgi(scope, raw))

    def _asgi(self, scope: dict[str, Any], body: bytes) -> tuple[int, Headers, bytes]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        _complete(self.app(scope, receive, send))
        start, *rest = sent
        return int(start["status"]), list(start["headers"]), b"".join(m.get("body", b"") for m in rest)


def _complete(coro: Coroutine[Any, Any, None]) -> None:
    """Run the app on one event without an event loop.

    The app awaits nothing but the event's ``receive`` and ``send``, which return at once, so its
    coroutine finishes in its first step: no loop to create per event, none to share across the
    runtime client's forked workers.
    """
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the app suspended while answering a Lambda event; it may await only receive and send")


def _proxy(status: int, headers: Headers, body: bytes) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {name.decode(): value.decode() for name, value in headers if name not in _DROPPED},
        "body": body.decode(),
        "isBase64Encoded": False,
    }


def process_age_ms() -> float | None:
    """How long ago this process started (Linux: /proc), None where that cannot be read."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])  # starttime, field 22
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, (uptime - ticks / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, ValueError, IndexError):
        return None


def _invoke_error(status: int, message: str) -> dict[str, Any]:
    return {"error": message, "status": status}


_handler: LambdaHandler | None = None


def handler(event: Any, context: Any) -> dict[str, Any]:
    """What awslambdaric calls for each event (``HANDLER``); ``run`` puts the loaded app behind it."""
    if _handler is None:
        raise RuntimeError(
            "no model is loaded: start the image with its own entry point (python -m serving), which loads "
            "the model and then runs the Lambda runtime client"
        )
    return _handler(event, context)


def run(app: SlipwayApp) -> int:
    """Answer the events of the Lambda runtime API (``AWS_LAMBDA_RUNTIME_API``) with ``app``; never returns."""
    global _handler
    from awslambdaric.__main__ import main

    _handler = LambdaHandler(app, init_ms=process_age_ms())
    main(["awslambdaric", HANDLER])
    return 0
