"""A push that fails midway, on a real registry behind a proxy that cuts the connection.

The registry is a second real ``docker-registry`` (own port, own storage) started by the test; in
front of it a small TCP proxy (a thread) forwards bytes both ways and, while ``cut`` is set, drops
the connection of a matching request once that request has sent some bytes. The push goes through
the real engine (dockerd connects to the proxy) and the project's ``push``.

What is cut: one layer's upload, once, mid-body (dockerd retries a failed layer by itself, after 5 s;
a layer that keeps failing costs 5+10+15+20 s of its back-off before the push fails, too slow here),
and then the manifest upload, after all layers are in: so the push dies midway, with layers in the
registry and no image.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest

from serving.manifest import read_manifest
from slipway.errors import TransientImageError
from slipway.release import ImageRef, Release
from tasks.image import build, push
from tasks.package import ModelPackage
from tests.images import WHEELS, second_registry, spec_for

pytestmark = pytest.mark.docker
MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
_REQUEST = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")


class CuttingProxy:
    """127.0.0.1:<port> → ``upstream``. While ``cut``: a request matching a rule (pattern on
    ``METHOD path``, bytes to let through, how many times; None: always) has its connection dropped."""

    def __init__(self, upstream: tuple[str, int], rules: list[tuple[re.Pattern[str], int, int | None]]) -> None:
        self.upstream, self.rules = upstream, rules
        self.cut = True
        self.cuts: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for args in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        request, sent = "", 0  # the request being sent on this connection, and its bytes so far
        try:
            while data := src.recv(65536):
                if from_client and (starts := list(_REQUEST.finditer(data))):
                    last = starts[-1]
                    request = f"{last.group(1).decode()} {last.group(2).decode()}"
                    sent = -last.start()
                if from_client and self.cut and (rule := self._rule(request, sent + len(data))) is not None:
                    dst.sendall(data[: max(rule - sent, 0)])
                    self.cuts.append(request.partition("?")[0])
                    raise ConnectionAbortedError(request)
                sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def _rule(self, request: str, sent: int) -> int | None:
        """The byte count after which to cut ``request``, which has ``sent`` bytes; None: let it pass."""
        with self._lock:
            for i, (pattern, after, times) in enumerate(self.rules):
                if pattern.search(request) and sent > after and times != 0:
                    self.rules[i] = (pattern, after, None if times is None else times - 1)
                    return after
        return None

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[str]:
    """A second real registry on its own port with its own storage (no auth), removed afterwards."""
    with second_registry(tmp_path) as address:
        yield address


@pytest.fixture
def cutting_proxy(own_registry: str) -> Iterator[CuttingProxy]:
    host, port = own_registry.split(":")
    proxy = CuttingProxy((host, int(port)), [
        (re.compile(r"^PATCH /v2/\S+/blobs/uploads/"), 1 << 20, 1),  # a layer, 1 MiB in, once
        (re.compile(r"^PUT /v2/\S+/manifests/"), 600, None),  # the manifest, every time
    ])  # fmt: skip
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.fault("injected failure")
def test_push_cut_midway_is_transient_leaves_no_image_and_a_retry_succeeds(
    releases: dict[str, Release], own_registry: str, cutting_proxy: CuttingProxy
) -> None:
    spec = spec_for(repository=f"127.0.0.1:{cutting_proxy.port}/slipway-test")
    pkg = ModelPackage(releases["v1"].package_dir, read_manifest(releases["v1"].package_dir))
    ref = build(spec, pkg, cache_dir=WHEELS)
    repository, _, tag = ref.rpartition(":")
    path = repository.partition("/")[2]
    try:
        lines: list[str] = []
        result: ImageRef | None = None
        with pytest.raises(TransientImageError) as info:
            result = push(spec, ref, log=lines.append)
        assert result is None and not lines  # no ImageRef, no "pushed" line: nothing to deploy downstream
        blob_cuts = [c for c in cutting_proxy.cuts if c.startswith("PATCH ")]
        assert len(blob_cuts) == 1 and cutting_proxy.cuts[-1] == f"PUT /v2/{path}/manifests/{tag}", cutting_proxy.cuts
        message = str(info.value)
        assert re.match(rf"\[image push {re.escape(ref)}\] the push of {re.escape(ref)} failed after [1-9]\d* "
                        rf"uploaded layer\(s\): .*{re.escape(repository.partition('/')[0])}/v2/{path}/manifests/",
                        message), message  # fmt: skip
        assert "→ nothing is deployed from a failed push" in message and "release again" in message
        # the registry holds no image under the tag: blobs may be there, but nothing refers to them
        served = httpx.get(f"http://{own_registry}/v2/{path}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES})
        assert served.status_code == 404, served.text

        cutting_proxy.cut = False
        image = push(spec, ref, log=lines.append)
        assert image.repository == repository and image.digest.startswith("sha256:")
        served = httpx.get(f"http://{own_registry}/v2/{path}/manifests/{image.digest}",
                           headers={"Accept": MANIFEST_TYPES})  # fmt: skip
        assert served.status_code == 200, served.text
        assert served.headers["docker-content-digest"] == image.digest
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            docker.from_env().images.remove(ref, noprune=True)
