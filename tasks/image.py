"""Build and push steps: the artifacts the spec's two targets declare they take.

Each target declares its artifact kinds (``Capabilities.artifacts``); these steps build the union
of both stages' (``artifacts_for``) and nothing else. The package itself is the package step's;
here the serving image is built when a target takes one (``local`` takes the package, so with
local on both stages both steps are no-ops and the release carries no image). The build runs on the
engine of ``DOCKER_HOST`` (default: the local socket) through the Docker SDK; see ``tasks._build``
for the layers. The push reads the digest back from the registry and from then on the image is only
ever referred to by digest (``ImageRef``), so production is switched to exactly the bytes that
passed the gate.

Targets that mount model data beside the image (``SERVER_IMAGE`` and ``MODEL_DATA``: SageMaker) get
the server-only image — built once per dependency set and server code, tagged ``server-<key>``, so
a new model version with the same dependencies builds no image at all — and the package's model
data archive (``slipway/modeldata.py``), which the target uploads. When a stage takes the image with
the model inside as well, that one is built: it serves mounted model data too.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
from prefect import task
from prefect.cache_policies import NONE

from slipway.errors import At, ConfigError, ImageError, TransientImageError
from slipway.modeldata import model_data
from slipway.release import ArtifactKind, ImageRef
from slipway.settings import get_settings
from slipway.spec import ReleaseSpec
from targets.base import Target
from targets.containers import check_registry, connect, map_error, registry_credentials
from tasks import TASK_OPTIONS, log_progress
from tasks._build import DEPS_DOCKERFILE, Log, deps_key, prepare_wheels, requirements, run_build, server_key
from tasks._build import write_server_context as _write_server_context
from tasks._build import write_serving_context as _write_context
from tasks.package import ModelPackage

_log = logging.getLogger("slipway.image")


def artifacts_for(targets: Sequence[Target]) -> frozenset[ArtifactKind]:
    """What the targets take, together: what the release must carry."""
    return frozenset().union(*(t.capabilities.artifacts for t in targets))


def repository_of(spec: ReleaseSpec) -> str:
    return f"{spec.image.repository.rstrip('/')}/{spec.model.name}"


def tag_of(package: ModelPackage) -> str:
    version = re.sub(r"[^A-Za-z0-9_.-]", "_", package.manifest.version).lstrip(".-")[:100] or "v"
    return f"{version}-{package.sha256[:12]}"


def labels_of(spec: ReleaseSpec, package: ModelPackage) -> dict[str, str]:
    m = package.manifest
    return {
        "org.opencontainers.image.title": m.name,
        "org.opencontainers.image.version": m.version,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.revision": m.sha256,
        "org.opencontainers.image.description": f"Slipway model server for {m.name} {m.version}",
        "org.opencontainers.image.base.name": spec.image.base,
        "io.slipway.model": m.name,
        "io.slipway.version": m.version,
        "io.slipway.sha256": m.sha256,
        "io.slipway.spec-hash": spec.spec_hash,
    }


SERVER_TAG_PREFIX = "server-"  # the server-only image's tags: server-<key>


def build(
    spec: ReleaseSpec,
    package: ModelPackage,
    *,
    log: Log = _log.info,
    cache_dir: Path | None = None,
    server_only: bool = False,
) -> str:
    """Build the serving image of ``package`` (``server_only``: without the model, reused while its
    dependencies and server code are unchanged); returns its local reference ``repository:tag``."""
    client = connect("", at=At("image", "build", "local engine"), error=ImageError)
    base = spec.image.base
    try:
        base_id = str(client.images.get(base).id)
    except docker.errors.ImageNotFound:
        raise ConfigError(
            f"the base image {base!r} is not on the Docker Engine (images are never pulled implicitly)",
            hint="build the local base with scripts/images/base.sh, `docker pull` it, or fix image.base in the spec",
        ) from None
    except docker.errors.DockerException as exc:
        raise map_error(exc, at=At("image", "build", base), error=ImageError) from exc
    reqs = requirements(package.manifest.framework)
    key = deps_key(base_id, reqs)
    deps_image = f"slipway/deps:{key}"
    cache = cache_dir or get_settings().path("wheels")
    ref = f"{repository_of(spec)}:{tag_of(package)}"
    try:
        if not _exists(client, deps_image):  # a direct lookup: listing by name scans every image
            wheels = prepare_wheels(cache / key, reqs, log)
            log(f"building the dependency layer {deps_image} (once per requirement set)")
            with tempfile.TemporaryDirectory(prefix="slipway-deps-") as tmp:
                ctx = Path(tmp)
                (ctx / "Dockerfile").write_text(DEPS_DOCKERFILE.format(base=base))
                _link_tree(wheels, ctx / "wheels")
                run_build(_stream(client, ctx, deps_image, {"io.slipway.deps": key}), log, resource=deps_image)
        if server_only:
            return _server_image(client, package, deps_image, repository_of(spec), log)
        log(f"building {ref}")
        with tempfile.TemporaryDirectory(prefix="slipway-image-") as tmp:
            ctx = Path(tmp)
            _write_context(ctx, package.dir, package.manifest.artifact_file, deps_image)
            with (ctx / "Dockerfile").open("a") as dockerfile:  # one step: build-time labels add one per label
                dockerfile.write(_label_instruction(labels_of(spec, package)))
            image_id = run_build(_stream(client, ctx, ref, {}), log, resource=ref)
    except docker.errors.DockerException as exc:
        raise map_error(exc, at=At("image", "build", ref), error=ImageError) from exc
    finally:
        client.close()
    log(f"built {ref} ({image_id[:19]})")
    return ref


def _server_image(client: docker.DockerClient, package: ModelPackage, deps: str, repository: str, log: Log) -> str:
    ref = f"{repository}:{SERVER_TAG_PREFIX}{server_key(deps, package.dir)}"
    if _exists(client, ref):
        log(f"the server-only image {ref} is built already: no image build for this model version")
        return ref
    log(f"building the server-only image {ref} (once per dependency set and server code)")
    with tempfile.TemporaryDirectory(prefix="slipway-server-") as tmp:
        _write_server_context(Path(tmp), package.dir, deps)
        labels = {"io.slipway.server": ref.rpartition(":")[2], "org.opencontainers.image.base.name": deps}
        image_id = run_build(_stream(client, Path(tmp), ref, labels), log, resource=ref)
    log(f"built {ref} ({image_id[:19]})")
    return ref


def build_model_data(package: ModelPackage, *, log: Log = _log.info) -> str:
    """The package's model data archive (``model.tar.gz``), beside it; returns its sha256."""
    made = model_data(package.dir)
    log(f"model data {made.path.name}: {made.size} bytes, sha256 {made.sha256[:12]}")
    return made.sha256


