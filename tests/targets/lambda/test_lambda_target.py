"""What only the Lambda target promises, on moto behind the Lambda front with each version's image running
under the RIE: a cold start measured as such (a fresh environment), the canary's split named by the
version that answered, and the bad inputs of the issue — each a clear error with production untouched
and nothing left behind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from serving.contract import COLD_START_HEADER
from slipway.errors import ConfigError, SlipwayError, TargetError
from slipway.http import client
from slipway.release import Release, Stage
from slipway.spec import LambdaTarget
from targets import _lambda_support as sup
from targets import make_target
from targets.awslambda import LambdaFunctionTarget
from targets.base import put_live
from tests.targets.fixtures import TIMEOUTS, context

from .fixtures import BUCKET, REGION, LambdaStandIn, lambda_config

Make = Callable[..., LambdaFunctionTarget]


@pytest.fixture
def make(aws_env: LambdaStandIn, state_dir: Path, api_key: str) -> Iterator[Make]:
    made: list[LambdaFunctionTarget] = []

    def factory(stage: Stage = Stage.PRODUCTION, **settings: Any) -> LambdaFunctionTarget:
        target = make_target(lambda_config(aws_env, **settings), context(stage, state_dir, api_key))
        assert isinstance(target, LambdaFunctionTarget)
        made.append(target)
        return target

    yield factory
    aws_env.front.reset()  # a test may have left a fault: the teardown needs none
    for target in made:
        target.teardown()
    assert not [c for c in aws_env.plane.containers() if any(f"-{t.function}-" in c for t in made)]


def _get(target: LambdaFunctionTarget, api_key: str, path: str = "/metadata") -> tuple[dict[str, Any], dict[str, str]]:
    endpoint = target.endpoint()
    assert endpoint is not None
    with client(endpoint, SecretStr(api_key), timeout_s=60) as http:
        resp = http.get(path)
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json(), dict(resp.headers)


def _functions(standin: LambdaStandIn) -> list[str]:
    return [f["FunctionName"] for f in standin.client("lambda").list_functions()["Functions"]]


def test_a_cold_start_is_measured_as_such_and_the_canary_names_the_version_that_answered(
    make: Make, aws_env: LambdaStandIn, releases: dict[str, Release], api_key: str
) -> None:
    target = make()
    live = put_live(target, releases["v1"], TIMEOUTS)
    [cold] = live.cold_starts  # the readiness check's first invoke started the version's first environment
    assert cold.by == "readiness check" and cold.init_ms is not None and cold.init_ms > 0
    assert cold.latency_ms >= cold.init_ms  # the init is part of the first answer's wait

    body, headers = _get(target, api_key)
    assert body["sha256"] == releases["v1"].package_sha256 and COLD_START_HEADER not in headers  # warm
    assert aws_env.plane.recycle(target.function) >= 1
    _, headers = _get(target, api_key)
    assert float(headers[COLD_START_HEADER]) > 0  # a fresh environment: its first answer says so, with its init

    candidate = target.wait_ready(target.deploy(releases["v2"]), TIMEOUTS.ready_s)
    target.shift(candidate, 0.5)
    lam = aws_env.client("lambda", through_front=True)
    seen = set()
    for _ in range(12):
        answer = lam.invoke(FunctionName=target.function, Qualifier="live",
                            Payload=json.dumps({"features": [6.3, 3.3, 6.0, 2.5]}))  # fmt: skip
        assert json.loads(answer["Payload"].read()) == {"prediction": 2}
        seen.add(answer["ExecutedVersion"])
    assert seen == {live.handle["version"], candidate.handle["version"]}
    target.discard(candidate)
    alias = lam.get_alias(FunctionName=target.function, Name="live")
    assert alias["FunctionVersion"] == live.handle["version"] and not alias.get("RoutingConfig", {}).get(
        "AdditionalVersionWeights"
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"memory_mb": 64}, "memory_mb 64 is outside Lambda's limits (128-10,240 MB)"),
        ({"memory_mb": 20_000}, "memory_mb 20000 is outside Lambda's limits"),
        ({"timeout_s": 901}, "timeout_s 901 is outside Lambda's limits (1-900 s, 15 min)"),
        ({"ephemeral_storage_mb": 11_000}, "ephemeral_storage_mb 11000 is outside Lambda's limits"),
        ({"role": ""}, "role"),
        ({"role": "slipway-lambda-exec"}, "role"),
    ],
)
def test_settings_outside_the_limits_or_no_execution_role_are_refused_naming_them(
    settings: dict[str, Any], named: str
) -> None:
    base = {"role": "arn:aws:iam::123456789012:role/r"} | settings
    with pytest.raises(ValidationError, match=named.replace("(", r"\(").replace(")", r"\)")):
        LambdaTarget.model_validate(base)
    if "role" in settings and not settings["role"]:
        with pytest.raises(ValidationError, match="role"):
            LambdaTarget.model_validate({})


def test_an_image_over_the_size_limit_is_refused_before_anything_is_created(
    make: Make, aws_env: LambdaStandIn, releases: dict[str, Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make()
    size, _ = sup.image_size_mb(str(releases["v1"].image))
    assert size is not None
    monkeypatch.setattr(sup, "IMAGE_LIMIT_MB", int(size) - 1)  # the limit just below this image: it is over it
    with pytest.raises(ConfigError, match=f"over Lambda's limit of {int(size) - 1:,} MB"):
        target.deploy(releases["v1"])
    assert target.function not in _functions(aws_env)
    [limit] = [lim for lim in target.facts().limits if lim.what == "image size"]
    assert limit.exceeded  # and plan's review refuses it (tasks/review.py)


def test_an_update_in_progress_is_waited_for_then_the_version_is_published(
    make: Make, aws_env: LambdaStandIn, releases: dict[str, Release]
) -> None:
    target = make()
    target.deploy(releases["v1"])
    aws_env.front.busy(target.function, 2.0, REGION)  # someone else's update
    candidate = target.deploy(releases["v2"])
    assert aws_env.front.conflicts >= 1  # refused with ResourceConflictException, then done
    published = aws_env.client("lambda").get_function_configuration(
        FunctionName=target.function, Qualifier=candidate.handle["version"]
    )
    assert published["Environment"]["Variables"]["SLIPWAY_RELEASE"] == releases["v2"].id


def test_a_missing_iam_permission_is_named(make: Make, aws_env: LambdaStandIn, releases: dict[str, Release]) -> None:
    target = make()
    aws_env.front.fail("POST", "/functions", "AccessDeniedException", 403, "User: arn:aws:iam::123456789012:user/ci "
                       "is not authorized to perform: lambda:CreateFunction on resource: function")  # fmt: skip
    with pytest.raises(SlipwayError, match="lambda:CreateFunction") as raised:
        target.deploy(releases["v1"])
    assert "permission" in (raised.value.hint or "").lower() or "IAM" in (raised.value.hint or "")
    assert target.function not in _functions(aws_env)


def test_an_s3_model_with_the_wrong_sha256_or_missing_fails_with_the_log_tail_and_production_untouched(
    make: Make, aws_env: LambdaStandIn, releases: dict[str, Release], api_key: str
) -> None:
    target = make(model_location="s3")
    live = put_live(target, releases["v1"], TIMEOUTS)  # the package from S3, its sha256 checked: it serves
    assert _get(target, api_key)[0]["sha256"] == releases["v1"].package_sha256
    s3 = aws_env.client("s3")
    prefix = f"slipway/{releases['v2'].service}/{releases['v2'].package_sha256}/"
    candidate = target.deploy(releases["v2"])  # uploads v2's package
    target.discard(candidate)
    artifact = next(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
                    if not o["Key"].endswith("package.json"))  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key=artifact, Body=b"not the model")
    with pytest.raises(TargetError, match="sha256") as wrong:
        put_live(target, releases["v2"], TIMEOUTS)
    assert "START RequestId" in str(wrong.value) or "slipway" in str(wrong.value)  # the function's log tail
    candidate = target.deploy(releases["v2"])  # a deploy puts back what is missing: deleted after it, then
    s3.delete_object(Bucket=BUCKET, Key=artifact)
    with pytest.raises(TargetError, match=artifact.rpartition("/")[2]):
        target.wait_ready(candidate, TIMEOUTS.ready_s)  # the cold start cannot find it: named, with the log tail
    target.discard(candidate)
    assert _get(target, api_key)[0]["sha256"] == releases["v1"].package_sha256  # production, asked: as it was
    versions = aws_env.client("lambda").list_versions_by_function(FunctionName=target.function)["Versions"]
    assert {v["Version"] for v in versions} == {"$LATEST", live.handle["version"]}  # no candidate left behind
