"""The user-data script of an EC2 release instance.

Secrets never travel in user data (anyone on the instance, and anyone allowed
``DescribeInstanceAttribute``, can read it): the API key and the registry password are SecureString
parameters in SSM Parameter Store that the script reads with the instance profile's role.
"""

from __future__ import annotations

import shlex

from serving.contract import PORT


def user_data(
    *, image: str, registry: str | None, username: str, password_param: str, key_param: str,
    region: str, port: int, workers: int, name: str, server_args: tuple[str, ...] = (),
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
docker run -d --name {q(name)} --restart unless-stopped --stop-timeout 40 {env_file}-p {port}:{PORT} \\
  --log-opt max-size=10m --log-opt max-file=3 --read-only --tmpfs /tmp \\
  {q(image)} {" ".join(["--workers", str(workers), *map(q, server_args), auth_args])}
""".replace(" \n", "\n")
