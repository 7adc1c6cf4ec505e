"""The package store on S3 (``SLIPWAY_STORE_URL=s3://BUCKET/PREFIX``), with boto3 as it is.

Credentials, region and endpoint come from boto3's own chain (environment, profile, instance or
task role; ``AWS_ENDPOINT_URL_S3`` for an S3-compatible service), never from Slipway's settings.
Failures are mapped by S3's error codes: a missing bucket, refused credentials and a refused action
(named as the IAM action to grant) are configuration to fix; an endpoint that does not answer, or
any other failure, is a ``StoreError``. botocore's standard retries cover throttling and 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from slipway.errors import ConfigError, SlipwayError, StoreError

T = TypeVar("T")
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=60)
_ACTIONS = {"ListObjectsV2": "s3:ListBucket", "PutObject": "s3:PutObject", "GetObject": "s3:GetObject",
            "HeadObject": "s3:GetObject"}  # fmt: skip
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                               "TokenRefreshRequired"})  # fmt: skip
_PERMISSION_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403"})
_PROBE = ".slipway-write-check"


class S3Objects:
    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # a session of its own: the credentials this environment has now, not those another call cached
        self._client: Any = boto3.session.Session().client("s3", config=_CONFIG)

    @classmethod
    def from_url(cls, url: str) -> S3Objects:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"the package store URL {url!r} names no bucket", hint="write s3://BUCKET/PREFIX")
        return cls(bucket, prefix)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def probe(self) -> None:
        self._call(lambda: self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1))
        self._call(lambda: self._client.put_object(Bucket=self.bucket, Key=self._key(_PROBE), Body=b"slipway"))

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return False
            raise self._mapped(exc) from exc
        except BotoCoreError as exc:
            raise self._mapped(exc) from exc
        return True

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        pages = self._call(
            lambda: list(self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=self._key(prefix)))
        )  # fmt: skip
        for page in pages:
            found += [obj["Key"].removeprefix(self._key("")) for obj in page.get("Contents", [])]
        return sorted(found)

    def put(self, key: str, src: Path) -> None:
        self._call(lambda: self._client.upload_file(str(src), self.bucket, self._key(key)))

    def get(self, key: str, dest: Path) -> None:
        self._call(lambda: self._client.download_file(self.bucket, self._key(key), str(dest)))

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            raise self._mapped(exc) from exc

    def _mapped(self, exc: ClientError | BotoCoreError) -> SlipwayError:
        endpoint = self._client.meta.endpoint_url
        if isinstance(exc, NoCredentialsError):
            return ConfigError(
                f"no AWS credentials for the package store {self.where}",
                hint="give this worker a role, or set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
            return StoreError(
                f"the package store {self.where} does not answer at {endpoint}",
                hint="check the network from this worker to S3 (and AWS_ENDPOINT_URL_S3 if you set it); nothing "
                "was changed",
            )
        if not isinstance(exc, ClientError):
            return StoreError(f"the package store {self.where} failed: {exc}", hint="run again; nothing was changed")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return ConfigError(
                f"the bucket {self.bucket!r} of the package store {self.where} does not exist",
                hint=f"create it (aws s3 mb s3://{self.bucket}) or fix SLIPWAY_STORE_URL; nothing was changed",
            )
        if code in _CREDENTIAL_CODES:
            return ConfigError(
                f"S3 refused the AWS credentials for the package store {self.where} ({code})",
                hint="check AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); "
                "nothing was changed",
            )
        if code in _PERMISSION_CODES:
            action = _ACTIONS.get(exc.operation_name, exc.operation_name)
            return ConfigError(
                f"the AWS credentials may not {action} in the package store {self.where} ({code})",
                hint=f"grant s3:ListBucket on arn:aws:s3:::{self.bucket} and s3:GetObject, s3:PutObject on "
                f"arn:aws:s3:::{self.bucket}/{self.prefix + '/' if self.prefix else ''}* to this worker's "
                "identity; nothing was changed",
            )
        return StoreError(
            f"the package store {self.where} failed on {exc.operation_name}: {code}",
            hint="run again; if it persists, check the bucket's settings",
        )
