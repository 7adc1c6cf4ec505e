"""The AWS boundary every AWS target shares: botocore failures as Slipway errors, by error code.

Codes are AWS's structured ``Error.Code`` (never message text): throttling and service faults are
transient (the step is retried), credentials, permissions and bad parameters are configuration to
fix, quotas are target errors that name the quota. Codes every AWS service uses are here; a target
adds its own service's codes and hints as ``ServiceCodes``.

A target that makes its clients from ``session`` gets the IAM action of a refused call
(``ecs:CreateService``) named in the error's hint; ``check_region`` refuses a region no AWS
partition has before any call (botocore would try a host that does not exist, which looks like a
network fault and is retried).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from slipway.errors import At, ConfigError, SlipwayError, TargetError, TransientTargetError

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "TooManyRequestsException",
    "ServiceUnavailable", "ServiceUnavailableException", "Unavailable", "InternalError", "InternalFailure",
    "ServerException", "RequestTimeout", "RequestExpired", "ThrottledException", "RequestThrottledException",
    "SlowDown", "PriorRequestNotComplete",
})  # fmt: skip
CREDENTIAL_CODES = frozenset({
    "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
})  # fmt: skip
PERMISSION_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
                              "UnauthorizedException"})  # fmt: skip
CONFIG_CODES = frozenset({"InvalidParameterValue", "InvalidParameterValueException", "InvalidParameterCombination",
                          "ValidationException", "ValidationError", "OptInRequired", "Unsupported",
                          "InvalidParameterException", "MissingParameter"})  # fmt: skip
LIMIT_CODES = frozenset({"LimitExceededException", "ServiceQuotaExceededException", "QuotaExceededException"})
_ACTION = "SlipwayIamAction"  # where ``session`` notes a refused call's IAM action, in its response metadata


@dataclass(frozen=True)
class ServiceCodes:
    """A service's own error codes, by what they mean, and hints for some of them."""

    transient: frozenset[str] = frozenset()
    config: frozenset[str] = frozenset()
    limits: frozenset[str] = frozenset()
    hints: Mapping[str, str] = field(default_factory=dict)


def session(region: str, profile: str = "") -> boto3.Session:
    """A boto3 session (``profile``: another account's) whose clients name a refused call's IAM action.

    A new session each time (credentials as the environment has them now), sharing one botocore data
    loader: each session would otherwise parse endpoints.json and every service model it makes a
    client of again."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader(core.get_config_variable("data_path")))
    made = boto3.Session(profile_name=profile or None, region_name=region, botocore_session=core)
    made.events.register("after-call", _note_action)
    return made


@functools.cache
def _loader(data_path: str | None) -> botocore.loaders.Loader:
    return botocore.loaders.create_loader(data_path)


def _note_action(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
    """Every failed call's IAM action (``<signing name>:<operation>``), kept in its response metadata."""
    if getattr(http_response, "status_code", 200) >= 300 and isinstance(parsed, dict):
        action = f"{model.service_model.signing_name}:{model.name}"
        parsed.setdefault("ResponseMetadata", {})[_ACTION] = action


def iam_action(exc: ClientError) -> str:
    """The IAM action of the call that failed ('' when the client was not made by ``session``)."""
    return str(exc.response.get("ResponseMetadata", {}).get(_ACTION, ""))


@functools.cache
def known_regions() -> frozenset[str]:
    """Every region of every partition this botocore release knows."""
    base = boto3.Session()
    return frozenset(r for p in base.get_available_partitions() for r in base.get_available_regions("sts", p))


def check_region(region: str, *, at: At) -> None:
    """Refuse a region no AWS partition has, before any call would try a host that does not exist."""
    if region not in known_regions():
        raise ConfigError(
            f"{region!r} is not an AWS region this SDK knows", at=at,
            hint="fix region in the spec (e.g. us-east-1, eu-west-1, ap-southeast-2); a region opened after this "
            "boto3 release needs a newer boto3",
        )  # fmt: skip


@contextlib.contextmanager
def aws_errors(at: At, codes: ServiceCodes) -> Iterator[None]:
    """boto3's errors inside as Slipway's (``map_aws_error``), located ``at``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise map_aws_error(exc, at=at, codes=codes) from exc


def map_aws_error(exc: Exception, *, at: At, codes: ServiceCodes = ServiceCodes()) -> SlipwayError:
    """A botocore exception as a Slipway error at ``at`` (``at.system`` is the target kind)."""
    if isinstance(exc, SlipwayError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return ConfigError("no AWS credentials found", at=at,
                           hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")  # fmt: skip
    if isinstance(exc, EndpointConnectionError):
        return TransientTargetError(str(exc), at=at, hint="check the network or the target's endpoint_url")
    if not isinstance(exc, ClientError):
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, BotoCoreError) else repr(exc)
        return TargetError(detail, at=at)
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    text = f"{code}: {message}"
    hint = codes.hints.get(code, "")
    if code in TRANSIENT_CODES or code in codes.transient:
        return TransientTargetError(text, at=at, hint=hint or "AWS throttled or is busy; the step is retried")
    if code in CREDENTIAL_CODES:
        return ConfigError(text, at=at, hint=hint or "check the AWS credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) "
                           "and the region")  # fmt: skip
    if code in PERMISSION_CODES:
        action = iam_action(exc)
        needed = f"the permission {action}" if action else f"a {at.system} permission for {at.operation}"
        return ConfigError(text, at=at, hint=hint or f"the AWS identity lacks {needed}: grant it "
                           f"(docs/targets/{at.system}.md lists the policy)")  # fmt: skip
    if code in CONFIG_CODES or code in codes.config:
        return ConfigError(text, at=at, hint=hint or f"fix the {at.system} settings in the spec")
    if code in codes.limits or code in LIMIT_CODES:
        return TargetError(text, at=at, hint=hint or "an account quota is reached: free capacity or request a "
                           "quota increase (Service Quotas console)")  # fmt: skip
    return TargetError(text, at=at, hint=hint)
