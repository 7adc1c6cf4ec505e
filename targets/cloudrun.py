"""``kind: cloudrun`` — the managed container service pattern on Google Cloud Run (``google-cloud-run``, ``run_v2``).

Each stage is one Cloud Run service (``<service>-<stage>`` unless configured) in its own project and
region; each release is one revision of it, named after the release, running the image by digest
with the spec's CPU, memory, concurrency, timeout, scaling, startup boost, startup probe on the
server's readiness route, service account, env, Secret Manager references and labels
(``targets._cloudrun_objects``). The platform's own rollout does the work:

* ``deploy`` updates the service's template to the new named revision while the traffic stays pinned
  by name to what serves (Cloud Run's no-traffic deploy), plus the candidate at 0 % under its own
  tag; the first release creates the service. The long-running operation is started, not awaited.
* ``wait_ready`` follows that operation to its end, with progress; a revision that fails is reported
  with Cloud Run's reason and the container's last lines from Cloud Logging. The candidate's
  endpoint is its tag's URL, where the gate runs.
* ``shift`` splits the traffic between the live and the candidate revision, by percent and by name;
  ``promote`` pins 100 % to exactly the candidate revision (never "latest") and drops its tag; the
  previous revision stays (Cloud Run keeps revisions, with no instance and no cost at 0 %), so a
  rollback is a traffic change back to it by name.
* ``discard`` gives a candidate's tag and share back and deletes its revision; ``teardown`` deletes
  the service and the API-key secret. Revisions Slipway did not create (no ``managed-by: slipway``
  label) are never deleted and their tags are kept; a service that has some is not deleted by
  ``teardown``: its traffic goes back to the newest of them.

Authentication (``auth``): ``iam`` (default) — Cloud Run checks a Google-signed ID token and the
caller's ``roles/run.invoker`` on every request at its edge, so the server runs with SLIPWAY_AUTH=none
and callers (the gate, ``status``) send an ID token for the service's URL; ``api_key`` — the service
is public (``allUsers`` invoker) and the server checks Slipway's key, which it reads from a Secret
Manager secret (never a plain env value). A live service is never switched between the two.
"""

from __future__ import annotations

import contextlib
import time
from functools import cached_property
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.operation import Operation
from google.api_core.retry import Retry, if_exception_type
from google.cloud import run_v2

from slipway.costs import Usage
from slipway.errors import At, ConfigError, TargetError
from slipway.http import answers
from slipway.release import Auth, AuthScheme, Endpoint, Release
from slipway.spec import CloudRunTarget as CloudRunConfig
from slipway.spec import Timeouts
from targets import _cloudrun_objects as obj
from targets._cloudrun_support import ApiKeySecret, set_invoker
from targets.base import IMAGE, Capabilities, Change, Deployment, Facts, StageStatus, TargetContext, put_live
from targets.gcp import credentials, follow, google_errors, log_tail

ROLES = "roles/run.developer and roles/iam.serviceAccountUser (api_key: roles/secretmanager.admin too)"
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
_FAILED = run_v2.Condition.State.CONDITION_FAILED


