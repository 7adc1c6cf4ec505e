"""Benchmark the image build and push: cold build, warm rebuild, weights-only rebuild + push, size.

    .venv/bin/python benchmarks/images.py [--skip-cold]

Needs scripts/services/docker.sh up and scripts/images/base.sh. Uses the example model (iris):

  cold build           no wheels cache, no dependency image, no build cache for it: pip download on
                       the host, the dependency layer, the server and model layers
  warm rebuild         the same package again: every step from the cache
  first push           the image to a new repository (layers the registry holds already, e.g. the
                       base and dependency layers pushed before, are mounted, not uploaded again)
  weights-only         a new model version (retrained, same dependencies): build + push; only the
                       last layer is rebuilt and uploaded
  image size           the image as the engine reports it (uncompressed), and the model layer alone

Raw results go to benchmarks/out/images-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from examples.iris.train import train  # noqa: E402
from slipway.spec import ReleaseSpec  # noqa: E402
from tasks._build import deps_key, requirements  # noqa: E402
from tasks.image import build, push  # noqa: E402
from tasks.package import package_model  # noqa: E402


def _spec(model: Path, repository: str) -> ReleaseSpec:
    stage = {"kind": "docker", "port": 9999}
    return ReleaseSpec.model_validate({
        "model": {"name": "iris", "source": str(model), "samples": str(model.parent / "samples.json")},
        "image": {"repository": repository}, "staging": stage, "production": stage,
    })  # fmt: skip


def _timed(label: str, results: dict[str, float], fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - started, 2)
    print(f"{label:<28} {results[label]:>7.2f} s", flush=True)
    return value


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-cold", action="store_true", help="keep the dependency image (no cold build)")
    args = parser.parse_args()
    client = docker.from_env()
    repository = f"127.0.0.1:5000/slipway-bench-{int(time.time())}"
    results: dict[str, float] = {}
    quiet = lambda _line: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        work = Path(tmp)
        v1 = package_model(_spec(train(work / "v1", version=1), repository), work / "packages")
        v2 = package_model(_spec(train(work / "v2", version=2), repository), work / "packages")
        spec = _spec(Path(v1.dir) / v1.manifest.artifact_file, repository)
        wheels = work / "wheels" if not args.skip_cold else Path("/var/tmp/slipway/test-wheels")
        if not args.skip_cold:
            key = deps_key(str(client.images.get(spec.image.base).id), requirements(v1.manifest.framework))
            subprocess.run(["docker", "rmi", "-f", f"slipway/deps:{key}"], capture_output=True)
            subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)  # the deps build's cache
            _timed("cold build", results, build, spec, v1, cache_dir=wheels, log=quiet)
        _timed("warm rebuild", results, build, spec, v1, cache_dir=wheels, log=quiet)
        ref1 = build(spec, v1, cache_dir=wheels, log=quiet)
        _timed("first push (new repo)", results, push, spec, ref1, log=quiet)
        started = time.perf_counter()
        ref2 = _timed("weights-only build", results, build, spec, v2, cache_dir=wheels, log=quiet)
        pushed = _timed("weights-only push", results, push, spec, ref2, log=quiet)
        results["weights-only build+push"] = round(time.perf_counter() - started, 2)
        print(f"{'weights-only build+push':<28} {results['weights-only build+push']:>7.2f} s  ({pushed})")
        image = client.images.get(ref2)
        history = image.history()
        results["image size MB"] = round(image.attrs["Size"] / 1e6, 1)
        layer = next((h["Size"] for h in history if h["Size"] > 0), 0)  # the newest layer with content
        results["model layer KB"] = round(layer / 1e3, 1)
        results["base image MB"] = round(client.images.get(spec.image.base).attrs["Size"] / 1e6, 1)
        print(f"{'image size':<28} {results['image size MB']:>7.1f} MB (base {results['base image MB']} MB; "
              f"model layer {results['model layer KB']} KB)")  # fmt: skip
    out = REPO / "benchmarks" / "out" / f"images-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
