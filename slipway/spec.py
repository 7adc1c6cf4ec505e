"""The release spec: one YAML file per model, validated once, at the edge.

Every model has ``extra="forbid"`` so an unknown key is an error naming the key. Secrets are never
part of the spec: the spec names the environment variable (or Prefect block) that holds them.
Relative paths are resolved against the spec file's directory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from slipway.errors import ConfigError
from slipway.release import Stage

_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
_ENV_VAR = r"^[A-Z_][A-Z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Strict):
    name: str = Field(pattern=_NAME, description="Model name: lower-case letters, digits and '-'.")
    version: str = Field(
        default="",
        description="Model version. Empty: taken from the MLflow registry, else the artifact's sha256 prefix.",
    )
    source: str = Field(
        description="A skops (.skops: loads without running code), joblib or pickle file, an MLflow model "
        "directory, or an MLflow URI (models:/name/version, models:/name@alias, runs:/...). Relative paths are "
        "from the spec's folder."
    )
    samples: str = Field(
        default="",
        description='JSON file with example rows: {"inputs": [...], "expected": [...]} (\'expected\' optional). '
        "Golden samples are computed from it at packaging time. Optional for MLflow models with an input example.",
    )
    sha256: str = Field(
        default="", pattern=r"^$|^[0-9a-f]{64}$",
        description="The model file's sha256: a file with another digest is refused before it is loaded.",
    )  # fmt: skip
    trusted_types: list[str] = Field(
        default_factory=list,
        description="skops files: the types beyond skops' defaults (numpy, scipy, scikit-learn) that may be loaded.",
    )


class ImageSettings(_Strict):
    repository: str = Field(
        default="127.0.0.1:5000/slipway",
        description="Registry and repository prefix; the image is <repository>/<model name>, pinned by digest.",
    )
    base: str = Field(
        default="slipway/python-base:bookworm",
        description="Base image with Python 3.11; a public slim Python image in a real setup.",
    )
    registry_credentials: str = Field(
        default="",
        description="Name of a Prefect Secret block or environment-variable prefix holding registry credentials; "
        "empty for a registry without auth (an Artifact Registry host: Google's Application Default Credentials).",
    )


class _TargetBase(_Strict):
    """Settings every target kind has."""

    ready_timeout_s: float = Field(default=30.0, gt=0, description="How long to wait for a release's /ready.")
    promote_timeout_s: float = Field(
        default=60.0, gt=0, description="How long a promotion (the switch of the stage's traffic) may take."
    )


@dataclass(frozen=True)
class Timeouts:
    """How long a stage change may wait: for the candidate to be ready, then for the switch."""

    ready_s: float
    promote_s: float


class LocalTarget(_TargetBase):
    """The embedded default: the model server as a detached process on this machine."""

    kind: Literal["local"] = "local"
    port: int = Field(ge=1024, le=65535, description="Port on 127.0.0.1 the stage serves on.")
    workers: int = Field(default=1, ge=1, le=16, description="Server worker processes.")


class DockerTarget(_TargetBase):
    """The VM pattern on any Docker Engine the SDK reaches: each stage a blue/green pair of containers
    behind an nginx reverse proxy on the stage's stable port."""

    kind: Literal["docker"] = "docker"
    host: str = Field(
        default="",
        pattern=r"^$|^(unix|tcp|ssh)://.+",
        description="Docker Engine URL: empty for DOCKER_HOST or the local socket; ssh://user@host[:port]; tcp://...",
    )
    port: int = Field(ge=1024, le=65535, description="The stage's port on the Docker host (its proxy's).")
    bind_address: str = Field(default="127.0.0.1", description="Host address ports are published on.")
    public_host: str = Field(
        default="", description="Name this machine reaches the Docker host by; empty: the ssh host, else 127.0.0.1."
    )
    workers: int = Field(default=1, ge=1, le=16, description="Server worker processes per container.")
    memory: str = Field(default="512m", pattern=r"^[0-9]+[bkmg]?$", description="Memory limit per container.")
    cpus: float = Field(default=1.0, gt=0, le=64, description="CPU limit per container.")
    restart_policy: Literal["no", "on-failure", "unless-stopped", "always"] = Field(
        default="unless-stopped", description="Restart policy of the live containers."
    )
    log_max_size: str = Field(default="10m", pattern=r"^[0-9]+[kmg]$", description="json-file log rotation size.")
    log_max_files: int = Field(default=3, ge=1, le=100, description="json-file log files kept.")
    keep_previous_s: float = Field(
        default=3600, ge=0, description="How long the previous container is kept for an instant rollback."
    )
    proxy_image: str = Field(default="slipway/nginx:bookworm", description="nginx image of the stage's proxy.")
    registry_credentials: str = Field(
        default="", description="Env prefix or Prefect Secret block of the pull credentials; empty: none."
    )


