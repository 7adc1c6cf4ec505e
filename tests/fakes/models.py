"""Models that misbehave, for the package step's bad-input tests (importable by joblib)."""

from __future__ import annotations

from typing import Any


class RaisesOnPredict:
    n_features_in_ = 4
    classes_ = (0, 1)

    def predict(self, rows: Any) -> Any:
        raise ValueError("this model is broken")


class NoPredict:
    n_features_in_ = 4
