"""Packages and reports in the moto server's S3: a release on one worker, a rollback on another whose
state directory is empty, and a store that cannot be used refused before anything changes."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flows.release import release
from flows.rollback import rollback
from flows.teardown import teardown
from serving.manifest import read_manifest
from slipway.errors import ConfigError, StoreError
from slipway.ledger import SqliteLedger
from slipway.release import Stage
from slipway.spec import load_spec
from slipway.store import location_of
from targets import make_target
from tests.conftest import SpecWriter, free_port
from tests.targets.ec2.fixtures import new_bucket
from tests.targets.fixtures import context

pytestmark = [pytest.mark.prefect, pytest.mark.locust, pytest.mark.moto, pytest.mark.usefixtures("prefect_api")]

_QUICK_GATE = {"users": 2, "spawn_rate": 2, "duration_s": 1}


@dataclass(frozen=True)
class Bucket:
    name: str
    s3: Any  # a boto3 S3 client of moto's, with credentials of its own (not the worker's)
    moto_url: str

    def keys(self) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.name).get("Contents", [])]


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket in moto, and a worker's environment pointing boto3 at it (SLIPWAY_STORE_URL=s3://…/team)."""
    import boto3

    name, env = new_bucket(moto_url, "slipway")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("SLIPWAY_STORE_URL", f"s3://{name}/team")
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    return Bucket(name, s3, moto_url)


def _port(spec: Path, stage: str) -> int:
    return int(yaml.safe_load(spec.read_text())[stage]["port"])


def _sha_served(spec: Path, key: str) -> str:
    url = f"http://127.0.0.1:{_port(spec, 'production')}/metadata"
    return str(httpx.get(url, headers={"X-API-Key": key}, timeout=5).json()["sha256"])


def test_rollback_on_a_worker_with_an_empty_state_dir_fetches_the_release_from_the_store(
    bucket: Bucket, write_spec: SpecWriter, iris_model_v2: Path, tmp_path: Path, api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    team_ledger = tmp_path / "team" / "ledger.sqlite"  # what both workers share (PostgreSQL for a real team)
    monkeypatch.setenv("SLIPWAY_LEDGER_URL", f"sqlite:///{team_ledger}")
    worker_a, worker_b = tmp_path / "worker-a", tmp_path / "worker-b"
    monkeypatch.setenv("SLIPWAY_STATE_DIR", str(worker_a))
    spec_v1 = write_spec(gate__load=_QUICK_GATE)
    spec_v2 = write_spec(
        model=iris_model_v2, name="v2", gate__load=_QUICK_GATE,
        staging__port=_port(spec_v1, "staging"), production__port=_port(spec_v1, "production"),
    )  # fmt: skip
    try:
        first, second = release(str(spec_v1)), release(str(spec_v2))
        assert _sha_served(spec_v1, api_key) == second.release.package_sha256
        keys = bucket.keys()
        for done in (first, second):
            assert f"team/packages/{location_of(done.release.package_dir)}/package.json" in keys
            assert f"team/reports/iris/{done.release.id}/load.json" in keys
        with sqlite3.connect(team_ledger) as db:
            recorded = [row[0] for row in db.execute("SELECT package_dir FROM releases ORDER BY started_at")]
        assert recorded == [location_of(first.release.package_dir), location_of(second.release.package_dir)]

        # worker A's machine is gone: its servers stopped, its state directory with them
        make_target(load_spec(str(spec_v2)).production, context(Stage.PRODUCTION, worker_a, api_key)).teardown()
        shutil.rmtree(worker_a)
        monkeypatch.setenv("SLIPWAY_STATE_DIR", str(worker_b))

        assert rollback(str(spec_v2)) == first.release.id
        assert _sha_served(spec_v1, api_key) == first.release.package_sha256
        assert read_manifest(worker_b / "packages" / location_of(first.release.package_dir)).sha256 == (
            first.release.package_sha256
        )
        live = SqliteLedger(team_ledger).live("iris", Stage.PRODUCTION)
        assert live is not None and live.id == first.release.id

        with pytest.raises(ConfigError, match="no release 'nope'"):
            rollback(str(spec_v2), to_release="nope")
        assert rollback(str(spec_v2), to_release=second.release.id) == second.release.id
        assert _sha_served(spec_v1, api_key) == second.release.package_sha256
    finally:
        teardown(str(spec_v2))


@contextmanager
def _enforced_iam(moto_url: str) -> Iterator[None]:
    """moto checking every request's credentials and IAM policies, as AWS does (off again afterwards)."""
    previous = httpx.post(f"{moto_url}/moto-api/reset-auth", content=b"0").json()
    try:
        yield
    finally:
        httpx.post(f"{moto_url}/moto-api/reset-auth", content=previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def _read_only_user(bucket: Bucket) -> dict[str, str]:
    """An IAM user that may list and read the bucket, not write it; its access key."""
    import boto3

    iam = boto3.client("iam", endpoint_url=bucket.moto_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    user = f"reader-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], '
        f'"Resource": ["arn:aws:s3:::{bucket.name}", "arn:aws:s3:::{bucket.name}/*"]}}]}}'
    ))  # fmt: skip
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(
            ConfigError, r"the bucket 'no-such-bucket-\w+' of the package store .* does not exist", id="missing bucket"
        ),
        pytest.param(
            ConfigError, r"the AWS credentials may not s3:PutObject in the package store", id="read-only credentials"
        ),
        pytest.param(ConfigError, r"S3 refused the AWS credentials .* \(InvalidAccessKeyId\)", id="unknown access key"),
        pytest.param(
            StoreError, r"the package store s3://.* does not answer at http://127\.0\.0\.1:", id="unreachable endpoint"
        ),
    ],
)
def test_a_store_that_cannot_be_used_fails_before_anything_changes(
    bucket: Bucket, write_spec: SpecWriter, state_dir: Path, api_key: str, monkeypatch: pytest.MonkeyPatch,
    error: type[Exception], message: str, request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    problem = request.node.callspec.id
    spec = write_spec()
    enforced = False
    match problem:
        case "missing bucket":
            monkeypatch.setenv("SLIPWAY_STORE_URL", f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/team")
        case "read-only credentials":
            for var, value in _read_only_user(bucket).items():
                monkeypatch.setenv(var, value)
            enforced = True
        case "unknown access key":
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
            enforced = True
        case "unreachable endpoint":
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    with _enforced_iam(bucket.moto_url) if enforced else nullcontext(), pytest.raises(error, match=message):
        release(str(spec))
    assert not (state_dir / "packages").exists()
    assert SqliteLedger(state_dir / "ledger.sqlite").services() == []
    assert bucket.keys() == []