class Ec2Target(_TargetBase):
    """The VM pattern on AWS EC2: one instance per release, running the image by digest with Docker."""

    kind: Literal["ec2"] = "ec2"
    region: str = Field(default="us-east-1", description="AWS region.")
    endpoint_url: str = Field(default="", description="EC2 API endpoint override (moto in tests).")
    ami: str = Field(pattern=r"^ami-[0-9a-f]+$", description="AMI to launch (Debian, Ubuntu or Amazon Linux).")
    instance_type: str = Field(default="t3.small", description="Instance type.")
    subnet_id: str = Field(default="", description="Subnet to launch in; empty: the default VPC's default subnet.")
    vpc_id: str = Field(default="", description="VPC of the security group; empty: the default VPC.")
    port: int = Field(default=8000, ge=1, le=65535, description="Serving port opened on the instance.")
    allowed_cidr: str = Field(description="The only CIDR the serving port is opened to, e.g. 203.0.113.0/24.")
    registry_credentials: str = Field(
        default="", description="Env prefix or Prefect Secret block of the credentials the instance pulls with."
    )
    instance_profile: str = Field(
        default="", description="Instance profile whose role may read the stage's SSM parameters (the secrets)."
    )
    ready_timeout_s: float = Field(default=600.0, gt=0, description="How long to wait for running and /ready.")
    promote_timeout_s: float = Field(default=120.0, gt=0, description="How long the switch to a new instance may take.")

    @model_validator(mode="after")
    def _cidr(self) -> Ec2Target:
        import ipaddress

        try:
            ipaddress.ip_network(self.allowed_cidr)
        except ValueError:
            raise ValueError(f"allowed_cidr {self.allowed_cidr!r} is not a CIDR such as 203.0.113.0/24") from None
        return self


class KubernetesTarget(_TargetBase):
    """Any Kubernetes cluster reached through a kubeconfig and context: per release a Deployment, a
    PodDisruptionBudget, a HorizontalPodAutoscaler and a Secret; per stage a Service in its namespace."""

    kind: Literal["kubernetes"] = "kubernetes"
    kubeconfig: str = Field(
        default="", description="Path of the kubeconfig; empty: $KUBECONFIG, ~/.kube/config, else in-cluster."
    )
    context: str = Field(default="", description="Context of the kubeconfig to use; empty: its current context.")
    namespace: str = Field(
        default="", pattern=r"^$|^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Namespace of the stage; empty: slipway-<stage>. Give each stage its own.",
    )  # fmt: skip
    create_namespace: bool = Field(default=True, description="Create the namespace when it does not exist.")
    strategy: Literal["blue_green", "rolling"] = Field(
        default="blue_green",
        description="blue_green: a Deployment per release, the Service switched once it is ready; "
        "rolling: one Deployment updated in place with maxUnavailable 0.",
    )
    replicas: int = Field(default=2, ge=1, le=100, description="Pods per release (the autoscaler's minimum).")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="The autoscaler's maximum.")
    target_cpu_percent: int = Field(default=70, ge=1, le=100, description="The autoscaler's CPU utilisation target.")
    workers: int = Field(default=1, ge=1, le=16, description="Server worker processes per pod.")
    cpu_request: str = Field(default="250m", pattern=r"^[0-9.]+m?$", description="CPU request per pod.")
    cpu_limit: str = Field(default="1", pattern=r"^[0-9.]+m?$", description="CPU limit per pod.")
    memory_request: str = Field(default="256Mi", pattern=r"^[0-9]+(Ki|Mi|Gi)?$", description="Memory request.")
    memory_limit: str = Field(default="512Mi", pattern=r"^[0-9]+(Ki|Mi|Gi)?$", description="Memory limit per pod.")
    image_pull_secret: str = Field(default="", description="Existing docker-registry Secret to pull with; empty: none.")
    local_port: int = Field(
        default=0, ge=0, le=65535, description="Port on 127.0.0.1 the stage is forwarded to; 0: an ephemeral one."
    )
    drain_s: float = Field(default=2.0, ge=0, le=60, description="preStop delay so that traffic leaves a pod first.")
    gate_image: str = Field(
        default="127.0.0.1:5000/slipway/locust:bookworm",
        description="Image of the in-cluster gate's Locust (gate.where: in_target; scripts/images/locust.sh builds "
        "one); push it to a registry the cluster pulls from.",
    )
    ready_timeout_s: float = Field(default=180.0, gt=0, description="How long to wait for a candidate's pods.")
    promote_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the switch may take (rolling: the whole rolling update)."
    )

    @model_validator(mode="after")
    def _replicas(self) -> KubernetesTarget:
        if self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas}): raise it")
        return self


