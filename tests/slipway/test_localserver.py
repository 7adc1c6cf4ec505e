"""The local Prefect server the CLI starts on first use (slipway.localserver), for real: a
``prefect server start`` that a flow command starts, the next one reuses, ``slipway server`` finds
and stops, and that is never started where a server is meant to be chosen."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from slipway import localserver
from slipway.cli import app
from slipway.errors import ConfigError
from tests.conftest import SpecWriter, free_port

runner = CliRunner()


@pytest.fixture
def auto(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> Iterator[None]:
    """A user's shell: no CI, no Prefect API chosen (this session's test server forgotten), mode auto."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(localserver.MODE_ENV, "auto")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)  # this process's run logs reach the server before it stops
    localserver.stop()  # never left running by a test


def _flow_runs(api: str) -> list[str]:
    resp = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10)
    resp.raise_for_status()
    return [str(r["name"]) + ":" + str(r["state_type"]) for r in resp.json()]


def test_a_flow_command_starts_the_server_the_next_reuses_and_status_and_stop_find_it(
    auto: None, write_spec: SpecWriter
) -> None:
    assert runner.invoke(app, ["server", "status"]).exit_code == 1

    spec = str(write_spec())
    first = runner.invoke(app, ["teardown", spec, "--stage", "staging"])
    assert first.exit_code == 0, first.output
    assert "starting the local Prefect server" in first.output
    running = localserver.status()
    assert running is not None and running.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{running.ui}/api/health", timeout=5).status_code == 200
    home = Path(localserver.folder()) / "home"
    assert home.is_dir() and json.loads((localserver.folder() / "server.json").read_text())["pid"] == running.pid

    second = runner.invoke(app, ["teardown", spec, "--stage", "staging"])
    assert second.exit_code == 0, second.output
    assert "starting the local Prefect server" not in second.output  # reused
    assert localserver.status() == running
    runs = _flow_runs(running.url)
    assert len(runs) == 2 and all(r.endswith(":COMPLETED") for r in runs), runs  # both runs tracked there

    shown = runner.invoke(app, ["server", "status"])
    assert shown.exit_code == 0 and running.ui in shown.output and str(running.pid) in shown.output

    stopped = runner.invoke(app, ["server", "stop"])
    assert stopped.exit_code == 0 and f"pid {running.pid}" in stopped.output
    assert not Path(f"/proc/{running.pid}").exists() or b"prefect" not in Path(
        f"/proc/{running.pid}/cmdline"
    ).read_bytes()  # fmt: skip
    assert runner.invoke(app, ["server", "status"]).exit_code == 1
    assert "no local Prefect server ran" in runner.invoke(app, ["server", "stop"]).output


def test_a_stale_record_of_a_server_gone_with_the_machine_is_replaced(auto: None) -> None:
    localserver.folder().mkdir(parents=True)
    stale = {"pid": 2**22 - 1, "port": 1, "url": "http://127.0.0.1:1/api", "started_at": 0.0}
    (localserver.folder() / "server.json").write_text(json.dumps(stale))  # a server killed with the machine
    assert localserver.status() is None
    running = localserver.ensure(progress=lambda _: None)
    assert running.pid != stale["pid"] and localserver.status() == running


@pytest.mark.fault("unreachable service")
def test_a_port_taken_before_the_server_binds_it_is_given_up_for_another(
    auto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port drawn was free, then another program took it before the server bound it: the start
    says so and the server comes up on another port."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        draws = iter([taken, free_port()])
        monkeypatch.setattr(localserver, "free_port", lambda: next(draws))
        said: list[str] = []
        running = localserver.ensure(progress=said.append)
    assert running.port != taken and localserver.status() == running
    assert f"port {taken} was taken while the server started: another port" in said, said


@pytest.mark.parametrize(
    "environ",
    [{"CI": "true"}, {localserver.MODE_ENV: "temporary"}, {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}],
    ids=["CI", "temporary", "an API chosen"],
)
def test_never_started_where_a_server_is_meant_to_be_chosen(
    auto: None, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]} if "PREFECT_API_URL" in environ
                            else {}):  # fmt: skip
        assert not localserver.wanted()


@pytest.mark.fault("bad input")
def test_an_unknown_mode_is_refused_naming_the_two(auto: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(localserver.MODE_ENV, "always")
    with pytest.raises(ConfigError, match="'always' is not auto or temporary"):
        localserver.wanted()
