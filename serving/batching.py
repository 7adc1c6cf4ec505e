"""Adaptive batching: the requests that are waiting together go through one ``model.predict`` call.

A request's rows are parsed and validated on their own (a bad body is answered at once and never
joins a batch), then ``Batcher.submit`` queues its matrix and returns a future of its predictions.
The batch runs from the event loop's ready queue (``call_soon``): after every request that the
loop already read in this turn has been queued, never after a timer. A request that arrives alone
is predicted at once, alone; under load, the requests read while the previous batch was computing
form the next one. This is Ray Serve's ``@serve.batch`` with ``batch_wait_timeout_s=0`` and
BentoML's and Triton's dynamic batchers without a queue delay: the batch size follows the load.

- ``max_rows`` bounds a batch in rows; a request is never split, so a request larger than the
  bound runs alone.
- ``max_wait_s`` > 0 holds the first request of a batch up to that long for company (a timer),
  unless the batch fills first: latency traded for throughput, for users who ask.
- The matrices are stacked, predicted once, and the answers split back by each request's row
  offsets, so every request gets exactly the rows it sent. A batched call that raises, or that
  returns a different number of rows than it was given, is run again request by request: a request
  that makes the model fail gets its own error, and its neighbours their answers.

Batching assumes that a model predicts each row independently of the others in the call; for a
model whose output for a row depends on the batch, it is turned off (``serving.model.batching_default``
and the launcher's ``--batching off``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Matrix = np.ndarray[Any, np.dtype[np.float64]]
Predict = Callable[[Matrix], Any]

Mode = Literal["auto", "on", "off"]
MODES: tuple[Mode, ...] = ("auto", "on", "off")
DEFAULT_MAX_ROWS = 256
# requests per predict call: the buckets of slipway_batch_requests in /metrics
SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# Model classes outside these packages are not known to predict rows independently: "auto" leaves
# them unbatched. Inside them, the classes that run the user's own code on the whole input are not known either.
_ROW_WISE_PACKAGES = ("sklearn", "xgboost", "lightgbm")
_NOT_ROW_WISE = frozenset({"FunctionTransformer"})  # sklearn.preprocessing: func(X) on the whole call


@dataclass(frozen=True)
class BatchSettings:
    """How the server batches (the launcher's ``--batching``, ``--max-batch-rows``, ``--max-batch-wait-us``).

    ``auto`` batches models known to predict each row on its own (``row_wise``), ``on`` every
    model, ``off`` none: a model whose output for a row depends on the other rows of the call needs
    ``off`` unless ``auto`` already leaves it alone.
    """

    mode: Mode = "auto"
    max_rows: int = DEFAULT_MAX_ROWS
    max_wait_us: int = 0

    def decide(self, model: Any) -> tuple[bool, str]:
        """Whether to batch ``model``, and why (for /metadata and the start-up line)."""
        if self.mode == "off":
            return False, "turned off (--batching off)"
        if self.mode == "on":
            return True, "turned on (--batching on)"
        if row_wise(model):
            return True, f"{_class_name(model)} predicts each row on its own"
        return False, f"{_class_name(model)} is not known to predict each row on its own; --batching on batches it"


def row_wise(model: Any) -> bool:
    """True when ``model`` and every estimator inside it (pipeline steps, column transformers,
    meta-estimators' base estimators) is a class of scikit-learn, XGBoost or LightGBM other than
    those that run arbitrary code on the whole input."""
    stack, seen = [model], 0
    while stack:
        obj = stack.pop()
        seen += 1
        cls = type(obj)
        if cls.__module__.partition(".")[0] not in _ROW_WISE_PACKAGES or cls.__name__ in _NOT_ROW_WISE:
            return False
        if seen > 1000:  # not a model graph any estimator builds
            return False
        get_params = getattr(obj, "get_params", None)
        if not callable(get_params):
            continue
        try:
            params = get_params(deep=False)
        except Exception:
            return False
        for value in params.values():
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:  # Pipeline.steps and ColumnTransformer.transformers hold (name, estimator[, cols])
                parts = item if isinstance(item, tuple) else (item,)
                stack.extend(p for p in parts if hasattr(p, "get_params") and not isinstance(p, type))
    return True


def _class_name(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


class Batcher:
    """Queues requests' matrices and predicts each batch of them in one call, from the event loop."""

    def __init__(self, predict: Predict, max_rows: int = DEFAULT_MAX_ROWS, max_wait_s: float = 0.0) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, not {max_rows}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must not be negative, not {max_wait_s}")
        self._predict = predict
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self._queue: deque[tuple[Matrix, asyncio.Future[Any]]] = deque()
        self._rows = 0  # rows queued
        self._handle: asyncio.Handle | None = None  # the scheduled run (a TimerHandle while waiting)
        self.calls = 0  # predict calls made
        self.requests = 0  # requests batched
        self.fallbacks = 0  # batches run again request by request
        self.sizes = [0] * (len(SIZE_BUCKETS) + 1)  # batches by requests per call, last: more

    def submit(self, matrix: Matrix) -> asyncio.Future[Any]:
        """Queue ``matrix``; the future gets its rows' predictions, or the model's exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((matrix, future))
        self._rows += len(matrix)
        handle = self._handle
        if handle is None:
            if self.max_wait_s > 0 and self._rows < self.max_rows:
                self._handle = loop.call_later(self.max_wait_s, self._run)
            else:
                self._handle = loop.call_soon(self._run)
        elif self._rows >= self.max_rows and isinstance(handle, asyncio.TimerHandle):
            handle.cancel()  # full before its wait is over: run it now
            self._handle = loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        self._handle = None
        queue = self._queue
        batch = [queue.popleft()]
        rows = len(batch[0][0])
        while queue and rows + len(queue[0][0]) <= self.max_rows:
            item = queue.popleft()
            rows += len(item[0])
            batch.append(item)
        self._rows -= rows
        if queue:  # what did not fit: the next batch, after what the loop has ready
            self._handle = asyncio.get_running_loop().call_soon(self._run)
        self._record(len(batch))
        if len(batch) == 1:
            self._one(*batch[0])
        else:
            self._many(batch, rows)

    def _record(self, requests: int) -> None:
        self.requests += requests
        for i, bound in enumerate(SIZE_BUCKETS):
            if requests <= bound:
                self.sizes[i] += 1
                return
        self.sizes[-1] += 1

    def _one(self, matrix: Matrix, future: asyncio.Future[Any]) -> None:
        self.calls += 1
        try:
            result = self._predict(matrix)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    def _many(self, batch: list[tuple[Matrix, asyncio.Future[Any]]], rows: int) -> None:
        self.calls += 1
        try:
            out = self._predict(np.concatenate([matrix for matrix, _ in batch]))
            if type(out) is not np.ndarray and type(out) is not list:
                out = np.asarray(out)
            if len(out) != rows:
                raise ValueError(f"predict returned {len(out)} rows for {rows}")
        except Exception:  # which request made it fail? run each alone: that one fails alone
            self.fallbacks += 1
            for matrix, future in batch:
                self._one(matrix, future)
            return
        start = 0
        for matrix, future in batch:
            end = start + len(matrix)
            if not future.done():  # a request cancelled meanwhile (its task ended) gets nothing
                future.set_result(out[start:end])
            start = end
