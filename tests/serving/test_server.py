"""The model server over real HTTP: one uvicorn subprocess (``server`` fixture) for the whole module."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx
import numpy as np
import pytest

# helpers and fixtures come from conftest.py (fixtures only: importing conftest by name is fragile)
Server = Any
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]


def post(server: Server, body: Any = None, *, content: bytes | None = None, **headers: str) -> httpx.Response:
    kwargs: dict[str, Any] = {"content": content} if content is not None else {"json": body}
    return httpx.post(f"{server.url}/predict", headers={**server.headers, **headers}, timeout=10, **kwargs)


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- predictions ---------------------------------------------------------------------------------


def test_predict_single_row(server: Server, iris: tuple[Any, list[list[float]]]) -> None:
    model, _ = iris
    response = post(server, {"inputs": ROW})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": model.predict(np.asarray([ROW])).tolist()}


def test_predict_batch(server: Server, iris: tuple[Any, list[list[float]]]) -> None:
    model, rows = iris
    response = post(server, {"inputs": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == model.predict(np.asarray(rows)).tolist()
    assert len(set(response.json()["predictions"])) == 3  # the samples cover all three classes


def test_predict_named_features(server: Server, iris: tuple[Any, list[list[float]]]) -> None:
    model, rows = iris
    named = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    shuffled = {name: named[4][name] for name in reversed(FEATURES)}  # key order does not matter
    expected = model.predict(np.asarray(rows)).tolist()
    assert post(server, {"inputs": named}).json() == {"predictions": expected}
    assert post(server, {"inputs": shuffled}).json() == {"predictions": [expected[4]]}


def test_integers_are_numbers(server: Server, iris: tuple[Any, list[list[float]]]) -> None:
    model, _ = iris
    response = post(server, {"inputs": [6, 3, 5, 2]})
    assert response.json() == {"predictions": model.predict(np.asarray([[6.0, 3.0, 5.0, 2.0]])).tolist()}


# --- bad requests: always 4xx with an {"error": ...} that says what is wrong and what is expected --


@pytest.mark.parametrize(
    ("body", "status", "fragments"),
    [
        (b"{not json", 400, ["not valid JSON", '{"inputs": ROW}']),
        (b"", 400, ["empty", '{"inputs": ROW}']),
        (b"[1, 2, 3, 4]", 400, ["not a JSON object", '{"inputs": ROW}']),
        (b'{"input": [1, 2, 3, 4]}', 400, ['no "inputs" key']),
        (b'{"inputs": [1, 2, NaN, 4]}', 400, ["not valid JSON"]),
        (b'{"inputs": [1, 2, 3]}', 422, ["has 3 values", "4 numbers", "sepal_length"]),
        (b'{"inputs": [1, 2, 3, 4, 5]}', 422, ["has 5 values"]),
        (b'{"inputs": [[1, 2, 3, 4], [1, 2, 3]]}', 422, ['"inputs"[1] has 3 values']),
        (b'{"inputs": [1, "2", 3, 4]}', 422, ['"inputs"[1] is a string', "not a number"]),
        (b'{"inputs": [1, null, 3, 4]}', 422, ['"inputs"[1] is null']),
        (b'{"inputs": [1, true, 3, 4]}', 422, ["boolean"]),
        (b'{"inputs": [[1, 2, 3, 4], [1, 2, "x", 4]]}', 422, ['"inputs"[1][2] is a string']),
        (b'{"inputs": [[[1, 2, 3, 4]]]}', 422, ['"inputs"[0][0] is a list']),
        (b'{"inputs": []}', 422, ["empty list"]),
        (b'{"inputs": [[]]}', 422, ['"inputs"[0] has 0 values']),
        (b'{"inputs": 4}', 422, ['"inputs" is a int']),
        (b'{"inputs": "1,2,3,4"}', 422, ['"inputs" is a string']),
        (b'{"inputs": [[1, 2, 3, 4], 5]}', 422, ['"inputs"[1] is a int']),
        (b'{"inputs": {"sepal_length": 1, "sepal_width": 2, "petal_length": 3}}', 422, ["missing", "petal_width"]),
        (
            b'{"inputs": {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4, "x": 1}}',
            422,
            ["unknown feature(s) 'x'"],
        ),
        (
            b'{"inputs": {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": "4"}}',
            422,
            ["['petal_width'] is a string"],
        ),
        (b'{"inputs": [{"sepal_length": 1}, [1, 2, 3, 4]]}', 422, ["missing"]),
    ],
)
@pytest.mark.fault("bad input")
def test_bad_bodies(server: Server, body: bytes, status: int, fragments: list[str]) -> None:
    assert_error(post(server, content=body, **{"Content-Type": "application/json"}), status, *fragments)


@pytest.mark.fault("bad input")
def test_body_too_large(server: Server) -> None:
    big = b'{"inputs": [' + b"[1.0, 2.0, 3.0, 4.0]," * (9 * 1024 * 1024 // 20) + b"[1, 2, 3, 4]]}"
    assert_error(post(server, content=big), 413, "larger than the limit of 8388608 bytes")
    chunked = httpx.post(  # no content-length: the limit still holds while reading
        f"{server.url}/predict", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
        headers=server.headers, timeout=10,
    )  # fmt: skip
    assert_error(chunked, 413, "larger than the limit")
    assert post(server, {"inputs": ROW}).status_code == 200  # and the server is fine


@pytest.mark.fault("bad input")
def test_wrong_method_and_unknown_path(server: Server) -> None:
    response = httpx.get(f"{server.url}/predict", headers=server.headers)
    assert_error(response, 405, "use POST")
    assert response.headers["allow"] == "POST"
    assert_error(httpx.post(f"{server.url}/health"), 405, "use GET")
    assert_error(httpx.get(f"{server.url}/nope", headers=server.headers), 404, "/nope", "POST /predict")


# --- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic {key}"},
        {"Authorization": "{key}"},
        {"X-API-Key": "wrong-key"},
        {"X-API-Key": ""},
    ],
)
@pytest.mark.fault("bad input")
def test_auth_rejects(server: Server, headers: dict[str, str]) -> None:
    headers = {name: value.format(key=server.key) for name, value in headers.items()}
    for path in ("/predict", "/metadata", "/metrics", "/nope"):
        response = httpx.request(
            "POST" if path == "/predict" else "GET", server.url + path, json={"inputs": ROW}, headers=headers
        )
        assert_error(response, 401, "Authorization: Bearer", "X-API-Key")
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer {key}"}, {"authorization": "bearer {key}"}, {"X-API-Key": "{key}"}]
)
def test_auth_accepts(server: Server, headers: dict[str, str]) -> None:
    headers = {name: value.format(key=server.key) for name, value in headers.items()}
    assert httpx.post(f"{server.url}/predict", json={"inputs": ROW}, headers=headers).status_code == 200
    assert httpx.get(f"{server.url}/metadata", headers=headers).status_code == 200


def test_health_and_ready_need_no_key(server: Server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert httpx.head(f"{server.url}/health").status_code == 200


def test_key_is_never_logged(server: Server) -> None:
    post(server, {"inputs": ROW}, Authorization="Bearer wrong")
    assert server.key not in server.stderr
    assert "auth on" in server.stderr


# --- metadata, metrics, ready file ---------------------------------------------------------------


def test_metadata(server: Server, iris_package: Any) -> None:
    meta = httpx.get(f"{server.url}/metadata", headers=server.headers).json()
    manifest = json.loads((iris_package / "package.json").read_text())
    assert (meta["name"], meta["version"], meta["sha256"]) == ("iris", "1", manifest["sha256"])
    assert meta["schema"] == {"n_features": 4, "feature_names": FEATURES, "task": "classification"}
    assert meta["framework"]["scikit-learn"]["packaged"] == meta["framework"]["scikit-learn"]["installed"]
    assert meta["server"]["name"] == "slipway-serving" and meta["server"]["version"]
    assert meta["pid"] == server.proc.pid and meta["auth"] is True


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the exposition format strictly: every line is a comment or ``name{labels} value``."""
    response = httpx.get(f"{server.url}/metrics", headers=server.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \w+ ", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def test_metrics_reflect_requests(server: Server, iris: tuple[Any, list[list[float]]]) -> None:
    _, rows = iris
    ok = ("slipway_requests_total", frozenset({("path", "/predict"), ("status", "200")}))
    bad = ("slipway_requests_total", frozenset({("path", "/predict"), ("status", "422")}))
    count = ("slipway_request_duration_seconds_count", frozenset({("path", "/predict")}))
    before = scrape(server)
    post(server, {"inputs": ROW})
    post(server, {"inputs": rows})
    post(server, {"inputs": [1, 2]})
    after = scrape(server)
    assert after[ok] - before.get(ok, 0) == 2
    assert after[bad] - before.get(bad, 0) == 1
    assert after[count] - before.get(count, 0) == 3
    assert after[("slipway_predictions_total", frozenset())] - before[("slipway_predictions_total", frozenset())] == 8
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in after.items()
        if name == "slipway_request_duration_seconds_bucket" and ("path", "/predict") in labels
    )
    assert buckets[-1] == (float("inf"), after[count])
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))  # cumulative
    assert after[("slipway_request_duration_seconds_sum", frozenset({("path", "/predict")}))] > 0
    info = {labels: v for (name, labels), v in after.items() if name == "slipway_model_info"}
    assert info == {frozenset({("name", "iris"), ("version", "1"), ("sha256", server.ready["sha256"])}): 1.0}
    assert after[("slipway_ready", frozenset())] == 1.0


def test_ready_file_and_control_port(server: Server) -> None:
    ready = server.ready
    assert set(ready) >= {"pid", "port", "control_port", "sha256"}
    assert ready["pid"] == server.proc.pid and ready["control_port"] not in (None, ready["port"])
    meta = httpx.get(f"{server.control_url}/metadata", headers=server.headers).json()
    assert (meta["sha256"], meta["pid"]) == (ready["sha256"], server.proc.pid)
    assert httpx.get(f"{server.control_url}/ready").status_code == 200
