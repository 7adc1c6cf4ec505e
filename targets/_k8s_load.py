"""The gate's load generator as a Job next to the stage (``gate.where: in_target``).

One run is a ConfigMap (the runner below, the job's description, every file the job runs from) and
a Job of one pod in the stage's namespace (``_k8s_objects.gate_job``). The runner copies the files
to a writable directory, runs the command there, and prints its output files (zlib, base64, in
lines of 8,000 characters: container runtimes split longer log lines) and one result line: exit
code, CPU seconds of the command and its children (``wait4``), wall time, how busy the node's CPUs
were (``/proc/stat``), the tail of its log. The target reads them back from the pod's log, then
deletes the Job and the ConfigMap, whatever happened.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import zlib
from collections.abc import Callable
from typing import Any

from kubernetes import client

from slipway.errors import At, TargetError
from targets import _k8s_objects as obj
from targets._k8s_api import calls
from targets._k8s_pods import diagnose, summary
from targets.base import LoadJob, LoadOutput

OUTPUT, RESULT = "SLIPWAY-LOAD-OUTPUT", "SLIPWAY-LOAD-RESULT"
_CHUNK = 8000

RUNNER = f'''\
"""The in-cluster gate's runner (written by targets/_k8s_load.py): files in, command, files out."""
import base64, json, os, shutil, subprocess, sys, time, zlib

source, work = sys.argv[1], sys.argv[2]
job = json.load(open(os.path.join(source, "job.json")))
for path, key in job["files"].items():
    os.makedirs(os.path.dirname(os.path.join(work, path)) or work, exist_ok=True)
    shutil.copyfile(os.path.join(source, key), os.path.join(work, path))


def busy():
    ticks = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


busy0, total0, started = *busy(), time.monotonic()
with open(os.path.join(work, "job.log"), "wb") as log:
    proc = subprocess.Popen([sys.executable, *job["argv"]], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            env={{**os.environ, **job["env"], "PYTHONPATH": work}}, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
wall, (busy1, total1) = time.monotonic() - started, busy()
for name in job["outputs"]:
    if os.path.isfile(os.path.join(work, name)):
        data = base64.b64encode(zlib.compress(open(os.path.join(work, name), "rb").read())).decode()
        for i in range(0, len(data), {_CHUNK}):
            print("{OUTPUT}", name, data[i : i + {_CHUNK}], flush=True)
print("{RESULT}", json.dumps({{
    "exit": os.waitstatus_to_exitcode(status), "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall,
    "busy_pct": 100.0 * (busy1 - busy0) / max(total1 - total0, 1),
    "log_tail": open(os.path.join(work, "job.log"), errors="replace").read()[-4000:],
}}), flush=True)
'''


def run_job(
    core: client.CoreV1Api, batch: client.BatchV1Api, n: obj.Names, namespace: str, manifest: Callable[..., Any],
    job: LoadJob, *, secret: str | None, host: str, service_ip: str, timeout_s: float,
    progress: Callable[[str], None], delete: Callable[[Any, str], None],
) -> LoadOutput:  # fmt: skip
    """Run ``job`` as a Job in ``namespace`` and read back what it left; deletes both objects after
    (``delete(method, name)``: the target's own, which a missing object does not fail)."""
    name = obj.slug(f"{n.service}-gate-{job.name}-{secrets.token_hex(3)}", 63)
    where = f"kubernetes namespace {namespace}, Job {name}"
    keys = {path: f"f{i}" for i, path in enumerate(job.files)}
    description = {"files": keys, "argv": list(job.argv), "env": dict(job.env), "outputs": list(job.outputs)}
    data = {"runner.py": RUNNER, "job.json": json.dumps(description), **{keys[p]: t for p, t in job.files.items()}}
    deadline_s = max(30, int(timeout_s))
    at = At("kubernetes", "gate", f"{namespace}/job/{name}")
    try:
        with calls("gate", f"{namespace}/job/{name}"):
            core.create_namespaced_config_map(namespace, obj.gate_config_map(n, name, data))
            batch.create_namespaced_job(namespace, manifest(
                name=name, config_map=name, env=dict(job.env), key_env=job.key_env, secret=secret,
                cores=job.cores, host=host, service_ip=service_ip, deadline_s=deadline_s,
            ))  # fmt: skip
        progress(f"gate: Locust runs in {where}, against http://{host}")
        pod = _wait(core, namespace, name, time.monotonic() + deadline_s + 30, at)
        with calls("gate", f"{namespace}/pod/{pod}"):
            # the raw body: the client's own decoding hands back the repr of bytes for a log this long
            raw = core.read_namespaced_pod_log(pod, namespace, container=obj.GATE_CONTAINER, _preload_content=False)
            log = raw.data.decode("utf-8", "replace")
        return _parse(log, where, at)
    finally:
        with calls("gate", f"{namespace}/job/{name}"):
            delete(batch.delete_namespaced_job, name)
            delete(core.delete_namespaced_config_map, name)


def _wait(core: client.CoreV1Api, namespace: str, name: str, deadline: float, at: At) -> str:
    """The Job's pod, once it has run to its end; ``TargetError`` if it cannot run or runs too long."""
    selector = f"job-name={name}"
    while True:
        with calls("gate", at.resource):
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
            done = [p for p in pods if p.status.phase in ("Succeeded", "Failed")]
            if done:
                return str(done[0].metadata.name)
            failure = diagnose(core, namespace, selector)
            if failure is not None and failure.reason != "Exited":  # an exit is read from its log
                raise TargetError(f"the in-cluster gate cannot run: {failure}", at=at,
                                  hint=f"{failure.hint}; the image is the target's gate_image "
                                  "(scripts/images/locust.sh builds and pushes one)")  # fmt: skip
            if time.monotonic() > deadline:
                raise TargetError(f"the in-cluster gate did not finish in time:\n{summary(core, namespace, selector)}",
                                  at=at, hint=f"kubectl -n {namespace} describe job {name}")  # fmt: skip
        time.sleep(0.5)


def _parse(log: str, where: str, at: At) -> LoadOutput:
    chunks: dict[str, list[str]] = {}
    result: dict[str, Any] | None = None
    for line in log.splitlines():
        if line.startswith(OUTPUT + " "):
            _, name, chunk = line.split(" ", 2)
            chunks.setdefault(name, []).append(chunk)
        elif line.startswith(RESULT + " "):
            result = json.loads(line[len(RESULT) + 1 :])
    if result is None:
        tail = "\n".join(log.splitlines()[-15:])
        raise TargetError(f"the in-cluster gate left no result in its log:\n{tail}", at=at,
                          hint="its pod's log is above; the runner prints one result line as it ends")  # fmt: skip
    outputs = {name: zlib.decompress(base64.b64decode("".join(parts))).decode() for name, parts in chunks.items()}
    return LoadOutput(int(result["exit"]), outputs, str(result["log_tail"]), float(result["cpu_s"]),
                      float(result["wall_s"]), float(result["busy_pct"]), where)  # fmt: skip
