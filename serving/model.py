"""Load a model package, verify it, self-check it, and turn request inputs into a feature matrix.

The hot path is ``LoadedModel.to_matrix`` + ``LoadedModel.model.predict``: one C-level type scan
(only ints and floats pass: no strings, booleans, nulls or nested lists), one
``np.asarray(rows, dtype=np.float64)`` and a shape check. Detailed error messages are built only
on the error path (``_explain``).
"""

from __future__ import annotations

import importlib.metadata
import math
import pickle
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from serving.manifest import Manifest, read_manifest, sha256_file

_NUMBER_TYPES = frozenset({float, int})
_REL_TOL = 1e-6


class PackageError(Exception):
    """The package cannot be served: unreadable, tampered with, or failing its golden samples."""


class InputError(Exception):
    """A request's inputs are not what the schema accepts; ``str(exc)`` says what and what is expected."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def configure_sklearn() -> None:
    """orjson rejects NaN/Infinity and we reject nulls, so inputs are finite: skip sklearn's check.

    Process-wide, so the launcher calls it (``create_app`` does not change an embedding process).
    """
    try:
        import sklearn
    except ImportError:  # a non-sklearn model: nothing to configure
        return
    sklearn.set_config(assume_finite=True)


@dataclass
class LoadedModel:
    manifest: Manifest
    model: Any  # anything with .predict(np.ndarray of shape (n, n_features))

    def __post_init__(self) -> None:
        schema = self.manifest.schema
        self.n_features = schema.n_features
        self.feature_names: tuple[str, ...] | None = tuple(schema.feature_names) if schema.feature_names else None
        self._name_set = frozenset(self.feature_names or ())
        described = f" ({', '.join(self.feature_names)})" if self.feature_names else ""
        named = " or an object {feature_name: number}" if self.feature_names else ""
        self.expected = (
            f'expected {{"inputs": ROW}} or {{"inputs": [ROW, ...]}} where ROW is a list of '
            f"{self.n_features} numbers{described}{named}"
        )

    def to_matrix(self, inputs: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        """``inputs`` (parsed JSON) → float64 matrix of shape (rows, n_features), or ``InputError``."""
        single = True
        if type(inputs) is list and inputs:
            first = inputs[0]
            if type(first) is list:  # a batch of positional rows
                single = False
                rows = inputs
                if set(map(type, rows)) != {list} or not _NUMBER_TYPES.issuperset(map(type, chain.from_iterable(rows))):
                    raise InputError(self._explain(rows, single))
            elif type(first) is dict:  # a batch of named rows
                single = False
                rows = [self._named_row(row, i) for i, row in enumerate(inputs)]
            else:  # one positional row
                rows = [inputs]
                if not _NUMBER_TYPES.issuperset(map(type, inputs)):
                    raise InputError(self._explain(rows, single))
        elif type(inputs) is dict:
            rows = [self._named_row(inputs, None)]
        elif type(inputs) is list:
            raise InputError(f'"inputs" is an empty list; {self.expected}')
        else:
            raise InputError(f'"inputs" is {_kind(inputs)}; {self.expected}')
        try:
            matrix = np.asarray(rows, dtype=np.float64)
        except ValueError:  # rows of different lengths
            raise InputError(self._explain(rows, single)) from None
        if matrix.shape[1] != self.n_features:
            raise InputError(self._explain(rows, single))
        return matrix

    def _named_row(self, row: Any, index: int | None) -> list[Any]:
        where = '"inputs"' if index is None else f'"inputs"[{index}]'
        if type(row) is not dict:
            raise InputError(f"{where} is {_kind(row)} but the batch started with named rows; {self.expected}")
        names = self.feature_names
        if names is None:
            raise InputError(f"{where} is an object, but this model's schema has no feature names; {self.expected}")
        if len(row) != len(names) or not self._name_set.issuperset(row):
            unknown = sorted(set(row) - self._name_set)
            missing = [n for n in names if n not in row]
            problems = []
            if unknown:
                problems.append(f"unknown feature(s) {', '.join(map(repr, unknown))}")
            if missing:
                problems.append(f"missing feature(s) {', '.join(map(repr, missing))}")
            raise InputError(f"{where}: {'; '.join(problems)}; expected exactly {', '.join(names)}")
        values = [row[n] for n in names]
        if not _NUMBER_TYPES.issuperset(map(type, values)):
            bad = next(n for n in names if type(row[n]) not in _NUMBER_TYPES)
            raise InputError(f"{where}[{bad!r}] is {_kind(row[bad])}, not a number; every feature must be a number")
        return values

    def _explain(self, rows: list[Any], single: bool) -> str:
        """Say precisely what is wrong with ``rows`` (error path only)."""
        for i, row in enumerate(rows):
            where = '"inputs"' if single else f'"inputs"[{i}]'
            if type(row) is not list:
                return f"{where} is {_kind(row)}; {self.expected}"
            for j, value in enumerate(row):
                if type(value) not in _NUMBER_TYPES:
                    return f"{where}[{j}] is {_kind(value)}, not a number; {self.expected}"
            if len(row) != self.n_features:
                return f"{where} has {len(row)} values; {self.expected}"
        return self.expected


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def load_package(package_dir: Path) -> LoadedModel:
    """Read the manifest, verify the artifact's sha256, load the model and check its golden samples."""
    if not package_dir.is_dir():
        raise PackageError(f"package directory {package_dir} does not exist")
    try:
        manifest = read_manifest(package_dir)
    except (OSError, ValueError) as exc:
        raise PackageError(f"cannot read the package manifest: {exc}") from None
    root = package_dir.resolve()
    artifact = (root / manifest.artifact_file).resolve()
    if not artifact.is_relative_to(root):
        raise PackageError(f"artifact_file {manifest.artifact_file!r} points outside the package {root}")
    try:
        actual = sha256_file(artifact)
    except OSError as exc:
        raise PackageError(f"cannot read the artifact {artifact}: {exc.strerror or exc}") from None
    if actual != manifest.sha256:
        raise PackageError(
            f"artifact {artifact} has sha256 {actual} but the manifest says {manifest.sha256}: "
            "the artifact was modified or belongs to another package; refusing to serve it"
        )
    model = _load_artifact(artifact, manifest.artifact_format, manifest.trusted_types)
    loaded = LoadedModel(manifest, model)
    _check_n_features(loaded)
    self_check(loaded)
    return loaded


