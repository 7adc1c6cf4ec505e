"""Reaching a Docker Engine through the Docker SDK, and mapping its failures onto Slipway's errors.

Errors are mapped by type and HTTP status code (never by message text): 404 is "not found",
408/429/502/503/504 and timeouts are transient, anything else is a plain ``TargetError``.
"""

from __future__ import annotations

import socket
import urllib.parse

import docker
import docker.errors
import requests

from slipway.errors import SlipwayError, TargetError, TransientTargetError

_TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})


def describe_host(host: str) -> str:
    return host or "the local Docker Engine (DOCKER_HOST or /var/run/docker.sock)"


def connect(host: str, *, target: str, operation: str, timeout_s: float = 120) -> docker.DockerClient:
    """A client for the engine at ``host`` ('' = from the environment), checked with a ping."""
    try:
        if host:
            client = docker.DockerClient(base_url=host, timeout=int(timeout_s))
        else:
            client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:  # DockerException, OSError, requests and paramiko errors alike
        hint = "start it (scripts/services/docker.sh up) or fix the target's host / DOCKER_HOST"
        if host.startswith("ssh://"):
            hint = (
                "check that the ssh server answers, that your key is accepted (ssh-agent or ~/.ssh/config) "
                "and the host key is in ~/.ssh/known_hosts, and that the remote user may use docker"
            )
        raise TargetError(
            f"cannot reach {describe_host(host)}: {type(exc).__name__}: {exc}",
            target=target, operation=operation, resource=host or "local engine", hint=hint,
        ) from exc  # fmt: skip
    return client


def ssh_hostname(host: str) -> str | None:
    """The host name of an ``ssh://user@host:port`` engine URL, None for other kinds of URL."""
    if not host.startswith("ssh://"):
        return None
    return urllib.parse.urlsplit(host).hostname


def map_error(exc: Exception, *, target: str, operation: str, resource: str, hint: str = "") -> SlipwayError:
    """A Docker SDK / transport exception as a ``TargetError`` (transient where a retry may pass)."""
    if isinstance(exc, SlipwayError):
        return exc
    status = exc.status_code if isinstance(exc, docker.errors.APIError) else None
    transient = (status in _TRANSIENT_STATUS) or isinstance(exc, requests.Timeout | socket.timeout)
    detail = exc.explanation if isinstance(exc, docker.errors.APIError) and exc.explanation else str(exc)
    cls = TransientTargetError if transient else TargetError
    code = f" (HTTP {status})" if status else ""
    message = f"{type(exc).__name__}{code}: {detail}"
    return cls(message, target=target, operation=operation, resource=resource, hint=hint)


def port_answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