class CloudRunTarget(_TargetBase):
    """The managed container service pattern on Google Cloud Run: one service per stage, one revision per
    release (named after it, the image by digest), traffic pinned to revisions by name."""

    kind: Literal["cloudrun"] = "cloudrun"
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="Google Cloud project id.")
    region: str = Field(pattern=r"^[a-z]+-[a-z]+[0-9]$", description="Cloud Run region, e.g. europe-west1.")
    service: str = Field(
        default="", pattern=r"^$|^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$",
        description="Cloud Run service name; empty: <spec service>-<stage>. Give each stage its own.",
    )  # fmt: skip
    auth: Literal["iam", "api_key"] = Field(
        default="iam",
        description="iam (default): Cloud Run's IAM checks a Google ID token on every request (roles/run.invoker); "
        "api_key: the service is public (allUsers invoker) and the server checks Slipway's API key, "
        "which it reads from Secret Manager.",
    )
    credentials: str = Field(
        default="", description="Name of a Prefect GCP credentials block; empty: Application Default Credentials."
    )
    api_endpoint: str = Field(
        default="", description="Cloud Run Admin API endpoint override (a local stand-in in tests); empty: Google's."
    )
    secret_manager_endpoint: str = Field(default="", description="Secret Manager API endpoint override.")
    logging_endpoint: str = Field(default="", description="Cloud Logging API endpoint override.")
    api_retry_s: float = Field(
        default=30.0, ge=0, le=600, description="How long calls Google throttles (429) or finds busy (503) are retried."
    )
    cpu: str = Field(
        default="1", pattern=r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$", description="vCPUs per instance: 1, 2, 0.5, 500m."
    )
    memory: str = Field(default="512Mi", pattern=r"^[0-9]+(Mi|Gi)$", description="Memory per instance: 512Mi, 2Gi.")
    concurrency: int = Field(default=80, ge=1, le=1000, description="Concurrent requests per instance.")
    request_timeout_s: int = Field(default=60, ge=1, le=3600, description="Request timeout.")
    min_instances: int = Field(default=0, ge=0, le=1000, description="Minimum instances; 0 scales to zero.")
    max_instances: int = Field(default=10, ge=1, le=1000, description="Maximum instances.")
    cpu_boost: bool = Field(default=True, description="Extra CPU during start-up (startup CPU boost).")
    cpu_idle: bool = Field(default=True, description="CPU only during requests (request-based billing).")
    startup_timeout_s: int = Field(
        default=120, ge=1, le=240, description="The startup probe's budget on the server's readiness route."
    )
    service_account: str = Field(default="", description="The revisions' service account (email); empty: the default.")
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] = Field(
        default="all", description="Who may reach the service's URL at the network level."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables (no secrets).")
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables from Secret Manager: NAME: SECRET[:VERSION] (default version: latest).",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the service and its revisions.")
    workers: int = Field(default=1, ge=1, le=16, description="Server worker processes per instance.")
    ready_timeout_s: float = Field(default=300.0, gt=0, description="How long a revision may take to be ready.")
    promote_timeout_s: float = Field(default=300.0, gt=0, description="How long a traffic change may take.")

    @model_validator(mode="after")
    def _scaling(self) -> CloudRunTarget:
        if self.max_instances < self.min_instances:
            raise ValueError(f"max_instances ({self.max_instances}) is below min_instances ({self.min_instances})")
        reserved = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "SLIPWAY_API_KEY", "SLIPWAY_AUTH"}
        for name in [*self.env, *self.secrets]:
            if name in reserved:
                raise ValueError(f"{name} is set by Cloud Run or Slipway: remove it from env/secrets")
        return self


