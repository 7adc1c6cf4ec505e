"""Models that misbehave, for the package step's bad-input tests (importable by joblib)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any


class RaisesOnPredict:
    n_features_in_ = 4
    classes_ = (0, 1)

    def predict(self, rows: Any) -> Any:
        raise ValueError("this model is broken")


class NoPredict:
    n_features_in_ = 4


def write_trojan(path: Path, model: Any, dump: Path) -> Path:
    """A pickle file of ``trojan_of(model, dump)``."""
    path.write_bytes(pickle.dumps(trojan_of(model, dump)))
    return path


def trojan_of(model: Any, dump: Path) -> Any:
    """An object whose pickle, when loaded, appends its process's pid and environment to ``dump``
    (JSON lines), then gives back ``model``: the malicious model file of a registry anyone can write
    to. It needs nothing but Python's builtins to run, so it runs wherever it is loaded."""
    payload = (
        f"(open({str(dump)!r}, 'a').write(__import__('json').dumps({{'pid': __import__('os').getpid(), "
        f"'env': dict(__import__('os').environ)}}) + '\\n'), __import__('pickle').loads({pickle.dumps(model)!r}))[1]"
    )

    class Trojan:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (eval, (payload,))

    return Trojan()


def dumped(dump: Path) -> list[dict[str, Any]]:
    """What the trojan's runs wrote: one {"pid", "env"} per load."""
    return [json.loads(line) for line in dump.read_text().splitlines()] if dump.exists() else []


class RowWise:
    """Predicts each row from that row alone (its first feature × 1000 + its second), recording the
    number of rows of every call: a stand-in for any model that predicts rows independently."""

    n_features_in_ = 4

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, rows: Any) -> Any:
        self.calls.append(len(rows))
        return rows[:, 0] * 1000 + rows[:, 1]


class FailsOnNegative(RowWise):
    """A row-wise model that raises on any call holding a row whose first feature is negative."""

    def predict(self, rows: Any) -> Any:
        if (rows[:, 0] < 0).any():
            self.calls.append(len(rows))
            raise ValueError("a negative first feature")
        return super().predict(rows)


class BatchDependent:
    """A model whose answer for a row depends on the other rows of the call: the row's first feature
    minus the call's mean (a per-batch normalization). Batching it changes its answers."""

    n_features_in_ = 4

    def predict(self, rows: Any) -> Any:
        return rows[:, 0] - rows[:, 0].mean()
