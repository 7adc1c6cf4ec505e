"""``kind: lambda`` — the serverless pattern on AWS Lambda (boto3): the serving image as a container-image
function, one published version per release, the stage's alias switched to it.

The one serving image already runs under Lambda (``serving.contract``: the runtime interface client
in-process when ``AWS_LAMBDA_RUNTIME_API`` is set); Lambda's "variant" is that image in ECR, serving
its own model or (``model_location: s3``) the package it loads from S3 at each cold start. Each stage is one alias
(``staging`` / ``live``) of a function (``<service>-<stage>`` unless configured; two stages may
share one), with a function URL on the alias:

* ``deploy`` writes the release's image and settings to the function (``$LATEST``: no alias serves
  it) and publishes a version, immutable, carrying ``SLIPWAY_RELEASE`` and a digest of its settings;
  a version of the same release and settings is reused, never published twice. The first release
  creates the function. Calls refused while an update is in progress are retried after it ends.
* ``wait_ready`` invokes that version directly, with the chapter's ``{"features": ROW}`` (the first
  golden sample, whose prediction must match) and ``/ready`` as a function-URL event; a version that
  fails says why with its log tail. Its first invoke is a cold start: its latency and the init
  duration Lambda reports go into the deployment (``cold_starts``) for the gate's report.
* ``shift`` gives the candidate a share of the alias (``RoutingConfig.AdditionalVersionWeights``);
  ``promote`` points the alias at exactly the candidate version (weights emptied), creates its URL
  the first time, and sets reserved and provisioned concurrency (waiting until the latter is READY);
  if it fails the alias is put back. ``rollback`` points the alias back at a retained version.
* ``discard`` removes a candidate's share and the version it published; ``teardown`` removes the
  alias, its URL, permissions and provisioned concurrency, and the function once no alias is left.

Errors go through ``targets.aws.map_aws_error`` with Lambda's codes (``targets._lambda_support``).
"""

from __future__ import annotations

import contextlib
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import ClientError

from slipway.costs import Usage
from slipway.errors import At, ConfigError, TargetError
from slipway.http import answers
from slipway.release import Auth, AuthScheme, Endpoint, Release
from slipway.spec import LAMBDA_EPHEMERAL_MB, LAMBDA_MEMORY_MB, LAMBDA_TIMEOUT_S, Timeouts
from slipway.spec import LambdaTarget as LambdaConfig
from targets import _lambda_support as sup
from targets._lambda_function import LambdaFunction, weights
from targets.aws import aws_errors, check_region, session
from targets.base import (
    IMAGE,
    Capabilities,
    Change,
    ColdStart,
    Deployment,
    Facts,
    Limit,
    StageStatus,
    TargetContext,
    put_live,
)
from targets.containers import ECR_HOST, registry_of

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient


