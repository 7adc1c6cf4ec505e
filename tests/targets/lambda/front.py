"""The Lambda API as the lambda target sees it: moto's control plane behind a front that covers what moto
lacks, and the function URLs' data plane. The target talks to it through boto3 with ``endpoint_url``.

Every request is passed to moto as it is, except what moto does not do (docs/targets/lambda.md):

* ``Invoke`` runs the version on the data plane (``dataplane.LambdaDataPlane``): an alias's request
  goes to its version or, by ``RoutingConfig.AdditionalVersionWeights``, to the additional one, and
  the answer names it in ``X-Amz-Executed-Version``; a handler that raised is
  ``X-Amz-Function-Error: Unhandled``; ``LogType: Tail`` returns the log tail (``X-Amz-Log-Result``);
  a function at its reserved concurrency answers 429 ``TooManyRequestsException``.
* **Function URLs** (``/2021-10-31/functions/F/url``) are kept here, one per qualifier (moto keeps
  one per function), each served by a router on its own port of 127.0.0.1 (``FunctionUrl``
  ``http://127.0.0.1:PORT/``): an HTTP request becomes a payload-2.0 event for the alias, the
  handler's proxy answer becomes the HTTP answer. ``AuthType: AWS_IAM`` checks the SigV4 signature
  (service ``lambda``, the function's region, the keys this front knows) and answers 403 without
  one; ``NONE`` needs the function's policy to grant both ``lambda:InvokeFunctionUrl`` and
  ``lambda:InvokeFunction`` to ``*`` (URLs made since October 2025).
* **Provisioned concurrency** (``/2019-09-30/functions/F/provisioned-concurrency``) is kept here:
  ``IN_PROGRESS`` while the environments of the alias's version are started and initialized,
  then ``READY``; moving the alias provisions the new version.
* **Updates take time.** moto makes a function ``Active`` and an update ``Successful`` at once; here
  a function is ``Pending`` for ``update_s`` after ``CreateFunction`` and ``InProgress`` after an
  update, during which updates and ``PublishVersion`` are refused with ``ResourceConflictException``,
  as Lambda does. ``busy(function, s)`` makes it so for longer (someone else's update).
* ``UpdateFunctionConfiguration`` keeps ``ImageConfig`` and ``EphemeralStorage``, which moto drops;
  the data plane runs a version's ``ImageConfig`` entrypoint and command instead of the image's.
* Faults: ``fail(method, path_part, code, status, message, times)`` answers matching calls with a
  Lambda error body.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .dataplane import CREDENTIALS, LambdaDataPlane, Throttled, choose, now_iso

_FUNCTION = re.compile(r"^/(?P<api>[0-9-]+)/functions/(?P<name>[^/]+)(?P<rest>/.*)?$")
_KEYS = {CREDENTIALS["aws_access_key_id"]: CREDENTIALS["aws_secret_access_key"]}
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@dataclass
class Fault:
    method: str
    path: str
    code: str
    status: int
    message: str
    times: int | None = 1
    hits: int = 0


@dataclass
class UrlConfig:
    function: str
    qualifier: str
    region: str
    auth: str
    server: Any = None
    url: str = ""
    created: str = field(default_factory=now_iso)


@dataclass
class Provisioned:
    requested: int
    status: str = "IN_PROGRESS"
    allocated: int = 0
    version: str = ""
    reason: str = ""


class LambdaFront:
    def __init__(self, moto_url: str, plane: LambdaDataPlane, *, update_s: float = 0.3, port: int = 0) -> None:
        self.moto, self.plane, self.update_s = httpx.Client(base_url=moto_url, timeout=120), plane, update_s
        self.urls: dict[tuple[str, str, str], UrlConfig] = {}  # (region, function, qualifier)
        self.provisioned: dict[tuple[str, str, str], Provisioned] = {}
        self.busy_until: dict[tuple[str, str], float] = {}
        self.pending_until: dict[tuple[str, str], float] = {}
        self.aliases: dict[tuple[str, str, str], dict[str, Any]] = {}  # cache, dropped on every alias change
        self.faults: list[Fault] = []
        self.conflicts = 0  # calls refused with ResourceConflictException
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                front._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="lambda-front", daemon=True).start()

    def stop(self) -> None:
        for config in list(self.urls.values()):
            _close(config)
        self.server.shutdown()
        self.server.server_close()
        self.moto.close()

    # --- what tests set ---------------------------------------------------------------------------

    def fail(self, method: str, path: str, code: str, status: int, message: str, times: int | None = 1) -> Fault:
        fault = Fault(method, path, code, status, message, times)
        self.faults.append(fault)
        return fault

    def busy(self, function: str, seconds: float, region: str = "") -> None:
        """An update of ``function`` in progress for ``seconds`` (someone else's deploy, the console)."""
        with self.lock:
            for key in [k for k in self._known(function, region)]:
                self.busy_until[key] = time.monotonic() + seconds

    def _known(self, function: str, region: str) -> list[tuple[str, str]]:
        regions = {region} if region else {"us-east-1", "eu-west-1", "eu-central-1", "us-west-2"}
        return [(r, function) for r in regions]

    def reset(self) -> None:
        """No fault or update in progress, nothing cached (moto may have been reset since)."""
        with self.lock:
            self.faults.clear()
            self.busy_until.clear()
            self.pending_until.clear()
            self.aliases.clear()
            self.conflicts = 0
        self.plane.reserved.clear()

    # --- the API ----------------------------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = urllib.parse.unquote(url.path)
        region = _region(h.headers.get("Authorization", ""))
        self.calls.append((h.command, path))
        try:
            for fault in self.faults:
                if (fault.times is None or fault.hits < fault.times) and fault.method in ("", h.command) \
                        and fault.path in path:  # fmt: skip
                    fault.hits += 1
                    return _error(h, fault.status, fault.code, fault.message)
            m = _FUNCTION.match(path)
            if m is not None:
                name, rest = _short(m["name"]), m["rest"] or ""
                if rest.startswith("/invocations"):
                    return self._invoke(h, region, name, query.get("Qualifier", "$LATEST"), body)
                if rest.startswith("/url"):
                    return self._url(h, region, name, query.get("Qualifier", "$LATEST"), body)
                if rest.startswith("/provisioned-concurrency"):
                    return self._provisioned(h, region, name, query.get("Qualifier", ""), body)
                if self._refused_while_busy(h, region, name, rest):
                    return None
            self._forward(h, path, url.query, body, region)
        except BrokenPipeError:
            pass

    def _refused_while_busy(self, h: http.server.BaseHTTPRequestHandler, region: str, name: str, rest: str) -> bool:
        changes = (h.command == "PUT" and rest in ("/code", "/configuration")) or (
            h.command == "POST" and rest == "/versions")  # fmt: skip
        with self.lock:
            until = max(self.busy_until.get((region, name), 0), self.pending_until.get((region, name), 0))
        if changes and time.monotonic() < until:
            self.conflicts += 1
            arn = f"arn:aws:lambda:{region}:123456789012:function:{name}"
            _error(h, 409, "ResourceConflictException", "The operation cannot be performed at this time. "
                   f"An update is in progress for resource: {arn}")  # fmt: skip
            return True
        return False

    def _forward(self, h: http.server.BaseHTTPRequestHandler, path: str, query: str, body: bytes, region: str) -> None:
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "content-length")}
        resp = self.moto.request(h.command, urllib.parse.quote(path) + (f"?{query}" if query else ""),
                                 content=body, headers=headers)  # fmt: skip
        content = resp.content
        m = _FUNCTION.match(path)
        name = _short(m["name"]) if m else ""
        rest = (m["rest"] or "") if m else ""
        if resp.status_code < 300:
            if h.command == "PUT" and rest == "/configuration":
                content = _kept(region, name, json.loads(body or b"{}"), content)
            content = self._after(h.command, path, dict(urllib.parse.parse_qsl(query)), region, name, rest, content)
        h.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in _HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(content)))
        h.end_headers()
        h.wfile.write(content)

    def _after(self, method: str, path: str, query: dict[str, str], region: str, name: str, rest: str,
               content: bytes) -> bytes:  # fmt: skip
        """What Lambda does besides what moto answers: states that take time, the data plane's bookkeeping."""
        now = time.monotonic()
        key = (region, name)
        if method == "POST" and path.endswith("/functions") and content:
            name = json.loads(content).get("FunctionName", "")
            with self.lock:
                self.pending_until[(region, name)] = now + self.update_s
            return _patch(content, State="Pending", LastUpdateStatus=None)
        if method == "PUT" and rest in ("/code", "/configuration"):
            with self.lock:
                self.busy_until[key] = now + self.update_s
            return _patch(content, LastUpdateStatus="InProgress")
        if rest.startswith("/aliases"):
            with self.lock:
                for k in [k for k in self.aliases if k[:2] == key]:
                    del self.aliases[k]
            if method in ("PUT", "POST") and content:
                self._reprovision(region, name, json.loads(content))
        if rest.startswith("/concurrency"):
            self.plane.reserved.pop(key, None)
        if method == "DELETE" and rest in ("", "/"):
            version = query.get("Qualifier")
            self.plane.forget(region, name, version)
            if version is None:
                self._forget(region, name)
        if method == "GET" and (rest in ("", "/") or rest.startswith("/configuration")) and content:
            with self.lock:
                pending = now < self.pending_until.get(key, 0)
                busy = now < self.busy_until.get(key, 0)
            if pending or busy:
                patch = {"State": "Pending"} if pending else {"LastUpdateStatus": "InProgress"}
                if rest in ("", "/"):
                    raw = json.loads(content)
                    if "Configuration" in raw and raw["Configuration"].get("Version") == "$LATEST":
                        raw["Configuration"].update(patch)
                        return json.dumps(raw).encode()
                    return content
                return _patch(content, **patch) if b'"$LATEST"' in content else content
        return content

    def _forget(self, region: str, name: str) -> None:
        with self.lock:
            for key in [k for k in self.urls if k[:2] == (region, name)]:
                _close(self.urls.pop(key))
            for key in [k for k in self.provisioned if k[:2] == (region, name)]:
                del self.provisioned[key]
            for key in [k for k in self.aliases if k[:2] == (region, name)]:
                del self.aliases[key]

    def alias(self, region: str, function: str, qualifier: str) -> dict[str, Any] | None:
        """The alias (cached until it changes); None when ``qualifier`` is a version or $LATEST."""
        if qualifier == "$LATEST" or qualifier.isdigit():
            return None
        key = (region, function, qualifier)
        with self.lock:
            if key in self.aliases:
                return self.aliases[key]
        resp = self.moto.get(f"/2015-03-31/functions/{function}/aliases/{qualifier}", headers=_signed(region))
        if not resp.is_success:  # moto answers GetAlias with 201
            raise LookupError(
                f"Function not found: arn:aws:lambda:{region}:123456789012:function:{function}:{qualifier}"
            )
        found: dict[str, Any] = resp.json()
        with self.lock:
            self.aliases[key] = found
        return found

    # --- Invoke -----------------------------------------------------------------------------------

    def resolve(self, region: str, function: str, qualifier: str) -> str:
        """The version a request to ``qualifier`` runs: an alias's by its weights, else the qualifier."""
        alias = self.alias(region, function, qualifier)
        if alias is None:
            return qualifier
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        return choose(str(alias["FunctionVersion"]), {str(k): float(v) for k, v in weights.items()})

    def _invoke(self, h: http.server.BaseHTTPRequestHandler, region: str, name: str, qualifier: str,
                body: bytes) -> None:  # fmt: skip
        kind = h.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            version = self.resolve(region, name, qualifier)
            if kind == "DryRun":
                return _reply(h, 204, b"", {})
            if kind == "Event":
                threading.Thread(target=self.plane.invoke, args=(region, name, version, body), daemon=True).start()
                return _reply(h, 202, b"", {})
            answer = self.plane.invoke(region, name, version, body, tail=h.headers.get("X-Amz-Log-Type") == "Tail")
        except LookupError as exc:
            return _error(h, 404, "ResourceNotFoundException", str(exc))
        except Throttled as exc:
            return _error(h, 429, "TooManyRequestsException", f"Rate Exceeded. ({exc})",
                          {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "Type": "User"})  # fmt: skip
        headers = {"X-Amz-Executed-Version": answer.version}
        if answer.function_error:
            headers["X-Amz-Function-Error"] = answer.function_error
        if h.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = base64.b64encode(answer.log.encode()).decode()
        return _reply(h, 200, answer.payload, headers)

    # --- function URLs ----------------------------------------------------------------------------

    def _url(self, h: http.server.BaseHTTPRequestHandler, region: str, name: str, qualifier: str,
             body: bytes) -> None:  # fmt: skip
        key = (region, name, qualifier)
        with self.lock:
            found = self.urls.get(key)
        arn = f"arn:aws:lambda:{region}:123456789012:function:{name}"
        if h.command == "GET":
            if found is None:
                return _error(h, 404, "ResourceNotFoundException", "The resource you requested does not exist.")
            return _reply(h, 200, _url_json(found, arn), {})
        if h.command == "DELETE":
            if found is None:
                return _error(h, 404, "ResourceNotFoundException", "The resource you requested does not exist.")
            with self.lock:
                self.urls.pop(key, None)
            _close(found)
            return _reply(h, 204, b"", {})
        raw = json.loads(body or b"{}")
        if h.command == "POST":
            if found is not None:
                message = (f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
                           "FunctionUrlConfig exists for this Lambda function")  # fmt: skip
                return _error(h, 409, "ResourceConflictException", message)
            try:
                self.alias(region, name, qualifier)
            except LookupError as exc:
                return _error(h, 404, "ResourceNotFoundException", str(exc))
            config = UrlConfig(name, qualifier, region, str(raw.get("AuthType", "")))
            config.server = _Router(self, config)
            config.url = config.server.url + "/"
            with self.lock:
                self.urls[key] = config
            return _reply(h, 201, _url_json(config, arn), {})
        if found is None:
            return _error(h, 404, "ResourceNotFoundException", "The resource you requested does not exist.")
        found.auth = str(raw.get("AuthType", found.auth))
        return _reply(h, 200, _url_json(found, arn), {})

    def public(self, region: str, function: str) -> bool:
        """The function's policy grants ``*`` both actions a public (NONE) function URL needs."""
        resp = self.moto.get(f"/2015-03-31/functions/{function}/policy", headers=_signed(region))
        if not resp.is_success:
            return False
        statements = json.loads(resp.json().get("Policy", "{}")).get("Statement", [])
        anyone = ("*", {"AWS": "*"}, {"Service": "*"})
        public = {str(s.get("Action")) for s in statements
                  if s.get("Principal") in anyone and s.get("Effect", "Allow") == "Allow"}  # fmt: skip
        return {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"} <= public

    # --- provisioned concurrency ------------------------------------------------------------------

    def _provisioned(self, h: http.server.BaseHTTPRequestHandler, region: str, name: str, qualifier: str,
                     body: bytes) -> None:  # fmt: skip
        key = (region, name, qualifier)
        with self.lock:
            found = self.provisioned.get(key)
        if h.command == "DELETE":
            with self.lock:
                self.provisioned.pop(key, None)
            return _reply(h, 204, b"", {})
        if h.command == "GET":
            if found is None:
                return _error(h, 404, "ProvisionedConcurrencyConfigNotFoundException",
                              "No Provisioned Concurrency Config found for this function")  # fmt: skip
            return _reply(h, 200, _provisioned_json(found), {})
        try:
            alias = self.alias(region, name, qualifier)
        except LookupError as exc:
            return _error(h, 404, "ResourceNotFoundException", str(exc))
        if alias is None:
            return _error(h, 400, "InvalidParameterValueException", "Provisioned Concurrency Configs cannot be "
                          "applied to unpublished function versions or $LATEST; use an alias")  # fmt: skip
        wanted = Provisioned(int(json.loads(body)["ProvisionedConcurrentExecutions"]))
        with self.lock:
            self.provisioned[key] = wanted
        self._allocate(region, name, qualifier, str(alias["FunctionVersion"]), wanted)
        return _reply(h, 202, _provisioned_json(wanted), {})

    def _reprovision(self, region: str, name: str, alias: dict[str, Any]) -> None:
        key = (region, name, str(alias.get("Name", "")))
        with self.lock:
            found = self.provisioned.get(key)
        if found is not None and found.version != str(alias.get("FunctionVersion")):
            found.status, found.allocated = "IN_PROGRESS", 0
            self._allocate(region, name, key[2], str(alias["FunctionVersion"]), found)

    def _allocate(self, region: str, name: str, qualifier: str, version: str, wanted: Provisioned) -> None:
        def run() -> None:
            try:
                self.plane.provision(region, name, version, wanted.requested)
                wanted.status, wanted.allocated, wanted.version = "READY", wanted.requested, version
            except Exception as exc:
                wanted.status, wanted.reason = "FAILED", f"{type(exc).__name__}: {exc}"

        wanted.version = version
        threading.Thread(target=run, daemon=True).start()


class _Router:
    """A function URL: HTTP requests as payload-2.0 events to its alias, on a port of 127.0.0.1."""

    def __init__(self, front: LambdaFront, config: UrlConfig) -> None:
        router = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                router.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.front, self.config = front, config
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="lambda-url", daemon=True).start()

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        c = self.config
        try:
            if c.auth == "AWS_IAM":
                denied = _check_sigv4(h, body, c.region)
                if denied:
                    return _reply(
                        h, 403, json.dumps({"Message": denied}).encode(), {"Content-Type": "application/json"}
                    )
            elif not self.front.public(c.region, c.function):
                return _reply(h, 403, b'{"Message":"Forbidden"}', {"Content-Type": "application/json"})
            version = self.front.resolve(c.region, c.function, c.qualifier)
            answer = self.front.plane.invoke(c.region, c.function, version, _event(h, body, c))
        except Throttled:
            return _reply(h, 429, b'{"Message":"Rate Exceeded."}', {"Content-Type": "application/json"})
        except LookupError:
            return _reply(h, 404, b'{"Message":"Not Found"}', {"Content-Type": "application/json"})
        except BrokenPipeError:
            return None
        if answer.function_error:
            return _reply(h, 502, b'{"Message":"Internal Server Error"}', {"Content-Type": "application/json"})
        try:
            proxy = json.loads(answer.payload)
            status, headers = int(proxy.get("statusCode", 200)), dict(proxy.get("headers") or {})
            content = proxy.get("body") or ""
            data = base64.b64decode(content) if proxy.get("isBase64Encoded") else str(content).encode()
        except (ValueError, AttributeError, TypeError):  # not a proxy answer: Lambda sends it as JSON
            status, headers, data = 200, {"Content-Type": "application/json"}, answer.payload
        _reply(h, status, data, {**headers, "X-Amzn-RequestId": str(uuid.uuid4())})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _event(h: http.server.BaseHTTPRequestHandler, body: bytes, c: UrlConfig) -> bytes:
    url = urllib.parse.urlsplit(h.path)
    headers = {k.lower(): v for k, v in h.headers.items()}
    text = body.decode("utf-8", errors="strict") if body else ""
    return json.dumps({
        "version": "2.0", "routeKey": "$default", "rawPath": url.path or "/", "rawQueryString": url.query,
        "headers": headers, "isBase64Encoded": False, "body": text or None,
        "requestContext": {"accountId": "anonymous", "apiId": c.function, "domainName": headers.get("host", ""),
                           "http": {"method": h.command, "path": url.path or "/", "protocol": "HTTP/1.1",
                                    "sourceIp": h.client_address[0], "userAgent": headers.get("user-agent", "")},
                           "requestId": str(uuid.uuid4()), "routeKey": "$default", "stage": "$default",
                           "time": now_iso(), "timeEpoch": int(time.time() * 1000)},
    }).encode()  # fmt: skip


