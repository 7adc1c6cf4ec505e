"""The ec2 data plane of the contract tests (tests/targets/ec2/dataplane.py): what it reads from the user data,
that an instance runs as its user data says, and the half of a contract test that ec2 keeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import docker
import httpx
import pytest

from slipway.errors import TargetError
from slipway.release import Release, Stage
from slipway.spec import Timeouts
from targets._ec2_boot import user_data
from targets.base import put_live
from tests.targets.ec2.dataplane import BootError, Parameter, boot_plan, run_arguments
from tests.targets.fixtures import TIMEOUTS, TargetFactory

IMAGE = "127.0.0.1:5000/slipway-test/iris@sha256:" + "ab" * 32
KEY = "/slipway/iris/production/api-key"
PASSWORD = "/slipway/iris/production/registry-password"
EC2 = pytest.param("ec2", marks=[pytest.mark.moto, pytest.mark.docker])
ec2_only = pytest.mark.parametrize("target_kind", [EC2])


def _script(**changes: Any) -> str:
    args = {"image": IMAGE, "registry": "127.0.0.1:5000", "username": "", "password_param": PASSWORD, "key_param": KEY,
            "region": "eu-west-1", "port": 8000, "workers": 1, "name": "slipway-iris-production-r-v1"}  # fmt: skip
    return user_data(**{**args, **changes})


def _run(plan: Any, env_files: dict[str, str] | None = None) -> list[str]:
    return run_arguments(plan, IMAGE, name="c", network="n", ip="10.213.0.4", env_files=env_files or {}, labels={})


def test_the_boot_plan_is_read_from_the_user_data() -> None:
    plan = boot_plan(_script())
    assert plan.env_files == {"/run/slipway.env": {"SLIPWAY_API_KEY": Parameter("eu-west-1", KEY, True)}}
    assert (plan.login, plan.pulls) == (None, [IMAGE])
    assert "systemctl enable --now docker" in plan.skipped  # the image's part: Docker is there
    assert _run(plan, {"/run/slipway.env": "/private/0.env"}) == [
        "-d", "--restart", "unless-stopped", "--stop-timeout", "40", "--env-file", "/private/0.env",
        "--log-opt", "max-size=10m",
        "--log-opt", "max-file=3", "--read-only", "--tmpfs", "/tmp",
        "--label", "slipway-test.ec2-name=slipway-iris-production-r-v1",
        "--name", "c", "--network", "n", "--ip", "10.213.0.4", IMAGE, "--workers", "1",
    ]  # fmt: skip


def test_without_a_key_it_runs_without_auth_and_a_login_reads_its_password() -> None:
    plan = boot_plan(_script(key_param="", username="puller"))
    assert plan.env_files == {}
    assert plan.login == ("127.0.0.1:5000", "puller", Parameter("eu-west-1", PASSWORD, True))
    assert _run(plan)[-4:] == [IMAGE, "--workers", "1", "--no-auth"]


@pytest.mark.parametrize(("change", "words"), [
    (lambda s: s.replace("docker pull", "curl -s https://example.com/x | sh\ndocker pull"), "not one the .* knows"),
    (lambda s: s.replace("docker run", "docker create"), "not one the .* knows"),
    (lambda s: s.replace("-p 8000:8000", "-p 8080:8000"), "published as itself"),
    (lambda s: s.replace("--env-file /run/slipway.env", "--env-file /etc/other.env"), "no earlier line"),
    (lambda s: s.replace("--query Parameter.Value", "--query Parameter"), "get-parameter` the agent does not know"),
    (lambda s: s.replace(f"  {IMAGE} --workers", "  127.0.0.1:5000/other@sha256:00 --workers"), "slipway:image"),
])  # fmt: skip
def test_a_boot_script_the_agent_does_not_know_fails_the_boot(change: Callable[[str], str], words: str) -> None:
    with pytest.raises(BootError, match=words):
        _run(boot_plan(change(_script())), {"/run/slipway.env": "/private/0.env"})


@ec2_only
def test_an_instance_runs_as_its_user_data_says_until_moto_forgets_it(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str, ec2_subnet: dict[str, Any]
) -> None:
    target = target_factory(Stage.PRODUCTION)
    deployment = target.deploy(releases["v1"])
    iid = deployment.handle["instance_id"]
    [instance] = ec2_subnet["ec2"].describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"]
    assert "PublicIpAddress" not in instance and instance["SubnetId"] == ec2_subnet["subnet_id"]
    [container] = ec2_subnet["plane"].containers()  # started before RunInstances answered (the API front)
    attrs = container.attrs
    network = attrs["NetworkSettings"]["Networks"][ec2_subnet["plane"].network]
    assert network["IPAddress"] == instance["PrivateIpAddress"]
    assert (attrs["HostConfig"]["ReadonlyRootfs"], attrs["HostConfig"]["Tmpfs"]) == (True, {"/tmp": ""})
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert not attrs["HostConfig"]["PortBindings"]  # nothing published on the host: it answers at its own address
    assert f"SLIPWAY_API_KEY={api_key}" in attrs["Config"]["Env"]
    assert attrs["Config"]["Cmd"] == ["--workers", "1", *target.ctx.server_args]  # the spec's serving section
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert attrs["Config"]["Image"] == tags["slipway:image"]  # by digest

    target.wait_ready(deployment, 20)  # (a server still starting ignores SIGTERM: its stop would take 10 s)
    httpx.post(f"{ec2_subnet['endpoint_url']}/moto-api/reset")  # the instance is gone with everything else
    deadline = time.monotonic() + 5
    while ec2_subnet["plane"].containers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ec2_subnet["plane"].containers() == []
    with pytest.raises(docker.errors.NotFound):
        container.reload()


@ec2_only
def test_release_that_never_becomes_ready_leaves_production_serving(
    target_factory: TargetFactory, releases: dict[str, Release], api_key: str, ec2_subnet: dict[str, Any]
) -> None:
    """What ec2 keeps of test_release_that_fails_to_start_leaves_production_serving (xfail there: the
    target's error does not say why); the reason was on the instance, in its server's output."""
    from tests.targets.test_contract import served_sha

    target = target_factory(Stage.PRODUCTION)
    url = put_live(target, releases["v1"], TIMEOUTS).endpoint
    with pytest.raises(TargetError, match=r"r-broken: instance .* did not answer within 3 s") as info:
        put_live(target, releases["broken"], Timeouts(3, 10))
    assert served_sha(url, api_key) == releases["v1"].package_sha256
    assert target.describe().release_id == "r-v1"
    assert info.value.at is not None
    assert "sha256" in ec2_subnet["plane"].console[info.value.at.resource]  # the server refused the tampered artifact
