"""One Lambda function and one of its aliases, through the Lambda API, as the lambda target uses them.

Lambda changes a function asynchronously: after ``CreateFunction`` it is ``Pending``, after an update
``LastUpdateStatus`` is ``InProgress``, and meanwhile other updates (and ``PublishVersion``) are
refused with ``ResourceConflictException``. ``busy`` retries such calls once the update in progress
has ended (``wait_updated``), and throttled calls with backoff, for the stage's ``api_retry_s``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from slipway.errors import At, ConfigError, TargetError, TransientTargetError
from slipway.release import Release
from slipway.spec import LambdaTarget as LambdaConfig
from targets.base import Progress

T = TypeVar("T")
_BUSY = frozenset({"ResourceConflictException", "ResourceNotReadyException", "TooManyRequestsException"})
NO_WEIGHTS: dict[str, Any] = {"AdditionalVersionWeights": {}}


class LambdaFunction:
    def __init__(self, client: Any, config: LambdaConfig, function: str, alias: str, progress: Progress,
                 stage: str) -> None:  # fmt: skip
        self.client, self.config, self.name, self.alias = client, config, function, alias
        self.progress, self.stage = progress, stage
        self.missing = client.exceptions.ResourceNotFoundException

    # --- reads --------------------------------------------------------------------------------

    def get(self) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_function(FunctionName=self.name))
        except self.missing:
            return None

    def alias_info(self) -> dict[str, Any] | None:
        try:
            return dict(self.client.get_alias(FunctionName=self.name, Name=self.alias))
        except self.missing:
            return None

    def aliases(self) -> list[dict[str, Any]]:
        try:
            pages = self.client.get_paginator("list_aliases").paginate(FunctionName=self.name)
            return [dict(a) for page in pages for a in page["Aliases"]]
        except self.missing:
            return []

    def versions(self) -> list[dict[str, Any]]:
        """The function's published versions, oldest first."""
        try:
            pages = self.client.get_paginator("list_versions_by_function").paginate(FunctionName=self.name)
            return [dict(v) for page in pages for v in page["Versions"] if v["Version"] != "$LATEST"]
        except self.missing:
            return []

    def referenced(self) -> set[str]:
        """The versions an alias of the function points at or routes a share to."""
        out: set[str] = set()
        for a in self.aliases():
            out.add(str(a["FunctionVersion"]))
            out |= {str(v) for v in weights(a)}
        return out

    def url(self) -> str | None:
        try:
            found = self.client.get_function_url_config(FunctionName=self.name, Qualifier=self.alias)
        except self.missing:
            return None
        return str(found["FunctionUrl"]).rstrip("/")

    def statement_ids(self) -> tuple[str, str]:
        return f"slipway-url-{self.alias}", f"slipway-url-invoke-{self.alias}"

    # --- waiting ------------------------------------------------------------------------------

    def busy(self, call: Callable[..., T], **kwargs: Any) -> T:
        """``call``, retried while Lambda says an update is in progress (or throttles), for api_retry_s."""
        deadline, pause = time.monotonic() + self.config.api_retry_s, 0.5
        while True:
            try:
                return call(**kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in _BUSY or time.monotonic() > deadline:
                    raise
                if code == "ResourceConflictException":
                    self.progress(f"{self.stage}: an update of {self.name} is in progress; waiting for it to end")
                    self.wait_updated(deadline)
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)

    def wait_updated(self, deadline: float) -> dict[str, Any]:
        """$LATEST's configuration once no update is in progress (LastUpdateStatus Successful or Failed)."""
        while True:
            config = dict(self.client.get_function_configuration(FunctionName=self.name))
            if config.get("State") != "Pending" and config.get("LastUpdateStatus") != "InProgress":
                return config
            if time.monotonic() > deadline:
                raise TransientTargetError(
                    f"function {self.name} was still updating after {self.config.api_retry_s:g} s",
                    at=At("lambda", "deploy", self.name),
                    hint="another change of the function is in progress; the step is retried",
                )
            time.sleep(0.5)

    def wait_active(self, version: str, deadline: float, at: At) -> None:
        while True:
            config = self.client.get_function_configuration(FunctionName=self.name, Qualifier=version)
            if config.get("State") == "Active":
                return
            if config.get("State") == "Failed":
                raise TargetError(f"version {version} of {self.name} failed: {config.get('StateReason')}", at=at)
            if time.monotonic() > deadline:
                raise TargetError(
                    f"version {version} of {self.name} was {config.get('State')} at the timeout",
                    at=at,
                    hint=f"raise {self.stage}.ready_timeout_s",
                )
            time.sleep(0.5)

    # --- changes ------------------------------------------------------------------------------

    def publish(self, release: Release, image: str, wanted: dict[str, Any], tags: dict[str, str]) -> str:
        """Write the release's image and settings to $LATEST (creating the function the first time) and
        publish them as a version; returns its number."""
        deadline = time.monotonic() + self.config.api_retry_s
        arch = [self.config.architecture]
        if self.get() is None:
            self.progress(f"{self.stage}: creating function {self.name} ({image})")
            self.busy(self.client.create_function, FunctionName=self.name, PackageType="Image",
                      Code={"ImageUri": image}, Architectures=arch, Tags=tags, Publish=False, **wanted)  # fmt: skip
        else:
            self.busy(self.client.update_function_code, FunctionName=self.name, ImageUri=image, Architectures=arch)
            self._succeeded(self.wait_updated(deadline), release)
            self.busy(self.client.update_function_configuration, FunctionName=self.name, **wanted)
        latest = self._succeeded(self.wait_updated(deadline), release)
        revision = {"RevisionId": latest["RevisionId"]} if latest.get("RevisionId") else {}  # what was just written
        published = self.busy(self.client.publish_version, FunctionName=self.name, Description=wanted["Description"],
                              **revision)  # fmt: skip
        self.progress(f"{self.stage}: published version {published['Version']} of {self.name}")
        return str(published["Version"])

    def _succeeded(self, config: dict[str, Any], release: Release) -> dict[str, Any]:
        if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
            reason = config.get("LastUpdateStatusReason") or config.get("StateReason") or "no reason given"
            raise TargetError(
                f"release {release.id}: Lambda could not update {self.name}: {reason}",
                at=At("lambda", "deploy", self.name),
                hint="check that the execution role may pull the image (ECR) and that the image exists",
            )
        return config

    def point(self, version: str, before: dict[str, Any] | None, description: str) -> None:
        """The alias at exactly ``version``, its weights emptied (created the first time)."""
        if before is None:
            self.busy(self.client.create_alias, FunctionName=self.name, Name=self.alias, FunctionVersion=version,
                      Description=description)  # fmt: skip
        else:
            self.busy(self.client.update_alias, FunctionName=self.name, Name=self.alias, FunctionVersion=version,
                      RoutingConfig=NO_WEIGHTS)  # fmt: skip

    def split(self, live: str, candidate: str, weight: float) -> None:
        routing = {"AdditionalVersionWeights": {candidate: round(weight, 4)} if weight > 0 else {}}
        self.busy(self.client.update_alias, FunctionName=self.name, Name=self.alias, FunctionVersion=live,
                  RoutingConfig=routing)  # fmt: skip

    def restore(self, before: dict[str, Any] | None) -> None:
        """The alias as it was before a switch that failed (deleted if there was none)."""
        with contextlib.suppress(Exception):
            if before is None:
                self.client.delete_alias(FunctionName=self.name, Name=self.alias)
            else:
                routing = before.get("RoutingConfig") or NO_WEIGHTS
                self.client.update_alias(FunctionName=self.name, Name=self.alias,
                                         FunctionVersion=before["FunctionVersion"], RoutingConfig=routing)  # fmt: skip
            self.progress(f"{self.stage}: the switch failed; alias {self.alias} is as it was")

    def ensure_url(self) -> str:
        """The alias's function URL, created (with its permissions under NONE) the first time."""
        try:
            found = self.client.get_function_url_config(FunctionName=self.name, Qualifier=self.alias)
        except self.missing:
            found = None
        wanted = self.config.url_auth
        if found is not None and found["AuthType"] != wanted:
            raise ConfigError(
                f"the function URL of {self.name}:{self.alias} has AuthType {found['AuthType']}; the spec: {wanted}",
                at=At("lambda", "promote", self.alias),
                hint="switching a live URL would expose it or lock its callers out: tear the stage down first "
                "(slipway teardown --stage ...) or give the stage another function or alias",
            )
        if found is None:
            found = self.busy(self.client.create_function_url_config, FunctionName=self.name, Qualifier=self.alias,
                              AuthType=wanted, InvokeMode="BUFFERED")  # fmt: skip
            if wanted == "NONE":  # public: both actions, as URLs made since October 2025 need
                url_sid, invoke_sid = self.statement_ids()
                grants: list[tuple[str, str, dict[str, Any]]] = [
                    (url_sid, "lambda:InvokeFunctionUrl", {"FunctionUrlAuthType": "NONE"}),
                    (invoke_sid, "lambda:InvokeFunction", {"InvokedViaFunctionUrl": True}),
                ]
                for sid, action, extra in grants:
                    with contextlib.suppress(self.client.exceptions.ResourceConflictException):
                        self.client.add_permission(FunctionName=self.name, Qualifier=self.alias, StatementId=sid,
                                                   Action=action, Principal="*", **extra)  # fmt: skip
        return str(found["FunctionUrl"]).rstrip("/")

    def set_concurrency(self, timeout_s: float) -> None:
        """Reserved concurrency of the function and provisioned concurrency of the alias, as configured;
        returns once the provisioned environments are READY."""
        c = self.config
        if c.reserved_concurrency is not None:
            self.busy(self.client.put_function_concurrency, FunctionName=self.name,
                      ReservedConcurrentExecutions=c.reserved_concurrency)  # fmt: skip
        else:
            with contextlib.suppress(self.missing):
                self.client.delete_function_concurrency(FunctionName=self.name)
        if not c.provisioned_concurrency:
            with contextlib.suppress(
                self.missing, self.client.exceptions.ProvisionedConcurrencyConfigNotFoundException
            ):
                self.client.delete_provisioned_concurrency_config(FunctionName=self.name, Qualifier=self.alias)
            return
        self.busy(self.client.put_provisioned_concurrency_config, FunctionName=self.name, Qualifier=self.alias,
                  ProvisionedConcurrentExecutions=c.provisioned_concurrency)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.client.get_provisioned_concurrency_config(FunctionName=self.name, Qualifier=self.alias)
            if found["Status"] == "READY":
                self.progress(f"{self.stage}: {found['AllocatedProvisionedConcurrentExecutions']} provisioned "
                              f"environment(s) ready on {self.alias}")  # fmt: skip
                return
            if found["Status"] == "FAILED" or time.monotonic() > deadline:
                raise TargetError(
                    f"provisioned concurrency on {self.name}:{self.alias} is {found['Status']}: "
                    f"{found.get('StatusReason', '')}",
                    at=At("lambda", "promote", self.alias),
                    hint="lower provisioned_concurrency, or raise the account's concurrency quota",
                )
            time.sleep(0.5)

    def remove_alias(self) -> None:
        """The alias, its URL, its permissions and its provisioned concurrency."""
        missing = (self.missing, self.client.exceptions.ProvisionedConcurrencyConfigNotFoundException)
        with contextlib.suppress(*missing):
            self.client.delete_provisioned_concurrency_config(FunctionName=self.name, Qualifier=self.alias)
        with contextlib.suppress(self.missing):
            self.client.delete_function_url_config(FunctionName=self.name, Qualifier=self.alias)
        for sid in self.statement_ids():
            with contextlib.suppress(self.missing):
                self.client.remove_permission(FunctionName=self.name, StatementId=sid, Qualifier=self.alias)
        with contextlib.suppress(self.missing):
            self.busy(self.client.delete_alias, FunctionName=self.name, Name=self.alias)

    def delete_version(self, version: str) -> None:
        with contextlib.suppress(self.missing):
            self.busy(self.client.delete_function, FunctionName=self.name, Qualifier=version)

    def delete(self) -> None:
        with contextlib.suppress(self.missing):
            self.busy(self.client.delete_function, FunctionName=self.name)
        self.progress(f"{self.stage}: function {self.name} deleted")


def weights(alias: dict[str, Any]) -> dict[str, float]:
    return dict((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})
