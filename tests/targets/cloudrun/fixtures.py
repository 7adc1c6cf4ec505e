"""The Cloud Run emulator for every test that needs Google Cloud (tests/targets/cloudrun/emulator.py).

A plugin (tests/conftest.py lists it) so that tests/targets/cloudrun and the contract tests share one
emulator per session. ``gcp_env`` points Google's Application Default Credentials (and google-auth's
ID-token source) at a service-account key file the emulator issued, for a deployer holding the roles
docs/targets/cloudrun.md lists; after each test no fault is left set and nothing of the test is left
running on the emulator's data plane.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from slipway.release import ImageRef, Stage
from slipway.spec import CloudRunTarget, TargetConfig
from targets.base import Target
from tests.images import build_and_push

if TYPE_CHECKING:
    from tests.targets.cloudrun.emulator import CloudRunEmulator

PROJECT = "slipway-test"
OTHER_PROJECT = "slipway-test-prod"  # production in another project
REGION = "europe-west1"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def cloudrun_emulator(tmp_path_factory: pytest.TempPathFactory, docker_services: None) -> Iterator[CloudRunEmulator]:
    from tests.targets.cloudrun.emulator import CloudRunEmulator

    root = tmp_path_factory.mktemp("cloudrun")
    emulator = CloudRunEmulator(root).start()
    for project in (PROJECT, OTHER_PROJECT):
        emulator.add_project(project)
    emulator.deployer(PROJECT, root / "deployer.json")
    emulator.projects[OTHER_PROJECT].policy = {r: set(m) for r, m in emulator.projects[PROJECT].policy.items()}
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def gcp_env(cloudrun_emulator: CloudRunEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudRunEmulator]:
    """ADC is the emulator's deployer; no fault outlives its test; nothing of the test keeps running."""
    emulator = cloudrun_emulator
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(emulator.root / "deployer.json"))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    emulator.baseline = {p: {r: set(m) for r, m in project.policy.items()} for p, project in emulator.projects.items()}
    yield emulator
    reset(emulator)


def reset(emulator: CloudRunEmulator) -> None:
    """No fault or hook set, every project's IAM policy as the session began."""
    emulator.faults.clear()
    emulator.hooks.clear()
    for p, policy in emulator.baseline.items():
        emulator.projects[p].policy = {r: set(m) for r, m in policy.items()}


@contextlib.contextmanager
def targets_on(
    emulator: CloudRunEmulator, config: Callable[..., TargetConfig], state_dir: Path, api_key: str
) -> Iterator[Callable[..., Target]]:
    """A factory of targets on the emulator (``config(emulator, **settings)``), each torn down at the end
    with the faults and IAM policies of the session restored first (the teardown needs neither)."""
    from targets import make_target
    from tests.targets.fixtures import context

    made: list[Target] = []

    def factory(stage: Stage = Stage.PRODUCTION, **settings: Any) -> Target:
        target = make_target(config(emulator, **settings), context(stage, state_dir, api_key))
        made.append(target)
        return target

    yield factory
    reset(emulator)
    for target in made:
        target.teardown()


def cloudrun_config(emulator: CloudRunEmulator, **settings: Any) -> CloudRunTarget:
    """A target config on the emulator; a service name of its own unless given."""
    return CloudRunTarget.model_validate(
        {
            "project": PROJECT,
            "region": REGION,
            "service": f"iris-t{next(_names)}",
            "api_endpoint": emulator.url,
            "secret_manager_endpoint": emulator.url,
            "logging_endpoint": emulator.url,
            "ready_timeout_s": 60,
            "promote_timeout_s": 60,
            "startup_timeout_s": 30,
            **settings,
        }
    )


def key_file(emulator: CloudRunEmulator) -> Path:
    return emulator.root / "deployer.json"


@pytest.fixture(scope="session")
def hung_image(docker_services: None) -> ImageRef:
    """An image whose server never answers: it sleeps instead of serving (pushed, by digest). This and
    ``exiting_image`` are the bad images of the Google targets' tests (Cloud Run, Vertex AI)."""
    return build_and_push(
        "hung", 'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "import time; time.sleep(3600)"]\n'
    )


@pytest.fixture(scope="session")
def exiting_image(docker_services: None) -> ImageRef:
    """An image that prints why and exits at once, as a server missing its configuration would."""
    script = "import sys; print('fatal: MODEL_BUCKET is not set', flush=True); sys.exit(3)"
    return build_and_push("exits", f'FROM slipway/python-base:bookworm\nENTRYPOINT ["python3", "-c", "{script}"]\n')
