"""Benchmark the image build and push: cold build, warm rebuild, weights-only rebuild + push, size,
for Slipway and, side by side, for MLflow's `mlflow models build-docker` on the same model.

    .venv/bin/python benchmarks/images.py [--skip-cold] [--skip-mlflow]

Needs scripts/services/docker.sh up and scripts/images/base.sh. Uses the example model (iris), v1 and a
retrained v2 (same dependencies). The rows, for each side:

  cold build           nothing cached for this image: for Slipway a fresh base tag (slipway/python-base plus a
                       label: same bytes, new id, so a new dependency image and no build cache), pip download
                       from PyPI on the host (no local mirror, no pip cache), the dependency layer, the server
                       and model layers; for MLflow the whole Dockerfile on its fresh base (below)
  warm rebuild         the same model again: every step from the cache
  first push           the image to a new repository (layers the registry holds already, e.g. the base pushed
                       before, are mounted, not uploaded again)
  weights-only         the retrained model: build + push; the table shows which layers it rebuilds
  image size           the image as the engine reports it (uncompressed), its base, and what the build added

--skip-cold keeps Slipway's shared dependency image and wheels cache (no cold row for Slipway).

MLflow: the model saved with mlflow.sklearn.save_model, built with `mlflow models build-docker
--env-manager local`, the python:<model's Python>-slim path that MLflow picks itself for this model
(`generate-dockerfile`): apt-get install nginx, pip install mlflow, COPY the model, pip install its
requirements. That base cannot be pulled here, so for the run its name is a local tag of a stand-in:
Slipway's base (Debian bookworm, Python 3.11) + a venv first on PATH, so `python` and `pip` are a clean
interpreter as in the official image, + this machine's CA bundle (PyPI is reached through a TLS proxy
here); the tag is removed afterwards. Its RUN steps fetch from deb.debian.org and PyPI inside the build,
as on a user's machine. The default --env-manager (virtualenv) builds FROM ubuntu:24.04 and, inside the
build, clones pyenv from github.com, adds a Launchpad PPA and fetches bootstrap.pypa.io: none of those
resolve on this machine, so that path is not measured.

Both sides push with the same client code (tasks.image.push). Every image, tag and container the run makes
is removed at the end, and its manifests are deleted from the registry (the registry keeps the blobs
until its garbage collection). A run takes 6-8 min here (MLflow's cold build and first push take most).
Raw results go to benchmarks/out/images-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import docker.errors  # noqa: E402
import httpx  # noqa: E402
from common import PY, bench_env  # noqa: E402

from examples.iris.train import train  # noqa: E402
from slipway.release import ImageRef  # noqa: E402
from slipway.spec import ImageSettings, ReleaseSpec  # noqa: E402
from tasks.image import build, push  # noqa: E402
from tasks.package import ModelPackage, package_model  # noqa: E402

BASE = str(ImageSettings.model_fields["base"].default)
REGISTRY = "127.0.0.1:5000"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PYPI_ONLY = {"PIP_CONFIG_FILE": "/dev/null", "PIP_CERT": CA_BUNDLE, "PIP_NO_CACHE_DIR": "1"}
BENCH_LABEL = "io.slipway.bench"  # on the run's base images, so on all that is built on them
MLFLOW_BASE_DOCKERFILE = f"""\
FROM {BASE}
COPY ca-certificates.crt {CA_BUNDLE}
RUN python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT={CA_BUNDLE}
LABEL {BENCH_LABEL}={{run}}
"""
ROWS = ("cold build", "warm rebuild", "first push (new repo)", "weights-only build", "weights-only push",
        "weights-only build+push")  # fmt: skip
MLFLOW = "MLflow build-docker"

Results = dict[str, Any]
quiet = lambda _line: None  # noqa: E731


def _spec(model: Path, repository: str, base: str) -> ReleaseSpec:
    stage = {"kind": "docker", "port": 9999}
    return ReleaseSpec.model_validate({
        "model": {"name": "iris", "source": str(model), "samples": str(model.parent / "samples.json")},
        "image": {"repository": repository, "base": base}, "staging": stage, "production": stage,
    })  # fmt: skip


def _timed(label: str, results: Results, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - started, 2)
    print(f"  {label:<26} {results[label]:>7.2f} s", flush=True)
    return value


def _measure(results: Results, cold: Callable[[], str] | None, v1: Callable[[], str], v2: Callable[[], str],
             push_ref: Callable[[str], ImageRef], created: list[str]) -> tuple[str, str]:  # fmt: skip
    """The rows, in order; returns the v1 and v2 references."""
    if cold:
        _timed("cold build", results, cold)
    ref1 = _timed("warm rebuild", results, v1)
    created.append(str(_timed("first push (new repo)", results, push_ref, ref1)))
    started = time.perf_counter()
    ref2 = _timed("weights-only build", results, v2)
    pushed = _timed("weights-only push", results, push_ref, ref2)
    created.append(str(pushed))
    results["weights-only build+push"] = round(time.perf_counter() - started, 2)
    print(f"  {'weights-only build+push':<26} {results['weights-only build+push']:>7.2f} s  ({pushed})")
    return ref1, ref2


def _sizes(client: docker.DockerClient, results: Results, base: str, v1: str, v2: str) -> None:
    """Image size, base size, and the layers of v2 that v1 does not share (what a new version rebuilds)."""
    shared = {h["Id"] for h in client.images.get(v1).history()}
    steps = [h for h in reversed(client.images.get(v2).history()) if h["Id"] not in shared]
    layers = [h for h in steps if "#(nop)" not in h["CreatedBy"] or re.search(r"#\(nop\) (COPY|ADD) ", h["CreatedBy"])]
    results["image size MB"] = round(client.images.get(v2).attrs["Size"] / 1e6, 1)
    results["base image MB"] = round(client.images.get(base).attrs["Size"] / 1e6, 1)
    results["added by the build MB"] = round(results["image size MB"] - results["base image MB"], 1)
    results["rebuilt by a new version"] = [{"step": h["CreatedBy"], "bytes": h["Size"]} for h in layers]
    results["rebuilt by a new version MB"] = round(sum(h["Size"] for h in layers) / 1e6, 3)
    results["metadata-only steps rebuilt"] = len(steps) - len(layers)


def slipway_side(client: docker.DockerClient, work: Path, run: str, cold: bool, created: list[str]) -> Results:
    results: Results = {}
    repository, base = f"{REGISTRY}/{run}", BASE
    if cold:  # the same bytes under a new image id: a new dependency image, nothing keyed on the id cached
        base = f"{run}-base:slipway"
        label = io.BytesIO(f"FROM {BASE}\nLABEL {BENCH_LABEL}={run}\n".encode())
        client.images.build(fileobj=label, tag=base, rm=True, forcerm=True, pull=False)
    v1 = package_model(_spec(train(work / "v1", version=1), repository, base), work / "packages")
    v2 = package_model(_spec(train(work / "v2", version=2), repository, base), work / "packages")
    spec = _spec(Path(v1.dir) / v1.manifest.artifact_file, repository, base)
    wheels = work / "wheels" if cold else Path("/var/tmp/slipway/test-wheels")

    def built(package: ModelPackage) -> str:
        ref = build(spec, package, cache_dir=wheels, log=quiet)
        created.append(client.images.get(ref).id)  # each build relabels the image: every id is this run's
        return ref

    def cold_build() -> str:
        with mock.patch.dict("os.environ", PYPI_ONLY):  # wheels from PyPI, as MLflow's build gets them
            return built(v1)

    ref1, ref2 = _measure(results, cold_build if cold else None, lambda: built(v1), lambda: built(v2),
                          lambda ref: push(spec, ref, log=quiet), created)  # fmt: skip
    _sizes(client, results, base, ref1, ref2)
    return results


def _build_docker(model: Path, ref: str, log: Path) -> str:
    """`mlflow models build-docker` as a user runs it; returns how many steps came from the cache."""
    cmd = [str(Path(PY).parent / "mlflow"), "models", "build-docker", "-m", str(model), "-n", ref,
           "--env-manager", "local"]  # fmt: skip
    with log.open("w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=bench_env(), check=False).returncode
    text = log.read_text()
    if code:
        raise RuntimeError(f"mlflow models build-docker failed ({code}): ...\n{text[-3000:]}")
    steps = len(re.findall(r"^Step \d+/\d+ :", text, re.MULTILINE))
    return f"{text.count(' ---> Using cache')} of {steps} steps from the cache"


def _mlflow_model(work: Path, version: int) -> Path:
    import joblib
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    model = joblib.load(train(work / f"train-v{version}", version=version))
    x = np.asarray([[5.1, 3.5, 1.4, 0.2]])
    out = work / f"v{version}" / "model"
    mlflow.sklearn.save_model(model, str(out), signature=infer_signature(x, model.predict(x)))
    return out


def _mlflow_base_name(model: Path, work: Path) -> str:
    """The FROM of MLflow's own Dockerfile for this model (`generate-dockerfile`, same code as build-docker)."""
    out = work / "dockerfile"
    cmd = [str(Path(PY).parent / "mlflow"), "models", "generate-dockerfile", "-m", str(model), "-d", str(out),
           "--env-manager", "local"]  # fmt: skip
    subprocess.run(cmd, capture_output=True, env=bench_env(), check=True)
    return next(line.split()[1] for line in (out / "Dockerfile").read_text().splitlines() if line.startswith("FROM "))


