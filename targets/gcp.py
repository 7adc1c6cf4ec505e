"""The Google Cloud boundary every Google target shares: credentials, errors and long-running operations.

* **Credentials** are never part of the spec, which names where they are: Application Default
  Credentials (``google.auth.default()``: ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ADC file,
  or the metadata server), or a Prefect GCP credentials block (``prefect-gcp``'s ``GcpCredentials``,
  block type ``gcp-credentials``) holding a service account's key (``service_account_info``) or the
  path of its key file (``service_account_file``).
* **Errors**: ``google.api_core`` exceptions are mapped by class (the HTTP / gRPC status), never by
  message text: 409 (a concurrent change: a stale etag), 429 (a quota), 500/503/504 and timeouts are
  transient (the step is retried); 401 is a credential to fix, 403 a missing IAM role (the hint names
  the permission Google reports, and the page listing the roles), 400 input to fix (the hint names the
  fields Google reports); anything else is a ``TargetError``.
* **Long-running operations** are followed to the end (``follow``), reporting progress through the
  target's ``TargetContext.progress`` and giving up after a timeout.
* **A container's last lines**: Cloud Run and Vertex AI write a container's stdout and stderr to Cloud
  Logging; ``log_tail`` reads them back for the error of a deployment that failed to start.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.operation import Operation

from slipway.errors import At, ConfigError, SlipwayError, TargetError, TransientTargetError

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_TAIL = 12
BLOCK_TYPE = "gcp-credentials"  # prefect-gcp's GcpCredentials
_TRANSIENT = (
    gexc.Conflict,
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.RetryError,
)


def credentials(block: str, *, at: At) -> tuple[Any, str]:
    """Google credentials (scoped to cloud-platform) and their project ('' if they name none)."""
    import google.auth
    import google.auth.exceptions
    from google.oauth2 import service_account

    if not block:
        try:
            creds, project = google.auth.default(scopes=[CLOUD_PLATFORM])
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(
                f"no Google credentials: {exc}",
                at=at,
                hint="run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file, or name a Prefect GCP credentials block in the target's credentials",
            ) from None
        return creds, str(project or "")
    data = _block_data(block, at=at)
    info, path = data.get("service_account_info"), data.get("service_account_file")
    try:
        if isinstance(info, Mapping) and info:
            creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                dict(info), scopes=[CLOUD_PLATFORM]
            )
        elif path:
            creds = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(path), scopes=[CLOUD_PLATFORM]
            )
        else:
            creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM])  # the block's own fallback
    except (ValueError, OSError, google.auth.exceptions.GoogleAuthError) as exc:
        raise ConfigError(
            f"the Prefect GCP credentials block {block!r} does not hold usable credentials: {exc}",
            at=at,
            hint="store a service account's JSON key in it (service_account_info)",
        ) from None
    return creds, str(data.get("project") or getattr(creds, "project_id", "") or "")


def _block_data(block: str, *, at: At) -> dict[str, Any]:
    """The fields of a ``gcp-credentials`` block document, secrets included (read through Prefect's API,
    so prefect-gcp itself need not be installed here)."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(block, BLOCK_TYPE, include_secrets=True)
    except Exception as exc:  # an unknown block, or no Prefect API
        raise ConfigError(
            f"the Prefect GCP credentials block {block!r} cannot be loaded ({type(exc).__name__})",
            at=at,
            hint=f"create it (prefect-gcp's GcpCredentials, saved as {block!r}) on the Prefect API this runs "
            "against, or leave credentials empty for Application Default Credentials",
        ) from None
    return dict(document.data)


def status_name(exc: gexc.GoogleAPICallError) -> str:
    """The canonical status Google reported (ABORTED, ALREADY_EXISTS, ...), '' if none was readable."""
    if exc.grpc_status_code is not None:
        return str(exc.grpc_status_code.name)
    response = getattr(exc, "response", None)
    try:
        return str(response.json()["error"]["status"]) if response is not None else ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def _details(exc: gexc.GoogleAPICallError, kind: str) -> list[Mapping[str, Any]]:
    return [d for d in exc.details if isinstance(d, Mapping) and str(d.get("@type", "")).endswith(kind)]


def _fields(exc: gexc.GoogleAPICallError) -> list[str]:
    return [
        str(v.get("field"))
        for d in _details(exc, "google.rpc.BadRequest")
        for v in d.get("fieldViolations", [])
        if v.get("field")
    ]


def _permission(exc: gexc.GoogleAPICallError) -> str:
    for d in _details(exc, "google.rpc.ErrorInfo"):
        meta = d.get("metadata") or {}
        if meta.get("permission"):
            return str(meta["permission"])
    return ""


