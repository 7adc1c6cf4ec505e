"""Run the Lambda stand-in on its own, for `make demo TARGET=lambda` (scripts/services/lambda-standin.sh).

    python -m tests.targets.lambda.serve --port 8791 --moto-port 8792

moto's server (the control plane) on --moto-port, the front of front.py on --port, each published
version under the Runtime Interface Emulator on the Docker Engine, the execution role
``slipway-lambda-exec`` created. Runs until SIGTERM, when it removes every container it started.
Credentials: moto takes any; the demo uses AWS_ACCESS_KEY_ID=AWS_SECRET_ACCESS_KEY=testing.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading

import boto3
from moto.server import ThreadedMotoServer

from .dataplane import CREDENTIALS, RIE, LambdaDataPlane, network
from .fixtures import REGION, ROLE
from .front import LambdaFront


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--moto-port", type=int, default=8792)
    args = parser.parse_args()
    if not RIE.is_file():
        raise SystemExit(f"the Lambda Runtime Interface Emulator {RIE} is missing: run scripts/images/lambda-rie.sh")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=args.moto_port, verbose=False)
    moto.start()
    moto_url = f"http://127.0.0.1:{args.moto_port}"
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    iam = boto3.client("iam", endpoint_url=moto_url, region_name=REGION, **CREDENTIALS)
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with network() as (name, gateway):
        plane = LambdaDataPlane(moto_url, name, gateway, max_environments=1)
        front = LambdaFront(moto_url, plane, port=args.port)
        try:
            print(f"Lambda stand-in on {front.url} (moto {moto_url}, region {REGION}, role {ROLE})", flush=True)
            stop.wait()
        finally:
            front.stop()
            plane.close()
            moto.stop()


if __name__ == "__main__":
    main()
