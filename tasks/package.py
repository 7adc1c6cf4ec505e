"""Package step: model → ModelPackage (artifact, sha256, framework versions, schema, golden samples).

Model files are code: a joblib or pickle file (an MLflow sklearn model is one) runs what it carries
when it is loaded. This process holds the deploy credentials, so it never loads one: the model is
loaded in a sandboxed child (``tasks/_inspect.py``: a scrubbed environment, an empty home, limits
on memory and time, and ``nobody`` when this runs as root and an unprivileged user may run this
Python — a Python under root's home, as pyenv's, keeps root), which returns the schema, the golden
samples and the framework versions as JSON. skops files (``.skops``) load only trusted types.

Before anything is loaded, a pinned digest is checked: ``model.sha256`` in the spec for a file, and
for an MLflow registry version the digest it had when it was first packaged here (``source_sha256``
in its package). A file whose digest differs is refused unread.

A model that cannot be loaded, has no ``predict``, raises on its samples, or disagrees with the
spec's expected outputs is rejected here, before anything is built or deployed. Packages are
content-addressed (``<state>/packages/<model>/<version>-<sha12>``) and immutable: packaging the same
artifact twice reuses the first package; the release flow then puts it into the package store
(``slipway/store.py``), from which any worker can fetch it to roll back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

import serving
from serving.manifest import MANIFEST, Manifest, Sample, Schema, read_manifest, sha256_file
from slipway.errors import ModelError
from slipway.settings import get_settings, plain_environment
from slipway.spec import ReleaseSpec
from tasks import mlflow_source

MAX_SAMPLES = 20
_INSPECT = Path(__file__).resolve().with_name("_inspect.py")  # run as a script: it imports nothing of Slipway
_ROOT = _INSPECT.parent.parent  # on the sandbox's path, for models whose classes live in this tree
FORMATS = {".skops": "skops", ".pkl": "pickle", ".pickle": "pickle"}  # anything else: joblib
CODE_FORMATS = frozenset({"joblib", "pickle"})  # run arbitrary code when loaded
_NOBODY = 65534


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
    """A model checked against its samples by the sandbox, not yet written anywhere."""

    version: str
    origin: str
    schema: Schema
    samples: list[Sample]
    framework: dict[str, str]
    artifact: Path  # the file packaged byte for byte: the original, or the serialized MLflow model
    artifact_format: str  # "skops" | "joblib" | "pickle"
    source_sha256: str  # the digest of what was fetched (a file; an MLflow model's files), checked before loading


def inspect_model(spec: ReleaseSpec, work: Path) -> InspectedModel:
    """Fetch the model into ``work``, check its pinned digest, and load it in the sandbox."""
    source = spec.model.source
    if mlflow_source.is_mlflow(source, spec.base_dir):
        fetched = mlflow_source.fetch(source, spec.base_dir, work / "mlflow")
        version, origin, path, kind, fmt = fetched.version, fetched.uri, fetched.local, "mlflow", "joblib"
        digest = tree_sha256(path)
        _check_registry_digest(spec, fetched.uri, digest)
    else:
        original = spec.resolve(source)
        if not original.is_file():
            raise ModelError(
                f"model file {original} does not exist",
                hint="check model.source in the spec (relative paths are from the spec's folder)",
            )
        version, origin, kind, fmt = "", str(original), "file", FORMATS.get(original.suffix, "joblib")
        digest = sha256_file(original)
        path = work / f"model{original.suffix}"
        shutil.copyfile(original, path)  # into the sandbox's folder: it may not read the user's files
    if spec.model.sha256 and spec.model.sha256 != digest:
        raise ModelError(
            f"{origin} has sha256 {digest}, but the spec pins {spec.model.sha256}: refused before loading it",
            hint="the file changed since it was pinned: check where it came from, then update model.sha256",
        )
    raw_samples = _read_samples(spec.resolve(spec.model.samples)) if spec.model.samples else None
    request = {"kind": kind, "path": str(path), "format": fmt, "trusted_types": list(spec.model.trusted_types),
               "samples": raw_samples, "origin": origin, "max_samples": MAX_SAMPLES}  # fmt: skip
    result = _in_sandbox(request, work)
    serialized = work / result["serialized"] if result["serialized"] else path
    return InspectedModel(
        version=version,
        origin=origin,
        schema=Schema(**result["schema"]),
        samples=[Sample(**s) for s in result["samples"]],
        framework=result["framework"],
        artifact=serialized,
        artifact_format=result["format"],
        source_sha256=digest,
    )


def package_model(spec: ReleaseSpec, packages_dir: Path) -> ModelPackage:
    """Inspect the model and write its package (or reuse the identical one already written)."""
    model_dir = packages_dir / spec.model.name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=".incoming-"))
    try:
        with sandbox_dir() as work:
            inspected = inspect_model(spec, work)
            suffix = {"skops": "skops", "pickle": "pkl"}.get(inspected.artifact_format, "joblib")
            artifact = tmp / f"model.{suffix}"
            shutil.copyfile(inspected.artifact, artifact)
        sha = sha256_file(artifact)
        version = spec.model.version or inspected.version or sha[:12]
        final = model_dir / f"{_slug(version)}-{sha[:12]}"
        if not (final / MANIFEST).exists():
            manifest = Manifest(
                name=spec.model.name,
                version=version,
                artifact_file=artifact.name,
                sha256=sha,
                artifact_format=inspected.artifact_format,
                source=inspected.origin,
                schema=inspected.schema,
                framework=inspected.framework,
                samples=inspected.samples,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                trusted_types=list(spec.model.trusted_types),
                source_sha256=inspected.source_sha256,
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


@contextlib.contextmanager
def sandbox_dir() -> Iterator[Path]:
    """A private folder the sandbox may write (and, run as ``nobody``, read): removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="slipway-inspect-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _in_sandbox(request: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run ``tasks._inspect`` on ``request`` in the sandbox; its result, or a ``ModelError`` saying why not."""
    settings = get_settings()
    (work / "request.json").write_text(json.dumps(request))
    env = plain_environment() | {
        "HOME": str(work), "TMPDIR": str(work), "PYTHONPATH": str(_ROOT), "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(work),
    }  # fmt: skip
    limits = [f"--as={settings.package_memory_mb * 2**20}", f"--cpu={int(settings.package_timeout_s) + 1}"]
    cmd = [*(["prlimit", *limits, "--"] if shutil.which("prlimit") else []),
           sys.executable, str(_INSPECT), str(work / "request.json")]  # fmt: skip
    user: dict[str, Any] = {}
    if os.geteuid() == 0 and _others_may_run(Path(sys.executable)):  # root: the code runs as nobody
        for path in (work, *work.rglob("*")):
            os.chown(path, _NOBODY, _NOBODY)
        user = {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False,
                              timeout=settings.package_timeout_s, start_new_session=True, **user)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"loading {request['origin']} took longer than {settings.package_timeout_s:g} s: stopped",
            hint="a model that loads this slowly (or never returns) is refused; raise SLIPWAY_PACKAGE_TIMEOUT_S "
            "if it is that big",
        ) from None
    result_file = work / "result.json"
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
    if proc.returncode == 0 and "error" not in result:
        return result
    if "error" in result:
        raise ModelError(result["error"], hint=result["hint"])
    tail = "\n".join(f"  | {line}" for line in proc.stderr.strip().splitlines()[-12:])
    memory = " or memory" if proc.returncode < 0 or "MemoryError" in proc.stderr else ""
    raise ModelError(
        f"loading {request['origin']} failed in the sandbox (exit {proc.returncode}):\n{tail}",
        hint=f"the model could not be loaded within its limits of time{memory} "
        f"(SLIPWAY_PACKAGE_TIMEOUT_S, SLIPWAY_PACKAGE_MEMORY_MB); read the output above",
    )


