"""Build and push on the real engine and registry: layers, the weights-only path, and bad inputs."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import docker
import pytest

from serving.manifest import read_manifest
from slipway.errors import ConfigError, ImageError, TransientImageError
from slipway.release import Release
from tasks.image import build, push
from tasks.package import ModelPackage
from tests.conftest import free_port
from tests.images import WHEELS, second_registry, spec_for

pytestmark = pytest.mark.docker


def _pkg(release: Release) -> ModelPackage:
    return ModelPackage(release.package_dir, read_manifest(release.package_dir))


def test_weights_only_change_rebuilds_and_pushes_only_the_last_layer(
    releases: dict[str, Release], tmp_path: Path
) -> None:
    # a registry of its own: other tests of the session push these images to the shared one, whose
    # blobs a push to any repository there would mount instead of uploading
    with second_registry(tmp_path) as registry:
        spec, client = spec_for(repository=f"{registry}/slipway-test"), docker.from_env()
        v1 = push(spec, build(spec, _pkg(releases["v1"]), cache_dir=WHEELS))
        lines: list[str] = []
        started = time.monotonic()
        v2 = push(spec, build(spec, _pkg(releases["v2"]), cache_dir=WHEELS, log=lines.append), log=lines.append)
        elapsed = time.monotonic() - started
    layers1 = client.images.get(str(v1)).attrs["RootFS"]["Layers"]
    layers2 = client.images.get(str(v2)).attrs["RootFS"]["Layers"]
    assert layers1[:-1] == layers2[:-1] and layers1[-1] != layers2[-1]
    assert any("(1 layer(s) uploaded" in line for line in lines), lines
    assert str(v2).startswith(f"{spec.image.repository}/iris@sha256:")
    assert elapsed < 30  # the benchmark (benchmarks/images.py) measures it properly


@pytest.mark.fault("bad input")
def test_missing_base_image_is_a_config_error(releases: dict[str, Release]) -> None:
    spec = spec_for(base="slipway-test/no-such-base:none")
    with pytest.raises(ConfigError, match="base image 'slipway-test/no-such-base:none' is not on the Docker Engine"):
        build(spec, _pkg(releases["v1"]), cache_dir=WHEELS)


@pytest.fixture(scope="module")
def shell_less_base() -> str:
    """A base image with no shell and no Python: every RUN step fails."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("etc/hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    tag = "slipway-test/shell-less:1"
    subprocess.run(["docker", "import", "-", tag], input=buf.getvalue(), check=True, capture_output=True)
    return tag


@pytest.mark.fault("bad input")
def test_failing_build_names_the_step_and_its_output(releases: dict[str, Release], shell_less_base: str) -> None:
    with pytest.raises(ImageError) as info:
        build(spec_for(base=shell_less_base), _pkg(releases["v1"]), cache_dir=WHEELS)
    message = str(info.value)
    assert "the build failed at Step 3/7 : RUN python3 -m venv" in message
    assert "/bin/sh" in message


@pytest.mark.fault("bad input")
def test_unreachable_registry_is_transient(releases: dict[str, Release]) -> None:
    spec = spec_for(repository=f"127.0.0.1:{free_port()}/slipway-test")
    ref = build(spec, _pkg(releases["v1"]), cache_dir=WHEELS)
    with pytest.raises(TransientImageError, match="does not answer"):
        push(spec, ref)


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[str]:
    """A second real registry, with basic auth (user 'slipway', password 'right-password')."""
    hashed = bcrypt.hashpw(b"right-password", bcrypt.gensalt(rounds=5)).decode()
    (tmp_path / "htpasswd").write_text(f"slipway:{hashed}\n")
    with second_registry(tmp_path, f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp_path}/htpasswd\n") as address:
        yield address


@pytest.mark.fault("bad input")
def test_registry_refusing_credentials_is_a_config_error_and_secret_stays_secret(
    releases: dict[str, Release], auth_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(repository=f"{auth_registry}/slipway-test", registry_credentials="test-registry")
    monkeypatch.setenv("TEST_REGISTRY_USERNAME", "slipway")
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "wrong-password")
    lines: list[str] = []
    ref = build(spec, _pkg(releases["v1"]), cache_dir=WHEELS, log=lines.append)
    with pytest.raises(ConfigError, match="refused the credentials of slipway") as info:
        push(spec, ref, log=lines.append)
    assert "wrong-password" not in str(info.value) + "".join(lines)
    monkeypatch.setenv("TEST_REGISTRY_PASSWORD", "right-password")
    image = push(spec, ref, log=lines.append)
    assert image.digest.startswith("sha256:")
    assert "right-password" not in "".join(lines)


@pytest.mark.fault("bad input")
@pytest.mark.usefixtures("prefect_api")
def test_missing_credentials_are_a_config_error(releases: dict[str, Release]) -> None:
    spec = spec_for(registry_credentials="nobody-set-these")
    with pytest.raises(ConfigError, match="NOBODY_SET_THESE_USERNAME"):
        push(spec, "127.0.0.1:5000/slipway-test/iris:x")