class LambdaFunctionTarget:
    kind = "lambda"

    def __init__(self, config: LambdaConfig, ctx: TargetContext) -> None:
        check_region(config.region, at=At(self.kind, "config", config.region))
        self.config, self.ctx, self.stage = config, ctx, ctx.stage
        self.function = config.function or f"{ctx.service}-{ctx.stage.value}"[:64]
        self.alias = config.alias or ("staging" if ctx.stage.value == "staging" else "live")
        self.location = f"lambda {config.region} function {self.function} alias {self.alias}"
        self.capabilities = Capabilities(artifacts=IMAGE, traffic_split=True, stable_endpoint=True)

    # --- clients ----------------------------------------------------------------------------

    @cached_property
    def _session(self) -> Any:
        return session(self.config.region, self.config.profile)

    @cached_property
    def client(self) -> LambdaClient:
        # a synchronous Invoke lasts up to the function's timeout (a cold start's init included): botocore's
        # default 60 s read timeout would give up on it, and retry it into a second execution environment
        timeout = Config(read_timeout=self.config.timeout_s + 30, retries={"mode": "standard", "max_attempts": 4})
        args: dict[str, Any] = {"config": timeout}
        if self.config.endpoint_url:
            args["endpoint_url"] = self.config.endpoint_url
        client: LambdaClient = self._session.client("lambda", **args)
        return client

    @cached_property
    def fn(self) -> LambdaFunction:
        return LambdaFunction(self.client, self.config, self.function, self.alias, self.ctx.progress, self.stage.value)

    @cached_property
    def keys(self) -> sup.KeyStore:
        return sup.KeyStore(self._session, self.config, self.ctx.service, self.stage.value)

    @cached_property
    def s3(self) -> Any:
        args = {"endpoint_url": self.config.aws_endpoint_url} if self.config.aws_endpoint_url else {}
        return self._session.client("s3", **args)

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        image = str(release.require_image())
        self._check_image(image, release)
        with self._aws("deploy", self.function):
            env = sup.auth_env(self.config, self.ctx.requires_auth)
            key = self.ctx.key_for_deploy()
            if self.config.url_auth == "NONE" and key is not None:
                env |= self.keys.put(key)
            if self.config.model_location == "s3":
                env |= sup.upload_package(self.s3, self.config, release)
            wanted = sup.settings(self.config, release, image, env, self.ctx.server_args)
            digest = sup.digest_of(wanted)
            reused = next((v for v in self.fn.versions() if sup.digest_of(v) == digest), None)
            if reused is not None:
                version, published = str(reused["Version"]), "0"
                self.ctx.progress(f"{self.stage.value}: version {version} of {self.function} is release {release.id}")
            else:
                tags = {**self.config.tags, "managed-by": "slipway", "slipway:service": self.ctx.service}
                version, published = self.fn.publish(release, image, wanted, tags), "1"
        handle = {"function": self.function, "version": version, "alias": self.alias, "published": published}
        return Deployment(release, self.stage, Endpoint("", self._auth()), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        version, rid = deployment.handle["version"], deployment.release.id
        at = At(self.kind, "wait_ready", f"{self.function}:{version}")
        deadline = time.monotonic() + timeout_s
        event, want = sup.ready_event(deployment.release)
        with self._aws("wait_ready", f"{self.function}:{version}"):
            self.fn.wait_active(version, deadline, at)
            first = self._invoke(version, event, deadline)
            self._check(first, want, rid, version, at)
            http = self._invoke(version, sup.http_event("GET", "/ready", self._key_header()), deadline)
        status = http.payload.get("statusCode") if isinstance(http.payload, dict) else None
        if http.function_error or status != 200:
            raise TargetError(
                f"release {rid}: version {version} answered /ready as a function URL event with "
                f"{status or http.error}\n{http.tail}",
                at=at,
                hint="read the function's output above",
            )
        cold = (ColdStart(first.latency_ms, first.init_ms, "readiness check"),) if first.init_ms is not None else ()
        return Deployment(deployment.release, self.stage, Endpoint("", self._auth()), deployment.handle, cold,
                          self._throttling())  # fmt: skip

    def shift(self, deployment: Deployment, weight: float) -> None:
        at = At(self.kind, "shift", self.alias)
        if not 0 <= weight <= 1:
            raise ConfigError(f"a traffic weight is between 0 and 1, not {weight}", at=at)
        version = deployment.handle["version"]
        with self._aws("shift", self.alias):
            alias = self.fn.alias_info()
            if alias is None or alias["FunctionVersion"] == version:
                raise ConfigError(f"nothing else is live on {self.stage.value} to split traffic with", at=at,
                                  hint="promote the first release all at once")  # fmt: skip
            self.fn.split(str(alias["FunctionVersion"]), version, weight)
        self.ctx.progress(f"{self.stage.value}: {weight:.0%} of the alias {self.alias} to version {version}, "
                          f"the rest to {alias['FunctionVersion']}")  # fmt: skip

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        return self._switch(deployment, timeout_s, "promote")

    def discard(self, deployment: Deployment) -> None:
        version = deployment.handle["version"]
        with self._aws("discard", f"{self.function}:{version}"):
            alias = self.fn.alias_info()
            if alias is not None and alias["FunctionVersion"] == version:
                return  # it went live: not a candidate any more
            if alias is not None and version in weights(alias):
                self.fn.split(str(alias["FunctionVersion"]), version, 0)
            if not self.fn.aliases():
                self.fn.delete()  # the function's first candidate: nothing ever served from it
                return
            if deployment.handle.get("published") == "1" and version not in self.fn.referenced():
                self.fn.delete_version(version)
        self.ctx.progress(f"{self.stage.value}: candidate version {version} of {self.function} removed")

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        with self._aws("rollback", self.function):
            kept = [v for v in self.fn.versions() if sup.digest_of(v)[0] == release.id]
        if not kept:  # not retained (another function, or deleted): published again from its image
            return put_live(self, release, timeouts)
        handle = {"function": self.function, "version": str(kept[-1]["Version"]), "alias": self.alias, "published": "0"}
        candidate = self.wait_ready(Deployment(release, self.stage, Endpoint(""), handle), timeouts.ready_s)
        return self._switch(candidate, timeouts.promote_s, "rollback")

    def endpoint(self) -> Endpoint | None:
        with self._aws("describe", self.alias):
            url = self.fn.url() if self.fn.alias_info() is not None else None
        return Endpoint(url, self._auth()) if url else None

    def teardown(self) -> None:
        with self._aws("teardown", self.function):
            if self.fn.get() is not None:
                self.fn.remove_alias()
                if not self.fn.aliases():
                    self.fn.delete()
            if self.config.url_auth == "NONE":
                self.keys.delete()

    def describe(self) -> StageStatus:
        with self._aws("describe", self.alias):
            alias = self.fn.alias_info()
            if alias is None:
                return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
            version = str(alias["FunctionVersion"])
            config = dict(self.client.get_function_configuration(FunctionName=self.function, Qualifier=version))
            url = self.fn.url()
        split = "".join(f", version {v} at {w:.0%}" for v, w in weights(alias).items())
        endpoint = Endpoint(url, self._auth()) if url else None
        detail = (
            f"function {self.function} version {version} (alias {self.alias}{split}); {config.get('MemorySize')} MB, "
            f"timeout {config.get('Timeout')} s; state {config.get('State')}"
        )
        healthy = endpoint is not None and answers(endpoint, endpoint.routes.health, api_key=self.ctx.api_key,
                                                   timeout_s=10)  # fmt: skip
        return StageStatus(self.stage, self.kind, sup.digest_of(config)[0] or None, endpoint, healthy, detail)

    def facts(self) -> Facts:
        c = self.config
        gb = c.memory_mb / 1024
        per_second = {"lambda.gb_second" if c.architecture == "x86_64" else "lambda.arm64.gb_second": gb}
        if c.ephemeral_storage_mb > 512:
            per_second["lambda.ephemeral_gb_second"] = (c.ephemeral_storage_mb - 512) / 1024
        provisioned = gb * 3600 * c.provisioned_concurrency
        hourly = {"lambda.provisioned_gb_second": provisioned} if provisioned else {}
        usage = Usage(hourly=hourly, per_request={"lambda.request": 1.0}, per_request_second=per_second)
        ceiling = c.reserved_concurrency if c.reserved_concurrency is not None else 1000
        pool = "reserved concurrency" if c.reserved_concurrency is not None else "the account's unreserved pool"
        scaling = f"Lambda: an execution environment per concurrent request, 0-{ceiling} ({pool})"
        if c.provisioned_concurrency:
            scaling += f", {c.provisioned_concurrency} kept initialized (provisioned) on alias {self.alias}"
        at_rest = ["images in ECR (AES-256)", "the function's environment (an AWS-managed KMS key)"]
        if c.url_auth == "NONE":
            at_rest.append(f"the API key in the {self.keys.resource} (KMS)")
        if c.model_location == "s3":
            at_rest.append(f"packages in s3://{c.model_bucket}/{c.model_prefix} (SSE-S3)")
        size, note = sup.newest_image_mb(self.ctx.model)
        limits = (
            Limit("image size", size, sup.IMAGE_LIMIT_MB, "MB", note),
            Limit("memory", c.memory_mb, LAMBDA_MEMORY_MB[1], "MB", f"at least {LAMBDA_MEMORY_MB[0]}"),
            Limit("timeout", c.timeout_s, LAMBDA_TIMEOUT_S, "s"),
            Limit("ephemeral storage", c.ephemeral_storage_mb, LAMBDA_EPHEMERAL_MB[1], "MB"),
        )
        monitoring = (
            "CloudWatch metrics (Invocations, Errors, Throttles, Duration, ConcurrentExecutions)",
            f"CloudWatch Logs /aws/lambda/{self.function} (each invocation's REPORT: duration, init duration)",
            "/health and /metrics through the function URL",
        )
        return Facts(
            c.provisioned_concurrency,
            ceiling,
            scaling,
            True,
            3,
            False,
            monitoring,
            tls=True,
            public=True,
            at_rest=tuple(at_rest),
            usage=usage,
            limits=limits,
        )  # fmt: skip  (regional: over the zones)

    def changes(self) -> list[Change]:
        c = self.config
        with self._aws("plan", self.function):
            exists = self.fn.get() is not None
            alias = self.fn.alias_info() if exists else None
            url = self.fn.url() if alias is not None else None
        image = "the image by digest" + (", the package loaded from S3" if c.model_location == "s3" else "")
        out = [
            Change("create" if not exists else "change", f"function {self.function}",
                   f"$LATEST: {image}, {c.memory_mb} MB, timeout {c.timeout_s} s, role {c.role} (no alias serves it)"),
            Change("create", f"version <n> of {self.function}",
                   "published, immutable: the release's image and settings; checked by direct invokes first"),
        ]  # fmt: skip
        if alias is None:
            out.append(Change("create", f"alias {self.alias}", "pointing at the new version"))
        else:
            out.append(Change("change", f"alias {self.alias}", f"from version {alias['FunctionVersion']} to the "
                              "new one (weights emptied); the previous version is kept for rollback"))  # fmt: skip
        if url is None:
            out.append(Change("create", f"function URL of {self.function}:{self.alias}", f"AuthType {c.url_auth}"))
        if c.reserved_concurrency is not None:
            out.append(Change("change", f"reserved concurrency of {self.function}", str(c.reserved_concurrency)))
        if c.provisioned_concurrency:
            out.append(Change("change", f"provisioned concurrency of {self.function}:{self.alias}",
                              f"{c.provisioned_concurrency} environment(s), READY before promote returns"))  # fmt: skip
        if c.url_auth == "NONE" and self.ctx.requires_auth:
            out.append(Change("change", self.keys.resource, "the API key (a new version only if it changed)"))
        if c.model_location == "s3":
            out.append(Change("create", f"s3://{c.model_bucket}/{c.model_prefix}{self.ctx.service}/<sha256>/",
                              "package.json and the model (once per package)"))  # fmt: skip
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _aws(self, operation: str, resource: str) -> contextlib.AbstractContextManager[None]:
        return aws_errors(At(self.kind, operation, resource), sup.LAMBDA_CODES)

    def _auth(self) -> Auth:
        if self.config.url_auth == "AWS_IAM":
            return Auth(AuthScheme.AWS_SIGV4, aws_service="lambda", aws_region=self.config.region)
        return self.ctx.auth

    def _key_header(self) -> dict[str, str]:
        key = self.ctx.api_key if self.config.url_auth == "NONE" and self.ctx.requires_auth else None
        return {"authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    def _throttling(self) -> str:
        c, stage = self.config, self.stage.value
        if c.reserved_concurrency is not None:
            return (f"reserved concurrency {c.reserved_concurrency} of function {self.function}: raise "
                    f"{stage}.reserved_concurrency (or lower gate.load.users)")  # fmt: skip
        return (f"the account's unreserved concurrency in {c.region} (1,000 by default): set "
                f"{stage}.reserved_concurrency for a share of its own, or ask AWS for a higher quota")  # fmt: skip

    def _check_image(self, image: str, release: Release) -> None:
        at = At(self.kind, "deploy", image)
        ecr = ECR_HOST.match(registry_of(image) or "")
        if not self.config.endpoint_url and (ecr is None or ecr["region"] != self.config.region):
            raise ConfigError(
                f"release {release.id}'s image {image} is not in Amazon ECR in {self.config.region}, the only "
                "registry Lambda runs images from",
                at=at,
                hint="set image.repository to <account>.dkr.ecr.<region>.amazonaws.com/<repo> (the push gets "
                "ECR's token itself)",
            )
        size, where = sup.image_size_mb(image)
        if size is not None and size > sup.IMAGE_LIMIT_MB:
            raise ConfigError(
                f"release {release.id}'s image is {size:,.0f} MB ({where}), over Lambda's limit of "
                f"{sup.IMAGE_LIMIT_MB:,} MB (10 GB, uncompressed)",
                at=at,
                hint="make the image smaller (fewer or lighter dependencies in the package's requirements)",
            )

    def _invoke(self, version: str, event: Any, deadline: float) -> sup.Invocation:
        """One direct invoke of ``version``; a throttled one is tried again until ``deadline``."""
        while True:
            try:
                return sup.invoke(self.client, self.function, version, event)
            except ClientError as exc:
                throttled = exc.response.get("Error", {}).get("Code") == "TooManyRequestsException"
                if not throttled or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _check(self, answer: sup.Invocation, want: Any, rid: str, version: str, at: At) -> None:
        if answer.error:
            raise TargetError(
                f"release {rid}: version {version} of {self.function} failed its first invocation: "
                f"{answer.error}\n{answer.tail}",
                at=at,
                hint="read the function's output above (its log tail); fix and deploy again",
            )
        if want is not None and answer.payload != want:
            raise TargetError(
                f"release {rid}: version {version} answered {answer.payload!r} to the first golden sample, "
                f"not {want!r}",
                at=at,
                hint="the image does not serve this release's package",
            )

    def _switch(self, deployment: Deployment, timeout_s: float, op: str) -> Deployment:
        """Point the alias at exactly ``deployment``'s version (the one switch); put it back if anything fails."""
        version, release = deployment.handle["version"], deployment.release
        with self._aws(op, f"{self.function}:{self.alias}"):
            before = self.fn.alias_info()
            self.fn.point(version, before, f"Slipway {self.ctx.service} {self.stage.value}")
            try:
                url = self.fn.ensure_url()
                self.fn.set_concurrency(timeout_s)
            except BaseException:
                self.fn.restore(before)
                raise
        self.ctx.progress(f"{self.stage.value}: alias {self.alias} of {self.function} points at version {version} "
                          f"(release {release.id})")  # fmt: skip
        return Deployment(release, self.stage, Endpoint(url, self._auth()), deployment.handle, deployment.cold_starts,
                          self._throttling())  # fmt: skip
