"""``serving.lambda_runtime.LambdaHandler`` in-process: event shapes → the app's answers.

The image runs it under the Lambda Runtime Interface Emulator in test_contracts.py; here each event
shape (direct invokes, function URL / API Gateway payloads 2.0 and 1.0) is checked on a real app.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving import create_app
from serving.lambda_runtime import LambdaHandler, handler

KEY = "lambda-test-key"
ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def on_lambda(iris_package: Path) -> LambdaHandler:
    return LambdaHandler(create_app(iris_package, api_key=KEY))


def http_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A function URL event (payload 2.0), as Lambda delivers it."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
        "body": None if body is None else json.dumps(body), "isBase64Encoded": False, **extra,
    }  # fmt: skip


def expected(iris: tuple[Any, list[list[float]]], rows: list[list[float]]) -> list[Any]:
    return list(iris[0].predict(np.asarray(rows)).tolist())


def test_direct_invokes(on_lambda: LambdaHandler, iris: tuple[Any, list[list[float]]]) -> None:
    _, rows = iris
    assert on_lambda({"features": ROW}) == {"prediction": expected(iris, [ROW])[0]}
    assert on_lambda({"features": dict(zip(FEATURES, ROW, strict=True))}) == {"prediction": expected(iris, [ROW])[0]}
    assert on_lambda({"inputs": rows}) == {"predictions": expected(iris, rows)}
    assert on_lambda({"inputs": ROW}) == {"predictions": expected(iris, [ROW])}


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("event", "status", "fragment"),
    [
        ({"features": [1, 2, 3]}, 422, '"features" has 3 values'),
        ({"features": [ROW, ROW]}, 422, "one row"),
        ({"features": [1, 2, "x", 4]}, 422, '"features"[2] is a string'),
        ({"inputs": []}, 422, '"inputs" is an empty list'),
        ({"rows": [ROW]}, 400, "not understood"),
        ([ROW], 400, "not understood"),
    ],
)
def test_bad_direct_invokes_say_what_is_wrong(on_lambda: LambdaHandler, event: Any, status: int, fragment: str) -> None:
    answer = on_lambda(event)
    assert answer["status"] == status and fragment in answer["error"], answer


def test_http_event_needs_the_key(on_lambda: LambdaHandler, iris: tuple[Any, list[list[float]]]) -> None:
    _, rows = iris
    answer = on_lambda(http_event("POST", "/predict", {"inputs": rows}, {"authorization": f"Bearer {KEY}"}))
    assert answer["statusCode"] == 200 and answer["headers"]["content-type"] == "application/json"
    assert json.loads(answer["body"]) == {"predictions": expected(iris, rows)}
    denied = on_lambda(http_event("POST", "/predict", {"inputs": rows}))
    assert denied["statusCode"] == 401 and "API key" in json.loads(denied["body"])["error"]
    assert on_lambda(http_event("POST", "/predict", {"inputs": rows}, {"x-api-key": "wrong"}))["statusCode"] == 401
    assert on_lambda(http_event("GET", "/metadata"))["statusCode"] == 401


def test_http_event_routes(on_lambda: LambdaHandler) -> None:
    assert json.loads(on_lambda(http_event("GET", "/health"))["body"]) == {"status": "ok"}
    assert on_lambda(http_event("GET", "/ready"))["statusCode"] == 200
    metadata = on_lambda(http_event("GET", "/metadata", headers={"x-api-key": KEY}))
    assert json.loads(metadata["body"])["name"] == "iris"
    assert on_lambda(http_event("GET", "/nope", headers={"x-api-key": KEY}))["statusCode"] == 404
    assert on_lambda(http_event("GET", "/predict", headers={"x-api-key": KEY}))["statusCode"] == 405


def test_http_event_base64_body_and_stage(on_lambda: LambdaHandler, iris: tuple[Any, list[list[float]]]) -> None:
    body = base64.b64encode(json.dumps({"inputs": ROW}).encode()).decode()
    event = http_event("POST", "/prod/predict", headers={"x-api-key": KEY})
    event.update(body=body, isBase64Encoded=True)
    event["requestContext"]["stage"] = "prod"
    answer = on_lambda(event)
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"predictions": expected(iris, [ROW])}
    event.update(body="not base64!")
    assert on_lambda(event)["statusCode"] == 400


def test_rest_api_payload_1_0(on_lambda: LambdaHandler, iris: tuple[Any, list[list[float]]]) -> None:
    event = {
        "resource": "/{proxy+}", "path": "/predict", "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", "X-Api-Key": KEY}, "multiValueHeaders": {},
        "queryStringParameters": None, "requestContext": {"stage": "prod", "httpMethod": "POST"},
        "body": json.dumps({"inputs": [ROW]}), "isBase64Encoded": False,
    }  # fmt: skip
    answer = on_lambda(event)
    assert answer["statusCode"] == 200 and json.loads(answer["body"]) == {"predictions": expected(iris, [ROW])}


def test_handler_without_a_loaded_model_says_how_to_start() -> None:
    with pytest.raises(RuntimeError, match="python -m serving"):
        handler({"features": ROW}, None)
