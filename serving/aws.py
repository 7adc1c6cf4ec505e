"""What the Lambda contract reads from AWS at a cold start, with the standard library only.

The image carries no AWS SDK (botocore alone would add some 80 MB to every image, Lambda or not),
so the two things a function reads from AWS once per execution environment are fetched here with
Signature Version 4 requests made by hand:

* **the API key** (``SLIPWAY_API_KEY_SECRET``: a Secrets Manager secret's ARN or name, at
  ``SLIPWAY_API_KEY_SECRET_VERSION``; or ``SLIPWAY_API_KEY_PARAMETER``: an SSM SecureString parameter,
  ``name:version``), so that no key is ever a plain environment value of the function;
* **the model package** (``SLIPWAY_PACKAGE_S3=s3://bucket/prefix/``: its ``package.json`` and
  artifact) into ``/tmp``, served instead of the image's own (``model_location: s3``). The artifact's sha256 must be
  ``SLIPWAY_PACKAGE_SHA256`` (the function's own configuration, written by the target) before
  anything of it is loaded.

Credentials are those Lambda gives the execution role (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), the region ``AWS_REGION``. Endpoints follow the
SDKs' environment overrides (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_SECRETS_MANAGER``,
``AWS_ENDPOINT_URL_SSM``, ``AWS_ENDPOINT_URL``); without one, AWS's regional endpoints.
Every failure is an ``AwsError`` whose message names the resource and AWS's error code.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from serving.contract import API_KEY_PARAMETER_ENV, API_KEY_SECRET_ENV, API_KEY_SECRET_VERSION_ENV, PACKAGE_SHA256_ENV

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ENDPOINT_ENV = {"s3": "AWS_ENDPOINT_URL_S3", "secretsmanager": "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                 "ssm": "AWS_ENDPOINT_URL_SSM"}  # fmt: skip
_TIMEOUT_S = 30


class AwsError(Exception):
    """A call to AWS that failed; the message says which resource and why."""


def _credentials(environ: Mapping[str, str]) -> tuple[str, str, str]:
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise AwsError("no AWS credentials in the environment (Lambda sets them for the execution role)")
    return key, secret, environ.get("AWS_SESSION_TOKEN", "")


def _endpoint(service: str, region: str, environ: Mapping[str, str]) -> str:
    override = environ.get(_ENDPOINT_ENV[service]) or environ.get("AWS_ENDPOINT_URL")
    return (override or f"https://{service}.{region}.amazonaws.com").rstrip("/")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str, url: str, *, service: str, region: str, body: bytes, headers: Mapping[str, str],
    environ: Mapping[str, str], now: datetime.datetime | None = None,
) -> dict[str, str]:  # fmt: skip
    """``headers`` plus the Signature Version 4 headers for a request (every header given is signed)."""
    access_key, secret_key, token = _credentials(environ)
    when = now or datetime.datetime.now(datetime.UTC)
    stamp, day = when.strftime("%Y%m%dT%H%M%SZ"), when.strftime("%Y%m%d")
    parts = urllib.parse.urlsplit(url)
    payload = hashlib.sha256(body).hexdigest()
    out = {**headers, "host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload}
    if token:
        out["x-amz-security-token"] = token
    canonical = {k.lower(): " ".join(str(v).split()) for k, v in out.items()}
    names = ";".join(sorted(canonical))
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    )
    request = "\n".join([
        method, parts.path or "/", query, *(f"{k}:{canonical[k]}" for k in sorted(canonical)), "", names, payload,
    ])  # fmt: skip
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    credential = f"Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
    out["Authorization"] = f"AWS4-HMAC-SHA256 {credential}"
    return out


def _call(method: str, url: str, service: str, what: str, environ: Mapping[str, str], body: bytes = b"",
          headers: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    signed = sign(method, url, service=service, region=region, body=body, headers=headers or {}, environ=environ)
    request = urllib.request.Request(url, data=body or None, method=method, headers=signed)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        raise AwsError(f"{what}: HTTP {exc.code} {_error_code(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AwsError(f"{what}: {service} did not answer ({exc})") from None


def _error_code(body: bytes) -> str:
    """AWS's error code (and message) from a JSON (``__type``) or XML (``<Code>``) error body."""
    text = body.decode(errors="replace")
    try:
        raw = json.loads(text)
        code = str(raw.get("__type", "")).rpartition("#")[2]
        return f"{code}: {raw.get('message') or raw.get('Message') or ''}".strip(": ")
    except (ValueError, AttributeError):
        found = re.search(r"<Code>([^<]+)</Code>", text)
        return found.group(1) if found else text[:200]