class CloudRunServiceTarget:
    kind = "cloudrun"
    capabilities = Capabilities(artifacts=IMAGE, traffic_split=True, stable_endpoint=True)

    def __init__(self, config: CloudRunConfig, ctx: TargetContext) -> None:
        if config.auth == "api_key" and not ctx.requires_auth:
            raise ConfigError(
                f"{ctx.stage.value}.auth is api_key but the spec's auth.mode is none",
                hint="set auth.mode: api_key, or the stage's auth: iam",
            )
        self.config = config
        self.ctx = ctx
        self.stage = ctx.stage
        self.service_id = obj.service_id(config, ctx)
        self.parent = f"projects/{config.project}/locations/{config.region}"
        self.name = f"{self.parent}/services/{self.service_id}"
        self.location = f"cloudrun {config.project}/{config.region} service {self.service_id}"
        # how callers authenticate: an ID token under IAM; Slipway's key (or nothing) on a public service
        self.auth_mode = config.auth if ctx.requires_auth else "none"
        self._operations: dict[str, Operation] = {}  # revision → the operation deploy started
        # throttled (429) or busy (503) calls are retried with backoff for api_retry_s, then fail
        self._retry = Retry(
            predicate=if_exception_type(gexc.TooManyRequests, gexc.ServiceUnavailable),
            initial=0.5, maximum=4.0, multiplier=2.0, timeout=config.api_retry_s,
        )  # fmt: skip

    # --- clients ----------------------------------------------------------------------------

    @cached_property
    def _credentials(self) -> Any:
        return credentials(self.config.credentials, at=At(self.kind, "credentials", self.config.credentials or "ADC"))

    def _options(self, endpoint: str) -> ClientOptions | None:
        return ClientOptions(api_endpoint=endpoint) if endpoint else None

    @cached_property
    def services(self) -> run_v2.ServicesClient:
        return run_v2.ServicesClient(
            credentials=self._credentials[0], transport="rest", client_options=self._options(self.config.api_endpoint)
        )

    @cached_property
    def revisions(self) -> run_v2.RevisionsClient:
        return run_v2.RevisionsClient(
            credentials=self._credentials[0], transport="rest", client_options=self._options(self.config.api_endpoint)
        )

    @cached_property
    def api_key_secret(self) -> ApiKeySecret:
        name = obj.API_KEY_SECRET.format(service=self.service_id)
        return ApiKeySecret(self.config.project, name, self._credentials[0], self.config.secret_manager_endpoint)

    # --- lifecycle --------------------------------------------------------------------------

    def deploy(self, release: Release) -> Deployment:
        release.require_image()
        revision = obj.revision_name(self.service_id, release.id)
        tag = obj.candidate_tag(revision)
        with self._api("deploy", self.name):
            key_ref = self._api_key_ref()
            template = obj.template(self.config, self.ctx, release, revision, api_key_ref=key_ref)
            current = self._service()
            if current is None:
                service = run_v2.Service(
                    template=template,
                    traffic=[obj.to(revision, 100, tag)],
                    ingress=obj.INGRESS[self.config.ingress],
                    labels=obj.service_labels(self.config, self.ctx, self.auth_mode),
                    description=f"Slipway: {self.ctx.service} {self.stage.value}",
                )
                operation = self.services.create_service(
                    parent=self.parent, service=service, service_id=self.service_id, retry=self._retry
                )
                self.ctx.progress(f"{self.stage.value}: creating service {self.service_id} with revision {revision}")
            else:
                self._check_auth_mode(current)
                # what serves stays as it is, pinned by name; a candidate tag left by an earlier run goes
                traffic = [t for t in obj.pinned(current) if t.percent or not t.tag.startswith(obj.CANDIDATE_TAG)]
                current.template = template
                current.traffic = [*traffic, obj.to(revision, 0, tag)]
                current.labels = {**current.labels, **obj.service_labels(self.config, self.ctx, self.auth_mode)}
                operation = self.services.update_service(service=current, retry=self._retry)
                self.ctx.progress(f"{self.stage.value}: revision {revision} deployed with no traffic, tag {tag}")
            set_invoker(self.services, self.name, public=self.auth_mode != "iam", retry=self._retry)
        self._operations[revision] = operation
        handle = {"service": self.name, "revision": revision, "tag": tag}
        return Deployment(release, self.stage, Endpoint("", self._auth("")), handle)

    def wait_ready(self, deployment: Deployment, timeout_s: float) -> Deployment:
        revision, tag = deployment.handle["revision"], deployment.handle["tag"]
        at = At(self.kind, "wait_ready", revision)
        operation = self._operations.pop(revision, None)
        deadline = time.monotonic() + timeout_s
        try:
            with self._api("wait_ready", revision):
                if operation is not None:
                    self._wait(operation, "wait_ready", timeout_s)
                else:
                    self._wait_revision(revision, deadline, at)
        except Exception as exc:
            rid, failure = deployment.release.id, self._revision_failure(revision)
            if failure:
                hint = "read the container's output above; fix and deploy again"
                raise TargetError(f"release {rid}: {failure}", at=at, hint=hint) from exc
            if time.monotonic() >= deadline:
                hint = f"raise {self.stage.value}.ready_timeout_s if the model loads slowly"
                raise TargetError(f"release {rid} was not ready after {timeout_s:.0f} s (revision {revision})", at=at,
                                  hint=hint) from exc  # fmt: skip
            raise
        with self._api("wait_ready", self.name):
            service = self.services.get_service(name=self.name, retry=self._retry)
        url = next((s.uri for s in service.traffic_statuses if s.tag == tag and s.uri), "")
        if not url:
            raise TargetError(
                f"the tag {tag} of revision {revision} has no URL",
                at=at,
                hint="Cloud Run did not route the tag; run `slipway status` and deploy again",
            )
        endpoint = Endpoint(url, self._auth(service.uri))
        while not answers(endpoint, endpoint.routes.ready, api_key=self.ctx.api_key, timeout_s=5):
            if time.monotonic() > deadline:
                raise TargetError(
                    f"release {deployment.release.id}: {url}{endpoint.routes.ready} did not answer",
                    at=at,
                    hint="check the service's ingress setting and the caller's invoker role",
                )
            time.sleep(0.5)
        return Deployment(deployment.release, self.stage, endpoint, {**deployment.handle, "url": url})

    def shift(self, deployment: Deployment, weight: float) -> None:
        if not 0 <= weight <= 1:
            raise ConfigError(
                f"a traffic weight is between 0 and 1, not {weight}", at=At(self.kind, "shift", self.name)
            )
        revision, tag = deployment.handle["revision"], deployment.handle["tag"]
        percent = 0 if weight == 0 else min(100, max(1, round(weight * 100)))
        with self._api("shift", self.name):
            service = self._service()
            live = service.annotations.get(obj.LIVE_REVISION) if service else None
            if service is None or not live or live == revision:
                raise ConfigError(
                    f"nothing else is live on {self.stage.value} to split traffic with",
                    at=At(self.kind, "shift", self.name),
                    hint="promote the first release all at once",
                )
            kept = obj.tags_kept(list(service.traffic), drop=frozenset({tag}))
            service.traffic = [obj.to(live, 100 - percent), obj.to(revision, percent, tag), *kept]
            self._update(service, "shift", self.config.promote_timeout_s)
        self.ctx.progress(f"{self.stage.value}: {percent}% of requests to revision {revision}, the rest to {live}")

    def promote(self, deployment: Deployment, timeout_s: float) -> Deployment:
        revision = deployment.handle["revision"]
        return self._switch(deployment.release, revision, frozenset({deployment.handle["tag"]}), timeout_s, "promote")

    def discard(self, deployment: Deployment) -> None:
        revision, tag = deployment.handle["revision"], deployment.handle["tag"]
        self._operations.pop(revision, None)
        with self._api("discard", revision):
            service = self._service()
            if service is None or service.annotations.get(obj.LIVE_REVISION) == revision:
                return  # nothing to discard, or it went live: not a candidate any more
            rest = [t for t in service.traffic if t.revision != revision and t.tag != tag]
            if not any(t.percent for t in rest):  # the service's first candidate: nothing else ever served
                if not self._foreign_revisions():
                    self._wait(
                        self.services.delete_service(name=self.name, retry=self._retry),
                        "discard",
                        self.config.promote_timeout_s,
                    )
                    return
            else:
                live = service.annotations.get(obj.LIVE_REVISION)
                share = [obj.to(live, 100)] if live else [t for t in rest if t.percent]
                service.traffic = [*share, *obj.tags_kept(rest)]
                self._update(service, "discard", self.config.promote_timeout_s)
            self._delete_revision(revision)
        self.ctx.progress(f"{self.stage.value}: candidate revision {revision} removed")

    def rollback(self, release: Release, timeouts: Timeouts) -> Deployment:
        revision = obj.revision_name(self.service_id, release.id)
        with self._api("rollback", revision):
            kept = self._revision(revision)
        ready = kept is not None and any(c.type_ == "Ready" and c.state == _SUCCEEDED for c in kept.conditions)
        if ready:  # retained by Cloud Run: a traffic change back to it, by name
            return self._switch(release, revision, frozenset(), timeouts.promote_s, "rollback")
        return put_live(self, release, timeouts)

    def endpoint(self) -> Endpoint | None:
        with self._api("describe", self.name):
            service = self._service()
        if service is None or not service.annotations.get(obj.LIVE_REVISION):
            return None
        return Endpoint(service.uri, self._auth(service.uri))

    def teardown(self) -> None:
        self._operations.clear()
        with self._api("teardown", self.name):
            service = self._service()
            if service is not None:
                foreign = self._foreign_revisions()
                if foreign:  # someone else's revisions: the service stays, serving the newest of them
                    newest = max(foreign, key=lambda r: r.create_time.timestamp())
                    service.traffic = [
                        obj.to(_short(newest.name), 100),
                        *obj.tags_kept(list(service.traffic), drop_candidates=True),
                    ]
                    for key in (obj.LIVE_REVISION, obj.LIVE_RELEASE):
                        service.annotations.pop(key, None)
                    self._update(service, "teardown", self.config.promote_timeout_s)
                    for rev in self._revisions_of():
                        if rev.labels.get(obj.MANAGED[0]) == obj.MANAGED[1]:
                            self._delete_revision(_short(rev.name))
                    self.ctx.progress(
                        f"{self.stage.value}: service {self.service_id} serves {_short(newest.name)} "
                        "(not Slipway's) again; Slipway's revisions removed"
                    )
                else:
                    self._wait(
                        self.services.delete_service(name=self.name, retry=self._retry),
                        "teardown",
                        self.config.promote_timeout_s,
                    )
            if self.auth_mode == "api_key":
                self.api_key_secret.delete()

    def describe(self) -> StageStatus:
        with self._api("describe", self.name):
            service = self._service()
        live = service.annotations.get(obj.LIVE_REVISION) if service else None
        if service is None or not live:
            return StageStatus(self.stage, self.kind, None, None, healthy=False, detail="nothing deployed")
        endpoint = Endpoint(service.uri, self._auth(service.uri))
        split = ", ".join(f"{s.revision or 'latest'} {s.percent}%" for s in service.traffic_statuses if s.percent)
        condition = service.terminal_condition
        detail = f"service {self.service_id}, revision {live}; traffic: {split}"
        if condition.state != _SUCCEEDED and condition.message:
            detail += f"; {condition.type_}: {condition.message}"
        healthy = answers(endpoint, endpoint.routes.health, api_key=self.ctx.api_key, timeout_s=5)
        return StageStatus(self.stage, self.kind, service.annotations.get(obj.LIVE_RELEASE), endpoint, healthy, detail)

    def facts(self) -> Facts:
        c = self.config
        cpu = float(c.cpu[:-1]) / 1000 if c.cpu.endswith("m") else float(c.cpu)
        gib = float(c.memory[:-2]) / (1024 if c.memory.endswith("Mi") else 1)
        scaling = f"Cloud Run: {c.min_instances}-{c.max_instances} instances, {c.concurrency} requests each"
        # request-based billing (cpu_idle): per request at most its duration on one instance; min instances all hours
        always = {
            "cloudrun.vcpu_second": cpu * c.min_instances * 3600,
            "cloudrun.gib_second": gib * c.min_instances * 3600,
        }
        usage = Usage(hourly={k: v for k, v in always.items() if v}, per_request={"cloudrun.request": 1.0},
                      per_request_second={"cloudrun.vcpu_second": cpu, "cloudrun.gib_second": gib})  # fmt: skip
        at_rest = ("images in Artifact Registry (Google-managed encryption)",) + (
            ("the API key in Secret Manager (Google-managed encryption)",) if self.auth_mode == "api_key" else ()
        )
        monitoring = ("startup probe on the readiness route", "/metrics", "Cloud Monitoring metrics, Cloud Logging")
        return Facts(
            c.min_instances,
            c.max_instances,
            scaling,
            True,
            3,
            False,
            monitoring,
            tls=True,
            public=c.ingress == "all",
            at_rest=at_rest,
            usage=usage,
        )  # fmt: skip  (regional: over the zones)

    def changes(self) -> list[Change]:
        """What exists and what is left alone: the service, and revisions Slipway did not create."""
        revision = f"revision {self.service_id}-<release>"
        with self._api("plan", self.name):
            service = self._service()
            if service is None:
                return [Change("create", f"service {self.service_id}", f"{self.auth_mode} auth"),
                        Change("create", revision, "the image by digest; traffic pinned to it by name")]  # fmt: skip
            foreign = sorted(_short(r.name) for r in self._foreign_revisions())
        out = [Change("create", revision, "at 0 % under a tag, checked, then the traffic pinned to it by name"),
               Change("change", f"service {self.service_id}", "traffic, by revision name; the previous revision is "
                      "kept for rollback")]  # fmt: skip
        if foreign:
            out.append(Change("change", f"service {self.service_id}", f"{len(foreign)} revision(s) Slipway did not "
                              f"create are left as they are: {', '.join(foreign[:5])}"))  # fmt: skip
        return out

    # --- helpers ----------------------------------------------------------------------------

    def _api(self, operation: str, resource: str) -> contextlib.AbstractContextManager[None]:
        return google_errors(At(self.kind, operation, resource), ROLES)

    def _auth(self, service_url: str) -> Auth:
        if self.auth_mode == "iam":
            return Auth(AuthScheme.GOOGLE_ID_TOKEN, audience=service_url)
        return self.ctx.auth

    def _service(self) -> run_v2.Service | None:
        try:
            return self.services.get_service(name=self.name, retry=self._retry)
        except gexc.NotFound:
            return None

    def _revision(self, revision: str) -> run_v2.Revision | None:
        try:
            return self.revisions.get_revision(name=f"{self.name}/revisions/{revision}", retry=self._retry)
        except gexc.NotFound:
            return None

    def _revisions_of(self) -> list[run_v2.Revision]:
        return list(self.revisions.list_revisions(parent=self.name, retry=self._retry))

    def _foreign_revisions(self) -> list[run_v2.Revision]:
        return [r for r in self._revisions_of() if r.labels.get(obj.MANAGED[0]) != obj.MANAGED[1]]

    def _update(self, service: run_v2.Service, operation: str, timeout_s: float) -> run_v2.Service:
        """Update the whole service (its etag: a change made since it was read is refused) and follow the operation."""
        result: run_v2.Service = self._wait(
            self.services.update_service(service=service, retry=self._retry), operation, timeout_s
        )
        return result

    def _wait(self, operation: Operation, name: str, timeout_s: float) -> Any:
        return follow(
            operation,
            retry=self._retry,
            timeout_s=timeout_s,
            at=At(self.kind, name, self.name),
            progress=self.ctx.progress,
            describe=obj.conditions,
        )

    def _switch(self, release: Release, revision: str, drop: frozenset[str], timeout_s: float, op: str) -> Deployment:
        """Pin 100 % of the traffic to ``revision`` by name, the one switch; if it fails, put the traffic back."""
        with self._api(op, revision):
            service = self._service()
            if service is None:
                raise TargetError(
                    f"service {self.service_id} does not exist",
                    at=At(self.kind, op, self.name),
                    hint="deploy again: the service was deleted since the candidate started",
                )
            before = (list(service.traffic), dict(service.annotations))
            service.traffic = [obj.to(revision, 100), *obj.tags_kept(list(service.traffic), drop=drop)]
            service.annotations = {**service.annotations, obj.LIVE_REVISION: revision, obj.LIVE_RELEASE: release.id}
            try:
                updated = self._update(service, op, timeout_s)
            except BaseException:
                self._restore(before)
                raise
        self.ctx.progress(f"{self.stage.value}: 100% of requests to revision {revision} (release {release.id})")
        endpoint = Endpoint(updated.uri, self._auth(updated.uri))
        return Deployment(release, self.stage, endpoint, {"service": self.name, "revision": revision, "tag": ""})

    def _restore(self, before: tuple[list[run_v2.TrafficTarget], dict[str, str]]) -> None:
        with contextlib.suppress(Exception):
            service = self.services.get_service(name=self.name, retry=self._retry)
            service.traffic, service.annotations = before
            self._update(service, "promote", self.config.promote_timeout_s)
            self.ctx.progress(f"{self.stage.value}: the switch failed; the traffic is as it was")

    def _delete_revision(self, revision: str) -> None:
        try:
            self._wait(
                self.revisions.delete_revision(name=f"{self.name}/revisions/{revision}", retry=self._retry),
                "discard",
                self.config.promote_timeout_s,
            )
        except gexc.NotFound:
            pass
        except gexc.FailedPrecondition as exc:  # Cloud Run refused (e.g. the latest created): no traffic, no cost
            self.ctx.progress(f"{self.stage.value}: revision {revision} kept, with no traffic ({exc.message})")

    def _wait_revision(self, revision: str, deadline: float, at: At) -> None:
        while True:
            found = self._revision(revision)
            ready = next((c for c in found.conditions if c.type_ == "Ready"), None) if found else None
            if ready is not None and ready.state == _SUCCEEDED:
                return
            if ready is not None and ready.state == _FAILED:
                raise TargetError(ready.message, at=at)
            if time.monotonic() > deadline:
                raise TargetError(f"revision {revision} was not done after the timeout", at=at)
            time.sleep(0.5)

    def _revision_failure(self, revision: str) -> str:
        """Why a revision failed (Cloud Run's Ready condition) and its container's last lines, '' if it did not."""
        try:
            found = self._revision(revision)
        except Exception:
            return ""
        ready = next((c for c in found.conditions if c.type_ == "Ready"), None) if found else None
        if ready is None or ready.state != _FAILED:
            return ""
        log_filter = (
            f'resource.type="cloud_run_revision" AND resource.labels.service_name="{self.service_id}" '
            f'AND resource.labels.revision_name="{revision}"'
        )
        tail = log_tail(self.config.project, self._credentials[0], self.config.logging_endpoint, log_filter)
        return f"revision {revision} failed: {ready.message}\n{tail}"

    def _api_key_ref(self) -> tuple[str, str] | None:
        """The Secret Manager secret and version of Slipway's key (``auth: api_key``), created or updated."""
        key = self.ctx.key_for_deploy()
        if self.auth_mode != "api_key" or key is None:
            return None
        return self.api_key_secret.put(key, self.config.service_account)

    def _check_auth_mode(self, service: run_v2.Service) -> None:
        was = service.labels.get(obj.AUTH_LABEL)
        if was and was != self.auth_mode:
            raise ConfigError(
                f"service {self.service_id} serves with auth {was}; this spec asks for {self.auth_mode}",
                at=At(self.kind, "deploy", self.name),
                hint="switching a live service would expose it or lock its callers out: tear the stage down first "
                "(slipway teardown --stage ...) or give the stage another service name",
            )


def _short(name: str) -> str:
    return name.rpartition("/")[2]
