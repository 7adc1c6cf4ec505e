"""The Lambda stand-in for every test that needs it: moto's control plane (the session's moto server,
tests/targets/ec2/fixtures.py) behind the front of tests/targets/lambda/front.py, whose data plane
runs each version's image under the Runtime Interface Emulator on the Docker Engine.

A plugin (tests/conftest.py lists it) so that tests/targets/lambda and the contract tests share one
front per session. ``aws_env`` gives each test the credentials moto takes, an execution role and a
bucket, and afterwards checks that nothing of the test keeps running on the data plane.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from slipway.spec import LambdaTarget

if TYPE_CHECKING:
    from .dataplane import LambdaDataPlane
    from .front import LambdaFront

REGION = "eu-central-1"  # a region of its own: the ec2 tests reset moto in theirs
ROLE = "slipway-lambda-exec"
BUCKET = "slipway-models-test"
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_names = itertools.count(1)


@dataclass(frozen=True)
class LambdaStandIn:
    moto_url: str
    front: LambdaFront
    plane: LambdaDataPlane

    @property
    def url(self) -> str:
        return self.front.url

    def client(self, service: str, *, through_front: bool = False) -> Any:
        import boto3

        url = self.front.url if through_front else self.moto_url
        return boto3.client(service, endpoint_url=url, region_name=REGION, **_CREDENTIALS)

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::123456789012:role/{ROLE}"


@pytest.fixture(scope="session")
def lambda_standin(moto_url: str, docker_services: None) -> Iterator[LambdaStandIn]:
    from .dataplane import RIE, LambdaDataPlane, network
    from .front import LambdaFront

    if not RIE.is_file():
        pytest.fail(f"the Lambda Runtime Interface Emulator {RIE} is missing: run scripts/images/lambda-rie.sh")
    with network() as (name, gateway):
        plane = LambdaDataPlane(moto_url, name, gateway, max_environments=1)  # this machine's 2 cores
        front = LambdaFront(moto_url, plane)
        try:
            yield LambdaStandIn(moto_url, front, plane)
        finally:
            front.stop()
            plane.close()


@pytest.fixture
def aws_env(lambda_standin: LambdaStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[LambdaStandIn]:
    """moto's credentials in the environment, the execution role and the models' bucket; afterwards no
    fault left set and no environment of the data plane left running."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", _CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    standin = lambda_standin
    iam = standin.client("iam")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        statement = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "lambda.amazonaws.com"}}
        trust = {"Version": "2012-10-17", "Statement": [statement]}
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    s3 = standin.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    standin.front.reset()
    yield standin
    standin.front.reset()


def lambda_config(standin: LambdaStandIn, **settings: Any) -> LambdaTarget:
    """A target config on the stand-in; a function of its own unless given."""
    return LambdaTarget.model_validate({
        "region": REGION, "function": f"iris-t{next(_names)}", "role": standin.role_arn,
        "endpoint_url": standin.url, "aws_endpoint_url": standin.moto_url, "memory_mb": 1769, "timeout_s": 120,
        "model_bucket": BUCKET, "ready_timeout_s": 120, "promote_timeout_s": 120, "api_retry_s": 30, **settings,
    })  # fmt: skip
