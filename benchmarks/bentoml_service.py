"""The BentoML side of benchmarks/model_server.py: minimal BentoML 1.4 services for one model artifact.

    SLIPWAY_BENCH_ARTIFACT=<package>/model.joblib bentoml serve bentoml_service:SklearnModel \\
        --working-dir benchmarks --host 127.0.0.1 --port 8000

``POST /predict`` with ``{"inputs": [[...], ...]}`` (a 2-D array) answers the bare JSON array of
``model.predict``. ``SklearnModel`` is BentoML's default: one worker process; the API is sync, so its
calls run on a worker thread, one at a time (``threads: 1``). ``SklearnModelBatched`` is the same API
with BentoML's adaptive batching on (``batchable=True``: requests are corked and dispatched as one
call along axis 0), at most as many rows per call as Slipway's server (256); its latency bound is
BentoML's default.
"""

import os

import bentoml
import joblib
import numpy as np

MAX_BATCH_ROWS = 256  # serving.batching.DEFAULT_MAX_ROWS


@bentoml.service
class SklearnModel:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["SLIPWAY_BENCH_ARTIFACT"])

    @bentoml.api
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.model.predict(inputs)


@bentoml.service
class SklearnModelBatched:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["SLIPWAY_BENCH_ARTIFACT"])

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_ROWS)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.model.predict(inputs)
