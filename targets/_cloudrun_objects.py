"""What the Cloud Run target writes: names, labels, the revision template and traffic, as ``run_v2`` types.

Pure functions of the config, the context and the release, so what a revision runs with is read
in one place. Every revision Slipway creates carries the label ``managed-by: slipway`` and the
annotations ``slipway.dev/release`` (the release id), ``/version``, ``/sha256`` and ``/image``;
the service carries ``slipway.dev/live-revision`` and ``/live-release`` (what promote switched to).
A revision without the label is someone else's: Slipway never deletes it and keeps its tags.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from typing import Any

from google.cloud import run_v2
from google.protobuf import duration_pb2

from serving.contract import AUTH_ENV, CLOUD_RUN_PORT, GENERIC
from slipway.release import Release
from slipway.spec import CloudRunTarget as CloudRunConfig
from targets.base import TargetContext

MANAGED = ("managed-by", "slipway")
RELEASE = "slipway.dev/release"
LIVE_REVISION = "slipway.dev/live-revision"
LIVE_RELEASE = "slipway.dev/live-release"
AUTH_LABEL = "slipway-auth"
CANDIDATE_TAG = "c-"  # a candidate's tag: c-<8 hex of its revision name>; other tags are not Slipway's
API_KEY_SECRET = "slipway-{service}-api-key"
REVISION_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
INGRESS = {
    "all": run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
    "internal": run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY,
    "internal-and-cloud-load-balancing": run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER,
}
_PROBE_PERIOD_S = 2


def _short(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its head and a hash of the whole (same text, same name)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    return f"{text[: limit - 7].rstrip('-')}-{digest}"


def service_id(config: CloudRunConfig, ctx: TargetContext) -> str:
    return config.service or _short(f"{ctx.service}-{ctx.stage.value}", 49)


def revision_name(service: str, release_id: str) -> str:
    """The release's revision: Cloud Run requires the service's name as prefix; at most 63 characters."""
    slug = re.sub(r"[^a-z0-9-]+", "-", release_id.lower()).strip("-") or "release"
    return _short(f"{service}-{slug}", 63).rstrip("-")


def candidate_tag(revision: str) -> str:
    return CANDIDATE_TAG + hashlib.sha256(revision.encode()).hexdigest()[:8]


def label_value(text: str) -> str:
    """A label value: lower-case letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def service_labels(config: CloudRunConfig, ctx: TargetContext, auth: str) -> dict[str, str]:
    return {
        **config.labels,
        MANAGED[0]: MANAGED[1],
        "slipway-service": label_value(ctx.service),
        "slipway-stage": ctx.stage.value,
        AUTH_LABEL: auth,
    }


def template(
    config: CloudRunConfig,
    ctx: TargetContext,
    release: Release,
    name: str,
    *,
    api_key_ref: tuple[str, str] | None,
) -> run_v2.RevisionTemplate:
    """The revision of ``release``: the image by digest, its settings, and how the server authenticates.

    ``api_key_ref`` is the Secret Manager secret and version holding Slipway's key (``auth: api_key``);
    None when Cloud Run's IAM authenticates at the edge, where the server runs with SLIPWAY_AUTH=none."""
    env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(config.env.items())]
    for var, ref in sorted(config.secrets.items()):
        secret, _, version = ref.partition(":")
        env.append(_secret_env(var, secret, version or "latest"))
    if api_key_ref is None:
        env.append(run_v2.EnvVar(name=AUTH_ENV, value="none"))
    else:
        env.append(_secret_env("SLIPWAY_API_KEY", *api_key_ref))
    probe = run_v2.Probe(
        http_get=run_v2.HTTPGetAction(path=GENERIC.ready, port=CLOUD_RUN_PORT),
        period_seconds=_PROBE_PERIOD_S,
        timeout_seconds=1,
        failure_threshold=max(1, math.ceil(config.startup_timeout_s / _PROBE_PERIOD_S)),
    )
    container = run_v2.Container(
        name="server",
        image=str(release.require_image()),
        args=["--workers", str(config.workers), *ctx.server_args],
        ports=[run_v2.ContainerPort(name="http1", container_port=CLOUD_RUN_PORT)],
        env=env,
        resources=run_v2.ResourceRequirements(
            limits={"cpu": config.cpu, "memory": config.memory},
            cpu_idle=config.cpu_idle,
            startup_cpu_boost=config.cpu_boost,
        ),
        startup_probe=probe,
    )
    labels = {
        **config.labels,
        MANAGED[0]: MANAGED[1],
        "slipway-service": label_value(ctx.service),
        "slipway-stage": ctx.stage.value,
        "slipway-model": label_value(ctx.model),
        "slipway-version": label_value(release.version),
        "slipway-release": label_value(release.id),
    }
    annotations = {
        RELEASE: release.id,
        "slipway.dev/version": release.version,
        "slipway.dev/sha256": release.package_sha256,
        "slipway.dev/image": str(release.image),
        "slipway.dev/spec-hash": release.spec_hash,
    }
    return run_v2.RevisionTemplate(
        revision=name,
        labels=labels,
        annotations=annotations,
        containers=[container],
        scaling=run_v2.RevisionScaling(
            min_instance_count=config.min_instances, max_instance_count=config.max_instances
        ),
        max_instance_request_concurrency=config.concurrency,
        service_account=config.service_account,
        timeout=duration_pb2.Duration(seconds=config.request_timeout_s),
    )


def _secret_env(var: str, secret: str, version: str) -> run_v2.EnvVar:
    selector = run_v2.SecretKeySelector(secret=secret, version=version)
    return run_v2.EnvVar(name=var, value_source=run_v2.EnvVarSource(secret_key_ref=selector))


def to(revision: str, percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=REVISION_TYPE, revision=revision, percent=percent, tag=tag)


def pinned(service: run_v2.Service) -> list[run_v2.TrafficTarget]:
    """The service's traffic as it is, with "latest" pinned to the revision it means now (Cloud Run's
    no-traffic deploy): a new template then changes nothing of what serves."""
    out = []
    for t in service.traffic:
        if t.type_ == LATEST_TYPE:
            t = run_v2.TrafficTarget(
                type_=REVISION_TYPE, revision=_short_name(service.latest_ready_revision), percent=t.percent, tag=t.tag
            )
        out.append(t)
    return out


def tags_kept(
    traffic: list[run_v2.TrafficTarget], *, drop: frozenset[str] = frozenset(), drop_candidates: bool = False
) -> list[run_v2.TrafficTarget]:
    """The tagged entries of ``traffic`` that stay, at 0 %, wherever the traffic goes: every tag but
    ``drop`` (and, with ``drop_candidates``, Slipway's candidate tags). Someone else's tags are never dropped."""
    return [
        to(t.revision, 0, t.tag)
        for t in traffic
        if t.tag and t.tag not in drop and not (drop_candidates and t.tag.startswith(CANDIDATE_TAG))
    ]


def _short_name(name: str) -> str:
    return name.rpartition("/")[2]


def conditions(metadata: Any) -> Iterable[str]:
    """Progress lines from an operation's metadata (the Service or Revision as it reconciles)."""
    for c in list(getattr(metadata, "conditions", [])):
        if c.type_ and c.state:
            yield f"{c.type_}: {run_v2.Condition.State(c.state).name.removeprefix('CONDITION_').lower()}" + (
                f" ({c.message})" if c.message and c.state != run_v2.Condition.State.CONDITION_SUCCEEDED else ""
            )
