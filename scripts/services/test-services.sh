#!/usr/bin/env bash
# Everything `make test` needs on this machine, installed and started by the project's own scripts:
# Debian packages the tests and benchmarks call (openssh-server for the ssh Docker host, wrk), the Docker Engine and the
# registry on 127.0.0.1:5000, the local base, nginx and Locust images, the Lambda Runtime Interface
# Emulator (the serving image's Lambda contract test runs under it), and PostgreSQL (the team ledger). Idempotent: about a second when
# all is there; a fresh machine takes a few minutes (debootstrap of the base image).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

ensure_pkgs openssh-server wrk
"$here/docker.sh" up
"$here/../images/base.sh"
"$here/../images/nginx.sh"
"$here/../images/locust.sh"
"$here/../images/lambda-rie.sh"
"$here/postgres.sh" up
