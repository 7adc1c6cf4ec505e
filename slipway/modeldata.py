"""Model data: a package as the ``model.tar.gz`` a managed ML platform mounts beside a server-only image.

SageMaker extracts ``ModelDataUrl`` into ``/opt/ml/model`` and the server serves the package it finds
there (``serving/contract.py``), so the archive holds exactly ``package.json`` and the artifact, at
its root. It is deterministic — sorted members, owner 0, mode 0644, mtime 0, gzip without a name or
a time — so the same package always makes the same bytes and the same sha256: a release's model
data is named by that digest wherever it is stored, and uploading it again changes nothing.

The archive is written beside the package (``<package>.model.tar.gz``) by the image step when a
target takes model data, and made again by the target from the package if it is not there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from serving.manifest import MANIFEST, read_manifest
from slipway.errors import ModelError

ARCHIVE_SUFFIX = ".model.tar.gz"


@dataclass(frozen=True)
class ModelData:
    path: Path
    sha256: str
    size: int


def archive_path(package_dir: Path) -> Path:
    return package_dir.with_name(package_dir.name + ARCHIVE_SUFFIX)


def model_data(package_dir: Path) -> ModelData:
    """The package's model data archive, made now unless it is there already (same package, same bytes)."""
    path = archive_path(package_dir)
    if path.is_file():
        data = path.read_bytes()
        return ModelData(path, hashlib.sha256(data).hexdigest(), len(data))
    if not (package_dir / MANIFEST).is_file():
        raise ModelError(
            f"the package {package_dir} is gone, and its model data archive with it",
            hint="deploy that model version again (slipway deploy), which packages it anew",
        )
    data = archive_bytes(package_dir)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return ModelData(path, hashlib.sha256(data).hexdigest(), len(data))


def archive_bytes(package_dir: Path) -> bytes:
    """``model.tar.gz`` of the package: package.json and the artifact, deterministic."""
    manifest = read_manifest(package_dir)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted({MANIFEST, manifest.artifact_file}):
            content = (package_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
