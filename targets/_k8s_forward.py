"""A port on 127.0.0.1 forwarded to the ready pods behind a label selector, over the API server's
port-forward (``kubernetes.stream.portforward``): traffic never goes to pod or cluster IPs.

Every accepted connection is forwarded to one ready, not terminating pod, chosen round-robin
from a short-lived cache that the target refreshes at a Service switch, so new connections follow
it at once (a listing begun before the switch is used once, never cached). If a pod
closes a connection while a request sent on it is still unanswered (a server that shuts down
closes idle keep-alive connections, racing with the client's next request), the request bytes
are sent again on a connection to another pod: the client never sees that race.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.stream import portforward

_log = logging.getLogger("slipway.kubernetes.forward")
_CACHE_S = 0.5
_RETRIES = 5

Selector = Callable[[], dict[str, str] | None]


class Forwarder:
    def __init__(self, api: client.ApiClient, namespace: str, selector: Selector, port: int, listen_port: int = 0):
        self.core = client.CoreV1Api(api)
        # ``portforward`` swaps the ``request`` method of the ApiClient it is given while it connects:
        # it gets its own client, and one connect at a time, so no other call goes through the swap.
        self._pf_api = client.CoreV1Api(client.ApiClient(api.configuration))
        self._pf_lock = threading.Lock()
        self.namespace, self.selector, self.port = namespace, selector, port
        self._listener = socket.create_server(("127.0.0.1", listen_port), backlog=128)
        self.local_port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._cache: tuple[float, list[str]] = (0.0, [])
        self._generation = 0  # refreshes so far
        self._rr = itertools.count()
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name=f"k8s-forward-{self.local_port}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def refresh(self) -> None:
        with self._lock:
            self._cache = (0.0, [])
            self._generation += 1  # a listing begun before this is stale: it is not cached

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    # --- internals ----------------------------------------------------------------------------

    def _pods(self) -> list[str]:
        with self._lock:
            at, pods = self._cache
            if time.monotonic() - at < _CACHE_S and pods:
                return pods
            generation = self._generation
        selector = self.selector()
        pods = []
        if selector:
            text = ",".join(f"{k}={v}" for k, v in selector.items())
            for pod in self.core.list_namespaced_pod(self.namespace, label_selector=text).items:
                conditions = pod.status.conditions or []
                ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
                if ready and pod.metadata.deletion_timestamp is None:
                    pods.append(pod.metadata.name)
        with self._lock:
            if generation == self._generation:
                self._cache = (time.monotonic(), pods)
        return pods

    def _open(self, avoid: str = "") -> tuple[Any, str]:
        for attempt in range(_RETRIES):
            pods = self._pods()
            choices = [p for p in pods if p != avoid] or pods
            if choices:
                pod = choices[next(self._rr) % len(choices)]
                try:
                    with self._pf_lock:
                        pf = portforward(self._pf_api.connect_get_namespaced_pod_portforward, pod, self.namespace,
                                         ports=str(self.port))  # fmt: skip
                    return pf, pod
                except Exception as exc:  # the pod went away between listing and connecting
                    _log.debug("port-forward to %s failed: %s", pod, exc)
            self.refresh()
            time.sleep(0.2 * (attempt + 1))
        raise ConnectionError(f"no ready pod in namespace {self.namespace} for {self.selector()}")

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Pump one client connection. The pod side is replaceable: a pod that closes while the
        client is idle is replaced at the client's next bytes, and a request the pod never answered
        is sent again to another pod (at most ``_RETRIES`` times in a row)."""
        pf: Any = None
        up: Any = None
        pod = ""
        unanswered = b""  # client bytes sent since the pod last sent anything
        replays = 0
        sel = selectors.DefaultSelector()
        sel.register(conn, selectors.EVENT_READ, "client")
        try:
            while not self._closed.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "client":
                        data = conn.recv(65536)
                        if not data:
                            return
                        unanswered += data
                        if up is None:
                            pf, pod = self._open(avoid=pod)
                            up = pf.socket(self.port)
                            sel.register(up, selectors.EVENT_READ, "pod")
                        up.sendall(data)
                        continue
                    data = up.recv(65536)
                    if data:
                        unanswered, replays = b"", 0
                        conn.sendall(data)
                        continue
                    sel.unregister(up)
                    pf.close()
                    pf = up = None
                    if unanswered:  # the pod closed with a request in flight: send it to another pod
                        replays += 1
                        if replays > _RETRIES:
                            return
                        pf, pod = self._open(avoid=pod)
                        up = pf.socket(self.port)
                        sel.register(up, selectors.EVENT_READ, "pod")
                        up.sendall(unanswered)
        except (OSError, ConnectionError) as exc:
            _log.debug("forwarded connection ended: %s", exc)
        finally:
            sel.close()
            if pf is not None:
                pf.close()
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