def _check_sigv4(h: http.server.BaseHTTPRequestHandler, body: bytes, region: str) -> str:
    """'' when the request carries a valid SigV4 signature for ``lambda`` in ``region``; else why not."""
    auth = h.headers.get("Authorization", "")
    m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                 r"SignedHeaders=([^,]+), Signature=([0-9a-f]+)", auth)  # fmt: skip
    if m is None:
        return "Forbidden"
    key, _, scope_region, service, signed, signature = m.groups()
    if key not in _KEYS or service != "lambda" or scope_region != region:
        return "The security token included in the request is invalid."
    names = signed.split(";")
    headers = {n: h.headers.get(n, "") for n in names}
    request = AWSRequest(
        method=h.command, url=f"http://{h.headers.get('host', '')}{h.path}", data=body, headers=headers
    )
    request.context["timestamp"] = h.headers.get("x-amz-date", "")
    signer = SigV4Auth(Credentials(key, _KEYS[key], h.headers.get("x-amz-security-token")), "lambda", region)
    with contextlib.suppress(Exception):
        if signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request) == signature:
            return ""
    return "The request signature we calculated does not match the signature you provided."


def _url_json(c: UrlConfig, arn: str) -> bytes:
    qualified = arn + (f":{c.qualifier}" if c.qualifier != "$LATEST" else "")
    return json.dumps({"FunctionUrl": c.url, "FunctionArn": qualified, "AuthType": c.auth, "CreationTime": c.created,
                       "LastModifiedTime": c.created, "InvokeMode": "BUFFERED"}).encode()  # fmt: skip


