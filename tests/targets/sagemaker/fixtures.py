"""moto behind the SageMaker front (tests/targets/sagemaker/emulator.py) for every test that needs SageMaker.

A plugin (tests/conftest.py lists it) so that tests/targets/sagemaker and the contract tests share the
session's moto server (``moto_url``, also the ec2 tests') and one front. ``sagemaker_env`` gives a test
AWS credentials for moto, the model-data bucket and a clean front; afterwards no container of the data
plane may be left and the emulator must not have failed itself.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from slipway.spec import SageMakerTarget

if TYPE_CHECKING:
    from tests.targets.sagemaker.emulator import SageMakerFront

REGION = "eu-central-1"  # a region of its own: the ec2 tests reset moto, and work elsewhere
BUCKET = "slipway-test-models"
ROLE = "arn:aws:iam::123456789012:role/slipway-sagemaker"
TIME_SCALE = 30.0  # emulated seconds per real second in the front's rollout waits
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
_names = itertools.count(1)


@dataclass(frozen=True)
class SageMakerEnv:
    front: SageMakerFront
    moto_url: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.moto_url, region_name=REGION, **_CREDENTIALS)


@pytest.fixture(scope="session")
def sagemaker_front(
    moto_url: str, tmp_path_factory: pytest.TempPathFactory, docker_services: None
) -> Iterator[SageMakerFront]:
    from tests.targets.sagemaker.emulator import SageMakerFront

    front = SageMakerFront(moto_url, REGION, tmp_path_factory.mktemp("sagemaker-hosting")).start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def sagemaker_env(
    sagemaker_front: SageMakerFront, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SageMakerEnv]:
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", _CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    env = SageMakerEnv(sagemaker_front, moto_url)
    s3 = env.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    sagemaker_front.time_scale = TIME_SCALE
    sagemaker_front.errors.clear()
    yield env
    left = sagemaker_front.hosting.containers()
    errors = list(sagemaker_front.errors)
    sagemaker_front.reset()
    assert not errors, "the SageMaker emulator failed:\n" + "\n".join(errors)
    assert not left, f"containers left by the SageMaker data plane: {left}"


def sagemaker_config(env: SageMakerEnv, **settings: Any) -> SageMakerTarget:
    """A target config on the front: an endpoint of its own, a quick canary (50 %, a 30 s bake: 1 s here), and
    up to 2 minutes (3600 s emulated, the front's cap) for a container to answer /ping on a busy machine."""
    return SageMakerTarget.model_validate({
        "region": REGION, "endpoint_url": env.front.url, "runtime_endpoint_url": env.front.url,
        "endpoint_name": f"iris-t{next(_names)}", "execution_role_arn": ROLE, "bucket": BUCKET,
        "instance_type": "ml.m5.large", "instance_count": 1,
        "rollout": {"type": "canary", "size": 50, "wait_interval_s": 30, "termination_wait_s": 0,
                    "max_execution_timeout_s": 3600},
        "container_startup_timeout_s": 3600, "api_attempts": 3,
        "ready_timeout_s": 180, "promote_timeout_s": 3700, **settings,
    })  # fmt: skip
