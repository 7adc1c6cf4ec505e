"""The package step: what a package holds, and every kind of bad model it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest

from serving.manifest import read_manifest, sha256_file
from slipway.errors import ModelError
from slipway.spec import load_spec
from tasks.package import inspect_model, package_model
from tests.conftest import SpecWriter
from tests.fakes.models import NoPredict, RaisesOnPredict, dumped


def _package(spec_path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return package_model(load_spec(spec_path), tmp_path / "packages")


def test_package_holds_artifact_sha_schema_samples_and_server(write_spec: SpecWriter, tmp_path: Path) -> None:
    pkg = _package(write_spec(), tmp_path)
    m = pkg.manifest
    assert m.sha256 == sha256_file(pkg.dir / m.artifact_file)
    assert m.schema.n_features == 4 and m.schema.task == "classification"
    assert len(m.samples) == 7
    model = joblib.load(pkg.dir / m.artifact_file)
    assert [s.output for s in m.samples] == model.predict([s.input for s in m.samples]).tolist()
    assert "scikit-learn" in m.framework and "numpy" in m.framework
    assert (pkg.dir / "server" / "serving" / "app.py").exists()
    assert read_manifest(pkg.dir) == m


def test_artifact_is_packaged_byte_for_byte(write_spec: SpecWriter, tmp_path: Path, iris_model: Path) -> None:
    pkg = _package(write_spec(), tmp_path)
    assert pkg.sha256 == sha256_file(iris_model)


def test_same_artifact_reuses_the_package(write_spec: SpecWriter, tmp_path: Path) -> None:
    first = _package(write_spec(), tmp_path)
    second = _package(write_spec(), tmp_path)
    assert first.dir == second.dir
    assert len(list((tmp_path / "packages" / "iris").iterdir())) == 1


@pytest.mark.fault("bad input")
def test_missing_model_file(write_spec: SpecWriter, tmp_path: Path) -> None:
    spec = write_spec(model__source=str(tmp_path / "gone.joblib"))
    with pytest.raises(ModelError, match="does not exist"):
        _package(spec, tmp_path)


@pytest.mark.fault("bad input")
def test_file_that_is_not_a_model(write_spec: SpecWriter, tmp_path: Path) -> None:
    junk = tmp_path / "junk.joblib"
    junk.write_text("definitely not a pickle")
    with pytest.raises(ModelError, match="is not a loadable model"):
        _package(write_spec(model__source=str(junk)), tmp_path)


@pytest.mark.fault("bad input")
def test_object_without_predict(write_spec: SpecWriter, tmp_path: Path) -> None:
    path = tmp_path / "nopredict.joblib"
    joblib.dump(NoPredict(), path)
    with pytest.raises(ModelError, match="has no predict"):
        _package(write_spec(model__source=str(path)), tmp_path)


@pytest.mark.fault("bad input")
def test_model_that_raises_on_predict(write_spec: SpecWriter, tmp_path: Path) -> None:
    path = tmp_path / "raises.joblib"
    joblib.dump(RaisesOnPredict(), path)
    with pytest.raises(ModelError, match="raised on predict.*this model is broken"):
        _package(write_spec(model__source=str(path)), tmp_path)
    assert not list((tmp_path / "packages").rglob("package.json"))


@pytest.mark.fault("bad input")
def test_golden_samples_that_disagree(write_spec: SpecWriter, tmp_path: Path, iris_model: Path) -> None:
    rows = json.loads((iris_model.parent / "samples.json").read_text())["inputs"]
    samples = tmp_path / "wrong.json"
    samples.write_text(json.dumps({"inputs": rows, "expected": [2] * len(rows)}))
    with pytest.raises(ModelError, match="disagree") as info:
        _package(write_spec(model__samples=str(samples)), tmp_path)
    assert "sample 0: model says 0, samples file expects 2" in str(info.value)


@pytest.mark.fault("bad input")
def test_samples_of_the_wrong_width(write_spec: SpecWriter, tmp_path: Path) -> None:
    samples = tmp_path / "narrow.json"
    samples.write_text(json.dumps({"inputs": [[1.0, 2.0]]}))
    with pytest.raises(ModelError, match="has 2 values, the model takes 4"):
        inspect_model(load_spec(write_spec(model__samples=str(samples))), tmp_path)


@pytest.mark.fault("bad input")
def test_no_samples(write_spec: SpecWriter, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no samples"):
        inspect_model(load_spec(write_spec(model__samples="")), tmp_path)


def test_mlflow_model_directory_with_its_input_example(
    write_spec: SpecWriter, tmp_path: Path, iris_model: Path
) -> None:
    import mlflow.sklearn
    import numpy as np

    rows = json.loads((iris_model.parent / "samples.json").read_text())["inputs"]
    model_dir = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(joblib.load(iris_model), model_dir, input_example=np.array(rows[:3]))
    pkg = _package(write_spec(model__source=str(model_dir), model__samples=""), tmp_path)
    assert pkg.manifest.source == str(model_dir)
    assert [s.input for s in pkg.manifest.samples] == rows[:3]
    assert [s.output for s in pkg.manifest.samples] == joblib.load(iris_model).predict(rows[:3]).tolist()
    assert joblib.load(pkg.dir / pkg.manifest.artifact_file).predict([rows[0]]).tolist() == [0]


@pytest.mark.fault("bad input")
def test_mlflow_directory_of_another_flavor(write_spec: SpecWriter, tmp_path: Path) -> None:
    model_dir = tmp_path / "pyfunc-model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n")
    with pytest.raises(ModelError, match="Slipway serves sklearn models"):
        _package(write_spec(model__source=str(model_dir)), tmp_path)


@pytest.mark.fault("bad input")
def test_a_malicious_pickle_runs_only_in_the_sandbox_without_credentials(
    write_spec: SpecWriter, tmp_path: Path, trojan: tuple[Path, Path], credentials: dict[str, str]
) -> None:
    import os

    model, dump = trojan
    pkg = _package(write_spec(model__source=str(model)), tmp_path)
    assert pkg.manifest.artifact_format == "pickle"
    (seen,) = dumped(dump)  # it ran once: in the sandbox, not here
    assert seen["pid"] != os.getpid()
    leaked = {name for name, value in credentials.items() if value in repr(seen["env"])}
    assert not leaked, f"credentials reached the model's code: {leaked}"
    assert not any(k.startswith(("AWS_", "GOOGLE_", "PREFECT_", "SLIPWAY_", "MLFLOW_", "DOCKER_")) for k in seen["env"])
    assert seen["env"]["HOME"] != os.environ["HOME"]  # an empty home, not the user's (~/.aws, ~/.docker)


@pytest.mark.fault("bad input")
def test_plan_loads_the_model_in_the_sandbox_too(
    write_spec: SpecWriter, trojan: tuple[Path, Path], credentials: dict[str, str], state_dir: Path
) -> None:
    from typer.testing import CliRunner

    from slipway.cli import app

    model, dump = trojan
    result = CliRunner().invoke(app, ["plan", str(write_spec(model__source=str(model)))])
    assert result.exit_code == 0, result.output
    assert "pickle runs code when it is loaded (done in the sandbox): prefer skops" in " ".join(result.output.split())
    (seen,) = dumped(dump)
    assert not {name for name, value in credentials.items() if value in repr(seen["env"])}


@pytest.mark.fault("bad input")
def test_a_pinned_digest_that_differs_is_refused_before_loading(
    write_spec: SpecWriter, tmp_path: Path, trojan: tuple[Path, Path]
) -> None:
    model, dump = trojan
    with pytest.raises(ModelError, match="refused before loading") as info:
        _package(write_spec(model__source=str(model), model__sha256="0" * 64), tmp_path)
    assert sha256_file(model) in str(info.value) and "model.sha256" in info.value.hint
    assert dumped(dump) == []  # never loaded
    assert _package(write_spec(model__source=str(model), model__sha256=sha256_file(model)), tmp_path)


def test_a_skops_model_is_packaged_and_its_untrusted_types_are_refused(
    write_spec: SpecWriter, tmp_path: Path, iris_model: Path
) -> None:
    import skops.io
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    safe = tmp_path / "iris.skops"
    skops.io.dump(joblib.load(iris_model), safe)
    pkg = _package(write_spec(model__source=str(safe)), tmp_path)
    assert (pkg.manifest.artifact_format, pkg.manifest.artifact_file) == ("skops", "model.skops")
    assert "skops" in pkg.manifest.framework
    from serving.model import load_package

    assert load_package(pkg.dir).model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]  # what the server does

    custom = tmp_path / "custom.skops"
    skops.io.dump(make_pipeline(FunctionTransformer(abs), joblib.load(iris_model)), custom)
    with pytest.raises(ModelError, match="types skops does not trust by default: builtins.abs") as info:
        _package(write_spec(model__source=str(custom), name="custom"), tmp_path)
    assert "model.trusted_types" in info.value.hint
    trusted = write_spec(model__source=str(custom), model__trusted_types=["builtins.abs"], name="trusted")
    assert _package(trusted, tmp_path).manifest.trusted_types == ["builtins.abs"]


@pytest.mark.fault("bad input")
def test_a_model_that_never_finishes_loading_is_stopped(
    write_spec: SpecWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    class Sleeps:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (eval, ("__import__('time').sleep(60)",))

    slow = tmp_path / "slow.pkl"
    slow.write_bytes(pickle.dumps(Sleeps()))
    monkeypatch.setenv("SLIPWAY_PACKAGE_TIMEOUT_S", "2")
    with pytest.raises(ModelError, match="took longer than 2 s: stopped"):
        _package(write_spec(model__source=str(slow)), tmp_path)