def map_google_error(exc: BaseException, *, at: At, roles: str = "") -> SlipwayError:
    """A ``google.api_core`` / ``google.auth`` / transport exception as a Slipway error at ``at``.

    ``roles`` names the IAM roles the operation needs (for the 403 hint)."""
    import google.auth.exceptions
    import requests

    if isinstance(exc, SlipwayError):
        return exc
    page = f"docs/targets/{at.system}.md"
    if isinstance(exc, google.auth.exceptions.TransportError | requests.ConnectionError | requests.Timeout):
        return TransientTargetError(
            f"{type(exc).__name__}: {exc}",
            at=at,
            hint="Google's API did not answer; check the network (or the api_endpoint)",
        )
    if isinstance(exc, google.auth.exceptions.GoogleAuthError):
        return ConfigError(
            f"Google credentials were refused: {exc}",
            at=at,
            hint="refresh them (`gcloud auth application-default login`) or fix the key file",
        )
    if isinstance(exc, gexc.RetryError) and isinstance(exc.cause, gexc.GoogleAPICallError):
        mapped = map_google_error(exc.cause, at=at, roles=roles)
        mapped.message = f"{mapped.message} (still so after retrying: {exc.message})"
        mapped.args = (mapped.message,)
        return mapped
    if not isinstance(exc, gexc.GoogleAPICallError):
        return TargetError(f"{type(exc).__name__}: {exc}", at=at)
    status = status_name(exc)
    message = re.sub(r"^(GET|POST|PATCH|PUT|DELETE) \S+: ", "", str(exc.message))  # the REST transport's prefix
    text = f"{exc.code or ''} {status}: {message}".strip()
    if isinstance(exc, gexc.TooManyRequests):
        return TransientTargetError(
            text,
            at=at,
            hint="a Google quota (or rate limit) is reached; the step is retried: "
            "if it persists, request more quota (IAM & Admin → Quotas) or deploy less often",
        )
    if isinstance(exc, gexc.Conflict) and status != "ALREADY_EXISTS":
        return TransientTargetError(
            text,
            at=at,
            hint="the resource changed since it was read (someone else edited "
            "it, or an operation was still running); the step is retried from a fresh read",
        )
    if isinstance(exc, (*_TRANSIENT, gexc.DeadlineExceeded)):
        return TransientTargetError(text, at=at, hint="Google's API is busy or failed; the step is retried")
    if isinstance(exc, gexc.Unauthorized):
        return ConfigError(text, at=at, hint="the Google credentials were refused: refresh or replace them")
    if isinstance(exc, gexc.Forbidden):
        permission = _permission(exc)
        needs = f"the permission {permission}" if permission else "a permission"
        return ConfigError(
            text,
            at=at,
            hint=f"the identity lacks {needs} (or the project does not exist): grant it "
            f"{roles or 'the roles'} listed in {page}; check the project id in the spec",
        )
    if isinstance(exc, gexc.BadRequest):
        fields = _fields(exc)
        where = f"the field(s) {', '.join(fields)}" if fields else "the target's settings"
        return ConfigError(text, at=at, hint=f"Google refused {where}: fix them in the spec ({page})")
    if isinstance(exc, gexc.NotFound):
        return ConfigError(text, at=at, hint="check the project and region in the spec (and that the API is enabled)")
    return TargetError(text, at=at)


@contextlib.contextmanager
def google_errors(at: At, roles: str = "") -> Iterator[None]:
    """Map what Google's clients raise inside the block (API errors, RetryError when retries ran out,
    credential and transport errors) to Slipway's errors at ``at``; anything else passes unchanged."""
    import google.auth.exceptions
    import requests

    try:
        yield
    except (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError, requests.RequestException) as exc:
        raise map_google_error(exc, at=at, roles=roles) from exc


def follow(
    operation: Operation,
    *,
    timeout_s: float,
    at: At,
    progress: Callable[[str], None],
    describe: Callable[[Any], Iterable[str]] = lambda _: (),
    poll_s: float = 0.5,
    retry: Any = None,
) -> Any:
    """Poll a long-running operation until it is done; report each new line ``describe`` makes of
    its metadata; return its result (its error is raised as the Google exception). A timeout is a
    ``TargetError`` (the operation goes on at Google: the caller decides what to undo)."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while True:
        done = operation.done(retry=retry)  # type: ignore[no-untyped-call]
        metadata = operation.metadata
        for line in describe(metadata) if metadata is not None else ():
            if line not in seen:
                seen.add(line)
                progress(line)
        if done:
            return operation.result(timeout=0, retry=None)  # type: ignore[no-untyped-call]
        if time.monotonic() > deadline:
            raise TargetError(
                f"the operation {operation.operation.name} was not done after {timeout_s:g} s",
                at=at,
                hint="it goes on at Google; raise the stage's ready_timeout_s / promote_timeout_s",
            )
        time.sleep(poll_s)


def log_tail(project: str, credentials: Any, logging_endpoint: str, log_filter: str) -> str:
    """The last container lines Cloud Logging holds under ``log_filter``, oldest first, as ``  | line``;
    a note if none (the logs are extra information: their absence never hides the failure)."""
    from google.cloud import logging as cloud_logging

    options = {"api_endpoint": logging_endpoint} if logging_endpoint else None
    try:
        client = cloud_logging.Client(  # type: ignore[no-untyped-call]
            project=project, credentials=credentials, _use_grpc=False, client_options=options
        )
        entries = list(
            client.list_entries(  # type: ignore[no-untyped-call]
                resource_names=[f"projects/{project}"],
                filter_=log_filter,
                order_by=cloud_logging.DESCENDING,
                max_results=_TAIL,
            )
        )
    except Exception as exc:
        return f"  (the container's logs could not be read from Cloud Logging: {type(exc).__name__})"
    lines = []
    for entry in reversed(entries):
        payload = entry.payload
        text = payload.get("message", str(payload)) if isinstance(payload, dict) else str(payload)
        lines += [f"  | {line}" for line in text.rstrip().splitlines()]
    return "\n".join(lines[-_TAIL:]) or "  (no container output in Cloud Logging)"
