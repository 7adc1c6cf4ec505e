"""A stage's stable endpoint on a Docker host: an nginx container whose upstreams are switched.

The proxy holds the stage's state as well, so that it lives on the Docker host and not on the
machine that deployed: ``/etc/slipway/nginx.conf`` routes to the live container (and, during a
canary, to the candidate by weight) and ``/etc/slipway/state.json`` names them and the previous
containers kept for rollback. A change writes both files, checks the configuration
(``nginx -t``), reloads gracefully (``nginx -s reload``: old workers finish their requests, new
workers use the new upstreams) and then waits until the proxy itself answers with the new
configuration's token.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import httpx
from docker.models.containers import Container

from slipway.http import tls

PROXY_PORT = 8080
CONF_DIR = "/etc/slipway"
CONF = f"{CONF_DIR}/nginx.conf"
COMMAND = ["nginx", "-c", CONF, "-g", "daemon off;"]
TOKEN_PATH = "/__slipway/config"
WEIGHTS = 100  # a split is in hundredths: nginx weights are integers

_NGINX_CONF = """\
# written by slipway (targets/_proxy.py): {stage} of {service}
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 2048; }}
http {{
  access_log off;
  client_body_temp_path /tmp/nginx-body;
  proxy_temp_path /tmp/nginx-proxy;
  upstream slipway_live {{
{servers}
    keepalive 32;
  }}
  server {{
    listen {listen};
    client_max_body_size 16m;
    location = {token_path} {{
      default_type text/plain;
      return 200 "{token}";
    }}
    location / {{
      proxy_pass http://slipway_live;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_next_upstream error timeout;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""


def render(service: str, stage: str, upstreams: list[tuple[str, int]], port: int, token: str) -> str:
    """The configuration routing to ``upstreams``: (container, weight) pairs, weights summing to ``WEIGHTS``."""
    servers = "\n".join(f"    server {c}:{port} weight={w} max_fails=0;" for c, w in upstreams if w > 0)
    return _NGINX_CONF.format(service=service, stage=stage, servers=servers, listen=PROXY_PORT, token=token,
                              token_path=TOKEN_PATH)  # fmt: skip


def upstreams(state: dict[str, Any]) -> list[tuple[str, int]]:
    """The live container, and the canary's share of ``WEIGHTS`` when a split is on."""
    live, canary = state["live"]["container"], state.get("canary")
    if not canary:
        return [(live, WEIGHTS)]
    return [(live, WEIGHTS - canary["weight"]), (canary["container"], canary["weight"])]


def write_files(proxy: Container, conf: str, state: dict[str, Any] | str) -> None:
    """Write the configuration and the state (a dict, or the JSON text read back by ``read_file``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("slipway")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        state_text = state if isinstance(state, str) else json.dumps(state, indent=2)
        for name, text in (("nginx.conf", conf), ("state.json", state_text)):
            data = text.encode()
            info = tarfile.TarInfo(f"slipway/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    proxy.put_archive("/etc", buf.getvalue())


def read_file(proxy: Container, name: str) -> str:
    """A file of ``/etc/slipway`` in the proxy (its configuration or its state)."""
    stream, _ = proxy.get_archive(f"{CONF_DIR}/{name}")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(name)
        return member.read().decode() if member else ""


def read_state(proxy: Container) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(read_file(proxy, "state.json") or "{}")
    return state


def reload(proxy: Container) -> str:
    """Check the configuration and reload gracefully; returns nginx's complaint, '' when it took."""
    for cmd in (["nginx", "-t", "-q", "-c", CONF], ["nginx", "-s", "reload", "-c", CONF]):
        code, out = proxy.exec_run(cmd)
        if code != 0:
            text = out.decode(errors="replace").strip() if isinstance(out, bytes) else ""
            return f"`{' '.join(cmd)}` exited {code}: {text}"
    return ""


def serves(url: str, token: str) -> bool | None:
    """Whether a fresh connection is answered by the configuration of ``token``; None: no answer."""
    try:
        resp = httpx.get(url + TOKEN_PATH, headers={"Connection": "close"}, timeout=3, verify=tls())
    except httpx.HTTPError:
        return None
    return resp.status_code == 200 and resp.text == token


def wait_serving(url: str, token: str, timeout_s: float, *, settle: int = 8) -> bool:
    """Until ``settle`` answers in a row come from the new configuration.

    Right after a reload the old worker may still accept a connection or two before it has
    processed its shutdown signal; a run of fresh connections all answered by the new workers
    shows the switch is complete. An answer from the old configuration starts the count again; no
    answer at all (a busy machine) neither counts nor resets it.
    """
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        answer = serves(url, token)
        if answer is not None:
            streak = streak + 1 if answer else 0
        if streak >= settle:
            return True
        time.sleep(0.04)
    return False
