#!/usr/bin/env bash
# scripts/k8s/smoke.sh [--keep] — end-to-end check of the test cluster (scripts/k8s/up.sh first):
# builds a tiny image FROM the local base image (`python3 -m http.server`, built with
# `docker build --network none`), pushes it to 127.0.0.1:5000, deploys a 2-replica Deployment +
# ClusterIP Service in a new namespace slipway-smoke-<epoch>, waits for the rollout, then checks
# HTTP through `kubectl port-forward` on 127.0.0.1 and through the apiserver's service proxy.
# Deletes the namespace at the end unless --keep. Time (measured): ~12 s the first time (image
# build, push and first pull included), ~3 s after.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/../services/lib.sh"
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
require_root
T0=$EPOCHREALTIME
# A new namespace per run: a deleted one can stay Terminating for a minute or more (the namespace
# controller backs off), e.g. when the cluster was restarted while it was being deleted.
NS=slipway-smoke-$(date +%s)
BASE=$SLIPWAY_REGISTRY/slipway/python-base:bookworm
IMAGE=$SLIPWAY_REGISTRY/slipway/smoke-http:v1
kc() { "$KUBECTL" -n "$NS" "$@"; }

registry_has slipway/python-base bookworm || die "no $BASE: run scripts/images/base.sh"
if ! registry_has slipway/smoke-http v1; then
    ctx=$(mktemp -d)
    echo "slipway smoke ok" >"$ctx/index.html"
    cat >"$ctx/Dockerfile" <<EOF
FROM $BASE
COPY index.html /srv/index.html
WORKDIR /srv
USER 65534:65534
EXPOSE 8080
CMD ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0"]
EOF
    DOCKER_BUILDKIT=0 docker build --network none -t "$IMAGE" "$ctx" >"$RUN/smoke-build.log" 2>&1 ||
        { tail -n 20 "$RUN/smoke-build.log" >&2; die "docker build failed ($RUN/smoke-build.log)"; }
    docker push -q "$IMAGE" >/dev/null
    rm -rf "$ctx"
    log "built and pushed $IMAGE"
fi

"$KUBECTL" create namespace "$NS" >/dev/null
kc apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, labels: {app: smoke}}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: http
        image: $IMAGE
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: smoke}
spec:
  selector: {app: smoke}
  ports: [{port: 80, targetPort: 8080}]
EOF
if ! kc rollout status deploy/smoke --timeout=120s >/dev/null; then
    kc get pods -o wide >&2
    kc describe pods >&2
    die "deployment smoke not ready after 120 s"
fi
log "rollout done ($(since "$T0"))"

port=$((20000 + RANDOM % 10000))
kc port-forward --address 127.0.0.1 svc/smoke "$port:80" >"$RUN/smoke-port-forward.log" 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
wait_until 15 curl -sf "http://127.0.0.1:$port/" || die "port-forward on 127.0.0.1:$port does not answer ($RUN/smoke-port-forward.log)"
body=$(curl -sf "http://127.0.0.1:$port/")
[ "$body" = "slipway smoke ok" ] || die "unexpected body via port-forward: $body"
log "HTTP via kubectl port-forward 127.0.0.1:$port: $body"
body=$("$KUBECTL" get --raw "/api/v1/namespaces/$NS/services/smoke:80/proxy/")
[ "$body" = "slipway smoke ok" ] || die "unexpected body via apiserver proxy: $body"
log "HTTP via apiserver service proxy: $body"
kill $pf 2>/dev/null || true

if [ "${1:-}" = --keep ]; then
    log "kept namespace $NS"
else
    "$KUBECTL" delete namespace "$NS" --wait=false >/dev/null
fi
log "smoke test passed in $(since "$T0")"
