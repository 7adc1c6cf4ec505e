"""Production's stable endpoint on a Docker host: an nginx container whose upstream is switched.

The proxy holds the stage's state as well, so that it lives on the Docker host and not on the
machine that deployed: ``/etc/slipway/nginx.conf`` routes to the live container and
``/etc/slipway/state.json`` names it and the previous containers kept for rollback. A switch
writes both files, checks the configuration (``nginx -t``), reloads gracefully (``nginx -s reload``:
old workers finish their requests, new workers use the new upstream) and then waits until the
proxy itself reports the new release.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from typing import Any

import httpx
from docker.models.containers import Container

PROXY_PORT = 8080
CONF_DIR = "/etc/slipway"
CONF = f"{CONF_DIR}/nginx.conf"
COMMAND = ["nginx", "-c", CONF, "-g", "daemon off;"]
RELEASE_PATH = "/__slipway/release"

_NGINX_CONF = """\
# written by slipway (targets/_proxy.py): production of {model}
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr warn;
events {{ worker_connections 2048; }}
http {{
  access_log off;
  client_body_temp_path /tmp/nginx-body;
  proxy_temp_path /tmp/nginx-proxy;
  upstream slipway_live {{
    server {container}:{port} max_fails=0;
    keepalive 32;
  }}
  server {{
    listen {listen};
    client_max_body_size 16m;
    location = {release_path} {{
      default_type text/plain;
      return 200 "{release}";
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


def render(model: str, container: str, port: int, release: str) -> str:
    return _NGINX_CONF.format(
        model=model, container=container, port=port, listen=PROXY_PORT, release=release, release_path=RELEASE_PATH
    )


def write_files(proxy: Container, conf: str, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("slipway")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, text in (("nginx.conf", conf), ("state.json", json.dumps(state, indent=2))):
            data = text.encode()
            info = tarfile.TarInfo(f"slipway/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    proxy.put_archive("/etc", buf.getvalue())


def read_state(proxy: Container) -> dict[str, Any]:
    stream, _ = proxy.get_archive(f"{CONF_DIR}/state.json")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("state.json")
        state: dict[str, Any] = json.loads(member.read()) if member else {}
    return state


def reload(proxy: Container) -> str:
    """Check the configuration and reload gracefully; returns nginx's complaint, '' when it took."""
    for cmd in (["nginx", "-t", "-q", "-c", CONF], ["nginx", "-s", "reload", "-c", CONF]):
        code, out = proxy.exec_run(cmd)
        if code != 0:
            text = out.decode(errors="replace").strip() if isinstance(out, bytes) else ""
            return f"`{' '.join(cmd)}` exited {code}: {text}"
    return ""


def serves(url: str, release: str) -> bool | None:
    """Whether a fresh connection is answered by ``release``'s configuration; None: no answer."""
    try:
        resp = httpx.get(url + RELEASE_PATH, headers={"Connection": "close"}, timeout=3)
    except httpx.HTTPError:
        return None
    return resp.status_code == 200 and resp.text == release


def wait_serving(url: str, release: str, timeout_s: float, *, settle: int = 8) -> bool:
    """Until ``settle`` answers in a row come from the new configuration.

    Right after a reload the old worker may still accept a connection or two before it has
    processed its shutdown signal; a run of fresh connections all answered by the new workers
    shows the switch is complete. An answer from the old configuration starts the count again; no
    answer at all (a busy machine) neither counts nor resets it.
    """
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        answer = serves(url, release)
        if answer is not None:
            streak = streak + 1 if answer else 0
        if streak >= settle:
            return True
        time.sleep(0.04)
    return False