def _json_call(service: str, target: str, payload: dict[str, object], what: str, environ: Mapping[str, str]) -> dict:  # type: ignore[type-arg]
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    headers = {"content-type": "application/x-amz-json-1.1", "x-amz-target": target}
    raw = _call("POST", _endpoint(service, region, environ) + "/", service, what, environ,
                json.dumps(payload).encode(), headers)  # fmt: skip
    answer: dict = json.loads(raw)  # type: ignore[type-arg]
    return answer


def secret_string(secret_id: str, version: str = "", environ: Mapping[str, str] = os.environ) -> str:
    """The ``SecretString`` of a Secrets Manager secret (its ARN or name), at ``version`` if given."""
    what = f"Secrets Manager secret {secret_id}"
    request: dict[str, object] = {"SecretId": secret_id, **({"VersionId": version} if version else {})}
    answer = _json_call("secretsmanager", "secretsmanager.GetSecretValue", request, what, environ)
    if not answer.get("SecretString"):
        raise AwsError(f"{what} holds no SecretString")
    return str(answer["SecretString"])


def parameter(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The decrypted value of an SSM parameter (a SecureString)."""
    what = f"SSM parameter {name}"
    answer = _json_call("ssm", "AmazonSSM.GetParameter", {"Name": name, "WithDecryption": True}, what, environ)
    return str(answer["Parameter"]["Value"])


def api_key_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with ``SLIPWAY_API_KEY`` read from where the function's configuration says (Secrets
    Manager or SSM); unchanged when it names neither. Raises ``AwsError``."""
    out = dict(environ)
    if environ.get(API_KEY_SECRET_ENV):
        version = environ.get(API_KEY_SECRET_VERSION_ENV, "")
        out["SLIPWAY_API_KEY"] = secret_string(environ[API_KEY_SECRET_ENV], version, environ).strip()
    elif environ.get(API_KEY_PARAMETER_ENV):
        out["SLIPWAY_API_KEY"] = parameter(environ[API_KEY_PARAMETER_ENV], environ).strip()
    return out


def get_object(uri: str, environ: Mapping[str, str] = os.environ) -> bytes:
    """The bytes of ``s3://bucket/key`` (path-style addressing under an endpoint override)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise AwsError(f"{uri!r} is not an S3 object URI (s3://bucket/key)")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    key = urllib.parse.quote(parts.path.lstrip("/"), safe="/-_.~")
    override = environ.get(_ENDPOINT_ENV["s3"]) or environ.get("AWS_ENDPOINT_URL")
    base = f"{override.rstrip('/')}/{parts.netloc}" if override else f"https://{parts.netloc}.s3.{region}.amazonaws.com"
    return _call("GET", f"{base}/{key}", "s3", f"S3 object {uri}", environ)


def fetch_package(prefix: str, sha256: str, dest: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Download a package (``package.json`` and its artifact under ``prefix``) into ``dest``; the artifact
    must have ``sha256`` before it is written where the server would load it."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise AwsError(f"{PACKAGE_SHA256_ENV} must be the artifact's sha256 (64 hex digits), not {sha256!r}")
    base = prefix if prefix.endswith("/") else prefix + "/"
    manifest = get_object(base + "package.json", environ)
    try:
        raw = json.loads(manifest)
        artifact, named = str(raw["artifact_file"]), str(raw["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AwsError(f"{base}package.json is not a Slipway package manifest ({exc})") from None
    if "/" in artifact or artifact.startswith("."):
        raise AwsError(f"{base}package.json names an artifact outside the package: {artifact!r}")
    data = get_object(base + artifact, environ)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise AwsError(
            f"{base}{artifact} has sha256 {got}, the function expects {sha256} ({PACKAGE_SHA256_ENV}): "
            "the object was replaced or belongs to another release; refusing to load it"
        )
    if named != sha256:
        raise AwsError(f"{base}package.json is another package's (its sha256 is {named}, not {sha256})")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / artifact).write_bytes(data)
    (dest / "package.json").write_bytes(manifest)
    return dest