def _provisioned_json(p: Provisioned) -> bytes:
    return json.dumps({"RequestedProvisionedConcurrentExecutions": p.requested,
                       "AvailableProvisionedConcurrentExecutions": p.allocated,
                       "AllocatedProvisionedConcurrentExecutions": p.allocated, "Status": p.status,
                       "StatusReason": p.reason, "LastModified": now_iso()}).encode()  # fmt: skip


def _close(config: UrlConfig) -> None:
    if config.server is not None:
        threading.Thread(target=config.server.stop, daemon=True).start()


def _kept(region: str, name: str, update: dict[str, Any], content: bytes) -> bytes:
    """What moto's UpdateFunctionConfiguration drops and Lambda keeps, ``ImageConfig`` and
    ``EphemeralStorage``: set on moto's $LATEST (moto runs in this process), so the next
    ``PublishVersion`` copies them, and in the answer."""
    from moto.awslambda.models import ImageConfig, lambda_backends

    latest = lambda_backends["123456789012"][region].get_function(name)
    fields: dict[str, Any] = {}
    if "ImageConfig" in update:
        latest.image_config = ImageConfig(update["ImageConfig"])
        fields["ImageConfigResponse"] = {"ImageConfig": latest.image_config.response()}
    if "EphemeralStorage" in update:
        latest.ephemeral_storage = int(update["EphemeralStorage"]["Size"])
        fields["EphemeralStorage"] = {"Size": latest.ephemeral_storage}
    return _patch(content, **fields) if fields else content