def _others_may_run(interpreter: Path) -> bool:
    """Whether an unprivileged user can run ``interpreter`` (every folder on its real path searchable)."""
    real = interpreter.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and bool(real.stat().st_mode & 0o001)


def tree_sha256(root: Path) -> str:
    """The digest of a directory's files (names and contents): an MLflow model's identity."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _check_registry_digest(spec: ReleaseSpec, uri: str, digest: str) -> None:
    """A registry version packaged before must have the digest it had then (tampering is refused unread)."""
    model_dir = get_settings().path("packages", spec.model.name)
    for manifest_file in model_dir.glob(f"*/{MANIFEST}") if model_dir.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            earlier = read_manifest(manifest_file.parent)
            if earlier.source == uri and earlier.source_sha256 and earlier.source_sha256 != digest:
                raise ModelError(
                    f"{uri} now has digest {digest}, but when it was packaged on {earlier.created_at} it had "
                    f"{earlier.source_sha256}: its files changed in the registry; refused before loading them",
                    hint="a registered version must not change: register the new files as a new version, or find "
                    "out who replaced them",
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


@task(name="package model", cache_policy=NONE)
def package(spec: ReleaseSpec, packages_dir: Path) -> ModelPackage:
    pkg = package_model(spec, packages_dir)
    get_run_logger().info(
        "packaged %s version %s (sha256 %s, %d golden samples, %s) at %s",
        pkg.manifest.name, pkg.manifest.version, pkg.sha256[:12], len(pkg.manifest.samples),
        pkg.manifest.artifact_format, pkg.dir,
    )  # fmt: skip
    return pkg