class VertexTarget(_TargetBase):
    """The managed ML platform pattern on Google Vertex AI: one Model version per release (the serving image
    by digest as a custom container), one Endpoint per stage, traffic split by deployed model."""

    kind: Literal["vertex"] = "vertex"
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="Google Cloud project id.")
    region: str = Field(pattern=r"^[a-z]+-[a-z]+[0-9]$", description="Vertex AI region, e.g. europe-west4.")
    endpoint: str = Field(
        default="", pattern=r"^$|^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Endpoint id; empty: <spec service>-<stage>. Give each stage its own.",
    )  # fmt: skip
    model: str = Field(
        default="", pattern=r"^$|^[a-z_]([a-z0-9_-]{0,62})$",
        description="Model id, whose versions are the releases; empty: the spec's service.",
    )  # fmt: skip
    credentials: str = Field(
        default="", description="Name of a Prefect GCP credentials block; empty: Application Default Credentials."
    )
    api_endpoint: str = Field(
        default="", description="Vertex AI API endpoint override (a local stand-in in tests); empty: the region's."
    )
    logging_endpoint: str = Field(default="", description="Cloud Logging API endpoint override.")
    api_retry_s: float = Field(
        default=30.0, ge=0, le=600, description="How long calls Google throttles (429) or finds busy (503) are retried."
    )
    machine_type: str = Field(
        default="n1-standard-2", pattern=r"^[a-z][a-z0-9]*-[a-z0-9-]+$", description="Machine type of each replica."
    )
    min_replicas: int = Field(default=1, ge=1, le=1000, description="Replicas always running (never 0).")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Replicas at most (autoscaling on CPU).")
    service_account: str = Field(default="", description="The deployed model's service account; empty: Vertex's.")
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables (no secrets).")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the endpoint and model versions.")
    workers: int = Field(default=1, ge=1, le=16, description="Server worker processes per replica.")
    retain_previous_s: float = Field(
        default=3600.0, ge=0,
        description="How long the previous release stays deployed at 0 % after a promotion (a rollback within it is a "
        "traffic change); it is undeployed by the first promotion after that (a deployed model is billed per hour).",
    )  # fmt: skip
    ready_timeout_s: float = Field(default=1800.0, gt=0, description="How long a deployment may take to be ready.")
    promote_timeout_s: float = Field(default=300.0, gt=0, description="How long a traffic change may take.")

    @model_validator(mode="after")
    def _scaling(self) -> VertexTarget:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")
        for name in self.env:
            if name.startswith("AIP_") or name in ("SLIPWAY_API_KEY", "SLIPWAY_AUTH"):
                raise ValueError(f"{name} is set by Vertex AI or Slipway: remove it from env")
        return self


class SageMakerServerless(_Strict):
    """Serverless inference instead of instances: SageMaker's ServerlessConfig."""

    memory_mb: Literal[1024, 2048, 3072, 4096, 5120, 6144] = Field(default=2048, description="Memory per worker.")
    max_concurrency: int = Field(default=20, ge=1, le=200, description="Concurrent invocations at most.")


class SageMakerRollout(_Strict):
    """How production moves to a new endpoint config: SageMaker's deployment guardrails (blue/green)."""

    type: Literal["all_at_once", "canary", "linear"] = Field(
        default="canary", description="ALL_AT_ONCE, CANARY (CanarySize first) or LINEAR (LinearStepSize per step)."
    )
    size_type: Literal["capacity_percent", "instance_count"] = Field(
        default="capacity_percent", description="What size counts: a percent of the capacity, or instances."
    )
    size: int = Field(default=10, ge=1, le=100, description="The canary's size, or each linear step's.")
    wait_interval_s: int = Field(
        default=300, ge=0, le=3600, description="How long each share bakes, alarms watched, before the next."
    )
    termination_wait_s: int = Field(
        default=300, ge=0, le=3600, description="How long the old fleet stays after the full shift (instant rollback)."
    )
    max_execution_timeout_s: int = Field(
        default=3600, ge=600, le=28800, description="SageMaker rolls the update back when it takes longer than this."
    )


class SageMakerAlarms(_Strict):
    """The CloudWatch alarms Slipway creates for each variant; any in ALARM during an update rolls it back."""

    max_5xx_errors: int = Field(
        default=0, ge=0, description="Invocation5XXErrors a minute above which the 5xx alarm fires (0: the first)."
    )
    latency_p99_ms: float = Field(
        default=0, ge=0, description="ModelLatency p99 above which the latency alarm fires; 0: gate.slo.p99_ms."
    )
    evaluation_minutes: int = Field(default=1, ge=1, le=60, description="Minutes above the threshold before it fires.")


class SageMakerAutoscaling(_Strict):
    """Application Auto Scaling of the live variant: target tracking on invocations per instance."""

    min_instances: int = Field(default=2, ge=1, description="The scalable target's minimum capacity.")
    max_instances: int = Field(default=4, ge=1, description="The scalable target's maximum capacity.")
    invocations_per_instance: float = Field(
        default=1000, gt=0, description="SageMakerVariantInvocationsPerInstance (a minute) to track."
    )
    scale_in_cooldown_s: int = Field(default=300, ge=0, description="Seconds after a scale-in before the next.")
    scale_out_cooldown_s: int = Field(default=60, ge=0, description="Seconds after a scale-out before the next.")

    @model_validator(mode="after")
    def _range(self) -> SageMakerAutoscaling:
        if self.max_instances < self.min_instances:
            raise ValueError(f"max_instances ({self.max_instances}) is below min_instances ({self.min_instances})")
        return self


