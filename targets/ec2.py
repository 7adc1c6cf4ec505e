"""``kind: ec2`` — the VM pattern on AWS: one EC2 instance per release, running the image by digest.

``deploy`` launches an instance from the configured AMI with a user-data script (``targets._ec2_boot``)
that installs Docker, logs in to the registry and runs the image by digest. Its security group
(one per stage) opens only the serving port, only to ``allowed_cidr``; IMDSv2 is required; tags tie
the instance to the model, stage, release, image and spec. Secrets go to SSM Parameter Store
(SecureString), never into user data. ``wait_ready`` waits for ``running`` and then the instance's
``/ready``. ``promote`` tags the instance live and terminates the previous one; the stage's endpoint
is the live instance's address. ``teardown`` terminates every instance of the stage, then deletes
the security group and the parameters. AWS errors are mapped by their error codes.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from slipway.costs import Usage
from slipway.errors import At, ConfigError, TargetError
from slipway.http import answers
from slipway.release import Endpoint, Release
from slipway.spec import Ec2Target as Ec2Config
from slipway.spec import Timeouts
from targets._ec2_boot import user_data
from targets.aws import ServiceCodes, aws_errors
from targets.base import IMAGE, Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, no_shift, put_live
from targets.containers import registry_of, resolve_credentials

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient

_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
EC2_CODES = ServiceCodes(
    transient=frozenset({"InsufficientInstanceCapacity"}),
    config=frozenset({"InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable",
                      "InvalidSubnetID.NotFound", "InvalidVpcID.NotFound", "InvalidIamInstanceProfile.NotFound"}),
    limits=frozenset({"InstanceLimitExceeded", "VcpuLimitExceeded", "RulesPerSecurityGroupLimitExceeded",
                      "SecurityGroupLimitExceeded", "MaxSpotInstanceCountExceeded"}),
    hints={
        "InvalidAMIID.NotFound": "the AMI does not exist in this region: fix ami in the spec (AMIs are per region)",
        "InvalidAMIID.Malformed": "fix ami in the spec: it looks like ami-0123456789abcdef0",
        "InstanceLimitExceeded": "an account quota is reached: free capacity or request a quota increase "
        "(Service Quotas console), or use a smaller instance_type",
        "VcpuLimitExceeded": "an account quota is reached: free capacity or request a quota increase "
        "(Service Quotas console), or use a smaller instance_type",
    },
)  # fmt: skip


class Ec2InstanceTarget:
    kind = "ec2"
    capabilities = Capabilities(artifacts=IMAGE, stable_endpoint=False)  # the live instance's own address

    def __init__(self, config: Ec2Config, ctx: TargetContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.name = f"slipway-{ctx.service}-{ctx.stage.value}"
        self.location = f"ec2 {config.region} {self.name}"
        self.params = f"/slipway/{ctx.service}/{ctx.stage.value}"
        self._ec2: EC2Client | None = None
        self._ssm: SSMClient | None = None

    @property
    def ec2(self) -> EC2Client:
        if self._ec2 is None:
            self._ec2 = boto3.client("ec2", **self._client_args())
        return self._ec2

    @property
    def ssm(self) -> SSMClient:
        if self._ssm is None:
            self._ssm = boto3.client("ssm", **self._client_args())
        return self._ssm

    def _client_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"region_name": self.config.region,
                                "config": Config(retries={"mode": "standard", "max_attempts": 2})}  # fmt: skip
        if self.config.endpoint_url:
            args["endpoint_url"] = self.config.endpoint_url
        return args

    # --- lifecycle -------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        image = release.require_image()
        key = self.ctx.key_for_deploy()
        creds = resolve_credentials(self.config.registry_credentials)
        if (key or creds) and not self.config.instance_profile:
            raise ConfigError(
                "the instance needs secrets (API key, registry password) and no "
                "instance_profile is set to read them from SSM Parameter Store",
                at=At(self.kind, "deploy", self.name),
                hint="set instance_profile to a profile allowed ssm:GetParameter on /slipway/* (docs/targets/ec2.md)",
            )
        with self._aws("deploy", release.id):
            group = self._security_group()
            if key is not None:
                self._put_param("api-key", key.get_secret_value())
            if creds is not None:
                self._put_param("registry-password", creds.password.get_secret_value())
            script = user_data(
                image=str(image), registry=registry_of(image.repository),
                username=creds.username if creds else "", password_param=f"{self.params}/registry-password",
                key_param=f"{self.params}/api-key" if key else "", region=self.config.region,
                port=self.config.port, workers=1, name=f"{self.name}-{release.id}", server_args=self.ctx.server_args,
            )  # fmt: skip
            args: dict[str, Any] = {
                "ImageId": self.config.ami, "InstanceType": self.config.instance_type, "MinCount": 1, "MaxCount": 1,
                "UserData": script, "SecurityGroupIds": [group],
                "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
                "TagSpecifications": [{"ResourceType": "instance", "Tags": self._tags(release, "candidate")}],
            }  # fmt: skip
            if self.config.instance_profile:
                args["IamInstanceProfile"] = {"Name": self.config.instance_profile}
            if self.config.subnet_id:
                args["SubnetId"] = self.config.subnet_id
            instance = self.ec2.run_instances(**args)["Instances"][0]
        iid = instance["InstanceId"]
        return Deployment(release, self.stage, Endpoint("", self.ctx.auth),
                          {"instance_id": iid, "security_group": group})  # fmt: skip

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        iid = deployment.handle["instance_id"]
        deadline = time.monotonic() + timeout_s
        with self._aws("wait_ready", iid):
            self.ec2.get_waiter("instance_running").wait(
                InstanceIds=[iid], WaiterConfig={"Delay": 5, "MaxAttempts": max(1, int(timeout_s // 5))}
            )
            endpoint = Endpoint(self._url(self._instance(iid)), self.ctx.auth)
        while time.monotonic() < deadline:
            if answers(endpoint, endpoint.routes.ready, timeout_s=2):
                return Deployment(deployment.release, self.stage, endpoint, {**deployment.handle, "url": endpoint.url})
            time.sleep(1)
        raise TargetError(
            f"release {deployment.release.id}: instance {iid} runs but {endpoint.url}{endpoint.routes.ready} did not "
            f"answer within {timeout_s:.0f} s", at=At(self.kind, "wait_ready", iid),
            hint="read the instance's console output (aws ec2 get-console-output); check that allowed_cidr "
            "includes this machine and that the instance can reach the registry",
        )  # fmt: skip

    def shift(self, deployment: Deployment, weight: float) -> None:
        raise no_shift(self)

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        """Tag the candidate live (the stage's endpoint is the live instance's address) and terminate
        the previous instance."""
        iid = deployment.handle["instance_id"]
        with self._aws("promote", iid):
            previous = [i["InstanceId"] for i in self._instances(role="live")]
            self.ec2.create_tags(Resources=[iid], Tags=[{"Key": "slipway:role", "Value": "live"}])
            old = [p for p in previous if p != iid]
            if old:
                self.ec2.terminate_instances(InstanceIds=old)
        return deployment

    def discard(self, deployment: Deployment) -> None:
        iid = deployment.handle["instance_id"]
        with self._aws("discard", iid):
            if iid not in {i["InstanceId"] for i in self._instances(role="live")}:
                self.ec2.terminate_instances(InstanceIds=[iid])

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        return put_live(self, release, timeouts)

    def endpoint(self) -> Endpoint | None:
        with self._aws("describe", self.name):
            live = self._instances(role="live")
        return Endpoint(self._url(live[0]), self.ctx.auth) if live else None

    def teardown(self) -> None:
        with self._aws("teardown", self.name):
            ids = [i["InstanceId"] for i in self._instances()]
            if ids:
                self.ec2.terminate_instances(InstanceIds=ids)
                self.ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig={"Delay": 5})
            for group in self._groups():
                self.ec2.delete_security_group(GroupId=group)
            for name in ("api-key", "registry-password"):
                with contextlib.suppress(self.ssm.exceptions.ParameterNotFound):
                    self.ssm.delete_parameter(Name=f"{self.params}/{name}")

    def describe(self) -> StageStatus:
        with self._aws("describe", self.name):
            live = self._instances(role="live")
        if not live:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        inst = live[0]
        endpoint = Endpoint(self._url(inst), self.ctx.auth)
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        detail = f"instance {inst['InstanceId']} ({inst['InstanceType']}, {inst['State']['Name']})"
        healthy = answers(endpoint, endpoint.routes.health, timeout_s=2)
        return StageStatus(self.stage, self.kind, tags.get("slipway:release"), endpoint, healthy, detail)

    def facts(self) -> Facts:
        import ipaddress

        public = not ipaddress.ip_network(self.config.allowed_cidr).is_private
        usage = Usage(hourly={f"ec2.{self.config.instance_type}": 1.0})
        return Facts(1, 1, "", False, 1, False, ("/metrics", "/health", "the container's restart policy"),
                     tls=False, public=public, at_rest=("SSM SecureString parameters (KMS)",), usage=usage)  # fmt: skip

    def changes(self) -> list[Change]:
        out = [Change("create", f"instance {self.name}-<release>", f"{self.config.instance_type} from "
                      f"{self.config.ami}, IMDSv2, the image by digest")]  # fmt: skip
        with self._aws("plan", self.name):
            if not self._groups():
                out.append(Change("create", f"security group {self.name}",
                                  f"tcp {self.config.port} from {self.config.allowed_cidr} only"))  # fmt: skip
            out += [Change("delete", f"instance {i['InstanceId']}", "the previous release, once the new one is live")
                    for i in self._instances(role="live")]  # fmt: skip
        out.append(Change("change", f"SSM parameters {self.params}/*", "the API key (SecureString)"))
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _aws(self, operation: str, resource: str) -> contextlib.AbstractContextManager[None]:
        return aws_errors(At(self.kind, operation, resource), EC2_CODES)

    def _tags(self, release: Release, role: str) -> list[Any]:
        tags = {"Name": f"{self.name}-{release.id}", "slipway:service": self.ctx.service,
                "slipway:model": self.ctx.model, "slipway:stage": self.stage.value,
                "slipway:release": release.id, "slipway:version": release.version, "slipway:image": str(release.image),
                "slipway:sha256": release.package_sha256, "slipway:spec-hash": release.spec_hash,
                "slipway:role": role}  # fmt: skip
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _instances(self, role: str = "") -> list[Any]:
        filters: list[Any] = [{"Name": "tag:slipway:service", "Values": [self.ctx.service]},
                              {"Name": "tag:slipway:stage", "Values": [self.stage.value]},
                              {"Name": "instance-state-name", "Values": _LIVE_STATES}]  # fmt: skip
        if role:
            filters.append({"Name": "tag:slipway:role", "Values": [role]})
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _instance(self, iid: str) -> Any:
        return self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    def _url(self, instance: Any) -> str:
        host = instance.get("PublicIpAddress") or instance.get("PrivateIpAddress", "")
        return f"http://{host}:{self.config.port}"

    def _vpc(self) -> str:
        if self.config.vpc_id:
            return self.config.vpc_id
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ConfigError(
                f"the region {self.config.region} has no default VPC", at=At(self.kind, "deploy", self.name),
                hint="set vpc_id and subnet_id in the spec",
            )  # fmt: skip
        return vpcs[0]["VpcId"]

    def _groups(self) -> list[str]:
        found = self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [self.name]}])
        return [g["GroupId"] for g in found["SecurityGroups"]]

    def _security_group(self) -> str:
        existing = self._groups()
        if existing:
            return existing[0]
        tags: list[Any] = [{"Key": "slipway:service", "Value": self.ctx.service},
                           {"Key": "slipway:stage", "Value": self.stage.value}]  # fmt: skip
        group = self.ec2.create_security_group(
            GroupName=self.name, Description=f"Slipway {self.ctx.service} {self.stage.value}: serving port only",
            VpcId=self._vpc(), TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
        )["GroupId"]  # fmt: skip
        self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": self.config.port, "ToPort": self.config.port,
            "IpRanges": [{"CidrIp": self.config.allowed_cidr, "Description": "Slipway serving port"}],
        }])  # fmt: skip
        return group

    def _put_param(self, name: str, value: str) -> None:
        self.ssm.put_parameter(Name=f"{self.params}/{name}", Value=value, Type="SecureString", Overwrite=True)
