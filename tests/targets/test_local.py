"""What only the local target promises: detached processes, port checks, no key → no start."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from slipway.errors import ConfigError
from slipway.release import Release, Stage
from slipway.spec import LocalTarget
from targets import make_target
from targets.base import Target, put_live
from tests.conftest import free_port
from tests.targets.fixtures import TIMEOUTS, context

_DEPLOY_AND_EXIT = """
import sys
from pathlib import Path
from serving.manifest import read_manifest
from slipway.release import Stage
from slipway.spec import LocalTarget
from targets import make_target
from targets.base import put_live
from tasks.package import ModelPackage
from tests.targets.fixtures import TIMEOUTS, context, release_of
port, state, pkg, key = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
target = make_target(LocalTarget(port=port), context(Stage.PRODUCTION, state, key))
put_live(target, release_of(ModelPackage(pkg, read_manifest(pkg)), "r-detached"), TIMEOUTS)
"""


def _target(state_dir: Path, port: int, key: str | None) -> Target:
    return make_target(LocalTarget(port=port), context(Stage.PRODUCTION, state_dir, key))


def test_server_outlives_the_process_that_started_it(
    state_dir: Path, releases: dict[str, Release], api_key: str
) -> None:
    port = free_port()
    subprocess.run(
        [sys.executable, "-c", _DEPLOY_AND_EXIT, str(port), str(state_dir), str(releases["v1"].package_dir), api_key],
        check=True, timeout=60,
    )  # fmt: skip
    target = _target(state_dir, port, api_key)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        assert target.describe().release_id == "r-detached"
    finally:
        target.teardown()


@pytest.mark.fault("bad input")
def test_port_taken_by_another_program(state_dir: Path, releases: dict[str, Release], api_key: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        target = _target(state_dir, port, api_key)
        with pytest.raises(ConfigError) as info:
            put_live(target, releases["v1"], TIMEOUTS)
    assert f"port {port} on 127.0.0.1 is in use by another program" in str(info.value)
    assert "production.port" in info.value.hint


def test_authenticated_endpoint_needs_its_key(state_dir: Path, releases: dict[str, Release]) -> None:
    target = _target(state_dir, free_port(), None)
    with pytest.raises(ConfigError, match="requires an API key"):
        target.deploy(releases["v1"])


@pytest.mark.fault("injected failure")
def test_a_candidate_left_by_a_killed_run_is_reported_then_retired(
    state_dir: Path, releases: dict[str, Release], api_key: str
) -> None:
    target = _target(state_dir, free_port(), api_key)
    put_live(target, releases["v1"], TIMEOUTS)
    orphan = target.wait_ready(target.deploy(releases["v2"]), TIMEOUTS.ready_s)  # the run dies before promote
    assert "1 other server(s) of this stage still run" in target.describe().detail
    put_live(target, releases["v1"], TIMEOUTS)  # the next release retires it
    assert (
        not psutil.pid_exists(int(orphan.handle["pid"]))
        or psutil.Process(int(orphan.handle["pid"])).status() == psutil.STATUS_ZOMBIE
    )
    assert "other server" not in target.describe().detail
    target.teardown()
    assert target.describe().release_id is None
