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
from tests.fakes.models import NoPredict, RaisesOnPredict


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
        inspect_model(load_spec(write_spec(model__samples=str(samples))))


@pytest.mark.fault("bad input")
def test_no_samples(write_spec: SpecWriter, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no samples"):
        inspect_model(load_spec(write_spec(model__samples="")))


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
