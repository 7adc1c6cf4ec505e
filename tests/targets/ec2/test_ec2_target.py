"""The ec2 target against a real moto server on 127.0.0.1 (``moto_url``: tests/targets/ec2/fixtures.py),
the control plane only: nothing boots here (the contract tests run the ec2 target with a data plane).

Asserted: what is launched (user data, IMDSv2, security group rules, tags), that promotion retires
the previous instance, that teardown leaves nothing, and how AWS errors come out. Faults moto
cannot produce (limits, throttling) come from a small proxy in front of it that answers one
action with a real AWS error document.
"""

from __future__ import annotations

import base64
import http.server
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from slipway.errors import ConfigError, TargetError, TransientTargetError
from slipway.release import ImageRef, Release, Stage
from slipway.spec import Ec2Target, Timeouts
from targets import make_target
from targets.base import put_live
from tests.targets.fixtures import context

pytestmark = pytest.mark.moto
IMAGE = ImageRef("registry.example.com/ml/iris", "sha256:" + "ab" * 32)


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    httpx.post(f"{moto_url}/moto-api/reset")
    for var, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", "us-east-1"), ("REGISTRY_USERNAME", "puller"),
                       ("REGISTRY_PASSWORD", "registry-secret")):  # fmt: skip
        monkeypatch.setenv(var, value)
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name="us-east-1")
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1")
    iam.create_instance_profile(InstanceProfileName="slipway-instance")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ssm = boto3.client("ssm", endpoint_url=moto_url, region_name="us-east-1")
    yield {"url": moto_url, "ec2": ec2, "ssm": ssm, "ami": ami}


def _target(aws: dict[str, Any], state_dir: Path, api_key: str, **settings: Any) -> Any:
    config = Ec2Target.model_validate({
        "endpoint_url": aws["url"], "ami": aws["ami"], "allowed_cidr": "203.0.113.0/24", "port": 8000,
        "instance_profile": "slipway-instance", "registry_credentials": "registry", "ready_timeout_s": 2, **settings,
    })  # fmt: skip
    return make_target(config, context(Stage.PRODUCTION, state_dir, api_key))


def _release(releases: dict[str, Release], name: str) -> Release:
    import dataclasses

    return dataclasses.replace(releases[name], image=IMAGE)


def _alive(ec2: Any) -> list[Any]:
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def test_launch_promote_and_teardown(aws: dict[str, Any], releases: dict[str, Release], state_dir: Path,
                                     api_key: str) -> None:  # fmt: skip
    ec2, target = aws["ec2"], _target(aws, state_dir, api_key)
    first = target.deploy(_release(releases, "v1"))
    iid = first.handle["instance_id"]
    script = base64.b64decode(
        ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    ).decode()
    assert script.startswith("#!/bin/bash\n")
    assert "apt-get install -y -q docker.io awscli" in script and "systemctl enable --now docker" in script
    assert ("--name /slipway/iris/production/registry-password --query Parameter.Value --output text | "
            "docker login --username puller --password-stdin registry.example.com") in script  # fmt: skip
    assert f"docker pull {IMAGE}" in script and "-p 8000:8000 \\\n" in script and f"  {IMAGE} --workers 1" in script
    assert api_key not in script and "registry-secret" not in script  # secrets only in SSM
    param = aws["ssm"].get_parameter(Name="/slipway/iris/production/api-key", WithDecryption=True)["Parameter"]
    assert (param["Type"], param["Value"]) == ("SecureString", api_key)
    [inst] = _alive(ec2)
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["slipway:release"] == "r-v1" and tags["slipway:image"] == str(IMAGE)
    assert tags["slipway:sha256"] == releases["v1"].package_sha256 and tags["slipway:role"] == "candidate"
    [group] = ec2.describe_security_groups(GroupIds=[first.handle["security_group"]])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
            for p in group["IpPermissions"]] == [("tcp", 8000, 8000, ["203.0.113.0/24"])]  # fmt: skip

    target.promote(first, 10)
    second = target.deploy(_release(releases, "v2"))
    target.promote(second, 10)
    assert [i["InstanceId"] for i in _alive(ec2)] == [second.handle["instance_id"]]  # the first is terminated
    assert target.describe().release_id == "r-v2"

    target.teardown()
    assert _alive(ec2) == []
    assert [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith("slipway")] == []
    assert aws["ssm"].describe_parameters()["Parameters"] == []
    assert target.endpoint() is None
    target.teardown()  # idempotent


