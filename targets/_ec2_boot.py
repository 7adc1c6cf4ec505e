"""The user-data script of an EC2 release instance, and the mapping of AWS error codes.

Secrets never travel in user data (anyone on the instance, and anyone allowed
``DescribeInstanceAttribute``, can read it): the API key and the registry password are SecureString
parameters in SSM Parameter Store that the script reads with the instance profile's role.
"""

from __future__ import annotations

import shlex

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from slipway.errors import ConfigError, SlipwayError, TargetError, TransientTargetError

TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "TooManyRequestsException",
    "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure", "InsufficientInstanceCapacity",
    "RequestTimeout", "RequestExpired",
})  # fmt: skip
CONFIG_CODES = frozenset({
    "InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable", "UnauthorizedOperation",
    "AuthFailure", "InvalidClientTokenId", "AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
    "InvalidSubnetID.NotFound", "InvalidVpcID.NotFound", "InvalidParameterValue", "InvalidParameterCombination",
    "InvalidIamInstanceProfile.NotFound", "OptInRequired", "Unsupported",
})  # fmt: skip
LIMIT_CODES = frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded", "RulesPerSecurityGroupLimitExceeded",
                         "SecurityGroupLimitExceeded", "MaxSpotInstanceCountExceeded"})  # fmt: skip

_HINTS = {
    "InvalidAMIID.NotFound": "the AMI does not exist in this region: fix ami in the spec (AMIs are per region)",
    "InvalidAMIID.Malformed": "fix ami in the spec: it looks like ami-0123456789abcdef0",
    "UnauthorizedOperation": "the AWS identity lacks an EC2 permission: see docs/targets/ec2.md for the policy",
    "AuthFailure": "check the AWS credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) and the region",
    "InvalidClientTokenId": "check the AWS credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) and the region",
}


def map_aws_error(exc: Exception, *, operation: str, resource: str) -> SlipwayError:
    """A botocore exception as a Slipway error, by its error code."""
    if isinstance(exc, SlipwayError):
        return exc
    if isinstance(exc, NoCredentialsError):
        return ConfigError(f"[ec2 {operation} {resource}] no AWS credentials found",
                           hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")  # fmt: skip
    if isinstance(exc, EndpointConnectionError):
        return TransientTargetError(str(exc), target="ec2", operation=operation, resource=resource,
                                    hint="check the network or the target's endpoint_url")  # fmt: skip
    if not isinstance(exc, ClientError):
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, BotoCoreError) else repr(exc)
        return TargetError(detail, target="ec2", operation=operation, resource=resource)
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    text = f"{code}: {message}"
    if code in TRANSIENT_CODES:
        return TransientTargetError(text, target="ec2", operation=operation, resource=resource,
                                    hint="AWS throttled or is busy; the step is retried")  # fmt: skip
    if code in CONFIG_CODES:
        return ConfigError(f"[ec2 {operation} {resource}] {text}",
                           hint=_HINTS.get(code, "fix the ec2 settings in the spec"))  # fmt: skip
    if code in LIMIT_CODES:
        return TargetError(text, target="ec2", operation=operation, resource=resource,
                           hint="an account quota is reached: free capacity or request a quota increase "
                           "(Service Quotas console), or use a smaller instance_type")  # fmt: skip
    return TargetError(text, target="ec2", operation=operation, resource=resource)


def user_data(
    *, image: str, registry: str | None, username: str, password_param: str, key_param: str,
    region: str, port: int, workers: int, name: str,
) -> str:  # fmt: skip
    """The boot script: install Docker (and the AWS CLI), log in, run the image by digest."""
    q = shlex.quote
    login = ""
    if registry and username:
        login = (f"aws ssm get-parameter --region {q(region)} --with-decryption --name {q(password_param)} "
                 f"--query Parameter.Value --output text | docker login --username {q(username)} "
                 f"--password-stdin {q(registry)}\n")  # fmt: skip
    env = ""
    auth_args = "--no-auth"
    if key_param:
        env = (
            f"umask 077\nprintf 'SLIPWAY_API_KEY=%s\\n' \"$(aws ssm get-parameter --region {q(region)} "
            f'--with-decryption --name {q(key_param)} --query Parameter.Value --output text)" > /run/slipway.env\n'
        )
        auth_args = ""
    env_file = "--env-file /run/slipway.env " if key_param else ""
    return f"""#!/bin/bash
# slipway release instance: {name}
set -euo pipefail
if ! command -v docker >/dev/null; then
  if command -v apt-get >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io awscli
  else
    dnf install -y docker awscli || yum install -y docker awscli
  fi
fi
systemctl enable --now docker
{login}{env}docker pull {q(image)}
docker run -d --name {q(name)} --restart unless-stopped {env_file}-p {port}:8000 \\
  --log-opt max-size=10m --log-opt max-file=3 --read-only --tmpfs /tmp \\
  {q(image)} --workers {workers} {auth_args}
""".replace(" \n", "\n")