def mlflow_side(client: docker.DockerClient, work: Path, run: str, created: list[str]) -> Results:
    import mlflow

    results: Results = {"version": mlflow.__version__}
    repository = f"{REGISTRY}/{run}"
    v1, v2 = _mlflow_model(work, 1), _mlflow_model(work, 2)
    base = _mlflow_base_name(v1, work)
    if client.images.list(name=base):
        raise RuntimeError(f"{base} is on the engine already: not replaced by this benchmark's stand-in")
    ctx = work / "base"
    ctx.mkdir(parents=True)
    shutil.copy2(CA_BUNDLE, ctx / "ca-certificates.crt")
    (ctx / "Dockerfile").write_text(MLFLOW_BASE_DOCKERFILE.format(run=run))
    client.images.build(path=str(ctx), tag=base, rm=True, forcerm=True, pull=False)
    results["base"] = f"{base}, a local stand-in: {BASE} + a venv on PATH + this machine's CA bundle"
    spec = _spec(v1, repository, base)  # push() reads only the registry credentials (none) from it
    cache: dict[str, str] = {}

    def built(label: str, model: Path, ref: str) -> str:
        cache[label] = _build_docker(model, ref, work / f"{label.replace(' ', '-')}.log")
        created.append(client.images.get(ref).id)
        return ref

    ref1, ref2 = f"{repository}/mlflow-iris:v1", f"{repository}/mlflow-iris:v2"
    _measure(results, lambda: built("cold build", v1, ref1), lambda: built("warm rebuild", v1, ref1),
             lambda: built("weights-only build", v2, ref2), lambda ref: push(spec, ref, log=quiet),
             created)  # fmt: skip
    for label, hits in cache.items():
        print(f"  {label}: {hits}")
    results["steps from the cache"] = cache
    _sizes(client, results, base, ref1, ref2)
    return results


