"""A Cloud Run emulator for the tests: the Admin API v2 over REST, as the unchanged ``run_v2`` client speaks
it, Secret Manager v1 and Cloud Logging v2 as far as the target uses them, Google's token endpoint, and a
data plane that really runs each revision's image (``tests/targets/cloudrun/dataplane.py``).

There is no official emulator (googleapis/google-cloud-python#12138). This one follows the v2 REST
reference: camelCase JSON through the ``run_v2`` messages themselves (int enums when the client asks
with ``$alt=json;enum-encoding=int``, proto3 defaults omitted), long-running operations polled by name
(``done``, ``metadata``, ``response`` / ``error``), Google error bodies
(``{"error": {"code", "message", "status", "details"}}`` with ``ErrorInfo`` and ``BadRequest``
details), etags (a stale one is 409 ABORTED), ``generation`` / ``observedGeneration``,
``reconciling``, ``conditions``, ``terminalCondition``, ``latestReadyRevision``, and
``trafficStatuses`` with each tag's ``uri``.

* Every call is authenticated (a token of ``identity.Issuer``) and authorized by the project's IAM
  policy (``identity.ROLES``); an unknown project is a 403 (as Google answers: it may not exist), an
  unknown region a 404.
* A create or update starts a reconciliation: the template's new revision is started on the data
  plane and probed, the revisions the traffic names get instances, then the routers take the traffic
  and the operation is done; a revision that fails leaves the routing as it was and the operation
  ends with FAILED_PRECONDITION and Cloud Run's message.
* Faults are properties tests set: ``fail(status, ...)`` answers matching calls with an error (once,
  N times, or always); ``before(method, path, fn)`` runs ``fn`` just before a matching call (a hand
  edit between a read and a write); ``revoke`` takes a role away.

What it does not reproduce is listed in docs/targets/cloudrun.md.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.cloud import run_v2, secretmanager
from google.protobuf import timestamp_pb2

from tests.targets.cloudrun.dataplane import DataPlane, Route, now_rfc3339
from tests.targets.cloudrun.identity import DEPLOYER_ROLES, Issuer, grants
from tests.targets.google_api import ApiError, denied, etag, invalid
from tests.targets.vertex.emulator import NOT_MINE, VertexAI

S = run_v2.Condition.State
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_SERVICE_ID = re.compile(r"^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$")
_TAG = re.compile(r"^[a-z]([a-z0-9-]{0,44}[a-z0-9])?$")
_RUN = "type.googleapis.com/google.cloud.run.v2."


@dataclass
class Fault:
    code: int
    status: str
    message: str
    method: str = ""
    path: str = ""
    times: int | None = 1  # None: always
    hits: int = 0


@dataclass
class Project:
    id: str
    number: str
    regions: set[str]
    policy: dict[str, set[str]] = field(default_factory=dict)  # role → members


@dataclass
class Operation:
    name: str
    kind: str  # "Service" or "Revision": the type of metadata and response
    metadata: Any
    done: bool = False
    response: Any = None
    error: ApiError | None = None


class CloudRunEmulator:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.id = secrets.token_hex(3)
        self.issuer = Issuer()
        self.plane = DataPlane(self.id, self._secret_value)
        self.vertex = VertexAI(self)  # Vertex AI on the same port, identities and IAM policies
        self.lock = threading.RLock()
        self.projects: dict[str, Project] = {}
        self.services: dict[str, run_v2.Service] = {}
        self.service_policies: dict[str, dict[str, set[str]]] = {}
        self.revisions: dict[str, run_v2.Revision] = {}
        self.templates: dict[str, str] = {}  # revision → the template it was made from (JSON)
        self.operations: dict[str, Operation] = {}
        self.secrets: dict[str, dict[str, Any]] = {}  # name → {"secret", "versions": [bytes], "policy"}
        self.faults: list[Fault] = []
        self.hooks: list[tuple[str, str, Callable[[], None]]] = []
        self.calls: list[tuple[str, str]] = []
        self.baseline: dict[str, dict[str, set[str]]] = {}  # projects' policies, as tests restore them
        self._reconcile_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()

    # --- lifecycle of the emulator ----------------------------------------------------------

    def start(self, port: int = 0) -> CloudRunEmulator:
        emulator = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                emulator._handle(self)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer.token_uri = f"{self.url}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._reaper, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.vertex.close()
        self.plane.close()

    def _reaper(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):
                self.plane.reap()

    # --- what tests set ---------------------------------------------------------------------

    def add_project(
        self, project: str, regions: tuple[str, ...] = ("europe-west1", "europe-west4", "us-central1")
    ) -> Project:
        with self.lock:
            number = str(100000000000 + len(self.projects) * 7919 + 1)
            self.projects[project] = Project(project, number, set(regions))
            return self.projects[project]

    def deployer(self, project: str, path: Path, email: str = "", roles: tuple[str, ...] = DEPLOYER_ROLES) -> Path:
        """A service-account key file for an identity holding ``roles`` on ``project`` (the deployer)."""
        email = email or f"slipway-deployer@{project}.iam.gserviceaccount.com"
        for role in roles:
            self.projects[project].policy.setdefault(role, set()).add(f"serviceAccount:{email}")
        return self.issuer.service_account_file(path, email, project)

    def revoke(self, project: str, role: str, member: str = "") -> None:
        with self.lock:
            members = self.projects[project].policy.get(role, set())
            if member:
                members.discard(member)
            else:
                members.clear()

    def fail(
        self, code: int, status: str, message: str, *, method: str = "", path: str = "", times: int | None = 1
    ) -> Fault:
        fault = Fault(code, status, message, method, path, times)
        self.faults.append(fault)
        return fault

    def before(self, method: str, path: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` once, just before the next call whose method and path match."""
        self.hooks.append((method, path, fn))

    def edit_service(self, name: str, edit: Callable[[run_v2.Service], None]) -> None:
        """A change made by someone else (the console, gcloud): the service's etag changes."""
        with self.lock:
            service = self.services[name]
            edit(service)
            service.etag = etag()
            service.generation += 1

    def resources(self) -> dict[str, list[str]]:
        """Everything the emulator holds: services, revisions, secrets, operations in progress, containers."""
        with self.lock:
            return {
                "services": sorted(self.services),
                "revisions": sorted(self.revisions),
                "secrets": sorted(self.secrets),
                "routers": sorted(self.plane.routers),
                "pending_operations": sorted(n for n, o in self.operations.items() if not o.done),
                "containers": sorted(self.plane.containers()),
            }

    # --- HTTP ------------------------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        path, query = urllib.parse.unquote(url.path), dict(urllib.parse.parse_qsl(url.query))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        ints = "enum-encoding=int" in query.get("$alt", "")
        try:
            self.calls.append((h.command, path))
            if path == "/emulator/health":
                return _send(h, 200, {"ok": True, "projects": sorted(self.projects)})
            if path == "/token" and h.command == "POST":
                status, payload = self.issuer.grant(dict(urllib.parse.parse_qsl(raw.decode())))
                return _send(h, status, payload)
            for i, (method, part, fn) in enumerate(list(self.hooks)):
                if method == h.command and part in path:
                    self.hooks.pop(i)
                    fn()
                    break
            for fault in self.faults:
                if (
                    (fault.times is None or fault.hits < fault.times)
                    and fault.method in ("", h.command)
                    and fault.path in path
                ):
                    fault.hits += 1
                    raise ApiError(fault.code, fault.status, fault.message)
            caller = self.issuer.caller(h.headers.get("Authorization", ""))
            if caller is None:
                raise ApiError(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected "
                    "OAuth 2 access token, login cookie or other valid authentication credential.",
                )
            body = json.loads(raw) if raw else {}
            result = self._dispatch(h.command, path, query, body, caller)
            _send(h, 200, _to_json(result, ints))
        except ApiError as exc:
            _send(h, exc.code, exc.body())

    def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any, caller: str) -> Any:
        if path == "/v2/entries:list" and method == "POST":
            return self._list_entries(body, caller)
        if (answer := self.vertex.dispatch(method, path, query, body, caller)) is not NOT_MINE:
            return answer
        if m := re.fullmatch(r"/v1/projects/([^/]+)/secrets(?:/([^/:]+))?(?:/versions/([^/:]+))?(?::(\w+))?", path):
            return self._secrets(method, m.group(1), m.group(2), m.group(3), m.group(4), query, body, caller)
        m = re.fullmatch(
            r"/v2/projects/([^/]+)/locations/([^/]+)/(services|operations)(?:/([^/:]+))?"
            r"(?:/revisions(?:/([^/:]+))?)?(?::(\w+))?",
            path,
        )
        if m is None:
            raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")
        project, region, collection, item, revision, verb = m.groups()
        parent = f"projects/{project}/locations/{region}"
        if collection == "operations":
            self._require(caller, project, "run.operations.get", f"{parent}/operations/{item}", region)
            return self._operation(f"{parent}/operations/{item}")
        name = f"{parent}/services/{item}" if item else ""
        if revision is not None or path.endswith("/revisions"):
            return self._revisions(method, name, revision, caller, project, region)
        match (method, item, verb):
            case ("POST", None, None):
                self._require(
                    caller, project, "run.services.create", f"{parent}/services/{query.get('serviceId')}", region
                )
                return self._create(parent, query.get("serviceId", ""), body, caller, project)
            case ("GET", None, None):
                self._require(caller, project, "run.services.list", parent, region)
                with self.lock:
                    return {"services": [s for n, s in sorted(self.services.items()) if n.startswith(parent + "/")]}
            case ("GET", _, None):
                self._require(caller, project, "run.services.get", name, region)
                return self._service(name)
            case ("PATCH", _, None):
                self._require(caller, project, "run.services.update", name, region)
                return self._update(name, body, caller, project, query.get("allowMissing") == "true")
            case ("DELETE", _, None):
                self._require(caller, project, "run.services.delete", name, region)
                return self._delete(name, query.get("etag", ""))
            case ("GET", _, "getIamPolicy"):
                self._require(caller, project, "run.services.getIamPolicy", name, region)
                self._service(name)
                return _policy_json(self.service_policies.get(name, {}))
            case ("POST", _, "setIamPolicy"):
                self._require(caller, project, "run.services.setIamPolicy", name, region)
                self._service(name)
                return self._set_policy(self.service_policies, name, body)
        raise ApiError(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _require(self, caller: str, project: str, permission: str, resource: str, region: str = "") -> None:
        with self.lock:
            known = self.projects.get(project)
            roles = {
                r
                for r, members in (known.policy if known else {}).items()
                if f"serviceAccount:{caller}" in members or f"user:{caller}" in members
            }
        if known is None or not grants(roles, permission):
            raise denied(permission, resource)
        if region and region not in known.regions:
            raise ApiError(404, "NOT_FOUND", f"Location '{region}' is not found or access is unauthorized.")

    # --- services -----------------------------------------------------------------------------

    def _service(self, name: str) -> run_v2.Service:
        with self.lock:
            found = self.services.get(name)
            if found is None:
                parts = name.split("/")
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"Resource '{parts[-1]}' of kind 'SERVICE' in region '{parts[3]}' "
                    f"in project '{parts[1]}' does not exist.",
                )
            return run_v2.Service(found)  # a copy

    def _create(self, parent: str, service_id: str, body: Any, caller: str, project: str) -> Operation:
        if not _SERVICE_ID.fullmatch(service_id):
            raise invalid("service_id", f"service_id '{service_id}' must be a DNS label of at most 49 characters")
        name = f"{parent}/services/{service_id}"
        service = run_v2.Service.from_json(json.dumps(body), ignore_unknown_fields=True)
        with self.lock:
            if name in self.services:
                raise ApiError(409, "ALREADY_EXISTS", f"Resource '{service_id}' already exists.")
            service.name, service.uid, service.generation = name, str(uuid.uuid4()), 1
            service.create_time = service.update_time = _now()
            service.creator = service.last_modifier = caller
            if not service.traffic:
                service.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100)]
            router = self.plane.router(name, self._edge)
            service.uri = router.url
            service.urls = [router.url]
            new = self._admit(service, None, caller, project)
            self.services[name] = service
            self.service_policies[name] = {}
            return self._start_reconcile(service, new)

    def _update(self, name: str, body: Any, caller: str, project: str, allow_missing: bool) -> Operation:
        incoming = run_v2.Service.from_json(json.dumps(body), ignore_unknown_fields=True)
        with self.lock:
            current = self.services.get(name)
            if current is None:
                if allow_missing:
                    return self._create(
                        name.rpartition("/services/")[0], name.rpartition("/")[2], body, caller, project
                    )
                self._service(name)
            assert current is not None
            if incoming.etag and incoming.etag != current.etag:
                raise ApiError(
                    409,
                    "ABORTED",
                    f"Resource '{name.rpartition('/')[2]}' has been modified. Please "
                    "apply your changes to the latest version and try again.",
                )
            for f in (
                "name",
                "uid",
                "create_time",
                "creator",
                "uri",
                "urls",
                "latest_ready_revision",
                "latest_created_revision",
                "traffic_statuses",
                "observed_generation",
                "conditions",
                "terminal_condition",
            ):  # output only
                setattr(incoming, f, getattr(current, f))
            if not incoming.traffic:
                incoming.traffic = [run_v2.TrafficTarget(type_=LATEST, percent=100)]
            incoming.generation = current.generation + 1
            incoming.update_time, incoming.last_modifier = _now(), caller
            new = self._admit(incoming, current, caller, project)
            self.services[name] = incoming
            return self._start_reconcile(incoming, new)

    def _admit(self, service: run_v2.Service, current: run_v2.Service | None, caller: str, project: str) -> str:
        """Validate the template and the traffic; make the template's revision if it is new. Returns its
        name if it is new, else ''. Called under the lock."""
        service_id = service.name.rpartition("/")[2]
        template = service.template
        if not template.containers or not template.containers[0].image:
            raise invalid("service.template.containers[0].image", "An image is required")
        if template.service_account:
            self._require(
                caller, project, "iam.serviceAccounts.actAs", f"projects/-/serviceAccounts/{template.service_account}"
            )
        as_json = run_v2.RevisionTemplate.to_json(template, sort_keys=True)
        previous = current.latest_created_revision.rpartition("/")[2] if current else ""
        rev_id = template.revision
        if not rev_id:
            if previous and self.templates.get(f"{service.name}/revisions/{previous}") == as_json:
                rev_id = previous
            else:
                rev_id = f"{service_id}-{service.generation:05d}-{secrets.token_hex(2)[:3]}"
        if not rev_id.startswith(service_id + "-"):
            raise invalid(
                "service.template.revision",
                f"Revision name '{rev_id}' must be prefixed by the name of "
                f"the enclosing Service '{service_id}' followed by a hyphen",
            )
        full = f"{service.name}/revisions/{rev_id}"
        new = full not in self.revisions
        if not new and self.templates.get(full) != as_json:
            raise ApiError(
                409, "ALREADY_EXISTS", f"Revision named '{rev_id}' with different configuration already exists."
            )
        known = {n.rpartition("/")[2] for n in self.revisions if n.startswith(service.name + "/")} | {rev_id}
        tags, total = set(), 0
        for t in service.traffic:
            if t.type_ == REVISION and t.revision not in known:
                raise invalid("service.traffic", f"Revision '{t.revision}' referenced in traffic not found")
            if t.tag:
                if not _TAG.fullmatch(t.tag) or t.tag in tags:
                    raise invalid("service.traffic.tag", f"Tag '{t.tag}' is invalid or repeated")
                tags.add(t.tag)
            total += t.percent
        if total != 100:
            raise invalid("service.traffic", f"Traffic percents must add up to 100, not {total}")
        if new:
            rev = run_v2.Revision(
                name=full,
                uid=str(uuid.uuid4()),
                generation=1,
                labels=dict(template.labels),
                annotations=dict(template.annotations),
                service=service.name,
                scaling=template.scaling,
                containers=template.containers,
                timeout=template.timeout,
                service_account=template.service_account
                or f"{self.projects[project].number}-compute@developer.gserviceaccount.com",
                max_instance_request_concurrency=template.max_instance_request_concurrency or 80,
                create_time=_now(),
                reconciling=True,
                etag=etag(),
                conditions=[run_v2.Condition(type_="Ready", state=S.CONDITION_RECONCILING)],
                log_uri=f"https://console.cloud.google.com/logs/viewer?project={project}",
            )
            self.revisions[full] = rev
            self.templates[full] = as_json
        service.latest_created_revision = full
        service.reconciling = True
        service.etag = etag()
        service.terminal_condition = run_v2.Condition(type_="Ready", state=S.CONDITION_RECONCILING)
        return full if new else ""

    def _start_reconcile(self, service: run_v2.Service, new_revision: str) -> Operation:
        op = Operation(
            f"{service.name.partition('/services/')[0]}/operations/{uuid.uuid4()}", "Service", run_v2.Service(service)
        )
        self.operations[op.name] = op
        traffic = list(service.traffic)
        lock = self._reconcile_locks.setdefault(service.name, threading.Lock())
        threading.Thread(
            target=self._reconcile,
            args=(lock, service.name, service.generation, traffic, new_revision, op),
            daemon=True,
        ).start()
        return op

    def _reconcile(
        self,
        lock: threading.Lock,
        name: str,
        generation: int,
        traffic: list[run_v2.TrafficTarget],
        new_revision: str,
        op: Operation,
    ) -> None:
        with lock:
            try:
                self._reconcile_locked(name, generation, traffic, new_revision, op)
            except Exception as exc:  # an emulator bug must show, not hang the client
                self._finish(op, error=ApiError(500, "INTERNAL", f"emulator: {type(exc).__name__}: {exc}"))

    def _reconcile_locked(
        self, name: str, generation: int, traffic: list[run_v2.TrafficTarget], new_revision: str, op: Operation
    ) -> None:
        service_id, project = name.rpartition("/")[2], name.split("/")[1]
        with self.lock:
            if name not in self.services:
                return self._finish(op, error=ApiError(404, "NOT_FOUND", f"Service {service_id} was deleted."))
            latest_ready = self.services[name].latest_ready_revision
        resolved = [(latest_ready.rpartition("/")[2] if t.type_ == LATEST else t.revision, t) for t in traffic]
        wanted = ([new_revision] if new_revision else []) + [
            f"{name}/revisions/{r}" for r, t in resolved if (t.percent or t.tag) and r
        ]
        for full in dict.fromkeys(wanted):
            with self.lock:
                rev = self.revisions.get(full)
            if rev is None:
                continue
            ok, reason = self.plane.start(rev, service_id, project)
            if not ok:
                return self._fail_revision(name, full, reason, op)
            with self.lock:
                rev.reconciling = False
                rev.observed_generation = 1
                rev.conditions = [
                    run_v2.Condition(type_="Ready", state=S.CONDITION_SUCCEEDED, last_transition_time=_now()),
                    run_v2.Condition(type_="ContainerHealthy", state=S.CONDITION_SUCCEEDED),
                ]
        with self.lock:
            service = self.services.get(name)
            if service is None:
                return self._finish(op, error=ApiError(404, "NOT_FOUND", f"Service {service_id} was deleted."))
            if new_revision:
                service.latest_ready_revision = new_revision
            latest = service.latest_ready_revision.rpartition("/")[2]
            resolved = [(latest if t.type_ == LATEST else t.revision, t) for t in traffic]
            statuses, named = [], set()
            self.plane.routers[name].route = Route(name, [(r, t.percent) for r, t in resolved if t.percent])
            tag_keys = set()
            for r, t in resolved:
                status = run_v2.TrafficTargetStatus(type_=t.type_, revision=t.revision, percent=t.percent, tag=t.tag)
                if t.tag:
                    key = f"{name}#{t.tag}"
                    tag_keys.add(key)
                    router = self.plane.router(key, self._edge)
                    router.route = Route(name, [(r, 100)])
                    status.uri = router.url
                statuses.append(status)
                if t.percent or t.tag:
                    named.add(f"{name}/revisions/{r}")
            gone = [k for k in self.plane.routers if k.startswith(name + "#") and k not in tag_keys]
            self.plane.named(name, named)
            if service.generation == generation:
                service.traffic_statuses = statuses
                service.observed_generation = generation
                service.reconciling = False
                ready = [
                    run_v2.Condition(type_=t, state=S.CONDITION_SUCCEEDED, last_transition_time=_now())
                    for t in ("Ready", "ConfigurationsReady", "RoutesReady")
                ]
                service.terminal_condition, service.conditions = ready[0], ready[1:]
            self._finish(op, response=run_v2.Service(service))
        for key in gone:  # outside the lock: a closing router's last requests still ask the edge
            self.plane.close_router(key)

    def _fail_revision(self, name: str, revision: str, reason: str, op: Operation) -> None:
        rev_id = revision.rpartition("/")[2]
        message = f"Revision '{rev_id}' is not ready and cannot serve traffic. {reason}"
        with self.lock:
            rev = self.revisions.get(revision)
            if rev is not None:
                rev.reconciling = False
                rev.conditions = [
                    run_v2.Condition(
                        type_="Ready",
                        state=S.CONDITION_FAILED,
                        message=message,
                        revision_reason=run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR,
                        severity=run_v2.Condition.Severity.ERROR,
                        last_transition_time=_now(),
                    ),
                    run_v2.Condition(type_="ContainerHealthy", state=S.CONDITION_FAILED, message=reason),
                ]
            service = self.services.get(name)
            if service is not None:
                service.reconciling = False
                service.observed_generation = service.generation
                service.terminal_condition = run_v2.Condition(
                    type_="Ready", state=S.CONDITION_FAILED, message=message, severity=run_v2.Condition.Severity.ERROR
                )
        self._finish(op, error=ApiError(400, "FAILED_PRECONDITION", message))

    def _finish(self, op: Operation, *, response: Any = None, error: ApiError | None = None) -> None:
        with self.lock:
            op.done, op.response, op.error = True, response, error
            if response is not None:
                op.metadata = response

    def _delete(self, name: str, etag: str) -> Operation:
        with self.lock:
            service = self._service(name)
            if etag and etag != service.etag:
                raise ApiError(409, "ABORTED", "The etag does not match the service's.")
            op = Operation(f"{name.partition('/services/')[0]}/operations/{uuid.uuid4()}", "Service", service)
            self.operations[op.name] = op
            revisions = [r for r in self.revisions if r.startswith(name + "/")]
            for r in revisions:
                del self.revisions[r]
                self.templates.pop(r, None)
            del self.services[name]
            self.service_policies.pop(name, None)
        for key in [k for k in list(self.plane.routers) if k == name or k.startswith(name + "#")]:
            self.plane.close_router(key)
        self._drain_then_finish(op, service, revisions)
        return op

    def _drain_then_finish(self, op: Operation, response: Any, revisions: list[str]) -> None:
        """As Cloud Run: a delete's operation is done once its instances have drained (in the background:
        the call itself answers at once)."""

        def run() -> None:
            for r in revisions:
                self.plane.stop(r)
            self._finish(op, response=response)

        threading.Thread(target=run, daemon=True).start()

    def _revisions(
        self, method: str, service: str, revision: str | None, caller: str, project: str, region: str
    ) -> Any:
        if revision is None:
            self._require(caller, project, "run.revisions.list", service, region)
            with self.lock:
                if service.endswith("/services/-"):
                    prefix = service.removesuffix("-")
                    return {"revisions": [r for n, r in sorted(self.revisions.items()) if n.startswith(prefix)]}
                self._service(service)
                return {"revisions": [r for n, r in sorted(self.revisions.items()) if n.startswith(service + "/")]}
        full = f"{service}/revisions/{revision}"
        permission = "run.revisions.delete" if method == "DELETE" else "run.revisions.get"
        self._require(caller, project, permission, full, region)
        with self.lock:
            rev = self.revisions.get(full)
            if rev is None:
                raise ApiError(
                    404,
                    "NOT_FOUND",
                    f"Resource '{revision}' of kind 'REVISION' in region '{region}' in "
                    f"project '{project}' does not exist.",
                )
            if method == "GET":
                return rev
            if method != "DELETE":
                raise ApiError(405, "UNIMPLEMENTED", f"{method} is not supported on revisions")
            parent = self.services.get(service)
            for t in parent.traffic if parent else []:
                if t.revision == revision and (t.percent or t.tag):
                    raise ApiError(
                        400,
                        "FAILED_PRECONDITION",
                        f"Revision '{revision}' cannot be deleted: it is "
                        "referenced by the service's traffic (a percent or a tag).",
                    )
            del self.revisions[full]
            self.templates.pop(full, None)
            op = Operation(f"{service.partition('/services/')[0]}/operations/{uuid.uuid4()}", "Revision", rev)
            self.operations[op.name] = op
        self._drain_then_finish(op, rev, [full])
        return op

    def _operation(self, name: str) -> Operation:
        with self.lock:
            op = self.operations.get(name)
        if op is None:
            raise ApiError(404, "NOT_FOUND", f"Operation {name} not found.")
        return op

    # --- IAM, Secret Manager, Logging -----------------------------------------------------------

    def _set_policy(self, store: dict[str, dict[str, set[str]]], name: str, body: Any) -> dict[str, Any]:
        policy = body.get("policy", {})
        with self.lock:
            store[name] = {b["role"]: set(b.get("members", [])) for b in policy.get("bindings", [])}
            return _policy_json(store[name])

    def _secret_value(self, project: str, secret: str, version: str) -> bytes | None:
        with self.lock:
            found = self.secrets.get(f"projects/{project}/secrets/{secret}")
            if found is None or not found["versions"]:
                return None
            versions: list[bytes] = found["versions"]
            index = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
            return versions[index - 1] if 0 < index <= len(versions) else None

    def _secrets(
        self,
        method: str,
        project: str,
        secret: str | None,
        version: str | None,
        verb: str | None,
        query: dict[str, str],
        body: Any,
        caller: str,
    ) -> Any:
        name = f"projects/{project}/secrets/{secret or query.get('secretId', '')}"
        if secret is None and method == "GET":
            self._require(caller, project, "secretmanager.secrets.get", f"projects/{project}")
            with self.lock:
                return {
                    "secrets": [
                        s["secret"] for n, s in sorted(self.secrets.items()) if n.startswith(f"projects/{project}/")
                    ]
                }
        if secret is None and method == "POST":
            self._require(caller, project, "secretmanager.secrets.create", name)
            with self.lock:
                if name in self.secrets:
                    raise ApiError(409, "ALREADY_EXISTS", f"Secret [{name}] already exists.")
                made = secretmanager.Secret.from_json(json.dumps(body), ignore_unknown_fields=True)
                made.name, made.create_time = name, _now()
                self.secrets[name] = {"secret": made, "versions": [], "policy": {}}
                return made
        with self.lock:
            found = self.secrets.get(name)
        if found is None:
            self._require(caller, project, "secretmanager.secrets.get", name)
            raise ApiError(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")
        match (method, version, verb):
            case ("POST", None, "addVersion"):
                self._require(caller, project, "secretmanager.versions.add", name)
                with self.lock:
                    found["versions"].append(base64.b64decode(body["payload"]["data"]))
                    n = len(found["versions"])
                return secretmanager.SecretVersion(
                    name=f"{name}/versions/{n}", create_time=_now(), state=secretmanager.SecretVersion.State.ENABLED
                )
            case ("GET", str(), "access"):
                self._require(caller, project, "secretmanager.versions.access", name)
                value = self._secret_value(project, str(secret), version)
                if value is None:
                    raise ApiError(404, "NOT_FOUND", f"Secret Version [{name}/versions/{version}] not found.")
                n = len(found["versions"]) if version == "latest" else int(version)
                return secretmanager.AccessSecretVersionResponse(
                    name=f"{name}/versions/{n}", payload=secretmanager.SecretPayload(data=value)
                )
            case ("GET", None, None):
                self._require(caller, project, "secretmanager.secrets.get", name)
                return found["secret"]
            case ("DELETE", None, None):
                self._require(caller, project, "secretmanager.secrets.delete", name)
                with self.lock:
                    self.secrets.pop(name, None)
                return {}
            case ("GET", None, "getIamPolicy"):
                self._require(caller, project, "secretmanager.secrets.getIamPolicy", name)
                return _policy_json(found["policy"])
            case ("POST", None, "setIamPolicy"):
                self._require(caller, project, "secretmanager.secrets.setIamPolicy", name)
                store = {name: found["policy"]}
                result = self._set_policy(store, name, body)
                found["policy"] = store[name]
                return result
        raise ApiError(404, "NOT_FOUND", f"{method} {name} {verb or ''} is not emulated")

    def _list_entries(self, body: Any, caller: str) -> dict[str, Any]:
        projects = [r.removeprefix("projects/") for r in body.get("resourceNames", [])]
        for project in projects:
            self._require(caller, project, "logging.logEntries.list", f"projects/{project}")
        text = body.get("filter", "")
        if 'resource.type="aiplatform.googleapis.com/Endpoint"' in text:
            return self.vertex.log_entries(body, projects[0])
        service = re.search(r'resource\.labels\.service_name="([^"]+)"', text)
        revision = re.search(r'resource\.labels\.revision_name="([^"]+)"', text)
        if 'resource.type="cloud_run_revision"' not in text or not service or not revision:
            raise invalid("filter", f"the emulator reads only the target's own filter, not {text!r}")
        found = [
            (ts, line, r)
            for r in list(self.plane.logs) + list(self.plane.instances)
            if r.endswith(f"/services/{service.group(1)}/revisions/{revision.group(1)}")
            for ts, line in self.plane.log_entries(r)
        ]
        found = sorted(set(found), reverse="desc" in body.get("orderBy", ""))[: int(body.get("pageSize") or 50)]
        return {
            "entries": [
                {
                    "logName": f"projects/{projects[0]}/logs/run.googleapis.com%2Fstdout",
                    "insertId": f"{i:08x}",
                    "resource": {
                        "type": "cloud_run_revision",
                        "labels": {
                            "service_name": service.group(1),
                            "revision_name": revision.group(1),
                            "project_id": projects[0],
                        },
                    },
                    "textPayload": line,
                    "timestamp": ts or now_rfc3339(),
                }
                for i, (ts, line, _) in enumerate(found)
            ]
        }

    def _edge(self, service_name: str, url: str, authorization: str) -> tuple[int, str]:
        """Cloud Run's IAM check at the edge of a service's URL."""
        with self.lock:
            invokers = self.service_policies.get(service_name, {}).get("roles/run.invoker", set())
            service = self.services.get(service_name)
            project = self.projects.get(service_name.split("/")[1])
        if "allUsers" in invokers:
            return 0, ""
        if service is None or project is None:
            return 404, "no such service"
        if not authorization.startswith("Bearer "):
            return 403, "Your client does not have permission to get URL from this server."
        audiences = {service.uri, *service.custom_audiences, *(s.uri for s in service.traffic_statuses if s.uri)}
        status, email = self.issuer.verify_id_token(authorization.removeprefix("Bearer ").strip(), audiences)
        if status:
            return status, email
        members = {f"serviceAccount:{email}", f"user:{email}", "allAuthenticatedUsers"}
        roles = {r for r, m in project.policy.items() if m & members}
        if invokers & members or grants(roles, "run.routes.invoke"):
            return 0, "id_token"
        return 403, f"Your client does not have permission to get URL from this server ({email} may not invoke it)."


def _send(h: http.server.BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json; charset=UTF-8")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def _to_json(result: Any, ints: bool) -> Any:
    """A message, an operation or a dict of them as the REST API writes JSON."""
    if isinstance(result, Operation):
        out: dict[str, Any] = {
            "name": result.name,
            "done": result.done,
            "metadata": {"@type": _RUN + result.kind, **_to_json(result.metadata, ints)},
        }
        if result.error is not None:
            out["error"] = {
                "code": _GRPC.get(result.error.status, 2),
                "message": result.error.message,
                "details": result.error.details,
            }
        elif result.response is not None:
            out["response"] = {"@type": _RUN + result.kind, **_to_json(result.response, ints)}
        return out
    if isinstance(result, dict):
        return {
            k: [_to_json(v, ints) for v in vs] if isinstance(vs, list) else _to_json(vs, ints)
            for k, vs in result.items()
        }
    if hasattr(type(result), "to_json") and hasattr(type(result), "pb"):
        return json.loads(type(result).to_json(result, use_integers_for_enums=ints))
    return result


_GRPC = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}


def _policy_json(policy: dict[str, set[str]]) -> dict[str, Any]:
    bindings = [{"role": r, "members": sorted(m)} for r, m in sorted(policy.items()) if m]
    return {"version": 1, "etag": base64.b64encode(etag().encode()).decode(), "bindings": bindings}


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts
