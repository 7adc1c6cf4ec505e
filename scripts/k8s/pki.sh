#!/usr/bin/env bash
# scripts/k8s/pki.sh DIR NODE NODE_IP — throwaway PKI of the single-node test cluster (openssl only):
# a CA, the apiserver serving certificate, client certificates of admin / kubelet / controller-manager
# / scheduler / kube-proxy / apiserver->kubelet, the service-account key pair, and one kubeconfig per
# component (server https://127.0.0.1:6443). Called by scripts/k8s/up.sh, which regenerates the
# PKI when the node name or IP changed or a certificate expires within a day. Time: ~2 s.
set -euo pipefail
P=${1:?usage: pki.sh DIR NODE NODE_IP}
NODE=${2:?}
IP=${3:?}
DAYS=365
rm -rf "$P.new"
mkdir -p "$P.new"
cd "$P.new"
openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -key ca.key -days "$DAYS" -subj "/CN=slipway-test-kubernetes-ca" -out ca.crt

# cert NAME CN [O] [SANs]
cert() {
    openssl genrsa -out "$1.key" 2048 2>/dev/null
    openssl req -new -key "$1.key" -subj "/CN=$2${3:+/O=$3}" -out "$1.csr"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [ -z "${4:-}" ] || echo "subjectAltName=$4"
    } >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$DAYS" \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,IP:$IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin admin system:masters
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert kubelet "system:node:$NODE" system:nodes "DNS:$NODE,IP:$IP,IP:127.0.0.1"
cert controller-manager system:kube-controller-manager
cert scheduler system:kube-scheduler
cert kube-proxy system:kube-proxy
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

for n in admin kubelet controller-manager scheduler kube-proxy; do
    cat >"$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slipway
  cluster: {certificate-authority: $P/ca.crt, server: "https://127.0.0.1:6443"}
users:
- name: $n
  user: {client-certificate: $P/$n.crt, client-key: $P/$n.key}
contexts:
- name: slipway
  context: {cluster: slipway, user: $n}
current-context: slipway
EOF
done
echo "$NODE $IP" >node
chmod 600 ./*.key
cd /
rm -rf "$P"
mv "$P.new" "$P"