def _cleanup(client: docker.DockerClient, created: list[str], run: str) -> None:
    """Everything the run made: images (by id), the containers and images built on this run's bases (they
    inherit the base's label), leaves first, then the manifests pushed to the registry (repository@digest)."""
    for image in (item for item in created if "@" not in item):
        with contextlib.suppress(docker.errors.ImageNotFound):  # gone with another one already
            client.images.remove(image, force=True)
    mine = {"label": f"{BENCH_LABEL}={run}"}
    for container in client.containers.list(all=True, filters=mine):
        container.remove(force=True)
    while images := client.api.images(all=True, filters=mine):
        parents = {i["ParentId"] for i in images}
        for leaf in (i["Id"] for i in images if i["Id"] not in parents):
            with contextlib.suppress(docker.errors.ImageNotFound):  # pruned with a child already
                client.images.remove(leaf, force=True)
    for repository, _, digest in (item.partition("@") for item in created if "@" in item):
        registry, _, name = repository.partition("/")
        httpx.delete(f"http://{registry}/v2/{name}/manifests/{digest}", timeout=10).raise_for_status()


def _table(sides: dict[str, Results | None]) -> None:
    def cell(results: Results | None, key: str, unit: str, digits: int) -> str:
        if results is None:
            return "skipped"
        return f"{results[key]:.{digits}f} {unit}" if key in results else "-"

    def row(label: str, key: str, unit: str, digits: int) -> None:
        print(f"{label:<28}" + "".join(f"{cell(r, key, unit, digits):>22}" for r in sides.values()))

    print(f"\n{'':<28}" + "".join(f"{name:>22}" for name in sides))
    for label in ROWS:
        row(label, label, "s", 2)
    for label in ("image size", "base image", "added by the build"):
        row(label, f"{label} MB", "MB", 1)
    row("new version: rebuilt layers", "rebuilt by a new version MB", "MB", 3)
    for name, results in sides.items():
        if results is not None:
            print(f"\n{name}: the layers a new model version rebuilds (+ {results['metadata-only steps rebuilt']} "
                  "metadata-only steps; all other layers are shared with v1)")  # fmt: skip
            for step in results["rebuilt by a new version"]:
                print(f"  {step['bytes'] / 1e6:>9.3f} MB  {' '.join(step['step'].split())[:100]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cold", action="store_true", help="keep Slipway's dependency image (no cold build)")
    parser.add_argument("--skip-mlflow", action="store_true", help="measure Slipway only")
    args = parser.parse_args()
    client = docker.from_env()
    run = f"slipway-bench-{int(time.time())}"
    created: list[str] = []
    sides: dict[str, Results | None] = {"Slipway": None, MLFLOW: None}
    started, load = time.perf_counter(), [os.getloadavg()[0]]  # the machine is shared: how busy it was
    try:
        with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
            print("Slipway")
            sides["Slipway"] = slipway_side(client, Path(tmp) / "slipway", run, not args.skip_cold, created)
            if not args.skip_mlflow:
                print(f"{MLFLOW} --env-manager local")
                sides[MLFLOW] = mlflow_side(client, Path(tmp) / "mlflow", run, created)
        _table(sides)
        if sides[MLFLOW] is not None:
            print(f"\nMLflow {sides[MLFLOW]['version']}; base {sides[MLFLOW]['base']}")
            print("MLflow's default --env-manager virtualenv: not built (FROM ubuntu:24.04, and github.com, a "
                  "Launchpad PPA and bootstrap.pypa.io inside the build: none resolve here)")  # fmt: skip
        seconds = round(time.perf_counter() - started, 1)
        load.append(os.getloadavg()[0])
        out = REPO / "benchmarks" / "out" / f"images-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps({"run seconds": seconds, "load average": load, **sides}, indent=2))
        print(f"run time {seconds:.0f} s; load average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
              f"({os.cpu_count()} cores); results: {out}")  # fmt: skip
    finally:
        _cleanup(client, created, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
