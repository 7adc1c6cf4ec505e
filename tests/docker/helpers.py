"""Images for test releases, and a docker target that builds the image of a release that has none."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from serving.manifest import read_manifest
from slipway.spec import DockerTarget, ReleaseSpec
from targets.base import Deployment, ImageRef, Release, TargetContext
from targets.docker import DockerHostTarget
from tasks.image import build, push
from tasks.package import ModelPackage
from tests.conftest import free_port

TEST_REPOSITORY = "127.0.0.1:5000/slipway-test"
_pushed: dict[tuple[str, str], ImageRef] = {}


def spec_for(name: str = "iris", **image: Any) -> ReleaseSpec:
    stage = {"kind": "docker", "port": 9999}
    image = {"repository": TEST_REPOSITORY, **image}
    return ReleaseSpec.model_validate(
        {"model": {"name": name, "source": "x"}, "image": image, "staging": stage, "production": stage}
    )


def image_of(package_dir: Path, spec: ReleaseSpec | None = None) -> ImageRef:
    """Build and push the image of a package (once per package and repository in a session)."""
    spec = spec or spec_for(read_manifest(package_dir).name)
    key = (str(package_dir), spec.image.repository)
    if key not in _pushed:
        pkg = ModelPackage(package_dir, read_manifest(package_dir))
        _pushed[key] = push(spec, build(spec, pkg, cache_dir=Path("/var/tmp/slipway/test-wheels")))
    return _pushed[key]


def with_image(release: Release) -> Release:
    return release if release.image else dataclasses.replace(release, image=image_of(release.package_dir))


class ImagingDockerTarget(DockerHostTarget):
    """The docker target, for the shared contract tests whose releases come without images."""

    def deploy(self, release: Release) -> Deployment:
        return super().deploy(with_image(release))

    def rollback(self, release: Release, timeout_s: float) -> Deployment:
        return super().rollback(with_image(release), timeout_s)


def docker_target(config: DockerTarget, ctx: TargetContext) -> ImagingDockerTarget:
    return ImagingDockerTarget(config, ctx)


@contextlib.contextmanager
def second_registry(root: Path, extra_config: str = "") -> Iterator[str]:
    """A real ``docker-registry`` on its own port and storage under ``root``; yields ``127.0.0.1:PORT``.

    ``extra_config`` is appended to its YAML config (e.g. an ``auth:`` section). The process and its
    storage (the pushed layers) are removed afterwards.
    """
    port = free_port()
    config = root / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}/storage\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra_config}"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root / "storage", ignore_errors=True)
