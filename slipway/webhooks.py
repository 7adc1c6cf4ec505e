"""The receiver of MLflow's model-registry webhooks: verified deliveries become Prefect events.

MLflow (SQL backend) POSTs each registry event with three headers: ``X-MLflow-Delivery-Id`` (a
UUID, the same on every retry), ``X-MLflow-Timestamp`` (Unix seconds) and ``X-MLflow-Signature:
v1,<base64 HMAC-SHA256>``, where the HMAC key is the webhook's secret and the signed bytes are
``<delivery id>.<timestamp>.<body>`` (``mlflow/webhooks/delivery.py``, ``_generate_hmac_signature``).

The receiver answers 401 to a delivery without signature headers, 403 to a wrong signature or a
timestamp more than ``max_age_s`` away from now (a replay), and emits nothing for either. A
verified delivery is acknowledged once per delivery id (200), and announced through
``slipway.events.announce`` (so the watcher and a re-delivery add no second event):

    model_version.created          → slipway.model.version.created
    model_version_alias.created    → slipway.model.alias.moved

A plain ``http.server`` in threads: MLflow's deliveries are few, and the work per delivery is
one SQLite transaction and one queued event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import SecretStr

from slipway.errors import ConfigError
from slipway.events import ALIAS_MOVED, VERSION_CREATED, Sighting, Sightings, announce
from slipway.settings import get_settings

MAX_BODY = 1 << 20
SECRET_ENV = "SLIPWAY_WEBHOOK_SECRET"
log = logging.getLogger("slipway.webhooks")


class Rejected(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def verify(secret: SecretStr, headers: dict[str, str], body: bytes, *, max_age_s: float, at: float) -> str:
    """The delivery id of a delivery MLflow signed with ``secret``; raises ``Rejected`` otherwise."""
    delivery_id = headers.get("x-mlflow-delivery-id", "")
    timestamp = headers.get("x-mlflow-timestamp", "")
    signature = headers.get("x-mlflow-signature", "")
    if not (delivery_id and timestamp and signature):
        raise Rejected(HTTPStatus.UNAUTHORIZED, "unsigned delivery")
    version, _, received = signature.partition(",")
    if version != "v1" or not timestamp.isdigit():
        raise Rejected(HTTPStatus.FORBIDDEN, "unknown signature scheme or timestamp")
    if abs(at - int(timestamp)) > max_age_s:
        raise Rejected(HTTPStatus.FORBIDDEN, f"timestamp {timestamp} is more than {max_age_s:g} s away from now")
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.get_secret_value().encode(), signed, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, received.encode()):
        raise Rejected(HTTPStatus.FORBIDDEN, "wrong signature")
    return delivery_id


def sighting(payload: dict[str, Any]) -> Sighting | None:
    """The registry change a delivery reports, or None for events that start no release."""
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data") or {}
    name, version = str(data.get("name", "")), str(data.get("version", ""))
    if not (name and version.isdigit()) or action != "created":
        return None
    if entity == "model_version":
        return Sighting(VERSION_CREATED, name, version, source="webhook")
    if entity == "model_version_alias" and data.get("alias"):
        return Sighting(ALIAS_MOVED, name, version, alias=str(data["alias"]), source="webhook")
    return None


def make_server(
    host: str, port: int, secret: SecretStr, sightings: Sightings, *, max_age_s: float = 300.0
) -> ThreadingHTTPServer:
    """The receiver, bound and ready to ``serve_forever``; POST deliveries to ``/mlflow``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "slipway-webhooks"

        def do_GET(self) -> None:
            self._reply(
                HTTPStatus.OK if self.path == "/health" else HTTPStatus.NOT_FOUND, {"ok": self.path == "/health"}
            )

        def do_POST(self) -> None:
            if self.path != "/mlflow":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "POST deliveries to /mlflow"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                delivery_id = verify(secret, headers, body, max_age_s=max_age_s, at=time.time())
            except Rejected as exc:
                log.warning("rejected a delivery from %s: %s", self.client_address[0], exc.reason)
                return self._reply(exc.status, {"error": exc.reason})
            if not sightings.first_delivery(delivery_id):
                return self._reply(HTTPStatus.OK, {"delivery": delivery_id, "duplicate": True})
            try:
                payload = json.loads(body)
            except ValueError:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            seen = sighting(payload) if isinstance(payload, dict) else None
            try:
                event_id = announce(sightings, seen) if seen else None
            except Exception as exc:  # MLflow retries a 5xx delivery: let it, under the same id
                sightings.forget_delivery(delivery_id)
                log.error("delivery %s: could not announce %s: %s", delivery_id, seen, exc)
                return self._reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"cannot emit the event: {exc}"})
            log.info("delivery %s: %s → event %s", delivery_id, seen, event_id)
            self._reply(HTTPStatus.OK, {"delivery": delivery_id, "event_id": str(event_id) if event_id else None})

        def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # access log off; outcomes are logged above
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def webhook_secret() -> SecretStr:
    """The shared HMAC secret, from ``$SLIPWAY_WEBHOOK_SECRET``."""
    value = os.environ.get(SECRET_ENV, "")
    if len(value) < 16:
        raise ConfigError(
            f"${SECRET_ENV} is {'not set' if not value else 'shorter than 16 characters'}",
            hint=f"export {SECRET_ENV}=$(openssl rand -hex 24) for both the receiver and `slipway webhooks register`",
        )
    return SecretStr(value)


def serve(host: str, port: int, *, max_age_s: float) -> None:
    """Run the receiver until interrupted (``slipway webhooks serve``)."""
    from prefect.settings import PREFECT_API_URL

    secret = webhook_secret()
    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set: the receiver's events would go nowhere",
            hint="export PREFECT_API_URL=http://127.0.0.1:4200/api (the server of `make server`)",
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = make_server(host, port, secret, Sightings(get_settings().path("triggers.sqlite")), max_age_s=max_age_s)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}", hint="choose a free --port") from exc
    log.info("listening on http://%s:%d/mlflow, events to %s", host, port, PREFECT_API_URL.value())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def register(url: str, name: str) -> bool:
    """Create MLflow's webhook to ``url`` unless one named ``name`` posts there already; True if created."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    secret = webhook_secret()
    client = MlflowClient()
    try:
        if any(w.name == name and w.url == url for w in client.list_webhooks()):
            return False
        client.create_webhook(
            name=name,
            url=url,
            events=["model_version.created", "model_version_alias.created"],
            secret=secret.get_secret_value(),
        )
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow refused the webhook {name!r} → {url}: {exc.message}",
            hint="webhooks need MLflow's SQL backend; for an http or private-address receiver start the MLflow "
            "server with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true",
        ) from exc
    return True
