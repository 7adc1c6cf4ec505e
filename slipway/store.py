"""The package store: where packages and gate reports live durably, chosen by ``SLIPWAY_STORE_URL``.

Unset, it is the state directory itself (``<state>/packages``, ``<state>/reports``): one machine, as
it always was. A team sets an object store every worker reaches, ``s3://BUCKET/PREFIX``
(``slipway.s3``), or a folder they all mount (an absolute path). The store holds

    packages/<model>/<version>-<sha12>/...     a package, content-addressed and immutable
    reports/<service>/<release id>/...         the gate's report of a release (Locust's HTML, figures)

and every machine works on its own copies under ``<state>/packages`` (``PackageStore.working``):
the package step writes there and ``publish_package`` uploads what the store lacks; ``fetch_package``
brings a package a machine has never seen (a rollback on another worker) from the store and checks
its artifact against the digest its location names before anything uses it. The ledger records a
package by its store-relative location (``location_of``), never a machine's path.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving.manifest import MANIFEST, read_manifest, sha256_file
from slipway.errors import ConfigError, StoreError
from slipway.settings import Settings

PACKAGES = "packages"
REPORTS = "reports"


class Objects(Protocol):
    """Files by key (``packages/iris/1-abc/package.json``): a folder, a bucket. ``where`` is for people;
    ``probe`` proves, before anything changes, that this process may list and write here."""

    @property
    def where(self) -> str: ...
    def probe(self) -> None: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...
    def put(self, key: str, src: Path) -> None: ...
    def get(self, key: str, dest: Path) -> None: ...


def location_of(package_dir: Path) -> str:
    """A package's store-relative location, ``<model>/<version>-<sha12>``: its last two path parts
    (every package directory is ``<packages>/<model>/<version>-<sha12>``, wherever ``<packages>`` is)."""
    return "/".join(Path(package_dir).parts[-2:])


@dataclass(frozen=True)
class PackageStore:
    objects: Objects
    working: Path  # this machine's copies of packages: <state>/packages

    @property
    def where(self) -> str:
        return self.objects.where

    def check(self) -> None:
        """Refuse, before anything changes, a store this process cannot list or write."""
        self.objects.probe()

    def publish_package(self, package_dir: Path) -> str:
        """Put a package into the store unless it is there (its manifest last: a package whose
        manifest is in the store is whole); returns its location."""
        location = location_of(package_dir)
        key = f"{PACKAGES}/{location}"
        if not self.objects.exists(f"{key}/{MANIFEST}"):
            files = sorted((p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                           key=lambda p: (p.name == MANIFEST, p.as_posix()))  # fmt: skip
            for path in files:
                self.objects.put(f"{key}/{path.relative_to(package_dir).as_posix()}", path)
        return location

    def fetch_package(self, package_dir: Path, release_id: str) -> Path:
        """The package at ``package_dir`` (this machine's copy), brought from the store if it is not here."""
        if (package_dir / MANIFEST).exists():
            return package_dir
        location = location_of(package_dir)
        key = f"{PACKAGES}/{location}"
        if not self.objects.exists(f"{key}/{MANIFEST}"):
            raise ConfigError(
                f"the package of release {release_id} ({location}) is neither on this machine nor in the "
                f"package store {self.where}",
                hint="it was made with another SLIPWAY_STORE_URL (or its state directory is gone): set the store "
                "its release used, or release that model version again (slipway deploy)",
            )
        package_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=package_dir.parent, prefix=".fetching-"))
        try:
            for name in self.objects.keys(f"{key}/"):
                dest = tmp / name.removeprefix(f"{key}/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.objects.get(name, dest)
            _check_digest(tmp, location, self.where)
            tmp.rename(package_dir)
        except OSError:
            if not (package_dir / MANIFEST).exists():  # else a concurrent fetch of the same package won
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return package_dir

    def publish_report(self, report_dir: Path, service: str, release_id: str) -> str:
        """Put a release's gate report into the store; returns its store-relative location."""
        key = f"{REPORTS}/{service}/{release_id}"
        for path in sorted(p for p in report_dir.rglob("*") if p.is_file()):
            self.objects.put(f"{key}/{path.relative_to(report_dir).as_posix()}", path)
        return key


def _check_digest(package_dir: Path, location: str, where: str) -> None:
    """A fetched package's artifact must have the digest its manifest and its location name."""
    manifest = read_manifest(package_dir)
    actual = sha256_file(package_dir / manifest.artifact_file)
    if actual != manifest.sha256 or not location.endswith(f"-{actual[:12]}"):
        raise StoreError(
            f"the package {location} in {where} is not what was stored: its artifact has sha256 {actual}, "
            f"its manifest says {manifest.sha256}",
            hint="someone changed or damaged it in the store; it was not used. Find out who, and release that "
            "model version again (slipway deploy)",
        )


class LocalObjects:
    """A folder: the state directory (one machine) or one every worker mounts."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def where(self) -> str:
        return str(self.root)

    def probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"the package store {self.root} is not writable: {exc.strerror}",
                hint="make that folder writable, or set SLIPWAY_STORE_URL (or SLIPWAY_STATE_DIR) to a writable place",
            ) from exc

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def keys(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def put(self, key: str, src: Path) -> None:
        dest = self.root / key
        if dest.resolve() == src.resolve():  # the default store: the working copy is the store
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.incoming")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)

    def get(self, key: str, dest: Path) -> None:
        shutil.copyfile(self.root / key, dest)


def open_store(settings: Settings) -> PackageStore:
    """The store of ``SLIPWAY_STORE_URL``: the state directory unless set."""
    return store_at(settings.store_url or str(settings.state_dir), settings.path(PACKAGES))


def store_at(url: str, working: Path) -> PackageStore:
    if url.startswith("s3://"):
        from slipway.s3 import S3Objects  # boto3 only where a bucket is used

        return PackageStore(S3Objects.from_url(url), working)
    if url.startswith("gs://"):
        raise ConfigError(
            "a package store on Google Cloud Storage (gs://) is not supported yet",
            hint="use s3://BUCKET/PREFIX, or mount the bucket on every worker (Cloud Storage FUSE) and set "
            "SLIPWAY_STORE_URL to its path",
        )
    path = url.removeprefix("file://")
    if path.startswith("/"):
        return PackageStore(LocalObjects(Path(path)), working)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    raise ConfigError(
        f"the package store URL {url!r} is " + (f"of the unsupported scheme {scheme!r}" if scheme else "not absolute"),
        hint="set SLIPWAY_STORE_URL to s3://BUCKET/PREFIX (a team's bucket) or an absolute path (a folder every "
        "worker mounts); unset, packages stay in the state directory",
    )


def push_local(store: PackageStore, state_dir: Path) -> tuple[int, int]:
    """Put every package and gate report under ``state_dir`` into ``store`` (what it lacks of them):
    a machine's history made before its team had a store. Returns (packages, reports)."""
    store.check()
    packages = sorted(m.parent for m in (state_dir / PACKAGES).glob(f"*/*/{MANIFEST}"))
    for package_dir in packages:
        store.publish_package(package_dir)
    reports = sorted(d for d in (state_dir / REPORTS).glob("*/*") if d.is_dir())
    for report_dir in reports:
        store.publish_report(report_dir, report_dir.parent.name, report_dir.name)
    return len(packages), len(reports)
