"""``create_app`` in-process (httpx's ASGI transport): the API other code embeds, and self-check rules."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from serving import create_app
from serving.model import PackageError


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://slipway") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_create_app_without_auth(iris_package: Path, iris: tuple[Any, list[list[float]]]) -> None:
    model, rows = iris
    app = create_app(iris_package, api_key=None)
    response = call(app, "POST", "/predict", json={"inputs": rows})
    assert response.json() == {"predictions": model.predict(np.asarray(rows)).tolist()}


def test_create_app_with_key_and_body_limit(iris_package: Path) -> None:
    app = create_app(iris_package, api_key="k", max_body_bytes=100)
    assert call(app, "POST", "/predict", json={"inputs": [1, 2, 3, 4]}).status_code == 401
    headers = {"X-API-Key": "k"}
    assert call(app, "POST", "/predict", json={"inputs": [1, 2, 3, 4]}, headers=headers).status_code == 200
    assert call(app, "POST", "/predict", json={"inputs": [[1, 2, 3, 4]] * 20}, headers=headers).status_code == 413


@pytest.mark.fault("bad input")
def test_empty_key_is_not_no_auth(iris_package: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        create_app(iris_package, api_key="")


def test_regression_golden_samples_use_relative_tolerance(kit: Any, workdir: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    model = LinearRegression().fit(x, x @ [1.0, 2.0, 3.0] + 1000.0)
    rows = x[:3].tolist()
    exact = model.predict(x[:3]).tolist()
    close = [v * (1 + 1e-9) for v in exact]
    far = [v * (1 + 1e-4) for v in exact]
    for name, outputs in (("exact", exact), ("close", close)):
        pkg = kit.build_package(workdir / f"reg-{name}", model, rows, outputs=outputs, task="regression",
                                feature_names=None)  # fmt: skip
        assert call(create_app(pkg, None), "GET", "/ready").status_code == 200
    pkg = kit.build_package(workdir / "reg-far", model, rows, outputs=far, task="regression", feature_names=None)
    with pytest.raises(PackageError, match="golden sample 0"):
        create_app(pkg, None)


def test_named_rows_need_feature_names(kit: Any, workdir: Path, iris: tuple[Any, list[list[float]]]) -> None:
    model, rows = iris
    pkg = kit.build_package(workdir / "unnamed", model, rows, feature_names=None)
    response = call(create_app(pkg, None), "POST", "/predict", json={"inputs": {"sepal_length": 1}})
    assert response.status_code == 422 and "no feature names" in response.json()["error"]


def test_sagemaker_routes_beside_the_generic_ones(iris_package: Path, iris: tuple[Any, list[list[float]]]) -> None:
    from serving.contract import SAGEMAKER

    model, rows = iris
    app = create_app(iris_package, api_key="k", routes=SAGEMAKER)
    want = {"predictions": model.predict(np.asarray(rows)).tolist()}
    assert call(app, "GET", "/ping").json() == {"status": "ready"}  # open, like /ready
    assert call(app, "POST", "/invocations", json={"inputs": rows}).status_code == 401  # auth is the server's rule
    assert call(app, "POST", "/invocations", json={"inputs": rows}, headers={"X-API-Key": "k"}).json() == want
    assert call(app, "POST", "/predict", json={"inputs": rows}, headers={"X-API-Key": "k"}).json() == want
    assert call(app, "GET", "/invocations", headers={"X-API-Key": "k"}).status_code == 405
    metadata = call(app, "GET", "/metadata", headers={"X-API-Key": "k"}).json()
    assert metadata["routes"]["predict"] == "/invocations"


def test_vertex_routes_take_instances(iris_package: Path, iris: tuple[Any, list[list[float]]]) -> None:
    from serving.contract import vertex

    model, rows = iris
    app = create_app(iris_package, api_key=None, routes=vertex("/v1/m/health", "/v1/m:predict"))
    want = {"predictions": model.predict(np.asarray(rows)).tolist()}
    assert call(app, "GET", "/v1/m/health").status_code == 200
    assert call(app, "POST", "/v1/m:predict", json={"instances": rows, "parameters": {"x": 1}}).json() == want
    assert call(app, "POST", "/predict", json={"inputs": rows}).json() == want  # the generic route is unchanged
    wrong = call(app, "POST", "/v1/m:predict", json={"inputs": rows})
    assert wrong.status_code == 400 and 'no "instances" key' in wrong.json()["error"]
    short = call(app, "POST", "/v1/m:predict", json={"instances": [[1, 2, 3]]})
    assert short.status_code == 422 and '"instances"[0] has 3 values' in short.json()["error"]
