"""The model package format: a directory with ``package.json`` and the model artifact.

This is the one definition of the format. The package step (``tasks/package.py``) writes it; the
model server reads it. ``serving`` imports nothing from the rest of the tree, so an image carries
only this package, the artifact and the server's dependencies.

    <package>/
      package.json      this manifest
      model.<ext>       the artifact (skops, joblib or pickle), checked against ``sha256``
      server/serving/   a copy of this server's code, so a package runs the server it was tested with
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "package.json"
FORMAT_VERSION = 1
JSONValue = Any  # what orjson/json produce: None, bool, int, float, str, list, dict


@dataclass(frozen=True)
class Sample:
    """A golden sample: one input row and the output the model gave at packaging time."""

    input: JSONValue
    output: JSONValue


@dataclass(frozen=True)
class Schema:
    """What ``/predict`` accepts: rows of ``n_features`` numbers, optionally named."""

    n_features: int
    feature_names: list[str] | None = None
    task: str = "classification"  # or "regression": how outputs are compared in smoke checks


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    artifact_file: str
    sha256: str
    artifact_format: str  # "skops" | "joblib" | "pickle"
    source: str
    schema: Schema
    framework: dict[str, str]  # distribution name -> version the model was packaged with
    samples: list[Sample] = field(default_factory=list)
    created_at: str = ""
    format: int = FORMAT_VERSION
    trusted_types: list[str] = field(default_factory=list)  # skops: the types beyond its defaults to load
    source_sha256: str = ""  # the digest of what the package step fetched, before it was loaded

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        if raw.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported package format {raw.get('format')!r}, expected {FORMAT_VERSION}")
        data = dict(raw)
        data["schema"] = Schema(**raw["schema"])
        data["samples"] = [Sample(**s) for s in raw.get("samples", [])]
        return cls(**data)


def read_manifest(package_dir: Path) -> Manifest:
    """Read and parse ``package.json``; raises ``ValueError``/``OSError`` with the path on problems."""
    path = package_dir / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return Manifest.from_dict(raw)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a Slipway package manifest: {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
