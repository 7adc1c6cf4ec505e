#!/usr/bin/env bash
# The demo: release the example model to a live production endpoint, then call it with its API key.
# Usage: demo.sh TARGET SPEC, TARGET one of local, docker, kubernetes, cloudrun, lambda (what `make demo TARGET=...` passes).
# The key is never printed: set SLIPWAY_API_KEY yourself before `make demo` to call the endpoint later.
set -euo pipefail
target=${1:?usage: demo.sh TARGET SPEC}
spec=${2:?usage: demo.sh TARGET SPEC}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${SLIPWAY_API_KEY:-}" ]; then
  SLIPWAY_API_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
  export SLIPWAY_API_KEY
  generated=1
fi
case $target in
  local) ;;
  docker) "$here/services/test-services.sh" ;;
  kubernetes)
    "$here/services/test-services.sh"
    "$here/k8s/build.sh"
    "$here/k8s/up.sh"
    # shellcheck source=k8s/env.sh
    . "$here/k8s/env.sh"
    ;;
  cloudrun)  # the control plane is the test-side emulator; its revisions run on the local engine
    "$here/services/test-services.sh"
    "$here/services/cloudrun-emulator.sh" up
    GOOGLE_APPLICATION_CREDENTIALS=${SLIPWAY_CLOUDRUN_DIR:-${SLIPWAY_VAR:-/var/tmp/slipway}/cloudrun-emulator}/deployer.json
    export GOOGLE_APPLICATION_CREDENTIALS
    ;;
  lambda)  # the control plane is moto behind the test-side front; each version runs under the RIE on the local engine
    "$here/services/test-services.sh"
    "$here/services/lambda-standin.sh" up
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-central-1  # what moto takes
    ;;
  *) echo "unknown TARGET '$target': use local, docker, kubernetes, cloudrun or lambda" >&2; exit 2 ;;
esac
.venv/bin/slipway deploy "$spec"

forward_pid=
if [ "$target" = kubernetes ]; then  # the Service is inside the cluster: forward it to 127.0.0.1
  ns=$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["production"]["namespace"])' "$spec")
  "$KUBECTL" -n "$ns" port-forward --address 127.0.0.1 svc/iris 8300:80 >/dev/null 2>&1 &
  forward_pid=$!
  trap 'kill $forward_pid 2>/dev/null || true' EXIT
  sleep 2
  url=http://127.0.0.1:8300
elif [ "$target" = cloudrun ] || [ "$target" = lambda ]; then  # the service's or function URL's address
  url=$(.venv/bin/python -c 'import sys; from flows.pipeline import open_pipeline; print(open_pipeline(sys.argv[1], need_key=False, check=False).production.endpoint().url)' "$spec")
else
  url=$(.venv/bin/python -c 'import sys, yaml; print("http://127.0.0.1:%d" % yaml.safe_load(open(sys.argv[1]))["production"]["port"])' "$spec")
fi
body='{"inputs": [[6.3, 3.3, 6.0, 2.5]]}'
auth=(-H "Authorization: Bearer $SLIPWAY_API_KEY")
if [ "$target" = cloudrun ]; then  # Cloud Run's IAM wants an ID token for the service's URL
  auth=(-H "Authorization: Bearer $(.venv/bin/python -c 'import sys; from slipway.http import google_id_token; print(google_id_token(sys.argv[1]))' "$url")")
elif [ "$target" = lambda ]; then  # the function URL's AWS_IAM: a SigV4 signature
  auth=(--aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:lambda" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
fi
echo
echo "An authenticated call to production:"
printf '  '; curl -s "${auth[@]}" -H 'Content-Type: application/json' -d "$body" "$url/predict"; echo
echo "Without credentials:"
printf '  '; curl -s -o /dev/null -w 'HTTP %{http_code}\n' -d "$body" "$url/predict"
if [ -n "${generated:-}" ]; then
  echo
  echo "This demo generated a throwaway API key and did not print it. To call the endpoint yourself,"
  echo "export SLIPWAY_API_KEY=<a key of 16+ characters> and run 'make demo' again."
fi
echo
if [ "$target" = lambda ]; then
  echo "The stand-in keeps running: export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing to use the commands"
  echo "below; scripts/services/lambda-standin.sh down stops it (and every version it runs)."
fi
if [ "$target" = cloudrun ]; then
  echo "The emulator keeps running: export GOOGLE_APPLICATION_CREDENTIALS=$GOOGLE_APPLICATION_CREDENTIALS to use the"
  echo "commands below; scripts/services/cloudrun-emulator.sh down stops it (and everything it runs)."
fi
echo "Next: .venv/bin/slipway releases $spec | status | rollback | teardown (see README.md)"
if .venv/bin/slipway server status >/dev/null 2>&1; then
  .venv/bin/slipway server status
  echo "  (open its UI for the runs; 'make clean-demo' tears the demo down and stops it)"
fi
