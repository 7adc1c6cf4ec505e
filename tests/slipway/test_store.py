"""The package store in a folder (a share every worker mounts), its URLs, and ledgers written before it.

The store on S3 is tested through the flows against the moto server (tests/flows/test_store.py).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.manifest import read_manifest
from slipway.cli import app
from slipway.errors import ConfigError, StoreError
from slipway.ledger import SqliteLedger, migrate
from slipway.ledgers import ledger_at
from slipway.settings import Settings
from slipway.store import location_of, open_store, store_at
from tasks.package import ModelPackage


def test_a_package_published_on_one_machine_is_fetched_whole_on_another(
    packaged: dict[str, ModelPackage], tmp_path: Path
) -> None:
    v1 = packaged["v1"]
    shared = tmp_path / "share"
    location = store_at(str(shared), v1.dir.parent.parent).publish_package(v1.dir)
    assert location == f"iris/{v1.dir.name}" and (shared / "packages" / location / "package.json").exists()

    elsewhere = store_at(f"file://{shared}", tmp_path / "other" / "packages")
    fetched = elsewhere.fetch_package(elsewhere.working / location, "r-1")
    assert read_manifest(fetched) == v1.manifest
    assert sorted(p.relative_to(fetched) for p in fetched.rglob("*") if p.is_file()) == sorted(
        p.relative_to(v1.dir) for p in v1.dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )

    with pytest.raises(ConfigError, match=r"the package of release r-2 \(iris/9-000000000000\) is neither"):
        elsewhere.fetch_package(elsewhere.working / "iris" / "9-000000000000", "r-2")


@pytest.mark.fault("injected failure")
def test_a_package_changed_in_the_store_is_refused_and_not_kept(
    packaged: dict[str, ModelPackage], tmp_path: Path
) -> None:
    v1 = packaged["v1"]
    shared = tmp_path / "share"
    location = store_at(str(shared), tmp_path / "a").publish_package(v1.dir)
    with (shared / "packages" / location / v1.manifest.artifact_file).open("ab") as artifact:
        artifact.write(b"swapped")
    fresh = store_at(str(shared), tmp_path / "b" / "packages")
    with pytest.raises(StoreError, match=rf"the package {location} in {shared} is not what was stored"):
        fresh.fetch_package(fresh.working / location, "r-1")
    assert not (fresh.working / location).exists() and list((fresh.working / "iris").iterdir()) == []


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://bucket/team", "Google Cloud Storage .* is not supported yet"),
        ("packages/team", "is not absolute"),
        ("ftp://host/team", "of the unsupported scheme 'ftp'"),
        ("s3:///team", "names no bucket"),
    ],
)
def test_store_urls_that_cannot_be_used_are_refused(url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(Settings(state_dir=tmp_path, store_url=url))


def test_a_ledger_written_before_the_store_reads_its_absolute_paths_as_locations(
    tmp_path: Path, state_dir: Path
) -> None:
    """Rows that hold a package's absolute path (written before the store) name the same package, on
    every machine; ``ledger migrate`` writes them as store-relative locations."""
    old = tmp_path / "old" / "ledger.sqlite"
    SqliteLedger(old).check_writable()  # the schema, as an older Slipway made it
    with sqlite3.connect(old) as db:
        db.execute(
            "INSERT INTO releases (id, service, model, version, package_sha256, package_dir, spec_hash, staging_kind,"
            " production_kind, image, outcome, gate, error, started_at, finished_at, flow_run_id, trigger) VALUES"
            " ('r1', 'iris', 'iris', '1', ?, '/home/ana/.local/state/slipway/packages/iris/1-abababababab', 'h',"
            " 'local', 'local', '', 'promoted', '{}', '', '2026-01-01T00:00:00+00:00', '', '', 'manual')",
            ("ab" * 32,),
        )
    (record,) = SqliteLedger(old).releases("iris")
    assert record.release.package_dir == state_dir / "packages" / "iris" / "1-abababababab"

    new = tmp_path / "new" / "ledger.sqlite"
    migrate(ledger_at(f"sqlite:///{old}"), ledger_at(f"sqlite:///{new}"))
    with sqlite3.connect(new) as db:
        assert db.execute("SELECT package_dir FROM releases").fetchall() == [("iris/1-abababababab",)]


def test_store_push_copies_a_machines_history_into_a_store(
    packaged: dict[str, ModelPackage], state_dir: Path, tmp_path: Path
) -> None:
    for pkg in (packaged["v1"], packaged["v2"]):
        shutil.copytree(pkg.dir, state_dir / "packages" / location_of(pkg.dir))
    report = state_dir / "reports" / "iris" / "r-1"
    report.mkdir(parents=True)
    (report / "load.json").write_text("{}")
    shared = tmp_path / "share"
    for _ in range(2):  # the second finds everything there
        result = CliRunner().invoke(app, ["store", "push", "--to", str(shared)])
        assert result.exit_code == 0, result.output
        assert f"{shared} holds the 2 packages and 1 gate reports of {state_dir}" in " ".join(result.output.split())
    for pkg in (packaged["v1"], packaged["v2"]):
        assert read_manifest(shared / "packages" / location_of(pkg.dir)) == pkg.manifest
    assert (shared / "reports" / "iris" / "r-1" / "load.json").read_text() == "{}"

    result = CliRunner().invoke(app, ["store", "push", "--to", "gs://bucket"])
    assert result.exit_code == 1
    assert "Google Cloud Storage (gs://) is not supported yet" in result.output
