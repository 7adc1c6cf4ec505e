"""The BentoML side of benchmarks/model_server.py: a minimal BentoML 1.4 service for one model artifact.

    SLIPWAY_BENCH_ARTIFACT=<package>/model.joblib bentoml serve bentoml_service:SklearnModel \\
        --working-dir benchmarks --host 127.0.0.1 --port 8000

``POST /predict`` with ``{"inputs": [[...], ...]}`` (a 2-D array) answers the bare JSON array of
``model.predict``. Everything else is BentoML's default: one worker process; the API is sync, so
its calls run on a worker thread, one at a time (``threads: 1``).
"""

import os

import bentoml
import joblib
import numpy as np


@bentoml.service
class SklearnModel:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["SLIPWAY_BENCH_ARTIFACT"])

    @bentoml.api
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.model.predict(inputs)
