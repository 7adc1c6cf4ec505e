"""Package step: model → ModelPackage (artifact, sha256, framework versions, schema, golden samples).

A model that cannot be loaded, has no ``predict``, raises on its samples, or disagrees with the
spec's expected outputs is rejected here, before anything is built or deployed. Packages are
content-addressed (``<state>/packages/<model>/<sha256[:16]>``) and immutable: packaging the same
artifact twice reuses the first package, and rollback finds old packages where they were.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NONE

import serving
from serving.manifest import MANIFEST, Manifest, Sample, Schema, read_manifest, sha256_file
from slipway.errors import ModelError
from slipway.spec import ReleaseSpec
from tasks import mlflow_source

MAX_SAMPLES = 20
_PICKLE_SUFFIXES = (".pkl", ".pickle")


def _slug(version: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", version)[:40]


@dataclass(frozen=True)
class ModelPackage:
    dir: Path
    manifest: Manifest

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


@dataclass(frozen=True)
class InspectedModel:
    """A model loaded and checked against its samples, not yet written anywhere."""

    model: Any
    version: str
    origin: str
    schema: Schema
    samples: list[Sample]
    artifact: Path | None  # the original file, packaged byte for byte; None: the model is serialized


def inspect_model(spec: ReleaseSpec) -> InspectedModel:
    """Load the model, derive its schema and compute golden samples; raises ``ModelError``."""
    source = spec.model.source
    if mlflow_source.is_mlflow(source, spec.base_dir):
        loaded = mlflow_source.load(source, spec.base_dir)
        model, version, origin, artifact = loaded.model, loaded.version, loaded.uri, None
        raw_samples = loaded.input_example
    else:
        artifact = spec.resolve(source)
        model, version, origin = _load_file(artifact), "", str(artifact)
        raw_samples = None
    if spec.model.samples:
        raw_samples = _read_samples(spec.resolve(spec.model.samples))
    if raw_samples is None:
        raise ModelError(
            f"model {spec.model.name!r} has no samples to compute golden samples from",
            hint='set model.samples to a JSON file {"inputs": [[...], ...]} with a few example rows',
        )
    _require_predict(model, origin)
    schema = _schema(model, raw_samples)
    samples = _golden_samples(model, schema, raw_samples, origin)
    return InspectedModel(model, version, origin, schema, samples, artifact)


def package_model(spec: ReleaseSpec, packages_dir: Path) -> ModelPackage:
    """Inspect the model and write its package (or reuse the identical one already written)."""
    inspected = inspect_model(spec)
    model_dir = packages_dir / spec.model.name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".incoming-"))
    try:
        if inspected.artifact is not None:
            fmt = "pickle" if inspected.artifact.suffix in _PICKLE_SUFFIXES else "joblib"
            artifact = tmp / f"model.{'pkl' if fmt == 'pickle' else 'joblib'}"
            shutil.copyfile(inspected.artifact, artifact)
        else:
            fmt, artifact = "joblib", tmp / "model.joblib"
            joblib.dump(inspected.model, artifact)
        sha = sha256_file(artifact)
        version = spec.model.version or inspected.version or sha[:12]
        final = model_dir / f"{_slug(version)}-{sha[:12]}"
        if not (final / MANIFEST).exists():
            manifest = Manifest(
                name=spec.model.name,
                version=version,
                artifact_file=artifact.name,
                sha256=sha,
                artifact_format=fmt,
                source=inspected.origin,
                schema=inspected.schema,
                framework=_framework_versions(inspected.model),
                samples=inspected.samples,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            (tmp / MANIFEST).write_text(manifest.to_json())
            shutil.copytree(
                Path(serving.__file__).parent, tmp / "server" / "serving",
                ignore=shutil.ignore_patterns("__pycache__"),
            )  # fmt: skip
            with contextlib.suppress(OSError):  # a concurrent packaging of the same artifact won
                tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ModelPackage(final, read_manifest(final))


def _load_file(path: Path) -> Any:
    if not path.exists():
        raise ModelError(
            f"model file {path} does not exist",
            hint="check model.source in the spec (relative paths are from the spec's folder)",
        )
    try:
        if path.suffix in _PICKLE_SUFFIXES:
            with path.open("rb") as fh:
                return pickle.load(fh)
        return joblib.load(path)
    except Exception as exc:
        raise ModelError(
            f"{path} is not a loadable model ({type(exc).__name__}: {exc})",
            hint="model.source must be a joblib or pickle file of a fitted model, or an MLflow model",
        ) from exc


def _require_predict(model: Any, origin: str) -> None:
    if not callable(getattr(model, "predict", None)):
        raise ModelError(
            f"{origin} holds a {type(model).__name__}, which has no predict() method",
            hint="save the fitted estimator or pipeline itself (joblib.dump(model, path))",
        )


def _read_samples(path: Path) -> list[Any]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"samples file {path} does not exist", hint="check model.samples in the spec") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"samples file {path} is not readable JSON: {exc}", hint="fix the file") from exc
    inputs = raw.get("inputs") if isinstance(raw, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise ModelError(
            f"samples file {path} has no rows",
            hint='write {"inputs": [[...], ...], "expected": [...]} ("expected" is optional)',
        )
    expected = raw.get("expected")
    if expected is not None and (not isinstance(expected, list) or len(expected) != len(inputs)):
        raise ModelError(
            f"samples file {path}: 'expected' must be a list as long as 'inputs' ({len(inputs)})",
            hint="give one expected output per input row, or drop 'expected'",
        )
    return [{"input": row, "expected": None if expected is None else expected[i]} for i, row in enumerate(inputs)]


def _schema(model: Any, raw_samples: list[Any]) -> Schema:
    names = getattr(model, "feature_names_in_", None)
    first = raw_samples[0]["input"]
    if isinstance(first, dict) and names is None:
        names = list(first)
    n = getattr(model, "n_features_in_", None) or (len(names) if names is not None else len(first))
    task = "classification" if hasattr(model, "classes_") else "regression"
    return Schema(n_features=int(n), feature_names=None if names is None else [str(x) for x in names], task=task)


def _golden_samples(model: Any, schema: Schema, raw_samples: list[Any], origin: str) -> list[Sample]:
    samples: list[Sample] = []
    mismatches: list[str] = []
    for i, raw in enumerate(raw_samples[:MAX_SAMPLES]):
        row = raw["input"]
        if isinstance(row, dict):
            try:
                row = [row[name] for name in schema.feature_names or []]
            except KeyError as exc:
                raise ModelError(f"sample {i} lacks feature {exc}", hint="give every feature in each sample") from None
        if not isinstance(row, list) or len(row) != schema.n_features:
            raise ModelError(
                f"sample {i} has {len(row) if isinstance(row, list) else 'no list of'} values, "
                f"the model takes {schema.n_features}",
                hint="make every sample row as wide as the model's input",
            )
        try:
            output = np.asarray(model.predict(np.asarray([row], dtype=np.float64))).tolist()[0]
        except Exception as exc:
            raise ModelError(
                f"{origin} raised on predict() of sample {i} ({type(exc).__name__}: {exc})",
                hint="check that the samples match what the model was trained on, and that the model works",
            ) from exc
        expected = raw["expected"]
        if expected is not None and not _same(output, expected, schema.task):
            mismatches.append(f"sample {i}: model says {output!r}, samples file expects {expected!r}")
        samples.append(Sample(input=row, output=output))
    if mismatches:
        raise ModelError(
            "the golden samples disagree with the model:\n" + "\n".join(f"  {m}" for m in mismatches),
            hint="this is not the model the expected outputs came from: check model.source, or fix 'expected'",
        )
    return samples


def _same(a: Any, b: Any, task: str) -> bool:
    if task == "regression" and isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _framework_versions(model: Any) -> dict[str, str]:
    modules = {type(model).__module__.split(".")[0], "numpy", "scipy", "joblib"}
    by_module = metadata.packages_distributions()
    versions: dict[str, str] = {}
    for module in sorted(modules):
        for dist in by_module.get(module, []):
            versions[dist] = metadata.version(dist)
    return versions


@task(name="package model", cache_policy=NONE)
def package(spec: ReleaseSpec, packages_dir: Path) -> ModelPackage:
    pkg = package_model(spec, packages_dir)
    get_run_logger().info(
        "packaged %s version %s (sha256 %s, %d golden samples) at %s",
        pkg.manifest.name, pkg.manifest.version, pkg.sha256[:12], len(pkg.manifest.samples), pkg.dir,
    )  # fmt: skip
    return pkg
