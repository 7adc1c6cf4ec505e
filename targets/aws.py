"""The AWS boundary every AWS target shares: botocore failures as Slipway errors, by error code.

Codes are AWS's structured ``Error.Code`` (never message text): throttling and service faults are
transient (the step is retried), credentials, permissions and bad parameters are configuration to
fix, quotas are target errors that name the quota. Codes every AWS service uses are here; a target
adds its own service's codes and hints as ``ServiceCodes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from slipway.errors import At, ConfigError, SlipwayError, TargetError, TransientTargetError

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "TooManyRequestsException",
    "ServiceUnavailable", "ServiceUnavailableException", "Unavailable", "InternalError", "InternalFailure",
    "ServerException", "RequestTimeout", "RequestExpired",
})  # fmt: skip
CREDENTIAL_CODES = frozenset({
    "AuthFailure", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
})  # fmt: skip
PERMISSION_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})
CONFIG_CODES = frozenset({"InvalidParameterValue", "InvalidParameterValueException", "InvalidParameterCombination",
                          "ValidationException", "OptInRequired", "Unsupported"})  # fmt: skip


@dataclass(frozen=True)
class ServiceCodes:
    """A service's own error codes, by what they mean, and hints for some of them."""

    transient: frozenset[str] = frozenset()
    config: frozenset[str] = frozenset()
    limits: frozenset[str] = frozenset()
    hints: Mapping[str, str] = field(default_factory=dict)


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
        return ConfigError(text, at=at, hint=hint or f"the AWS identity lacks a {at.system} permission for "
                           f"{at.operation}: see docs/targets/{at.system}.md for the policy")  # fmt: skip
    if code in CONFIG_CODES or code in codes.config:
        return ConfigError(text, at=at, hint=hint or f"fix the {at.system} settings in the spec")
    if code in codes.limits:
        return TargetError(text, at=at, hint=hint or "an account quota is reached: free capacity or request a "
                           "quota increase (Service Quotas console)")  # fmt: skip
    return TargetError(text, at=at, hint=hint)