class SageMakerDataCapture(_Strict):
    """What SageMaker captures of requests and responses; kept in every endpoint config Slipway writes."""

    enabled: bool = Field(default=True, description="False turns capture off, deliberately (it is never dropped).")
    sampling_percent: int = Field(default=10, ge=0, le=100, description="Share of requests captured.")
    s3_uri: str = Field(
        default="", pattern=r"^$|^s3://.+", description="Where captures go; empty: s3://<bucket>/<prefix>/data-capture."
    )
    capture: tuple[Literal["input", "output"], ...] = Field(
        default=("input", "output"), description="What is captured: requests, responses or both."
    )


class SageMakerTarget(_TargetBase):
    """The managed ML platform pattern on Amazon SageMaker: one endpoint per stage, and per release a
    SageMaker Model (the server-only image and the release's model data) and an endpoint config, promoted
    through SageMaker's deployment guardrails."""

    kind: Literal["sagemaker"] = "sagemaker"
    region: str = Field(default="us-east-1", description="AWS region.")
    endpoint_url: str = Field(
        default="", description="AWS API endpoint override for every service it calls (a local stand-in in tests)."
    )
    runtime_endpoint_url: str = Field(
        default="", description="SageMaker Runtime (InvokeEndpoint) endpoint override; empty: AWS's."
    )
    endpoint_name: str = Field(
        default="", pattern=r"^$|^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
        description="The stage's endpoint; empty: <service>-<stage>. Give each stage its own.",
    )  # fmt: skip
    execution_role_arn: str = Field(
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+",
        description="The role SageMaker assumes to pull the image (ECR) and read the model data (S3).",
    )
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="S3 bucket of the model data.")
    prefix: str = Field(default="slipway", description="Key prefix of the model data: <prefix>/<service>/<sha256>.")
    kms_key_id: str = Field(
        default="", description="KMS key for the model data (SSE-KMS) and the instances' volumes; empty: SSE-S3."
    )
    instance_type: str = Field(default="ml.m5.large", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$",
                               description="Instance type of the variant.")  # fmt: skip
    instance_count: int = Field(default=1, ge=1, le=100, description="Instances of the variant (2+ across zones).")
    serverless: SageMakerServerless | None = Field(
        default=None, description="Serverless inference instead of instances (no instance_type/count, no guardrails)."
    )
    rollout: SageMakerRollout = Field(default_factory=SageMakerRollout)
    alarms: SageMakerAlarms = Field(default_factory=SageMakerAlarms)
    autoscaling: SageMakerAutoscaling | None = Field(default=None, description="Application Auto Scaling; none: fixed.")
    data_capture: SageMakerDataCapture | None = Field(
        default=None, description="Data capture; none: off (a live endpoint that captures refuses to drop it)."
    )
    container_startup_timeout_s: int = Field(
        default=600, ge=60, le=3600, description="ContainerStartupHealthCheckTimeoutInSeconds: the /ping budget."
    )
    model_data_download_timeout_s: int = Field(
        default=600, ge=60, le=3600, description="ModelDataDownloadTimeoutInSeconds."
    )
    keep_releases: int = Field(
        default=3, ge=1, le=50, description="Earlier releases' models and endpoint configs kept for rollback."
    )
    api_attempts: int = Field(
        default=6, ge=1, le=20, description="Attempts at a throttled (ThrottlingException, 429) or busy call."
    )
    ready_timeout_s: float = Field(default=1800.0, gt=0, description="How long a new endpoint may take to serve.")
    promote_timeout_s: float = Field(
        default=7200.0, gt=0, description="How long an update (the guardrail rollout) is followed; above its timeout."
    )

    @model_validator(mode="after")
    def _rollout(self) -> SageMakerTarget:
        if self.serverless is None and self.promote_timeout_s <= self.rollout.max_execution_timeout_s:
            raise ValueError(
                f"promote_timeout_s ({self.promote_timeout_s:g}) must exceed rollout.max_execution_timeout_s "
                f"({self.rollout.max_execution_timeout_s}), after which SageMaker rolls the update back itself"
            )
        if self.rollout.size_type == "instance_count" and self.rollout.size > self.instance_count:
            raise ValueError(f"rollout.size ({self.rollout.size}) is above instance_count ({self.instance_count})")
        if self.serverless is not None and self.autoscaling is not None:
            raise ValueError("serverless endpoints scale by themselves: remove autoscaling (or serverless)")
        return self


# AWS Lambda's limits (docs/targets/lambda.md): the spec is refused outside them, naming them
LAMBDA_MEMORY_MB = (128, 10_240)
LAMBDA_TIMEOUT_S = 900
LAMBDA_EPHEMERAL_MB = (512, 10_240)
_LAMBDA_RESERVED_ENV = ("AWS_", "LAMBDA_", "_HANDLER", "_X_AMZN", "SLIPWAY_")