@pytest.mark.fault("injected failure")
def test_instance_that_never_answers_is_terminated(aws: dict[str, Any], releases: dict[str, Release],
                                                   state_dir: Path, api_key: str) -> None:  # fmt: skip
    target = _target(aws, state_dir, api_key)
    with pytest.raises(TargetError, match=r"/ready did not answer within 2 s"):
        put_live(target, _release(releases, "v1"), Timeouts(2, 10))
    assert _alive(aws["ec2"]) == []
    target.teardown()


@pytest.mark.fault("bad input")
def test_bad_ami_is_a_config_error(aws: dict[str, Any], releases: dict[str, Release], state_dir: Path,
                                   api_key: str) -> None:  # fmt: skip
    target = _target(aws, state_dir, api_key, ami="ami-0123456789abcdef0")
    with pytest.raises(ConfigError, match="InvalidAMIID.NotFound") as info:
        target.deploy(_release(releases, "v1"))
    assert "per region" in str(info.value)
    target.teardown()


@pytest.mark.fault("bad input")
def test_secrets_without_instance_profile_are_refused(aws: dict[str, Any], releases: dict[str, Release],
                                                      state_dir: Path, api_key: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError, match="instance_profile"):
        _target(aws, state_dir, api_key, instance_profile="").deploy(_release(releases, "v1"))
    assert _alive(aws["ec2"]) == []


@pytest.mark.fault("bad input")
def test_unauthorized_identity_is_a_config_error(aws: dict[str, Any], releases: dict[str, Release],
                                                 state_dir: Path, api_key: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    iam = boto3.client("iam", endpoint_url=aws["url"], region_name="us-east-1")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    httpx.post(f"{aws['url']}/moto-api/reset-auth", content=b"0")  # moto now enforces IAM policies
    try:
        with pytest.raises(ConfigError, match=r"\[ec2 deploy") as info:
            _target(aws, state_dir, api_key, registry_credentials="").deploy(_release(releases, "v1"))
        assert any(code in str(info.value) for code in ("UnauthorizedOperation", "AccessDenied", "AuthFailure"))
        assert "credentials" in str(info.value) or "permission" in str(info.value)
    finally:
        httpx.post(f"{aws['url']}/moto-api/reset-auth", content=b"inf")


@pytest.fixture
def faulty(aws: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A proxy in front of moto that answers RunInstances with the AWS error set in ``fault``."""
    fault: dict[str, Any] = {}
    upstream = aws["url"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if b"Action=RunInstances" in body and fault:
                xml = (f"<Response><Errors><Error><Code>{fault['code']}</Code><Message>injected</Message></Error>"
                       "</Errors><RequestID>x</RequestID></Response>").encode()  # fmt: skip
                self.send_response(fault["status"])
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                self.wfile.write(xml)
                return
            req = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                         headers={k: v for k, v in self.headers.items()
                                                  if k.lower() != "host"})  # fmt: skip
            with urllib.request.urlopen(req) as resp:
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {**aws, "proxy": f"http://127.0.0.1:{server.server_address[1]}", "fault": fault}
    server.shutdown()


@pytest.mark.parametrize(("code", "status", "error", "words"), [
    ("InstanceLimitExceeded", 400, TargetError, "quota"),
    ("RequestLimitExceeded", 503, TransientTargetError, "retried"),
    ("InsufficientInstanceCapacity", 500, TransientTargetError, "retried"),
])  # fmt: skip
@pytest.mark.fault("bad input")
def test_limits_and_throttling_map_by_code(faulty: dict[str, Any], releases: dict[str, Release], state_dir: Path,
                                           api_key: str, code: str, status: int, error: type,
                                           words: str) -> None:  # fmt: skip
    faulty["fault"].update(code=code, status=status)
    target = _target(faulty, state_dir, api_key, endpoint_url=faulty["proxy"])
    with pytest.raises(error, match=code) as info:
        target.deploy(_release(releases, "v1"))
    assert type(info.value) is error and words in str(info.value)
    assert _alive(faulty["ec2"]) == []
    target.teardown()
