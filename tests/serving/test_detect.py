"""``serving.contract``: which contract an argument list and an environment select, and what it holds.

The images run these contracts for real in test_contracts.py; here every rule is checked in-process.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serving.contract import (
    EXIT_BIND,
    EXIT_CONFIG,
    EXIT_PACKAGE,
    GENERIC,
    SAGEMAKER,
    Contract,
    api_key,
    detect,
    exit_reason,
    vertex,
)
from serving.healthcheck import server_argv

IMAGE_ARGS = ["--package", "/srv/package", "--host", "0.0.0.0"]  # the image's entry point arguments
VERTEX_ENV = {
    "AIP_HTTP_PORT": "8080",
    "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
    "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
}


@pytest.fixture
def no_model_data(tmp_path: Path) -> Path:
    return tmp_path / "opt-ml-model"  # does not exist


def test_generic_is_port_8000_or_port_env() -> None:
    assert detect(IMAGE_ARGS, {}) == Contract("generic", 8000, GENERIC, 30, Path("/srv/package"))
    assert detect(IMAGE_ARGS, {"PORT": "9000"}).port == 9000
    assert detect([*IMAGE_ARGS, "--port", "7000"], {"PORT": "9000"}).port == 7000  # explicit wins
    assert detect(["--port=7001"], {}).port == 7001


def test_cloud_run_follows_port_and_fits_its_10_s() -> None:
    contract = detect(IMAGE_ARGS, {"K_SERVICE": "iris", "PORT": "9090"})
    assert (contract.name, contract.port, contract.routes) == ("cloudrun", 9090, GENERIC)
    assert contract.graceful_timeout_s + 0.5 < 10  # plus the drain, before Cloud Run's SIGKILL
    assert detect([], {"K_SERVICE": "iris"}).port == 8080  # Cloud Run's default when PORT is missing
    assert detect(["--graceful-timeout", "5"], {"K_SERVICE": "iris"}).graceful_timeout_s == 5


def test_sagemaker_is_the_serve_argument(no_model_data: Path) -> None:
    contract = detect([*IMAGE_ARGS, "serve"], {}, sagemaker_model_dir=no_model_data)
    assert (contract.name, contract.port, contract.routes) == ("sagemaker", 8080, SAGEMAKER)
    assert contract.package_dir == Path("/srv/package")  # nothing in /opt/ml/model: the baked-in package
    assert (SAGEMAKER.predict, SAGEMAKER.health, SAGEMAKER.ready) == ("/invocations", "/ping", "/ping")
    assert detect(["serve", *IMAGE_ARGS], {}, sagemaker_model_dir=no_model_data).name == "sagemaker"
    # "serve" as the value of an option is not the command
    assert detect(["--package", "serve"], {}, sagemaker_model_dir=no_model_data).name == "generic"
    assert detect(["--no-auth", "serve"], {}, sagemaker_model_dir=no_model_data).name == "sagemaker"


def test_sagemaker_model_data_is_served_when_it_holds_a_package(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert detect([*IMAGE_ARGS, "serve"], {}, sagemaker_model_dir=model_dir).package_dir == Path("/srv/package")
    (model_dir / "package.json").write_text("{}")
    assert detect([*IMAGE_ARGS, "serve"], {}, sagemaker_model_dir=model_dir).package_dir == model_dir
    assert detect(IMAGE_ARGS, {}, sagemaker_model_dir=model_dir).package_dir == Path("/srv/package")  # not SageMaker


def test_vertex_takes_its_port_and_routes() -> None:
    contract = detect(IMAGE_ARGS, VERTEX_ENV)
    assert (contract.name, contract.port) == ("vertex", 8080)
    assert contract.routes == vertex(VERTEX_ENV["AIP_HEALTH_ROUTE"], VERTEX_ENV["AIP_PREDICT_ROUTE"])
    assert contract.routes.request_key == "instances"
    assert contract.routes.ready == contract.routes.health
    assert detect([], {**VERTEX_ENV, "AIP_HTTP_PORT": "8555", "K_SERVICE": "x"}).port == 8555
    with pytest.raises(ValueError, match="AIP_PREDICT_ROUTE='predict' is not a path"):
        detect([], {**VERTEX_ENV, "AIP_PREDICT_ROUTE": "predict"})
    # a Kubernetes Service named aip-http puts AIP_HTTP_PORT=tcp://... in pods' environments: not Vertex
    assert detect([], {"AIP_HTTP_PORT": "tcp://10.0.0.7:80"}).name == "generic"


def test_lambda_wins_and_has_no_port(no_model_data: Path) -> None:
    env = {"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001", "PORT": "9000", **VERTEX_ENV}
    contract = detect([*IMAGE_ARGS, "serve", "--port", "1234"], env, sagemaker_model_dir=no_model_data)
    assert (contract.name, contract.port, contract.package_dir) == ("lambda", None, Path("/srv/package"))
    assert detect(IMAGE_ARGS, {"AWS_LAMBDA_RUNTIME_API": ""}).name == "generic"  # set but empty: not Lambda


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        ([], {"PORT": "http"}, "PORT='http' is not a port number"),
        ([], {"PORT": "70000"}, "PORT='70000'"),
        ([], {"K_SERVICE": "x", "PORT": "-1"}, "PORT='-1'"),
        ([], {**VERTEX_ENV, "AIP_HTTP_PORT": "x"}, "AIP_HTTP_PORT='x'"),
        (["--graceful-timeout", "soon"], {}, "--graceful-timeout='soon'"),
    ],
)
def test_bad_ports_say_what_to_fix(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        detect(argv, env)


def test_api_key_rule_is_the_same_everywhere() -> None:
    assert api_key({"SLIPWAY_API_KEY": " k "}) == "k"
    assert api_key({"SLIPWAY_AUTH": "none"}) is None
    assert api_key({}, no_auth=True) is None
    for env in ({}, {"SLIPWAY_API_KEY": "  "}, {"SLIPWAY_AUTH": "on"}):
        with pytest.raises(ValueError, match="SLIPWAY_API_KEY is not set"):
            api_key(env)
    with pytest.raises(ValueError, match="SLIPWAY_AUTH='off' is not understood"):
        api_key({"SLIPWAY_AUTH": "off", "SLIPWAY_API_KEY": "k"})


def test_exit_reasons() -> None:
    assert "API key" in exit_reason(EXIT_CONFIG)
    assert "golden samples" in exit_reason(EXIT_PACKAGE)
    assert "bind" in exit_reason(EXIT_BIND)
    assert "SIGKILL" in exit_reason(137) and "SIGKILL" in exit_reason(-signal.SIGKILL)
    assert exit_reason(-signal.SIGSEGV) == exit_reason(128 + signal.SIGSEGV) == "killed by SIGSEGV"
    assert exit_reason(42) == "exit code 42"


def test_launcher_options_without_values_are_known_to_detect() -> None:
    """detect skips every option's value; an option that takes none must be in its list of flags."""
    from serving.contract import _FLAGS
    from serving.launcher import _parser

    flags = {s for a in _parser()._actions if a.nargs == 0 for s in a.option_strings}
    assert flags == _FLAGS


def test_healthcheck_reads_the_server_arguments_of_pid_1(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join([b"python3", b"-m", b"serving", *(a.encode() for a in IMAGE_ARGS), b"serve", b""]))
    assert server_argv(cmdline) == [*IMAGE_ARGS, "serve"]
    cmdline.write_bytes(b"\0".join([b"/sbin/docker-init", b"--", b"python3", b"-m", b"serving", b"--port", b"9", b""]))
    assert server_argv(cmdline) == ["--port", "9"]
    cmdline.write_bytes(b"nginx\0-g\0daemon off;\0")
    assert server_argv(cmdline) == []
    assert server_argv(tmp_path / "missing") == []


def test_importing_the_contract_stays_cheap() -> None:
    code = "import sys, serving.contract, serving.healthcheck; print(sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {name.split(".")[0] for name in ast.literal_eval(out)}
    assert not loaded & {"numpy", "uvicorn", "orjson", "joblib", "sklearn", "awslambdaric"}
