"""The serving image's recipe: dependency wheels, the two Dockerfiles, and running a build.

Layers, most stable first, so a new model version with the same dependencies rebuilds only the
last, small layer:

    base image                       image.base (a local debootstrap image here, python:3.11-slim elsewhere)
    /opt/venv                        dependency wheels prepared on the host, installed offline
                                     (a "deps" image per requirement set, built once per engine)
    /srv/package/server/serving      the server code
    /srv/package/{package.json,model.*}  the model artifact and its manifest

A target that mounts model data beside the image (SageMaker: ``/opt/ml/model``) takes the
*server-only* image instead: the same layers without the last, tagged ``server-<key>`` by its
dependency layer and server code, so a new model version with the same dependencies builds nothing.

The image runs unchanged under every platform's container contract (``serving.contract``): the
entry point fixes no port, so the server follows $PORT (Cloud Run), ``serve`` (SageMaker, 8080),
AIP_HTTP_PORT (Vertex AI), or runs the Lambda runtime client (``awslambdaric``, in the dependency
layer) when AWS_LAMBDA_RUNTIME_API is set; the HEALTHCHECK follows the same contract.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from serving.contract import PACKAGE_DIR, PORT, SAGEMAKER_PORT, SERVER_UID
from slipway.errors import At, ImageError

Log = Callable[[str], None]

RUNTIME_DISTS = (
    "uvicorn", "httptools", "uvloop", "orjson", "numpy", "scipy", "joblib", "scikit-learn", "threadpoolctl",
    "awslambdaric", "simplejson", "snapshot-restore-py",  # the Lambda runtime interface client and its needs
    "skops",  # skops model files (the safe format), in every image: one dependency layer for every model
)  # fmt: skip

DEPS_DOCKERFILE = """\
FROM {base} AS wheels
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv \\
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels -r /wheels/requirements.txt \\
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {{}} +

FROM {base}
COPY --from=wheels /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LANG=C.UTF-8
"""

SERVER_DOCKERFILE = f"""\
FROM {{deps}}
ENV PYTHONPATH={PACKAGE_DIR}/server
USER {SERVER_UID}:{SERVER_UID}
EXPOSE {PORT} {SAGEMAKER_PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
  CMD ["python3", "-m", "serving.healthcheck"]
ENTRYPOINT ["python3", "-m", "serving", "--package", "{PACKAGE_DIR}", "--host", "0.0.0.0"]
CMD []
COPY server/ {PACKAGE_DIR}/server/
"""
# the serving image: the server-only image's instructions (the same cached layers) and the model on top
SERVING_DOCKERFILE = SERVER_DOCKERFILE + f"COPY package/ {PACKAGE_DIR}/\n"


def requirements(framework: Mapping[str, str]) -> str:
    """Pinned requirements: the server's runtime and the model's frameworks, at the host's versions."""
    pins: dict[str, str] = {}
    for dist in (*RUNTIME_DISTS, *framework):
        try:
            pins[dist.lower()] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist in framework:
                pins[dist.lower()] = framework[dist]
    return "".join(f"{d}=={v}\n" for d, v in sorted(pins.items()))


def deps_key(base_id: str, reqs: str) -> str:
    return hashlib.sha256(f"{base_id}\n{reqs}\n{DEPS_DOCKERFILE}".encode()).hexdigest()[:16]


def prepare_wheels(cache: Path, reqs: str, log: Log) -> Path:
    """Wheels for ``reqs`` (with their dependencies) in ``cache``, downloaded once with the host's pip."""
    done = cache / ".complete"
    if done.exists():
        return cache
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    (cache / "requirements.txt").write_text(reqs)
    log(f"downloading dependency wheels into {cache}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(cache),
           "-r", str(cache / "requirements.txt")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(f"  | {line}" for line in proc.stderr.strip().splitlines()[-15:])
        raise ImageError(
            f"pip download of the dependency wheels failed (exit {proc.returncode}):\n{tail}",
            at=At("image", "build", "wheels"),
            hint="check the package index configuration of this machine (pip config list)",
        )  # fmt: skip
    done.write_text(reqs)
    return cache


def write_serving_context(ctx: Path, package_dir: Path, artifact_file: str, deps_image: str) -> None:
    (ctx / "Dockerfile").write_text(SERVING_DOCKERFILE.format(deps=deps_image))
    shutil.copytree(package_dir / "server", ctx / "server", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (ctx / "package").mkdir()
    for name in ("package.json", artifact_file):
        shutil.copy2(package_dir / name, ctx / "package" / name)


def write_server_context(ctx: Path, package_dir: Path, deps_image: str) -> None:
    """The server-only image's context: the server code, no model (model data is mounted beside it)."""
    (ctx / "Dockerfile").write_text(SERVER_DOCKERFILE.format(deps=deps_image))
    shutil.copytree(package_dir / "server", ctx / "server", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def server_key(deps_image: str, package_dir: Path) -> str:
    """The server-only image's identity: its dependency layer, its Dockerfile and the server code's bytes."""
    digest = hashlib.sha256(f"{deps_image}\n{SERVER_DOCKERFILE}".encode())
    root = package_dir / "server"
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"\n{path.relative_to(root).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_build(chunks: Iterable[Mapping[str, Any]], log: Log, *, resource: str) -> str:
    """Follow a build's JSON stream, showing progress; the image id, or the failing step's output."""
    step, output, image_id = "", list[str](), ""
    for chunk in chunks:
        if "stream" in chunk:
            for line in str(chunk["stream"]).splitlines():
                if line.startswith("Step "):
                    step, output = line, []
                    log(line)
                elif line.strip():
                    output.append(line)
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = str(chunk["aux"]["ID"])
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") or chunk.get("error", "unknown error")
            tail = "\n".join(f"  | {line}" for line in output[-25:])
            raise ImageError(
                f"the build failed at {step or 'its start'}: {message}" + (f"\n{tail}" if tail else ""),
                at=At("image", "build", resource),
                hint="the output of the failing step is above; fix it and release again",
            )  # fmt: skip
    if not image_id:
        raise ImageError("the build ended without an image id", at=At("image", "build", resource))
    return image_id
