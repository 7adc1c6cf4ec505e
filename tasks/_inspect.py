"""``python tasks/_inspect.py REQUEST.json``: load a model and compute its package contents, in a sandbox.

It is run as a script, not as ``tasks._inspect``: it imports nothing of Slipway (nor Prefect).

Loading a joblib or pickle file (or an MLflow model, which is one) runs whatever code the file
carries, so ``tasks.package`` never does it in its own process (which holds the deploy credentials):
it starts this module in a child with a scrubbed environment, an empty home, limits on memory and
time and, when it can, as the unprivileged user ``nobody``. The child loads the model,
derives its input schema, predicts the sample rows (the golden samples) and the framework versions,
and writes them as JSON next to the request; for an MLflow model it also writes the native model
(``model.joblib``) for the package. A failure is ``{"error": ..., "hint": ...}`` and exit code 3.

Request: ``{"kind": "file" | "mlflow", "path", "format": "joblib" | "pickle" | "skops",
"trusted_types": [...], "samples": [{"input", "expected"}] | null, "origin", "max_samples"}``.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

EXIT_REFUSED = 3


class Refused(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def load_file(path: Path, fmt: str, trusted_types: list[str]) -> Any:
    """The object in a model file. skops files load only the types trusted (sklearn's and the spec's)."""
    try:
        if fmt == "skops":
            import skops.io

            untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted_types))
            if untrusted:
                raise Refused(
                    f"{path} holds types skops does not trust by default: {', '.join(untrusted)}",
                    "list them in model.trusted_types in the spec if you trust their code (they are imported and "
                    "constructed when the model loads)",
                )
            return skops.io.load(path, trusted=trusted_types or None)
        if fmt == "pickle":
            with path.open("rb") as fh:
                return pickle.load(fh)
        import joblib

        return joblib.load(path)
    except Refused:
        raise
    except Exception as exc:
        raise Refused(
            f"{path} is not a loadable model ({type(exc).__name__}: {exc})",
            "model.source must be a skops, joblib or pickle file of a fitted model, or an MLflow model",
        ) from exc


def load_mlflow(local: Path) -> tuple[Any, list[Any] | None]:
    """The native sklearn model of a downloaded MLflow model directory, and its input example rows."""
    import mlflow

    model = mlflow.sklearn.load_model(str(local))
    try:
        example = mlflow.models.Model.load(str(local)).load_input_example(str(local))
    except Exception:  # an unreadable example is as good as none: model.samples is then required
        example = None
    if example is None:
        return model, None
    rows = example.to_numpy().tolist() if hasattr(example, "to_numpy") else [list(r) for r in example]
    return model, [{"input": row, "expected": None} for row in rows]


def schema_of(model: Any, raw_samples: list[Any]) -> dict[str, Any]:
    names = getattr(model, "feature_names_in_", None)
    first = raw_samples[0]["input"]
    if isinstance(first, dict) and names is None:
        names = list(first)
    n = getattr(model, "n_features_in_", None) or (len(names) if names is not None else len(first))
    task = "classification" if hasattr(model, "classes_") else "regression"
    return {"n_features": int(n), "feature_names": None if names is None else [str(x) for x in names], "task": task}


def golden_samples(model: Any, schema: dict[str, Any], raw_samples: list[Any], origin: str) -> list[dict[str, Any]]:
    import numpy as np

    samples: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for i, raw in enumerate(raw_samples):
        row = raw["input"]
        if isinstance(row, dict):
            try:
                row = [row[name] for name in schema["feature_names"] or []]
            except KeyError as exc:
                raise Refused(f"sample {i} lacks feature {exc}", "give every feature in each sample") from None
        if not isinstance(row, list) or len(row) != schema["n_features"]:
            raise Refused(
                f"sample {i} has {len(row) if isinstance(row, list) else 'no list of'} values, "
                f"the model takes {schema['n_features']}",
                "make every sample row as wide as the model's input",
            )
        try:
            output = np.asarray(model.predict(np.asarray([row], dtype=np.float64))).tolist()[0]
        except Exception as exc:
            raise Refused(
                f"{origin} raised on predict() of sample {i} ({type(exc).__name__}: {exc})",
                "check that the samples match what the model was trained on, and that the model works",
            ) from exc
        expected = raw["expected"]
        if expected is not None and not _same(output, expected, schema["task"]):
            mismatches.append(f"sample {i}: model says {output!r}, samples file expects {expected!r}")
        samples.append({"input": row, "output": output})
    if mismatches:
        raise Refused(
            "the golden samples disagree with the model:\n" + "\n".join(f"  {m}" for m in mismatches),
            "this is not the model the expected outputs came from: check model.source, or fix 'expected'",
        )
    return samples


def _same(a: Any, b: Any, task: str) -> bool:
    if task == "regression" and isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def framework_versions(model: Any, fmt: str) -> dict[str, str]:
    modules = {type(model).__module__.split(".")[0], "numpy", "scipy", "joblib"} | (
        {"skops"} if fmt == "skops" else set()
    )
    by_module = metadata.packages_distributions()
    return {dist: metadata.version(dist) for module in sorted(modules) for dist in by_module.get(module, [])}


def inspect(request: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    path, origin = Path(request["path"]), request["origin"]
    serialized = None
    if request["kind"] == "mlflow":
        model, example = load_mlflow(path)
        fmt = "joblib"
    else:
        model, example, fmt = load_file(path, request["format"], request["trusted_types"]), None, request["format"]
    raw_samples = request["samples"] if request["samples"] is not None else example
    if not raw_samples:
        raise Refused(
            f"model {origin} has no samples to compute golden samples from",
            'set model.samples to a JSON file {"inputs": [[...], ...]} with a few example rows',
        )
    if not callable(getattr(model, "predict", None)):
        raise Refused(
            f"{origin} holds a {type(model).__name__}, which has no predict() method",
            "save the fitted estimator or pipeline itself (skops.io.dump or joblib.dump(model, path))",
        )
    schema = schema_of(model, raw_samples)
    samples = golden_samples(model, schema, raw_samples[: request["max_samples"]], origin)
    if request["kind"] == "mlflow":
        import joblib

        joblib.dump(model, out_dir / "model.joblib")
        serialized = "model.joblib"
    return {"schema": schema, "samples": samples, "framework": framework_versions(model, fmt), "format": fmt,
            "serialized": serialized}  # fmt: skip


def main(argv: list[str]) -> int:
    request_path = Path(argv[0])
    out_dir = request_path.parent
    try:
        result = inspect(json.loads(request_path.read_text()), out_dir)
    except Refused as exc:
        (out_dir / "result.json").write_text(json.dumps({"error": str(exc), "hint": exc.hint}))
        return EXIT_REFUSED
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
