"""The one client to endpoints: Slipway's key as a bearer token, fixed headers, and AWS Signature V4
judged by a real verifier (the moto server with IAM enforcement on), not by its shape."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import boto3
import httpx
import pytest
from pydantic import SecretStr

from slipway.errors import ConfigError
from slipway.http import client, request_headers
from slipway.release import Auth, AuthScheme, Endpoint


def test_api_key_and_headers() -> None:
    endpoint = Endpoint("http://127.0.0.1:1", headers={"X-Variant": "candidate"})
    headers = request_headers(endpoint, SecretStr("k" * 20), "GET", endpoint.url)
    assert headers == {"X-Variant": "candidate", "Authorization": f"Bearer {'k' * 20}"}
    assert request_headers(Endpoint("http://x", Auth(AuthScheme.NONE)), None, "GET", "http://x") == {}
    with pytest.raises(ConfigError, match="requires Slipway's API key"):
        request_headers(endpoint, None, "GET", endpoint.url)


@pytest.fixture
def signer(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An IAM user allowed ec2:DescribeRegions only, its keys in the environment, moto enforcing IAM
    (moto verifies the signatures of EC2's query API; of Lambda's, not even boto3's pass)."""
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    name = f"signer-{secrets.token_hex(3)}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:DescribeRegions",
                                                      "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName=name, PolicyName="list", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    httpx.post(f"{moto_url}/moto-api/reset-auth", content=b"0")  # from now on moto checks every request
    try:
        yield {"secret": key["SecretAccessKey"]}
    finally:
        httpx.post(f"{moto_url}/moto-api/reset-auth", content=b"inf")


QUERY = {"content": b"Action=DescribeRegions&Version=2016-11-15",
         "headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}}  # fmt: skip


@pytest.mark.moto
def test_sigv4_is_accepted_by_a_real_verifier_and_a_wrong_key_is_not(
    moto_url: str, signer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = Endpoint(moto_url, Auth(AuthScheme.AWS_SIGV4, aws_service="ec2", aws_region="us-east-1"))
    with client(endpoint, None) as http:
        accepted = http.post("/", **QUERY)
    assert accepted.status_code == 200 and "<regionName>us-east-1</regionName>" in accepted.text
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + signer["secret"])
    with client(endpoint, None) as http:
        refused = http.post("/", **QUERY)
    assert refused.status_code == 401 and "AuthFailure" in refused.text
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="no AWS credentials were found"), client(endpoint, None) as http:
        http.post("/", **QUERY)
