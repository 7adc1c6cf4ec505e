"""Runs killed part-way, and two deploys at once: afterwards production serves a known release, the
ledger agrees with it, and nothing a run started is left running.

The flow runs in a child process that SIGKILLs itself at the chosen step (as a lost machine or an
OOM kill would end it), against the session's Prefect server; the next run happens in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from flows.release import release
from flows.rollback import rollback
from slipway.ledger import Action, Outcome
from slipway.release import Stage
from tests.conftest import REPO, SpecWriter
from tests.flows.test_release import _ledger, _listening, _port, _sha_served

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.usefixtures("prefect_api")]

# Runs the release flow of argv[1] and SIGKILLs the process right after production's argv[2] step.
DIE_AFTER = """
import os, signal, sys
from flows.release import release
from targets.local import LocalProcessTarget

step = getattr(LocalProcessTarget, sys.argv[2])

def then_die(self, *args, **kwargs):
    result = step(self, *args, **kwargs)
    if self.stage == "production":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(LocalProcessTarget, sys.argv[2], then_die)
release(sys.argv[1])
"""


def _child_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO)}


def _release_killed_after(step: str, spec: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", DIE_AFTER, str(spec), step], env=_child_env(), cwd=REPO, capture_output=True,
        text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-3000:]


def _servers(state_dir: Path, stage: str) -> list[int]:
    """Model servers running for a stage (their command line names the stage's state folder)."""
    marker = str(state_dir / "local" / "iris" / stage) + os.sep
    found = {
        p.pid: p.ppid()
        for p in psutil.process_iter(["cmdline"])
        if "serving" in (p.info["cmdline"] or []) and any(a.startswith(marker) for a in p.info["cmdline"])
    }
    return [pid for pid, ppid in found.items() if ppid not in found]


@pytest.fixture
def specs(write_spec: SpecWriter, iris_model_v2: Path, state_dir: Path, api_key: str) -> tuple[Path, Path]:
    v1 = write_spec()
    v2 = write_spec(
        model=iris_model_v2, name="v2", staging__port=_port(v1, "staging"), production__port=_port(v1, "production")
    )
    yield v1, v2
    from flows.teardown import teardown

    teardown(str(v1))


@pytest.mark.fault("injected failure")
def test_killed_before_the_switch_the_next_run_retires_its_candidate_and_records_it_failed(
    specs: tuple[Path, Path], state_dir: Path, api_key: str
) -> None:
    v1, v2 = specs
    first = release(str(v1))
    _release_killed_after("wait_ready", v2)  # v2 passed the gate, its candidate is ready: no switch yet

    ledger = _ledger(state_dir)
    assert ledger.releases("iris")[-1].outcome is Outcome.PENDING
    assert ledger.live("iris", Stage.PRODUCTION).id == first.release.id  # type: ignore[union-attr]
    assert len(_servers(state_dir, "production")) == 2  # the live one and the orphaned candidate
    assert _listening(_port(v1, "staging"))  # the killed run never tore staging down

    second = release(str(v2))
    killed, retried = ledger.releases("iris")[1:]
    assert killed.outcome is Outcome.FAILED and "interrupted" in killed.error
    assert retried.id == second.release.id and retried.outcome is Outcome.PROMOTED
    assert ledger.live("iris", Stage.PRODUCTION).id == second.release.id  # type: ignore[union-attr]
    assert _sha_served(v1, api_key) == second.release.package_sha256
    assert len(_servers(state_dir, "production")) == 1
    assert not _servers(state_dir, "staging") and not _listening(_port(v1, "staging"))


@pytest.mark.fault("injected failure")
def test_killed_after_the_switch_the_next_run_records_what_production_serves(
    specs: tuple[Path, Path], state_dir: Path, api_key: str
) -> None:
    v1, v2 = specs
    first = release(str(v1))
    _release_killed_after("promote", v2)  # production switched to v2; the ledger was not told

    ledger = _ledger(state_dir)
    killed = ledger.releases("iris")[-1]
    assert killed.outcome is Outcome.PENDING
    assert _sha_served(v1, api_key) == killed.release.package_sha256
    assert ledger.live("iris", Stage.PRODUCTION).id == first.release.id  # type: ignore[union-attr]

    # A rollback right after: it must return to v1, which it can only know once v2 is on record.
    assert rollback(str(v1)) == first.release.id
    assert _sha_served(v1, api_key) == first.release.package_sha256
    settled = ledger.get(killed.id)
    assert settled is not None and settled.outcome is Outcome.PROMOTED and "interrupted" in settled.error
    assert [(e.action, e.release_id) for e in ledger.events("iris", Stage.PRODUCTION)] == [
        (Action.PROMOTE, first.release.id), (Action.RECONCILE, killed.id), (Action.ROLLBACK, first.release.id),
    ]  # fmt: skip
    assert len(_servers(state_dir, "production")) == 1
    assert not _servers(state_dir, "staging")


@pytest.mark.fault("injected failure")
def test_two_deploys_at_once_one_runs_the_other_is_refused_and_records_nothing(
    specs: tuple[Path, Path], state_dir: Path, api_key: str
) -> None:
    v1, v2 = specs
    cli = [str(Path(sys.executable).parent / "slipway"), "deploy"]
    out = {"env": _child_env(), "cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs = [subprocess.Popen([*cli, str(spec)], **out) for spec in (v1, v2)]  # type: ignore[call-overload]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outputs
    refused = outputs[[p.returncode for p in procs].index(codes[1])]
    assert "another deploy" in refused and "Traceback" not in refused

    (record,) = _ledger(state_dir).releases("iris")
    assert record.outcome is Outcome.PROMOTED
    assert _sha_served(v1, api_key) == record.release.package_sha256
    assert len(_servers(state_dir, "production")) == 1 and not _servers(state_dir, "staging")