def push(spec: ReleaseSpec, ref: str, *, log: Log = _log.info) -> ImageRef:
    """Push ``repository:tag`` and return the image pinned by the digest the registry reports."""
    repository, _, tag = ref.rpartition(":")
    creds = registry_credentials(repository, spec.image.registry_credentials)
    check_registry(repository, creds, operation="push")
    client = connect("", at=At("image", "push", "local engine"), error=ImageError)
    digest, pushed, reused = "", 0, 0
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True,
                                 auth_config=creds.auth_config() if creds else None)  # fmt: skip
        for chunk in stream:
            status = str(chunk.get("status", ""))
            pushed += status == "Pushed"
            reused += status == "Layer already exists"
            if "error" in chunk or "errorDetail" in chunk:
                message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
                raise TransientImageError(
                    f"the push of {ref} failed after {pushed} uploaded layer(s): {message}",
                    at=At("image", "push", ref),
                    hint="nothing is deployed from a failed push; the registry keeps no half image: release again",
                )  # fmt: skip
            aux = chunk.get("aux")
            if isinstance(aux, dict) and "Digest" in aux:
                digest = str(aux["Digest"])
    except docker.errors.DockerException as exc:
        raise map_error(exc, at=At("image", "push", ref), error=ImageError) from exc
    finally:
        client.close()
    if not digest.startswith("sha256:"):
        raise ImageError(f"the registry reported no digest for {ref}", at=At("image", "push", ref))
    image = ImageRef(repository, digest, model_inside=not tag.startswith(SERVER_TAG_PREFIX))
    log(f"pushed {image} ({pushed} layer(s) uploaded, {reused} already there)")
    return image


def _exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _label_instruction(labels: dict[str, str]) -> str:
    return "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v, ensure_ascii=False)}" for k, v in labels.items()) + "\n"


def _stream(client: docker.DockerClient, ctx: Path, tag: str, labels: dict[str, str]) -> Iterable[Mapping[str, Any]]:
    return client.api.build(path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False, decode=True, labels=labels)


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                (dst / f.name).hardlink_to(f)
            except OSError:  # another file system
                shutil.copy2(f, dst / f.name)


@task(name="build image", cache_policy=NONE, **TASK_OPTIONS)
def build_image(spec: ReleaseSpec, package: ModelPackage, targets: Sequence[Target]) -> str | None:
    """Build what the stages take of ``package``: its model data archive, and its image (the server-only
    one where no stage takes the model inside); returns ``repository:tag``, or None when no stage takes an image."""
    kinds = artifacts_for(targets)
    if ArtifactKind.MODEL_DATA in kinds:
        build_model_data(package, log=log_progress)
    if ArtifactKind.IMAGE in kinds:
        return build(spec, package, log=log_progress)
    if ArtifactKind.SERVER_IMAGE in kinds:
        return build(spec, package, log=log_progress, server_only=True)
    return None


@task(name="push image", cache_policy=NONE, **TASK_OPTIONS)
def push_image(spec: ReleaseSpec, image_id: str | None) -> ImageRef | None:
    """Push a built image; returns it pinned by digest, or None when there is no image."""
    if image_id is None:
        return None
    return push(spec, image_id, log=log_progress)
