"""Train the example model: logistic regression on iris, saved with joblib.

Writes ``model.joblib`` and ``samples.json`` (a few rows to compute golden samples from) next to
this file. ``--version`` changes the regularisation so that each version is a different artifact.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent


def train(out_dir: Path = HERE, version: int = 1) -> Path:
    data = load_iris()
    model = LogisticRegression(max_iter=500, C=1.0 / version)
    model.fit(data.data, data.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.joblib"
    joblib.dump(model, path)
    rows = data.data[[0, 1, 50, 51, 100, 101, 149]].tolist()
    (out_dir / "samples.json").write_text(json.dumps({"inputs": rows}, indent=2))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args()
    print(train(args.out, args.version))
