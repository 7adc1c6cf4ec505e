"""What only the Cloud Run target promises, on the emulator with its revisions running for real: the
revision's settings, the candidate at 0 % under a tag, traffic pinned by name, revisions Slipway did not
create left alone, Cloud Run IAM and the API-key mode, the bad inputs, and a teardown that leaves nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import google.auth
import httpx
import pytest
from google.api_core.client_options import ClientOptions
from google.cloud import run_v2, secretmanager
from pydantic import SecretStr

from slipway.errors import ConfigError, TargetError, TransientTargetError
from slipway.http import client, google_id_token
from slipway.release import AuthScheme, ImageRef, Release, Stage
from slipway.spec import Timeouts
from targets import make_target
from targets.base import Target, put_live
from targets.containers import registry_credentials
from tests.targets.cloudrun.emulator import CloudRunEmulator
from tests.targets.cloudrun.fixtures import OTHER_PROJECT, PROJECT, REGION, cloudrun_config, targets_on
from tests.targets.fixtures import TIMEOUTS, context

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
Make = Callable[..., Target]


@pytest.fixture
def make(gcp_env: CloudRunEmulator, state_dir: Path, api_key: str) -> Iterator[Make]:
    with targets_on(gcp_env, cloudrun_config, state_dir, api_key) as factory:
        yield factory


def _clients(emulator: CloudRunEmulator) -> tuple[run_v2.ServicesClient, run_v2.RevisionsClient]:
    creds, _ = google.auth.default()
    options = ClientOptions(api_endpoint=emulator.url)
    return (run_v2.ServicesClient(credentials=creds, transport="rest", client_options=options),
            run_v2.RevisionsClient(credentials=creds, transport="rest", client_options=options))  # fmt: skip


def _sha(target: Target, api_key: str, url: str = "") -> str:
    endpoint = target.endpoint()
    assert endpoint is not None
    endpoint = dataclasses.replace(endpoint, url=url or endpoint.url)
    with client(endpoint, SecretStr(api_key), timeout_s=10) as http:
        resp = http.get("/metadata")
    resp.raise_for_status()
    return str(resp.json()["sha256"])


def _service(emulator: CloudRunEmulator, target: Target) -> run_v2.Service:
    return _clients(emulator)[0].get_service(name=target.name)  # type: ignore[attr-defined]


def test_revision_runs_the_image_by_digest_with_its_settings(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    secrets_client = secretmanager.SecretManagerServiceClient(
        credentials=google.auth.default()[0], transport="rest", client_options=ClientOptions(api_endpoint=gcp_env.url)
    )
    secret = secrets_client.create_secret(parent=f"projects/{PROJECT}", secret_id="feature-flags",
                                          secret=secretmanager.Secret(replication={"automatic": {}}))  # fmt: skip
    secrets_client.add_secret_version(parent=secret.name, payload=secretmanager.SecretPayload(data=b"on"))
    try:
        target = make(Stage.STAGING, cpu="0.5", memory="384Mi", concurrency=20, request_timeout_s=30, min_instances=0,
                      max_instances=3, cpu_boost=False, env={"LOG_LEVEL": "debug"},
                      secrets={"FEATURE_FLAGS": "feature-flags:1"}, labels={"team": "ml"})  # fmt: skip
        live = put_live(target, releases["v1"], TIMEOUTS)
    finally:
        secrets_client.delete_secret(name=secret.name)
    assert live.endpoint.auth.scheme is AuthScheme.GOOGLE_ID_TOKEN  # the default: Cloud Run IAM
    services, revisions = _clients(gcp_env)
    service = services.get_service(name=live.handle["service"])
    [rev] = list(revisions.list_revisions(parent=service.name))
    assert rev.name.endswith("/revisions/" + live.handle["revision"]) and "r-v1" in live.handle["revision"]
    c = rev.containers[0]
    assert c.image == str(releases["v1"].image) and "@sha256:" in c.image
    assert dict(c.resources.limits) == {"cpu": "0.5", "memory": "384Mi"} and not c.resources.startup_cpu_boost
    assert c.startup_probe.http_get.path == "/ready"
    assert (rev.max_instance_request_concurrency, rev.timeout.seconds) == (20, 30)
    assert (rev.scaling.min_instance_count, rev.scaling.max_instance_count) == (0, 3)
    env = {e.name: e.value or f"secret:{e.value_source.secret_key_ref.secret}" for e in c.env}
    assert env == {"LOG_LEVEL": "debug", "FEATURE_FLAGS": "secret:feature-flags", "SLIPWAY_AUTH": "none"}
    assert {"managed-by": "slipway", "slipway-release": "r-v1", "slipway-model": "iris", "team": "ml"}.items() <= dict(
        rev.labels
    ).items()
    assert rev.annotations["slipway.dev/sha256"] == releases["v1"].package_sha256
    assert [(t.type_, t.revision, t.percent) for t in service.traffic] == [(REVISION, live.handle["revision"], 100)]
    # the container runs under Cloud Run's contract, with the secret's value and the limits
    [container] = docker.from_env().containers.list(
        filters={"label": f"{'slipway-test.cloudrun-emulator'}.revision={rev.name}"}
    )
    environ = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert (environ["PORT"], environ["K_SERVICE"], environ["K_REVISION"]) == ("8080", service.name.rpartition("/")[2],
                                                                             live.handle["revision"])  # fmt: skip
    assert environ["FEATURE_FLAGS"] == "on" and "SLIPWAY_API_KEY" not in environ
    assert (container.attrs["HostConfig"]["Memory"], container.attrs["HostConfig"]["NanoCpus"]) == (384 * 2**20, 5e8)


def test_candidate_at_zero_percent_under_a_tag_then_pinned_and_rolled_back_by_name(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str,
    record_property: Callable[[str, object], None],
) -> None:  # fmt: skip
    target = make()
    v1, v2 = (releases[v].package_sha256 for v in ("v1", "v2"))
    first = put_live(target, releases["v1"], TIMEOUTS)
    started = time.monotonic()
    candidate = target.wait_ready(target.deploy(releases["v2"]), TIMEOUTS.ready_s)
    record_property("deploy_to_ready_s", round(time.monotonic() - started, 2))
    service = _service(gcp_env, target)
    tag = candidate.handle["tag"]
    assert [(t.type_, t.revision, t.percent, t.tag) for t in service.traffic] == [
        (REVISION, first.handle["revision"], 100, ""),
        (REVISION, candidate.handle["revision"], 0, tag),
    ]
    tag_url = next(s.uri for s in service.traffic_statuses if s.tag == tag)
    assert candidate.endpoint.url == tag_url != service.uri
    assert _sha(target, api_key, tag_url) == v2 and _sha(target, api_key) == v1  # the gate's URL, and production's
    started = time.monotonic()
    target.promote(candidate, TIMEOUTS.promote_s)
    record_property("promote_s", round(time.monotonic() - started, 2))
    service = _service(gcp_env, target)
    assert [(t.revision, t.percent, t.tag) for t in service.traffic] == [(candidate.handle["revision"], 100, "")]
    assert _sha(target, api_key) == v2
    _, revisions = _clients(gcp_env)
    assert len(list(revisions.list_revisions(parent=service.name))) == 2  # the previous one is kept for rollback
    started = time.monotonic()
    target.rollback(releases["v1"], TIMEOUTS)
    record_property("rollback_s", round(time.monotonic() - started, 2))
    assert time.monotonic() - started < 15  # a traffic change, no new revision
    assert len(list(revisions.list_revisions(parent=service.name))) == 2
    assert [(t.revision, t.percent) for t in _service(gcp_env, target).traffic] == [(first.handle["revision"], 100)]
    assert _sha(target, api_key) == v1 and target.describe().release_id == "r-v1"


def test_revisions_slipway_did_not_create_are_left_as_they_are(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    services, revisions = _clients(gcp_env)
    target = make()
    image = str(releases["v1"].image)
    hand = run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(
        image=image, env=[run_v2.EnvVar(name="SLIPWAY_AUTH", value="none")])]))  # fmt: skip
    services.create_service(parent=f"projects/{PROJECT}/locations/{REGION}", service=hand,
                            service_id=target.service_id).result(60)  # type: ignore[attr-defined]  # fmt: skip
    [foreign] = list(revisions.list_revisions(parent=target.name))  # type: ignore[attr-defined]
    foreign_id = foreign.name.rpartition("/")[2]
    service = services.get_service(name=target.name)  # type: ignore[attr-defined]
    service.traffic = [run_v2.TrafficTarget(type_=REVISION, revision=foreign_id, percent=100, tag="blue")]
    services.update_service(service=service).result(60)
    notes = [c.detail for c in target.changes()]
    assert any("Slipway did not create are left as they are" in n and foreign_id in n for n in notes), notes
    put_live(target, releases["v2"], TIMEOUTS)
    service = services.get_service(name=target.name)  # type: ignore[attr-defined]
    assert ("blue", foreign_id) in [(t.tag, t.revision) for t in service.traffic]  # its tag stays
    assert _sha(target, api_key) == releases["v2"].package_sha256
    target.teardown()  # the service is not Slipway's alone: it stays, serving its own revision again
    service = services.get_service(name=target.name)  # type: ignore[attr-defined]
    assert [(t.revision, t.percent) for t in service.traffic if t.percent] == [(foreign_id, 100)]
    assert [r.name.rpartition("/")[2] for r in revisions.list_revisions(parent=target.name)] == [foreign_id]  # type: ignore[attr-defined]
    services.delete_service(name=target.name).result(60)  # type: ignore[attr-defined]


def test_iam_at_the_edge_wants_an_id_token_for_the_service_from_an_invoker(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = put_live(make(), releases["v1"], TIMEOUTS).endpoint
    url = f"{live.url}/metadata"
    assert httpx.get(url, timeout=5).status_code == 403  # no token
    other = gcp_env.issuer.id_token("slipway-deployer@slipway-test.iam.gserviceaccount.com", "https://elsewhere")
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}, timeout=5).status_code == 401  # wrong audience
    stranger = gcp_env.issuer.id_token("nobody@example.com", live.auth.audience)
    assert httpx.get(url, headers={"Authorization": f"Bearer {stranger}"}, timeout=5).status_code == 403  # no role
    token = google_id_token(live.auth.audience)  # what the gate sends: google-auth's, from the key file
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200


def test_api_key_mode_is_public_with_the_key_from_secret_manager(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    target = make(auth="api_key")
    live = put_live(target, releases["v1"], TIMEOUTS)
    assert live.endpoint.auth.scheme is AuthScheme.API_KEY
    services, revisions = _clients(gcp_env)
    policy = services.get_iam_policy(request={"resource": target.name})  # type: ignore[attr-defined]
    assert [(b.role, list(b.members)) for b in policy.bindings] == [("roles/run.invoker", ["allUsers"])]
    [rev] = list(revisions.list_revisions(parent=target.name))  # type: ignore[attr-defined]
    [key_env] = [e for e in rev.containers[0].env if e.name == "SLIPWAY_API_KEY"]
    assert not key_env.value and key_env.value_source.secret_key_ref.version == "1"  # a reference, never the value
    url = f"{live.endpoint.url}/metadata"
    assert httpx.get(url, timeout=5).status_code == 401  # the server checks the key
    assert httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=5).status_code == 200
    put_live(target, releases["v2"], TIMEOUTS)  # the same key: the same secret version
    assert {e.value_source.secret_key_ref.version for r in revisions.list_revisions(parent=target.name)  # type: ignore[attr-defined]
            for e in r.containers[0].env if e.name == "SLIPWAY_API_KEY"} == {"1"}  # fmt: skip


def test_artifact_registry_pushes_with_an_access_token_of_adc(gcp_env: CloudRunEmulator) -> None:
    creds = registry_credentials(f"{REGION}-docker.pkg.dev/{PROJECT}/models/iris", "")
    assert creds is not None and creds.username == "oauth2accesstoken"
    assert creds.password.get_secret_value() in gcp_env.issuer.access_tokens  # minted by the token endpoint
    assert registry_credentials("127.0.0.1:5000/slipway/iris", "") is None


# --- bad input: each a clear error, with production untouched ---------------------------------------


def _untouched(target: Target, api_key: str, release: Release) -> None:
    assert _sha(target, api_key) == release.package_sha256
    assert target.describe().release_id == release.id


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(("where", "match"), [({"project": "no-such-project-1"}, "run.services.get"),
                                              ({"region": "mars-north1"}, "is not found")],
                         ids=["unknown project", "unknown region"])  # fmt: skip
def test_unknown_project_or_region_is_a_clear_error(
    gcp_env: CloudRunEmulator, releases: dict[str, Release], where: dict[str, str], match: str, state_dir: Path,
    api_key: str,
) -> None:  # fmt: skip
    target = make_target(cloudrun_config(gcp_env, **where), context(Stage.PRODUCTION, state_dir, api_key))
    with pytest.raises(ConfigError, match=match) as info:
        put_live(target, releases["v1"], TIMEOUTS)
    assert "check the project" in info.value.hint
    with contextlib.suppress(ConfigError):  # nothing to remove: done, or the same clear error
        target.teardown()
    assert not [s for s in gcp_env.services if "no-such" in s or "mars" in s]


@pytest.mark.fault("bad input")
def test_missing_permission_names_it_and_the_roles(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    target = make()
    live = put_live(target, releases["v1"], TIMEOUTS).endpoint
    gcp_env.revoke(PROJECT, "roles/run.admin")
    gcp_env.projects[PROJECT].policy["roles/run.invoker"] = {
        "serviceAccount:slipway-deployer@slipway-test.iam.gserviceaccount.com"
    }  # it may still call production
    with pytest.raises(ConfigError, match=r"403 PERMISSION_DENIED: Permission 'run.services.get' denied") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "roles/run.developer" in info.value.hint and "docs/targets/cloudrun.md" in info.value.hint
    with client(live, SecretStr(api_key)) as http:  # production, checked by request
        assert http.get("/metadata").json()["sha256"] == releases["v1"].package_sha256


@pytest.mark.fault("injected failure")
def test_quota_exceeded_once_is_retried_and_persistent_quota_fails_clearly(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    target = make(api_retry_s=3)
    put_live(target, releases["v1"], TIMEOUTS)
    quota = "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per region'"
    once = gcp_env.fail(429, "RESOURCE_EXHAUSTED", quota, method="PATCH", path=target.name, times=1)  # type: ignore[attr-defined]
    put_live(target, releases["v2"], TIMEOUTS)
    assert once.hits == 1 and _sha(target, api_key) == releases["v2"].package_sha256
    always = gcp_env.fail(429, "RESOURCE_EXHAUSTED", quota, method="PATCH", path=target.name, times=None)  # type: ignore[attr-defined]
    with pytest.raises(TransientTargetError, match="429 RESOURCE_EXHAUSTED.*still so after retrying") as info:
        target.rollback(releases["v1"], TIMEOUTS)
    assert "quota" in info.value.hint and always.hits >= 2
    gcp_env.faults.clear()
    _untouched(target, api_key, releases["v2"])


@pytest.mark.fault("bad input")
def test_an_image_that_exits_at_start_fails_with_its_last_lines(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str, exiting_image: ImageRef
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    broken = dataclasses.replace(releases["v2"], id="r-exits", image=exiting_image)
    with pytest.raises(TargetError) as info:
        put_live(target, broken, TIMEOUTS)
    message = str(info.value)
    assert "r-exits" in message and "failed to start and listen on the port" in message  # Cloud Run's reason
    assert "| fatal: MODEL_BUCKET is not set" in message  # the container's own last line, from Cloud Logging
    _untouched(target, api_key, releases["v1"])
    _, revisions = _clients(gcp_env)
    assert not [r for r in revisions.list_revisions(parent=target.name) if "r-exits" in r.name]  # type: ignore[attr-defined]


@pytest.mark.fault("injected failure")
def test_a_revision_that_never_becomes_ready_is_discarded(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str, hung_image: ImageRef
) -> None:
    service = cloudrun_config(gcp_env).service  # one service for both: v1 with the default probe (a loaded
    put_live(make(service=service), releases["v1"], TIMEOUTS)  # machine starts it in 4 s or not), the next 4 s
    target = make(service=service, startup_timeout_s=4)
    hung = dataclasses.replace(releases["v2"], id="r-hung", image=hung_image)
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"r-hung was not ready after 3 s"):
        put_live(target, hung, Timeouts(3, 30))
    assert time.monotonic() - started < 30
    _untouched(target, api_key, releases["v1"])
    assert not [c for c in gcp_env.plane.containers() if "r-hung" in c]


@pytest.mark.fault("injected failure")
def test_a_service_edited_by_hand_between_read_and_write_is_not_overwritten(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    target = make()
    put_live(target, releases["v1"], TIMEOUTS)
    edit = lambda s: s.labels.update({"edited-by": "console"})  # noqa: E731
    gcp_env.before("PATCH", target.name, lambda: gcp_env.edit_service(target.name, edit))  # type: ignore[attr-defined]
    with pytest.raises(TransientTargetError, match="409 ABORTED") as info:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "changed since it was read" in info.value.hint
    assert _service(gcp_env, target).labels["edited-by"] == "console"  # the hand edit stands
    _untouched(target, api_key, releases["v1"])


def test_production_in_another_project_and_teardown_leaves_nothing(
    make: Make, gcp_env: CloudRunEmulator, releases: dict[str, Release], api_key: str
) -> None:
    staging = make(Stage.STAGING, auth="api_key")
    production = make(Stage.PRODUCTION, project=OTHER_PROJECT, auth="api_key")
    put_live(staging, releases["v1"], TIMEOUTS)
    put_live(production, releases["v1"], TIMEOUTS)
    put_live(production, releases["v2"], TIMEOUTS)
    assert OTHER_PROJECT in production.location and PROJECT in staging.location
    staging.teardown()
    production.teardown()
    services, revisions = _clients(gcp_env)
    secrets_client = secretmanager.SecretManagerServiceClient(
        credentials=google.auth.default()[0], transport="rest", client_options=ClientOptions(api_endpoint=gcp_env.url)
    )
    for project in (PROJECT, OTHER_PROJECT):
        parent = f"projects/{project}/locations/{REGION}"
        assert [s.name for s in services.list_services(parent=parent)] == []
        assert [r.name for r in revisions.list_revisions(parent=f"{parent}/services/-")] == []
        assert [s.name for s in secrets_client.list_secrets(parent=f"projects/{project}")] == []
    left = gcp_env.resources()
    assert left["containers"] == [] and left["routers"] == [] and left["pending_operations"] == [], left


def test_plan_says_what_it_creates_and_what_it_leaves_alone(
    write_spec: Any, gcp_env: CloudRunEmulator, state_dir: Path, api_key: str
) -> None:
    from typer.testing import CliRunner

    from slipway.cli import app

    stages = {s: cloudrun_config(gcp_env).model_dump(exclude_defaults=True) | {"kind": "cloudrun"}
              for s in ("staging", "production")}  # fmt: skip
    before = len(gcp_env.calls)
    result = CliRunner().invoke(app, ["plan", str(write_spec(**stages))])
    assert result.exit_code == 0, result.output
    assert "cloudrun: cloudrun slipway-test/europe-west1 service iris-t" in result.output
    text = " ".join(result.output.split())
    assert "create │ service iris-t" in text and "create │ revision iris-t" in text  # nothing there yet
    assert "DON'T forget about costs │ pass" in text  # request-based billing, priced from the table
    assert all(method == "GET" or path == "/token" for method, path in gcp_env.calls[before:])  # changes nothing


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_api")
def test_credentials_from_a_prefect_gcp_credentials_block(
    gcp_env: CloudRunEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A block of prefect-gcp's type (gcp-credentials) holding a service account's key, read through
    Prefect's API: prefect-gcp itself need not be installed. ADC is unset: the block's key is what works."""
    import json

    from prefect.blocks.core import Block
    from prefect.types import SecretDict

    from slipway.errors import At
    from targets.gcp import credentials

    class GcpCredentials(Block):  # the shape of prefect_gcp.GcpCredentials
        _block_type_slug = "gcp-credentials"
        service_account_info: SecretDict | None = None
        project: str | None = None

    key = gcp_env.deployer(
        PROJECT, tmp_path / "block-key.json", email="slipway-block@slipway-test.iam.gserviceaccount.com"
    )
    GcpCredentials(service_account_info=json.loads(key.read_text()), project=PROJECT).save(
        "slipway-gcp", overwrite=True
    )
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    creds, project = credentials("slipway-gcp", at=At("cloudrun", "credentials", "slipway-gcp"))
    assert project == PROJECT and creds.service_account_email == "slipway-block@slipway-test.iam.gserviceaccount.com"
    services = run_v2.ServicesClient(credentials=creds, transport="rest",
                                     client_options=ClientOptions(api_endpoint=gcp_env.url))  # fmt: skip
    list(services.list_services(parent=f"projects/{PROJECT}/locations/{REGION}"))  # the block's identity may list
    with pytest.raises(ConfigError, match="'no-such-block' cannot be loaded"):
        credentials("no-such-block", at=At("cloudrun", "credentials", "no-such-block"))