class LambdaTarget(_TargetBase):
    """The serverless pattern on AWS Lambda: the serving image as a container-image function, one
    published version per release, the stage's alias (and its function URL) switched to it."""

    kind: Literal["lambda"] = "lambda"
    region: str = Field(default="us-east-1", description="AWS region.")
    profile: str = Field(default="", description="AWS profile (another account's); empty: the default chain.")
    function: str = Field(
        default="", pattern=r"^$|^[A-Za-z0-9_-]{1,64}$",
        description="Function name; empty: <spec service>-<stage>. Two stages may name one function (their "
        "aliases then share its versions: production gets the very version staging gated).",
    )  # fmt: skip
    alias: str = Field(
        default="", pattern=r"^$|^[A-Za-z0-9_-]{1,128}$",
        description="The stage's alias (not all digits: that is a version); empty: 'staging' on staging, "
        "'live' on production.",
    )  # fmt: skip
    role: str = Field(
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$",
        description="ARN of the execution role (trusting lambda.amazonaws.com) the function runs as.",
    )
    memory_mb: int = Field(default=1024, description="Memory (MB, 128-10,240); Lambda gives CPU in proportion.")
    timeout_s: int = Field(default=30, description="Longest an invocation may run (s, at most 900).")
    ephemeral_storage_mb: int = Field(default=512, description="/tmp size (MB, 512-10,240).")
    architecture: Literal["x86_64", "arm64"] = Field(default="x86_64", description="The image's architecture.")
    reserved_concurrency: int | None = Field(
        default=None, ge=0, description="Concurrent executions reserved for (and the most allowed to) the function; "
        "empty: the account's unreserved pool.",
    )  # fmt: skip
    provisioned_concurrency: int = Field(
        default=0, ge=0, le=10_000, description="Execution environments kept initialized on the alias (no cold "
        "start for that many concurrent requests; billed while configured). Usually production only.",
    )  # fmt: skip
    url_auth: Literal["AWS_IAM", "NONE"] = Field(
        default="AWS_IAM",
        description="The function URL's AuthType. AWS_IAM (default): callers sign with SigV4 (the gate does too); "
        "NONE: public, only with auth.mode api_key (the handler checks Slipway's key).",
    )
    api_key_store: Literal["secretsmanager", "ssm"] = Field(
        default="secretsmanager",
        description="Where the API key is kept for url_auth NONE (read once per cold start, never a plain env value).",
    )
    model_location: Literal["image", "s3"] = Field(
        default="image",
        description="image (default: fastest cold start): the model in the image is served; s3: the package is "
        "loaded from S3 into /tmp on each cold start, its sha256 checked first, and served instead.",
    )
    model_bucket: str = Field(default="", description="S3 bucket of the packages (model_location s3).")
    model_prefix: str = Field(default="slipway/", description="Key prefix of the packages in model_bucket.")
    endpoint_url: str = Field(default="", description="Lambda API endpoint override (a local stand-in in tests).")
    aws_endpoint_url: str = Field(
        default="", description="S3, Secrets Manager and SSM endpoint override (a local stand-in in tests)."
    )
    api_retry_s: float = Field(
        default=120.0, ge=0, le=900,
        description="How long calls refused while an update is in progress (or throttled) are retried.",
    )  # fmt: skip
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables (no secrets).")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on the function.")
    ready_timeout_s: float = Field(default=180.0, gt=0, description="How long a version may take to answer.")
    promote_timeout_s: float = Field(default=300.0, gt=0, description="How long the alias switch may take "
                                     "(with provisioned concurrency: until it is allocated).")  # fmt: skip

    @model_validator(mode="after")
    def _limits(self) -> LambdaTarget:
        low, high = LAMBDA_MEMORY_MB
        if not low <= self.memory_mb <= high:
            raise ValueError(f"memory_mb {self.memory_mb} is outside Lambda's limits ({low}-{high:,} MB)")
        if not 1 <= self.timeout_s <= LAMBDA_TIMEOUT_S:
            raise ValueError(f"timeout_s {self.timeout_s} is outside Lambda's limits (1-{LAMBDA_TIMEOUT_S} s, 15 min)")
        low, high = LAMBDA_EPHEMERAL_MB
        if not low <= self.ephemeral_storage_mb <= high:
            raise ValueError(
                f"ephemeral_storage_mb {self.ephemeral_storage_mb} is outside Lambda's limits ({low}-{high:,} MB)"
            )
        if self.reserved_concurrency is not None and self.provisioned_concurrency > self.reserved_concurrency:
            raise ValueError(f"provisioned_concurrency ({self.provisioned_concurrency}) is above reserved_concurrency "
                             f"({self.reserved_concurrency}): raise reserved_concurrency")  # fmt: skip
        if self.alias.isdigit():
            raise ValueError(f"alias {self.alias!r} is all digits, which names a version: give it a letter")
        if self.model_location == "s3" and not self.model_bucket:
            raise ValueError("model_location s3 needs model_bucket (the S3 bucket the packages are uploaded to)")
        for name in self.env:
            if name.startswith(_LAMBDA_RESERVED_ENV):
                raise ValueError(f"{name} is set by Lambda or Slipway: remove it from env")
        return self


TARGET_CONFIGS: tuple[type[_Strict], ...] = (
    LocalTarget, DockerTarget, Ec2Target, KubernetesTarget, CloudRunTarget, SageMakerTarget, LambdaTarget,
    VertexTarget,
)  # fmt: skip
TargetConfig = Annotated[
    LocalTarget | DockerTarget | Ec2Target | KubernetesTarget | CloudRunTarget | SageMakerTarget | LambdaTarget
    | VertexTarget,
    Field(discriminator="kind"),
]
"""Every target kind: a new kind is added to this union, to ``TARGET_CONFIGS`` and as a case in
``targets.make_target`` (whose exhaustive ``match`` makes a missing case a type error)."""


class LoadProfile(_Strict):
    users: int = Field(default=16, ge=1, description="Concurrent Locust users.")
    spawn_rate: float = Field(default=16.0, gt=0, description="Users started per second.")
    duration_s: float = Field(default=10.0, gt=0, le=3600, description="Length of the load phase.")
    processes: int = Field(default=1, ge=1, le=16, description="Locust processes (--processes).")
    batch_size: int = Field(default=1, ge=1, le=10_000, description="Rows per request.")


class Slo(_Strict):
    p95_ms: float = Field(default=100.0, gt=0, description="Maximum 95th percentile latency.")
    p99_ms: float = Field(default=250.0, gt=0, description="Maximum 99th percentile latency.")
    max_error_rate: float = Field(default=0.0, ge=0, le=1, description="Maximum failed/total requests.")
    min_rps: float = Field(default=0.0, ge=0, description="Minimum requests per second sustained.")
    cold_start_ms: float | None = Field(
        default=None, gt=0, description="Maximum latency of a cold start: the first request of a fresh execution "
        "environment (targets that start them on demand: lambda, cloudfunctions). The latency SLOs above then "
        "judge the warm requests. Empty: cold starts are measured and reported, not judged.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ordered(self) -> Slo:
        if self.p99_ms < self.p95_ms:
            raise ValueError(f"p99_ms ({self.p99_ms}) is below p95_ms ({self.p95_ms}): set p99_ms >= p95_ms")
        return self


class GateSettings(_Strict):
    smoke: bool = Field(default=True, description="Check every golden sample against staging first.")
    load: LoadProfile = Field(default_factory=LoadProfile)
    slo: Slo = Field(default_factory=Slo)
    where: Literal["local", "in_target"] = Field(
        default="local",
        description="Where the load phase's Locust runs: local, on the machine that runs the flow; in_target, next "
        "to staging where its target can run it (kubernetes: a Job in the namespace, against the Service by its "
        "cluster DNS name), so the figures are the service's, not the network's or a port-forward's.",
    )


class ServingSettings(_Strict):
    """How the model server in every target serves (serving/batching.py); reaches each server as its
    command-line options (``server_args``)."""

    batching: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Requests waiting together share one predict call. auto: for models known to predict each "
        "row on its own (scikit-learn, XGBoost, LightGBM estimators); off: a model whose answer for a row depends "
        "on the other rows of the call; on: any other model whose rows are independent.",
    )
    max_batch_rows: int = Field(default=256, ge=1, le=100_000, description="Most rows in one batched predict call.")
    max_batch_wait_us: int = Field(
        default=0, ge=0, le=1_000_000,
        description="How long a batch may wait for more requests, in µs; 0: never (batch only what already waits).",
    )  # fmt: skip

    def server_args(self) -> tuple[str, ...]:
        """The model server's options for these settings (``python -m serving ... ARGS``); none for the defaults."""
        defaults = ServingSettings()
        args: list[str] = []
        if self.batching != defaults.batching:
            args += ["--batching", self.batching]
        if self.max_batch_rows != defaults.max_batch_rows:
            args += ["--max-batch-rows", str(self.max_batch_rows)]
        if self.max_batch_wait_us != defaults.max_batch_wait_us:
            args += ["--max-batch-wait-us", str(self.max_batch_wait_us)]
        return tuple(args)


class AuthSettings(_Strict):
    mode: Literal["api_key", "none"] = Field(
        default="api_key", description="'api_key' (default) or 'none' to serve without authentication."
    )
    api_key_env: str = Field(
        default="SLIPWAY_API_KEY",
        pattern=_ENV_VAR,
        description="Environment variable that holds the endpoint's API key at deploy time.",
    )
    unauthenticated_because: str = Field(
        default="",
        description="Why production may serve without authentication (mode: none): without a reason it is refused.",
    )