def _patch(content: bytes, **fields: Any) -> bytes:
    raw = json.loads(content)
    for k, v in fields.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return json.dumps(raw).encode()


def _short(name: str) -> str:
    """A function name from a name, a partial or a full ARN (its qualifier dropped)."""
    name = urllib.parse.unquote(name)
    if name.startswith("arn:"):
        return name.split(":")[6]
    return name.partition(":")[0]


def _region(authorization: str) -> str:
    m = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/", authorization)
    return m.group(1) if m else "us-east-1"


def _signed(region: str) -> dict[str, str]:
    """A header moto reads the region from (it does not check signatures)."""
    key = CREDENTIALS["aws_access_key_id"]
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential={key}/20260101/{region}/lambda/aws4_request, "
            "SignedHeaders=host, Signature=0"}  # fmt: skip


def _reply(h: http.server.BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
    h.send_response(status)
    for k, v in headers.items():
        if k.lower() not in _HOP:
            h.send_header(k, v)
    if not any(k.lower() == "content-type" for k in headers):
        h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


def _error(h: http.server.BaseHTTPRequestHandler, status: int, code: str, message: str,
           extra: dict[str, str] | None = None) -> None:  # fmt: skip
    body = json.dumps({"Type": "User", "Message": message, "message": message, **(extra or {})}).encode()
    _reply(h, status, body, {"x-amzn-ErrorType": code, "Content-Type": "application/json"})
