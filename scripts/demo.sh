#!/usr/bin/env bash
# The demo: release the example model to a live local endpoint, then call it with its API key.
# The key is never printed: set SLIPWAY_API_KEY yourself before `make demo` to call the endpoint later.
set -euo pipefail
spec=${1:?usage: demo.sh SPEC}
if [ -z "${SLIPWAY_API_KEY:-}" ]; then
  SLIPWAY_API_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
  export SLIPWAY_API_KEY
  generated=1
fi
.venv/bin/slipway deploy "$spec"
url=$(.venv/bin/python -c 'import sys, yaml; print("http://127.0.0.1:%d" % yaml.safe_load(open(sys.argv[1]))["production"]["port"])' "$spec")
echo
echo "An authenticated call to production:"
echo "  \$ curl -s -H \"Authorization: Bearer \$SLIPWAY_API_KEY\" -d '{\"inputs\": [[6.3, 3.3, 6.0, 2.5]]}' $url/predict"
printf '  '; curl -s -H "Authorization: Bearer $SLIPWAY_API_KEY" -d '{"inputs": [[6.3, 3.3, 6.0, 2.5]]}' "$url/predict"; echo
echo "Without the key:"
printf '  '; curl -s -o /dev/null -w 'HTTP %{http_code}\n' -d '{"inputs": [[6.3, 3.3, 6.0, 2.5]]}' "$url/predict"
if [ -n "${generated:-}" ]; then
  echo
  echo "This demo generated a throwaway API key and did not print it. To call the endpoint yourself,"
  echo "export SLIPWAY_API_KEY=<a key of 16+ characters> and run 'make demo' again."
fi
echo
echo "Next: .venv/bin/slipway releases $spec | status | rollback | teardown (see README.md)"