class CostSettings(_Strict):
    requests_per_month: float = Field(
        default=1_000_000, ge=0, description="The traffic plan's monthly estimate is computed for."
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="Prices (USD) that override or add to slipway/prices.yaml, by item, e.g. docker.host_hour.",
    )


class ReleaseSpec(_Strict):
    service: str = Field(
        default="",
        pattern=r"^$|" + _NAME,
        description="The deployment's identity: its ledger history, lock and every resource are keyed by it. "
        "Empty: the model's name. Two specs that release one model to different places need different names.",
    )
    model: ModelSource
    image: ImageSettings = Field(default_factory=ImageSettings)
    staging: TargetConfig
    production: TargetConfig
    gate: GateSettings = Field(default_factory=GateSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    costs: CostSettings = Field(default_factory=CostSettings)

    # Where the spec was read from (relative paths resolve against it) and the hash of its text.
    _base_dir: Path = PrivateAttr(default=Path("."))
    _spec_hash: str = PrivateAttr(default="")

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def spec_hash(self) -> str:
        return self._spec_hash

    @model_validator(mode="before")
    @classmethod
    def _service_defaults_to_model(cls, raw: object) -> object:
        if isinstance(raw, dict) and not raw.get("service") and isinstance(raw.get("model"), dict):
            return {**raw, "service": raw["model"].get("name", "")}
        return raw

    @model_validator(mode="after")
    def _alarms_follow_the_slo(self) -> ReleaseSpec:
        """A SageMaker stage's latency alarm defaults to the gate's p99: the guardrail holds the SLO the gate held."""
        for stage in ("staging", "production"):
            config = getattr(self, stage)
            if isinstance(config, SageMakerTarget) and not config.alarms.latency_p99_ms:
                alarms = config.alarms.model_copy(update={"latency_p99_ms": self.gate.slo.p99_ms})
                object.__setattr__(self, stage, config.model_copy(update={"alarms": alarms}))
        return self

    @model_validator(mode="after")
    def _distinct_stages(self) -> ReleaseSpec:
        s, p = self.staging, self.production
        if isinstance(s, LocalTarget) and isinstance(p, LocalTarget) and s.port == p.port:
            raise ValueError(f"staging and production both use port {s.port}: give each stage its own port")
        if (isinstance(s, LambdaTarget) and isinstance(p, LambdaTarget) and s.function and s.function == p.function
                and (s.region, s.profile) == (p.region, p.profile)):  # fmt: skip
            if (s.alias or "staging") == (p.alias or "live"):
                raise ValueError(f"staging and production share function {s.function} and its alias: give each "
                                 "stage its own alias")  # fmt: skip
            if s.reserved_concurrency != p.reserved_concurrency:
                raise ValueError(f"staging and production share function {s.function}, whose reserved_concurrency "
                                 "is one setting: set the same on both, or give each stage its function")  # fmt: skip
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def target_for(self, stage: Stage) -> TargetConfig:
        return self.staging if stage is Stage.STAGING else self.production

    def timeouts(self, stage: Stage) -> Timeouts:
        config = self.target_for(stage)
        return Timeouts(config.ready_timeout_s, config.promote_timeout_s)


def _format_errors(path: Path, exc: ValidationError) -> str:
    kinds = {str(cls.model_fields["kind"].default) for cls in TARGET_CONFIGS}
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        if len(parts) > 1 and parts[0] in ("staging", "production") and parts[1] in kinds:
            del parts[1]  # the union's tag: staging.port, not staging.docker.port
        loc = ".".join(parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/architecture.md for the spec's keys)"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown target kind {err['input'].get('kind')!r}; known kinds: {_known_kinds()}"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return f"invalid release spec {path}:\n" + "\n".join(lines)


def _known_kinds() -> str:
    return ", ".join(sorted(str(cls.model_fields["kind"].default) for cls in TARGET_CONFIGS))


def load_spec(path: str | Path) -> ReleaseSpec:
    """Read and validate a release spec; raises ``ConfigError`` naming each problem and its key."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"release spec {path} does not exist", hint="pass the path of a slipway.yaml (see examples/iris)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read release spec {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"release spec {path} is not valid YAML: {exc}", hint="fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"release spec {path} must be a YAML mapping with model, staging and production keys",
            hint="see examples/iris/slipway.yaml",
        )
    try:
        spec = ReleaseSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(path, exc), hint="fix the keys listed above") from None
    spec._base_dir = path.parent
    spec._spec_hash = hashlib.sha256(text.encode()).hexdigest()
    return spec
