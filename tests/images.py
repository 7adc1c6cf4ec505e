"""Images for the tests, built the way the release flow builds them (``tasks.image``), once per session.

``image_of(package_dir)`` builds and pushes a package's serving image to the local registry
(127.0.0.1:5000, started by scripts/services/docker.sh) and caches the digest for the session;
``build_and_push`` makes small odd images (one that never answers, one that exits);
``second_registry`` runs another real registry beside it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx

from serving.manifest import read_manifest
from slipway.release import ImageRef
from slipway.spec import ReleaseSpec
from tasks.image import build, push
from tasks.package import ModelPackage

TEST_REPOSITORY = "127.0.0.1:5000/slipway-test"
WHEELS = Path("/var/tmp/slipway/test-wheels")  # the dependency wheels, downloaded once per machine
_pushed: dict[tuple[str, str, bool], ImageRef] = {}


def spec_for(name: str = "iris", **image: Any) -> ReleaseSpec:
    stage = {"kind": "docker", "port": 9999}
    image = {"repository": TEST_REPOSITORY, **image}
    return ReleaseSpec.model_validate(
        {"model": {"name": name, "source": "x"}, "image": image, "staging": stage, "production": stage}
    )


def image_of(package_dir: Path, spec: ReleaseSpec | None = None, *, server_only: bool = False) -> ImageRef:
    """Build and push the serving image of a package (once per package and repository in a session);
    ``server_only``: the image without the model (the same one for every package of a dependency set)."""
    spec = spec or spec_for(read_manifest(package_dir).name)
    key = (str(package_dir), spec.image.repository, server_only)
    if key not in _pushed:
        pkg = ModelPackage(package_dir, read_manifest(package_dir))
        _pushed[key] = push(spec, build(spec, pkg, cache_dir=WHEELS, server_only=server_only))
    return _pushed[key]


def build_and_push(name: str, dockerfile: str) -> ImageRef:
    client = docker.from_env()
    repo = f"{TEST_REPOSITORY}/{name}"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:test", rm=True, pull=False)
    digest = ""
    for chunk in client.api.push(repo, tag="test", stream=True, decode=True):
        assert "error" not in chunk, chunk
        digest = chunk.get("aux", {}).get("Digest", digest)
    return ImageRef(repo, digest)


def check_docker_services() -> None:
    """The engine, the registry and the local base images answer; else the run fails (never skips)."""
    import pytest

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.fail(f"the Docker Engine does not answer ({exc}): run scripts/services/docker.sh up")
    for image, script in (("slipway/python-base:bookworm", "base.sh"), ("slipway/nginx:bookworm", "nginx.sh")):
        if not client.images.list(name=image):
            pytest.fail(f"image {image} is missing: run scripts/images/{script}")
    try:
        httpx.get("http://127.0.0.1:5000/v2/", timeout=3).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the registry on 127.0.0.1:5000 does not answer ({exc}): run scripts/services/docker.sh up")


@contextlib.contextmanager
def second_registry(root: Path, extra_config: str = "") -> Iterator[str]:
    """A real ``docker-registry`` on its own port and storage under ``root``; yields ``127.0.0.1:PORT``.

    ``extra_config`` is appended to its YAML config (e.g. an ``auth:`` section). The process and its
    storage (the pushed layers) are removed afterwards.
    """
    from tests.conftest import free_port

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