def _load_artifact(path: Path, fmt: str, trusted_types: list[str]) -> Any:
    try:
        if fmt == "joblib":
            model = joblib.load(path)
        elif fmt == "pickle":
            with path.open("rb") as fh:
                model = pickle.load(fh)
        elif fmt == "skops":
            import skops.io

            model = skops.io.load(path, trusted=trusted_types or None)  # anything else untrusted: refused
        else:
            raise PackageError(f"unsupported artifact_format {fmt!r}; expected 'skops', 'joblib' or 'pickle'")
    except PackageError:
        raise
    except Exception as exc:  # unpickling runs arbitrary code: any error means "cannot load"
        raise PackageError(f"cannot load the model from {path}: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(model, "predict", None)):
        raise PackageError(f"the object in {path} ({type(model).__name__}) has no predict() method")
    return model


def _check_n_features(loaded: LoadedModel) -> None:
    fitted = getattr(loaded.model, "n_features_in_", None)
    if isinstance(fitted, int) and fitted != loaded.n_features:
        raise PackageError(
            f"the manifest schema says n_features={loaded.n_features} but the model was fitted on {fitted}"
        )
    if loaded.feature_names is not None and len(loaded.feature_names) != loaded.n_features:
        raise PackageError(
            f"the manifest schema lists {len(loaded.feature_names)} feature_names for n_features={loaded.n_features}"
        )


def self_check(loaded: LoadedModel) -> None:
    """Predict every golden sample and compare with the recorded output; ``PackageError`` on mismatch."""
    samples = loaded.manifest.samples
    if not samples:
        return
    regression = loaded.manifest.schema.task == "regression"
    for i, sample in enumerate(samples):
        try:
            matrix = loaded.to_matrix(sample.input)
            got = loaded.model.predict(matrix)
        except InputError as exc:
            raise PackageError(f"golden sample {i} does not match the schema: {exc}") from None
        except Exception as exc:
            raise PackageError(f"golden sample {i}: the model raised {type(exc).__name__}: {exc}") from None
        got_list = got.tolist() if hasattr(got, "tolist") else list(got)
        got_value = got_list[0] if matrix.shape[0] == 1 else got_list
        if not _same(got_value, sample.output, regression):
            raise PackageError(
                f"golden sample {i} (input {sample.input}) predicted {got_value!r} but the package "
                f"recorded {sample.output!r}: the model does not reproduce its packaged outputs"
            )


def _same(got: Any, want: Any, regression: bool) -> bool:
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w, regression) for g, w in zip(got, want, strict=True))
    if isinstance(want, list) and len(want) == 1:  # an output recorded as [value]
        return _same(got, want[0], regression)
    if regression and isinstance(got, int | float) and isinstance(want, int | float):
        return math.isclose(got, want, rel_tol=_REL_TOL, abs_tol=1e-12)
    return bool(got == want)


def framework_report(manifest: Manifest) -> dict[str, dict[str, str | None]]:
    """For each packaged framework: the version it was packaged with and the one installed here."""
    report: dict[str, dict[str, str | None]] = {}
    for dist, packaged in sorted(manifest.framework.items()):
        try:
            installed: str | None = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        report[dist] = {"packaged": packaged, "installed": installed}
    return report


def runtime_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for dist in ("numpy", "scikit-learn", "joblib", "orjson", "uvicorn"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
