"""Adaptive batching (serving/batching.py): requests waiting together share one ``model.predict``.

Most tests drive the ASGI app in-process: requests gathered on one event loop all reach the batcher
in the same turn of the loop, so what forms a batch is deterministic. The HTTP test runs the real
launcher with workers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from serving import create_app
from serving.app import SlipwayApp
from serving.batching import BatchSettings, row_wise
from serving.contract import GENERIC, SAGEMAKER, Routes, vertex
from slipway.http import tls
from tests.fakes.models import BatchDependent, FailsOnNegative, RowWise

Answer = tuple[int, Any]


async def _post(app: SlipwayApp, path: str, body: bytes) -> Answer:
    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"%d" % len(body))]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


def together(app: SlipwayApp, bodies: list[bytes], path: str = "/predict") -> list[Answer]:
    """POST every body at once: all of them reach the app in the same turn of the event loop."""

    async def go() -> list[Answer]:
        return list(await asyncio.gather(*(_post(app, path, body) for body in bodies)))

    return asyncio.run(go())


def body(rows: list[list[float]], key: str = "inputs") -> bytes:
    return json.dumps({key: rows}).encode()


def own_answer(rows: list[list[float]]) -> list[float]:
    return [row[0] * 1000 + row[1] for row in rows]


@pytest.fixture(scope="module")
def row_wise_package(kit: ModuleType, workdir: Path) -> Path:
    rows = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    return kit.build_package(workdir / "row-wise-pkg", RowWise(), rows, name="rowwise", task="regression",
                             feature_names=None)  # fmt: skip


def _app(package: Path, routes: Routes = GENERIC, **batching: Any) -> SlipwayApp:
    app = create_app(package, api_key=None, routes=routes, batching=BatchSettings(**{"mode": "on", **batching}))
    if isinstance(app.model.model, RowWise):
        app.model.model.calls.clear()  # the golden samples' calls at load
    return app


def _distinct_requests(n: int) -> list[list[list[float]]]:
    """``n`` requests of 1 to 7 rows each, no two rows alike: a row that went to the wrong request shows."""
    ids = itertools.count(1)
    return [[[float(next(ids)), float(i), 0.5, 0.25] for _ in range(1 + i % 7)] for i in range(n)]


def test_rows_never_leak_into_another_requests_answer(row_wise_package: Path) -> None:
    app = _app(row_wise_package)
    requests = _distinct_requests(40)
    answers = together(app, [body(rows) for rows in requests])
    for rows, (status, answer) in zip(requests, answers, strict=True):
        assert status == 200
        assert answer == {"predictions": own_answer(rows)}
    model = app.model.model
    assert len(model.calls) == 1 and model.calls[0] == sum(map(len, requests))  # one call for all 40
    assert app.metrics.predictions == sum(map(len, requests))


def test_a_request_that_makes_the_model_fail_fails_alone(kit: ModuleType, workdir: Path) -> None:
    package = kit.build_package(workdir / "fails-pkg", FailsOnNegative(), [[1.0, 2.0, 3.0, 4.0]], name="fails",
                                task="regression", feature_names=None)  # fmt: skip
    app = _app(package)
    requests = _distinct_requests(12)
    requests[3] = [[-1.0, 0.0, 0.0, 0.0]]
    requests[8] = [[2.0, 3.0, 4.0, 5.0], [-2.0, 0.0, 0.0, 0.0]]
    answers = together(app, [body(rows) for rows in requests])
    for i, (rows, (status, answer)) in enumerate(zip(requests, answers, strict=True)):
        if i in (3, 8):
            assert status == 500 and "a negative first feature" in answer["error"]
        else:
            assert (status, answer) == (200, {"predictions": own_answer(rows)})
    assert app.batcher is not None and app.batcher.fallbacks == 1  # one batch, then each request alone


def test_bad_bodies_are_answered_at_once_and_never_join_a_batch(row_wise_package: Path) -> None:
    app = _app(row_wise_package)
    good = _distinct_requests(6)
    bodies = [b"{not json", body([[1.0, 2.0, 3.0]]), *(body(rows) for rows in good), b'{"rows": []}']
    answers = together(app, bodies)
    assert [status for status, _ in answers] == [400, 422, *[200] * len(good), 400]
    assert [a for _, a in answers[2:-1]] == [{"predictions": own_answer(rows)} for rows in good]
    assert app.batcher is not None and app.batcher.requests == len(good)


@pytest.mark.parametrize(
    "routes", [GENERIC, SAGEMAKER, vertex("/v1/m/health", "/v1/m:predict")], ids=["generic", "sagemaker", "vertex"]
)
def test_every_contracts_predict_route_batches(row_wise_package: Path, routes: Routes) -> None:
    app = _app(row_wise_package, routes)
    requests = _distinct_requests(10)
    answers = together(app, [body(rows, routes.request_key) for rows in requests], routes.predict)
    assert answers == [(200, {"predictions": own_answer(rows)}) for rows in requests]
    assert app.model.model.calls == [sum(map(len, requests))]


def test_a_batch_holds_at_most_max_rows_and_a_large_request_runs_alone(row_wise_package: Path) -> None:
    app = _app(row_wise_package, max_rows=8)
    requests = [[[float(i), float(j), 0.0, 0.0] for j in range(3)] for i in range(10)]
    requests.insert(4, [[100.0 + j, 0.0, 0.0, 0.0] for j in range(20)])
    answers = together(app, [body(rows) for rows in requests])
    assert answers == [(200, {"predictions": own_answer(rows)}) for rows in requests]
    calls = app.model.model.calls
    assert 20 in calls and all(n <= 8 for n in calls if n != 20) and sum(calls) == 50


def test_no_wait_by_default_and_max_wait_gathers_requests_that_arrive_apart(row_wise_package: Path) -> None:
    async def apart(app: SlipwayApp, n: int, gap_s: float) -> tuple[list[Answer], float]:
        started = time.perf_counter()
        tasks = []
        for rows in _distinct_requests(n):
            tasks.append(asyncio.create_task(_post(app, "/predict", body(rows))))
            await asyncio.sleep(gap_s)
        return list(await asyncio.gather(*tasks)), time.perf_counter() - started

    alone = _app(row_wise_package)
    answers, _ = asyncio.run(apart(alone, 4, 0.01))
    assert all(status == 200 for status, _ in answers) and alone.model.model.calls == [1, 2, 3, 4]  # no waiting
    waiting = _app(row_wise_package, max_wait_us=300_000)
    answers, elapsed = asyncio.run(apart(waiting, 4, 0.01))
    assert [a for _, a in answers] == [{"predictions": own_answer(rows)} for rows in _distinct_requests(4)]
    assert waiting.model.model.calls == [1 + 2 + 3 + 4] and elapsed >= 0.3  # one call, after the wait


def test_auto_batches_only_models_known_to_predict_each_row_on_its_own() -> None:
    known = [
        LogisticRegression(),
        GradientBoostingClassifier(),
        make_pipeline(StandardScaler(), LogisticRegression()),
        ColumnTransformer([("scale", StandardScaler(), [0, 1])], remainder="passthrough"),
    ]
    unknown = [RowWise(), BatchDependent(), make_pipeline(FunctionTransformer(np.log1p), LogisticRegression())]
    assert [row_wise(m) for m in known] == [True] * len(known)
    assert [row_wise(m) for m in unknown] == [False] * len(unknown)
    assert BatchSettings().decide(LogisticRegression())[0] is True
    assert BatchSettings(mode="off").decide(LogisticRegression()) == (False, "turned off (--batching off)")
    assert BatchSettings(mode="on").decide(BatchDependent())[0] is True


def test_a_model_whose_rows_depend_on_the_batch_is_not_batched_unless_asked(kit: ModuleType, workdir: Path) -> None:
    rows = [[1.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]]
    package = kit.build_package(workdir / "batch-dependent-pkg", BatchDependent(), rows, outputs=[0.0, 0.0],
                                name="dependent", task="regression", feature_names=None)  # fmt: skip
    requests = [[[float(i), 0.0, 0.0, 0.0]] for i in range(8)]
    auto = create_app(package, api_key=None)
    assert auto.batcher is None and "not known to predict each row on its own" in auto.batching_reason
    assert together(auto, [body(r) for r in requests]) == [(200, {"predictions": [0.0]})] * 8  # as if alone
    forced = _app(package)  # what batching would do to it: every answer shifted by the batch's mean
    assert together(forced, [body(r) for r in requests]) != [(200, {"predictions": [0.0]})] * 8


def test_launcher_batches_with_workers_and_its_options_win_over_the_environment(
    kit: ModuleType, iris_package: Path, workdir: Path, iris: tuple[Any, list[list[float]]]
) -> None:
    model, rows = iris
    env = kit.server_env(SLIPWAY_BATCHING="off", SLIPWAY_MAX_BATCH_WAIT_US="20000")
    with kit.running(iris_package, workdir, "--workers", "2", "--batching", "on", env=env) as server:
        metadata = httpx.get(f"{server.url}/metadata", headers=server.headers, timeout=10).json()
        assert metadata["batching"] | {"why": ""} == {"enabled": True, "why": "", "mode": "on", "max_rows": 256,
                                                      "max_wait_us": 20000}  # fmt: skip
        requests = [[rows[i % len(rows)], rows[(i * 3 + 1) % len(rows)]][: 1 + i % 2] for i in range(48)]

        def post(request: list[list[float]]) -> Any:
            answer = httpx.post(
                f"{server.url}/predict", json={"inputs": request}, headers=server.headers, timeout=10, verify=tls()
            )
            return answer.status_code, answer.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, requests))
    assert answers == [(200, {"predictions": model.predict(np.asarray(r)).tolist()}) for r in requests]
    assert "batching on (≤ 256 rows, wait ≤ 20000 µs)" in server.stderr


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("extra", "env", "fragment"),
    [
        (["--max-batch-rows", "0"], {}, "--max-batch-rows='0' is not a whole number of at least 1"),
        ([], {"SLIPWAY_BATCHING": "sometimes"}, "SLIPWAY_BATCHING='sometimes' is not one of auto, on, off"),
        ([], {"SLIPWAY_MAX_BATCH_WAIT_US": "-5"}, "SLIPWAY_MAX_BATCH_WAIT_US='-5' is not a whole number"),
    ],
)
def test_bad_batch_settings_refuse_to_start(
    kit: ModuleType, iris_package: Path, workdir: Path, extra: list[str], env: dict[str, str], fragment: str
) -> None:
    code, stderr = kit.run_to_exit(
        kit.server_command(iris_package, kit.free_port(), workdir / "never.json", *extra), kit.server_env(**env)
    )
    assert code == 2 and fragment in stderr


def test_every_serving_option_of_the_spec_has_the_environment_variable_a_platform_passes_instead() -> None:
    from serving.contract import options_environment
    from slipway.spec import ServingSettings

    options = ServingSettings(batching="on", max_batch_rows=9, max_batch_wait_us=5).server_args()
    assert options_environment(options) == {
        "SLIPWAY_BATCHING": "on", "SLIPWAY_MAX_BATCH_ROWS": "9", "SLIPWAY_MAX_BATCH_WAIT_US": "5"
    }  # fmt: skip
    with pytest.raises(ValueError, match="--workers"):
        options_environment(["--workers", "2"])
