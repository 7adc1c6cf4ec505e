"""Releases built the way the flow builds them, and a factory for each target kind that can run here.

``target_kind`` is "local" unless a test (or a conftest) says otherwise; the contract tests
parametrize it over every kind. ``releases`` are v1 and v2 of the example model and "broken" (v1
with a tampered artifact, refused at start), each with the artifacts the kind's target declares:
the package, and the serving image built and pushed by ``tasks.image`` once per session.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from slipway.release import ArtifactKind, Release, Stage
from slipway.spec import LocalTarget, ServingSettings, Timeouts, load_spec
from targets import make_target
from targets.base import Target, TargetContext
from tasks.package import ModelPackage, package_model
from tests.conftest import free_port, spec_file

TargetFactory = Callable[[Stage], Target]
TIMEOUTS = Timeouts(ready_s=60, promote_s=60)
# What each kind's target takes from the build (its Capabilities.artifacts).
ARTIFACTS = {
    "local": frozenset({ArtifactKind.PACKAGE}),
    "fake": frozenset({ArtifactKind.PACKAGE}),
    "docker": frozenset({ArtifactKind.IMAGE}),
    "kubernetes": frozenset({ArtifactKind.IMAGE}),
    "ec2": frozenset({ArtifactKind.IMAGE}),
    "cloudrun": frozenset({ArtifactKind.IMAGE}),
    "sagemaker": frozenset({ArtifactKind.SERVER_IMAGE, ArtifactKind.MODEL_DATA}),
    "lambda": frozenset({ArtifactKind.IMAGE}),
    "vertex": frozenset({ArtifactKind.IMAGE}),
}
# Which release answered, by the sha256 of its package: filled by ``releases`` for targets whose endpoints
# serve only their platform's predict route and name the release's variant (SageMaker) or deployed model
# (Vertex AI, by its display name) in the answer.
SHA_OF_VARIANT: dict[str, str] = {}


def release_of(package: ModelPackage, rid: str, kinds: frozenset[ArtifactKind] = ARTIFACTS["local"]) -> Release:
    """A release of ``package`` carrying ``kinds``; its image built and pushed as the flow does, once."""
    from tests.images import image_of

    m = package.manifest
    image = None
    if ArtifactKind.IMAGE in kinds:
        image = image_of(package.dir)
    elif ArtifactKind.SERVER_IMAGE in kinds:
        image = image_of(package.dir, server_only=True)
    return Release(rid, m.name, m.name, m.version, m.sha256, package.dir, "spec-hash", image)


@pytest.fixture(scope="session")
def packaged(
    tmp_path_factory: pytest.TempPathFactory, iris_model: Path, iris_model_v2: Path
) -> dict[str, ModelPackage]:
    """v1 and v2 of the example model, and 'broken': v1 with a tampered artifact (refused at start)."""
    root = tmp_path_factory.mktemp("packaged")
    packages = root / "packages"
    v1 = package_model(load_spec(spec_file(root / "v1.yaml", iris_model)), packages)
    v2 = package_model(load_spec(spec_file(root / "v2.yaml", iris_model_v2)), packages)
    broken_dir = packages / "broken"
    shutil.copytree(v1.dir, broken_dir)
    with (broken_dir / v1.manifest.artifact_file).open("ab") as fh:
        fh.write(b"tampered")
    return {"v1": v1, "v2": v2, "broken": ModelPackage(broken_dir, v1.manifest)}


@pytest.fixture
def target_kind() -> str:
    return "local"


@pytest.fixture
def releases(packaged: dict[str, ModelPackage], target_kind: str) -> dict[str, Release]:
    kinds = ARTIFACTS[target_kind]
    made = {name: release_of(pkg, f"r-{name}", kinds) for name, pkg in packaged.items()}
    if target_kind == "kubernetes":
        from tests.targets.kubernetes.cluster import prepull

        for rel in made.values():
            prepull(rel.require_image())
    if target_kind == "sagemaker":
        from targets._sagemaker_objects import variant_name

        SHA_OF_VARIANT.update({variant_name(rel.id): rel.package_sha256 for rel in made.values()})
    if target_kind == "vertex":
        from targets.vertex import DISPLAY

        SHA_OF_VARIANT.update({DISPLAY + rel.id: rel.package_sha256 for rel in made.values()})
    return made


# The spec's serving section as every target here passes it to its servers (checked by the contract tests).
SERVING = ServingSettings(max_batch_rows=128)


def context(stage: Stage, state_dir: Path, api_key: str | None, service: str = "iris") -> TargetContext:
    key = SecretStr(api_key) if api_key else None
    return TargetContext(service, "iris", stage, state_dir, True, key, server_args=SERVING.server_args())


@pytest.fixture
def target_factory(
    target_kind: str, state_dir: Path, api_key: str, request: pytest.FixtureRequest
) -> Iterator[TargetFactory]:
    made: list[Target] = []
    # set up before (so torn down after) the targets: ec2 instances in the moto subnet that the data plane runs
    subnet = request.getfixturevalue("ec2_subnet") if target_kind == "ec2" else {}
    emulator = request.getfixturevalue("gcp_env") if target_kind in ("cloudrun", "vertex") else None
    sagemaker = request.getfixturevalue("sagemaker_env") if target_kind == "sagemaker" else None
    standin = request.getfixturevalue("aws_env") if target_kind == "lambda" else None

    def make(stage: Stage) -> Target:
        ctx = context(stage, state_dir, api_key)
        match target_kind:
            case "local":
                target = make_target(LocalTarget(port=free_port(), ready_timeout_s=20), ctx)
            case "fake":
                from tests.fakes.target import FakeTarget

                target = FakeTarget(ctx)
            case "docker":
                from slipway.spec import DockerTarget

                target = make_target(DockerTarget(port=free_port(), keep_previous_s=600), ctx)
            case "kubernetes":
                from tests.targets.kubernetes.cluster import config_for, namespace

                target = make_target(config_for(namespace(f"{request.node.name}-{stage.value}")), ctx)
            case "ec2":
                from tests.targets.ec2.fixtures import ec2_config

                target = make_target(ec2_config(subnet), ctx)
            case "cloudrun":
                from tests.targets.cloudrun.fixtures import cloudrun_config

                target = make_target(cloudrun_config(emulator), ctx)
            case "vertex":
                from tests.targets.vertex.fixtures import vertex_config

                target = make_target(vertex_config(emulator), ctx)
            case "sagemaker":
                from tests.targets.sagemaker.fixtures import sagemaker_config

                target = make_target(sagemaker_config(sagemaker), ctx)
            case "lambda":
                import importlib

                fixtures = importlib.import_module("tests.targets.lambda.fixtures")  # "lambda" is a keyword
                target = make_target(fixtures.lambda_config(standin), ctx)
        made.append(target)
        return target

    yield make
    for target in made:
        target.teardown()
