"""The docker target on an engine reached over ssh: Debian's openssh-server, started here on
127.0.0.1 with a throw-away host key and user key, in front of this machine's Docker Engine."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slipway.errors import TargetError
from slipway.release import Release, Stage
from slipway.spec import DockerTarget
from targets import make_target
from targets.base import put_live
from tests.conftest import free_port
from tests.targets.fixtures import TIMEOUTS, context

pytestmark = pytest.mark.ssh


@pytest.fixture
def sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``ssh://root@127.0.0.1:PORT`` of a running sshd; HOME points at a .ssh with the key and host key."""
    if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
        pytest.fail("openssh-server is not installed: apt-get install -y openssh-server")
    d, home = tmp_path / "sshd", tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    d.mkdir()
    for key in (d / "host_key", home / ".ssh" / "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (d / "authorized_keys").write_text((home / ".ssh" / "id_ed25519.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
        "StrictModes no\nLogLevel ERROR\n"
    )
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {home}/.ssh/id_ed25519\n")
    monkeypatch.setenv("HOME", str(home))
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    try:
        for _ in range(50):
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            if subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True).stdout:
                break
            time.sleep(0.1)
        yield f"ssh://root@127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_blue_green_on_an_engine_over_ssh(
    sshd: str, releases: dict[str, Release], state_dir: Path, api_key: str
) -> None:
    ctx = context(Stage.PRODUCTION, state_dir, api_key)
    target = make_target(DockerTarget(host=sshd, port=free_port(), ready_timeout_s=30), ctx)
    try:
        url = put_live(target, releases["v1"], TIMEOUTS).endpoint.url
        put_live(target, releases["v2"], TIMEOUTS)
        meta = httpx.get(f"{url}/metadata", headers={"X-API-Key": api_key}, timeout=5).json()
        assert meta["sha256"] == releases["v2"].package_sha256
        status = target.describe()
        assert (status.release_id, status.healthy) == ("r-v2", True)
        assert sshd.removeprefix("ssh://") in status.detail
    finally:
        target.teardown()
    assert target.endpoint() is None


@pytest.mark.fault("bad input")
def test_ssh_host_that_refuses_is_a_clear_error(releases: dict[str, Release], state_dir: Path, api_key: str) -> None:
    ctx = context(Stage.STAGING, state_dir, api_key)
    target = make_target(DockerTarget(host=f"ssh://root@127.0.0.1:{free_port()}", port=free_port()), ctx)
    with pytest.raises(TargetError, match="cannot reach ssh://root@127.0.0.1") as info:
        target.deploy(releases["v1"])
    assert "ssh server" in str(info.value)
