"""The one HTTP client of Slipway's own calls to endpoints: the gate, ``status``, ``verify`` and the
targets' readiness checks all authenticate and address an ``Endpoint`` through here.

``request_headers`` is what every request to an endpoint carries: its fixed headers and its
authentication (Slipway's API key as a bearer token, an AWS Signature Version 4 over the
request, or a Google-signed ID token for the endpoint's audience, as Cloud Run's IAM checks). The
Locust users of the gate call it too, in their own process, so the gate signs
exactly as the other callers do.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Generator
from typing import Any

import httpx
from pydantic import SecretStr

from slipway.errors import ConfigError
from slipway.release import AuthScheme, Endpoint


def request_headers(
    endpoint: Endpoint, api_key: SecretStr | None, method: str, url: str, body: bytes = b""
) -> dict[str, str]:
    """The headers a request to ``endpoint`` carries: its fixed headers plus its authentication."""
    headers = dict(endpoint.headers)
    match endpoint.auth.scheme:
        case AuthScheme.NONE:
            pass
        case AuthScheme.API_KEY:
            if api_key is None:
                raise ConfigError(
                    f"{endpoint.url} requires Slipway's API key and none was given",
                    hint="set the environment variable named by auth.api_key_env in the spec",
                )
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        case AuthScheme.AWS_SIGV4:
            headers.update(_sigv4(endpoint, method, url, body, headers))
        case AuthScheme.GOOGLE_ID_TOKEN:
            headers["Authorization"] = f"Bearer {google_id_token(endpoint.auth.audience or endpoint.url)}"
        case AuthScheme.GOOGLE_ACCESS_TOKEN:
            headers["Authorization"] = f"Bearer {google_access_token()}"
    return headers


_ID_TOKENS: dict[str, Any] = {}  # audience → google-auth ID-token credentials (they refresh before expiry)
_ID_TOKENS_LOCK = threading.Lock()


def google_id_token(audience: str) -> str:
    """A Google-signed ID token for ``audience``, from google-auth's ID-token sources in its order: the
    service-account (or impersonated) key file of GOOGLE_APPLICATION_CREDENTIALS, else the metadata
    server (Compute Engine, Cloud Run, GKE). Cached per audience until shortly before it expires."""
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    with _ID_TOKENS_LOCK:
        try:
            request = google.auth.transport.requests.Request()
            credentials = _ID_TOKENS.get(audience)
            if credentials is None:
                credentials = google.oauth2.id_token.fetch_id_token_credentials(audience, request=request)  # type: ignore[no-untyped-call]
                _ID_TOKENS[audience] = credentials
            if not credentials.valid:
                credentials.refresh(request)
        except google.auth.exceptions.GoogleAuthError as exc:
            _ID_TOKENS.pop(audience, None)
            raise ConfigError(
                f"no Google ID token for {audience}: {type(exc).__name__}: {exc}",
                hint="set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or an impersonated "
                "service account's file from `gcloud auth application-default login --impersonate-service-account`), "
                "or run where the metadata server answers; the identity needs roles/run.invoker on the service",
            ) from exc
        return str(credentials.token)


_ACCESS: list[Any] = []  # the Application Default Credentials, once found (they refresh before expiry)


def google_access_token() -> str:
    """An OAuth 2.0 access token (scope cloud-platform) of Google's Application Default Credentials, as
    Google's APIs take it (Vertex AI's predict); cached until shortly before it expires."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    with _ID_TOKENS_LOCK:
        try:
            if not _ACCESS:
                _ACCESS.append(google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])[0])
            credentials = _ACCESS[0]
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.GoogleAuthError as exc:
            _ACCESS.clear()
            raise ConfigError(
                f"no Google access token: {type(exc).__name__}: {exc}",
                hint="run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file; the identity needs roles/aiplatform.user on the endpoint's project",
            ) from exc
        return str(credentials.token)


def _sigv4(endpoint: Endpoint, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """AWS Signature Version 4 headers, with the credentials of the default chain (never the spec)."""
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise ConfigError(
            f"{endpoint.url} takes AWS-signed requests and no AWS credentials were found",
            hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run with an instance role)",
        )
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), endpoint.auth.aws_service, endpoint.auth.aws_region).add_auth(
        request
    )
    return {k: str(v) for k, v in request.headers.items() if k not in headers}


class EndpointAuth(httpx.Auth):
    """httpx authentication for an ``Endpoint`` (its headers and its scheme)."""

    requires_request_body = True  # SigV4 signs the body

    def __init__(self, endpoint: Endpoint, api_key: SecretStr | None) -> None:
        self.endpoint, self.api_key = endpoint, api_key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(
            request_headers(self.endpoint, self.api_key, request.method, str(request.url), request.content)
        )
        yield request


@functools.cache
def tls() -> ssl.SSLContext:
    """The TLS context of every HTTP client Slipway makes, built once. httpx builds one per client
    otherwise, loading the CA bundle again each time, and a readiness poll is a client per try."""
    return httpx.create_ssl_context()


def client(endpoint: Endpoint, api_key: SecretStr | None, *, timeout_s: float = 10.0) -> httpx.Client:
    """A client whose requests go to ``endpoint`` (relative paths) with its headers and authentication."""
    return httpx.Client(base_url=endpoint.url, auth=EndpointAuth(endpoint, api_key), timeout=timeout_s, verify=tls())


def answers(endpoint: Endpoint, path: str, *, api_key: SecretStr | None = None, timeout_s: float = 1.0) -> bool:
    """Whether ``path`` (a health or readiness route) answers 200 on a fresh connection.

    A fresh connection each time (``Connection: close``): behind a proxy that was just reloaded, a
    kept-alive connection would still reach the previous configuration.
    """
    headers = {"Connection": "close"}
    if endpoint.auth.scheme is AuthScheme.API_KEY and api_key is None:  # open routes need no key
        auth: httpx.Auth | None = None
        headers |= endpoint.headers
    else:
        auth = EndpointAuth(endpoint, api_key)
    try:
        answer = httpx.get(endpoint.url + path, headers=headers, auth=auth, timeout=timeout_s, verify=tls())
        return answer.status_code == 200
    except httpx.HTTPError:
        return False
