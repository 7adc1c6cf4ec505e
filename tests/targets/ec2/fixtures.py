"""moto on 127.0.0.1 for every test that needs AWS, and the ec2 data plane (tests/targets/ec2/dataplane.py).

A plugin (tests/conftest.py lists it) so that tests/targets/ec2 and the contract tests of tests/targets share
one moto server. tests/targets/ec2/test_ec2_target.py resets moto before each of its tests; the contract
tests' subnet is therefore made per test (``ec2_subnet``), in a region of its own.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from slipway.spec import Ec2Target
from tests.conftest import free_port

if TYPE_CHECKING:
    from tests.targets.ec2.dataplane import Ec2DataPlane

REGION = "eu-west-1"  # tests/targets/ec2/test_ec2_target.py works in us-east-1
INSTANCE_PROFILE = "slipway-instance"
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def new_bucket(moto_url: str, prefix: str) -> tuple[str, dict[str, str]]:
    """A new S3 bucket on moto (a package store's), and the environment that points boto3 at moto."""
    import boto3

    name = f"{prefix}-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **_CREDENTIALS).create_bucket(Bucket=name)
    env = {"AWS_ENDPOINT_URL_S3": moto_url, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": _CREDENTIALS["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": _CREDENTIALS["aws_secret_access_key"]}  # fmt: skip
    return name, env


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    import moto.settings
    from moto.server import ThreadedMotoServer

    moto.settings.ENABLE_AMI_VALIDATION = True  # as AWS: an unknown AMI is refused (MOTO_ENABLE_AMI_VALIDATION)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass(frozen=True)
class DataPlane:
    moto_url: str
    endpoint_url: str  # the API front: what targets are given as endpoint_url
    network: str
    cidr: str
    ami: str
    plane: Ec2DataPlane


@pytest.fixture(scope="session")
def ec2_dataplane(moto_url: str) -> Iterator[DataPlane]:
    """The Docker network standing in for the subnet, the agent that runs its instances, the API front."""
    import boto3

    from tests.targets.ec2.dataplane import ApiFront, Ec2DataPlane, bridge_network

    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION, **_CREDENTIALS)
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]  # moto's AMIs keep their ids over resets
    with bridge_network() as (network, cidr):
        plane = Ec2DataPlane(moto_url, REGION, network, cidr).start()
        front = ApiFront(moto_url, plane).start()
        try:
            yield DataPlane(moto_url, front.url, network, cidr, ami, plane)
        finally:
            front.stop()
            plane.stop()


@pytest.fixture
def ec2_subnet(ec2_dataplane: DataPlane, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A VPC and a subnet with the Docker network's CIDR and no public IPs, and the instance profile.

    Made per test: moto may have been reset since the last one; the data plane watches moto during
    the test. Afterwards: no instance of the subnet may be left running, no container of the data plane
    either, and the data plane must have booted every instance it was given.
    """
    import boto3

    dp = ec2_dataplane
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", _CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _CREDENTIALS["aws_secret_access_key"])
    ec2 = boto3.client("ec2", endpoint_url=dp.endpoint_url, region_name=REGION, **_CREDENTIALS)
    iam = boto3.client("iam", endpoint_url=dp.moto_url, region_name=REGION, **_CREDENTIALS)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_instance_profile(InstanceProfileName=INSTANCE_PROFILE)
    vpc = ec2.create_vpc(CidrBlock=dp.cidr)["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=dp.cidr)["Subnet"]
    assert subnet["MapPublicIpOnLaunch"] is False  # the instances get a private address only
    dp.plane.take_errors()
    with dp.plane.watching():
        yield {"region": REGION, "endpoint_url": dp.endpoint_url, "ami": dp.ami, "vpc_id": vpc,
               "subnet_id": subnet["SubnetId"], "cidr": dp.cidr, "instance_profile": INSTANCE_PROFILE,
               "ec2": ec2, "plane": dp.plane}  # fmt: skip
    alive = [{"Name": "subnet-id", "Values": [subnet["SubnetId"]]},
             {"Name": "instance-state-name", "Values": ["pending", "running"]}]  # fmt: skip
    found = ec2.describe_instances(Filters=alive)
    left = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    if left:
        ec2.terminate_instances(InstanceIds=left)  # through the front: their containers go too
    with contextlib.suppress(ec2.exceptions.ClientError):
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc)
    dp.plane.reconcile()
    errors = dp.plane.take_errors()
    assert not errors, "the ec2 data plane could not boot an instance:\n" + "\n".join(errors)
    assert not left, f"instances left running in the test subnet: {left}"
    assert dp.plane.containers() == [], "containers left by the ec2 data plane"


def ec2_config(subnet: dict[str, Any], **settings: Any) -> Ec2Target:
    """A target config launching into the test subnet (``ec2_subnet``) through the data plane's API front."""
    return Ec2Target.model_validate({
        "region": subnet["region"], "endpoint_url": subnet["endpoint_url"], "ami": subnet["ami"],
        "vpc_id": subnet["vpc_id"], "subnet_id": subnet["subnet_id"], "allowed_cidr": subnet["cidr"],
        "port": 8000, "instance_profile": subnet["instance_profile"], "ready_timeout_s": 20, **settings,
    })  # fmt: skip
