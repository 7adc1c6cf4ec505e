"""Releases built from real packages, and a factory for each target kind that can run here."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from slipway.spec import LocalTarget, load_spec
from targets import make_target
from targets.base import Release, Stage, Target, TargetContext
from tasks.package import package_model
from tests.conftest import SpecWriter, free_port

TargetFactory = Callable[[Stage], Target]


def release_of(package_dir: Path, rid: str) -> Release:
    from serving.manifest import read_manifest

    m = read_manifest(package_dir)
    return Release(rid, m.name, m.version, m.sha256, package_dir, "spec-hash")


@pytest.fixture
def releases(write_spec: SpecWriter, iris_model_v2: Path, tmp_path: Path) -> dict[str, Release]:
    """v1 and v2 of the example model, and 'broken': v1 with a tampered artifact (fails at start)."""
    packages = tmp_path / "packages"
    v1 = package_model(load_spec(write_spec()), packages)
    v2 = package_model(load_spec(write_spec(model=iris_model_v2, name="v2")), packages)
    broken_dir = packages / "broken"
    shutil.copytree(v1.dir, broken_dir)
    with (broken_dir / v1.manifest.artifact_file).open("ab") as fh:
        fh.write(b"tampered")
    return {
        "v1": release_of(v1.dir, "r-v1"),
        "v2": release_of(v2.dir, "r-v2"),
        "broken": release_of(broken_dir, "r-broken"),
    }


def _kubernetes_marks() -> list[pytest.MarkDecorator]:
    from tests.kubernetes.cluster import FIRST_RUN_TIMEOUT_S

    return [pytest.mark.kubernetes, pytest.mark.docker, pytest.mark.timeout(FIRST_RUN_TIMEOUT_S)]


@pytest.fixture(
    params=[
        "local",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("kubernetes", marks=_kubernetes_marks()),
    ]
)
def target_factory(request: pytest.FixtureRequest, state_dir: Path, api_key: str) -> Iterator[TargetFactory]:
    made: list[Target] = []

    def make(stage: Stage) -> Target:
        ctx = TargetContext("iris", stage, state_dir, True, SecretStr(api_key))
        match request.param:
            case "local":
                target = make_target(LocalTarget(port=free_port(), ready_timeout_s=20), ctx)
            case "docker":
                from slipway.spec import DockerTarget
                from tests.docker.helpers import docker_target

                target = docker_target(DockerTarget(port=free_port(), keep_previous_s=600), ctx)
            case "kubernetes":
                from tests.kubernetes.cluster import kubernetes_target, namespace

                target = kubernetes_target(namespace(f"{request.node.name}-{stage.value}"), ctx)
        made.append(target)
        return target

    yield make
    for target in made:
        target.teardown()
