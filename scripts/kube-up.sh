#!/usr/bin/env bash
# The shop in a Kubernetes cluster on this machine: the in-cluster twin of `make up`.
#
# Starts the local control plane with its real node (scripts/kube.sh), builds the shop's and
# the middleware's images offline and loads them into the node (scripts/images.sh), installs
# charts/letsgo with Helm (the operator, its middleware images the local ones), applies
# examples/store-local.yaml (examples/store.yaml with the images built here), waits for the
# Store to be Ready, and forwards the gateway to http://127.0.0.1:8888. Ctrl-C stops the
# forward and the cluster (as `make down` does).
#
# Settings (environment, defaults in parentheses):
#   LETSGO_SHOP_NAMESPACE (shop)    the Store's namespace (Pod Security `restricted` enforced)
#   LETSGO_GATEWAY_PORT (8888)      the forwarded gateway's port on 127.0.0.1
#   LETSGO_KUBE_UP_TIMEOUT (900)    seconds the Store may take to become Ready
#   LETSGO_KUBE_UP_KEEP (unset)     1: leave the cluster running after Ctrl-C
# and what scripts/kube.sh and scripts/images.sh read.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# shellcheck source=scripts/tools.sh
. scripts/tools.sh

NS=${LETSGO_SHOP_NAMESPACE:-shop}
OPERATOR_NS=letsgo-system
PORT=${LETSGO_GATEWAY_PORT:-8888}
TIMEOUT=${LETSGO_KUBE_UP_TIMEOUT:-900}
STORE=examples/store-local.yaml
T0=$SECONDS

say() { printf 'kube-up: %s\n' "$*" >&2; }
die() {
	printf 'kube-up: ERROR: %s\n' "$*" >&2
	exit 1
}
elapsed() { printf '%dm%02ds' $(((SECONDS - T0) / 60)) $(((SECONDS - T0) % 60)); }

FORWARD=
stop_all() {
	trap - INT TERM EXIT
	[[ -n $FORWARD ]] && kill "$FORWARD" 2>/dev/null
	if [[ ${LETSGO_KUBE_UP_KEEP:-} == 1 ]]; then
		say "the cluster keeps running (LETSGO_KUBE_UP_KEEP=1); make down stops it"
	else
		say "stopping the cluster"
		scripts/kube.sh stop
	fi
}

port_taken() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_taken "$PORT" && die "127.0.0.1:$PORT is taken (make up running?): stop it or set LETSGO_GATEWAY_PORT"

say "starting the cluster (scripts/kube.sh ensure)"
eval "$(scripts/kube.sh ensure)"
KUBECTL=$LETSGO_KUBECTL
trap 'stop_all; exit 130' INT TERM

say "building the images (scripts/images.sh all; the first build takes a while)"
images=$(scripts/images.sh all) || die "building the images failed (see above)"
image_of() { # NAME-PART
	awk -v part="$1" '$1 ~ part {print $1; exit}' <<<"$images"
}
scripts/images.sh load /run/letsgo-node/containerd.sock >/dev/null || die "loading the images into the node failed"
TAG=$(awk -F'"' '/^appVersion:/ {print $2}' charts/letsgo/Chart.yaml)

ensure_helm
say "installing charts/letsgo into $OPERATOR_NS (helm)"
for ns in "$OPERATOR_NS" "$NS"; do
	"$KUBECTL" create namespace "$ns" --dry-run=client -o yaml |
		"$KUBECTL" label --local -f - -o yaml pod-security.kubernetes.io/enforce=restricted |
		"$KUBECTL" apply -f - >/dev/null
done
# The operator watches the shop's namespace only: the tests' own operators (make test beside a
# running kube-up) reconcile their Stores, this one never touches them.
"$HELM_BIN" upgrade --install letsgo charts/letsgo --namespace "$OPERATOR_NS" \
	--set "watchNamespace=$NS" \
	--set image.registry=localhost/letsgo --set "image.tag=$TAG" \
	--set "middlewareImages.postgres=$(image_of debian-postgresql)" \
	--set "middlewareImages.redis=$(image_of debian-redis)" \
	--set "middlewareImages.kafka=$(image_of apache-kafka)" \
	--set "middlewareImages.etcd=$(image_of /etcd:)" \
	--set "middlewareImages.backup=$(image_of awscli)" \
	--wait --timeout 5m >/dev/null || die "helm install failed; kubectl -n $OPERATOR_NS get pods shows why"

say "applying $STORE to namespace $NS"
"$KUBECTL" apply -n "$NS" -f "$STORE" >/dev/null
deadline=$((SECONDS + TIMEOUT))
until [[ $("$KUBECTL" get store shop -n "$NS" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
	if ((SECONDS > deadline)); then
		"$KUBECTL" get store,pods -n "$NS" >&2 || true
		die "the Store was not Ready after ${TIMEOUT}s: kubectl describe store shop -n $NS"
	fi
	sleep 3
done
say "Store shop is Ready after $(elapsed)"

forward() {
	"$KUBECTL" port-forward -n "$NS" --address 127.0.0.1 svc/shop-gateway "$PORT:8888" >/dev/null 2>&1 &
	FORWARD=$!
}
forward
admin=$("$KUBECTL" get secret shop-secrets -n "$NS" -o 'jsonpath={.data.admin-password}' | base64 -d)
cat <<-EOF

	The shop runs in the cluster; its gateway is forwarded to http://127.0.0.1:$PORT
	  export KUBECONFIG=$KUBECONFIG
	  kubectl (this cluster's): $KUBECTL get stores -n $NS
	  admin: admin / $admin
	Ctrl-C stops the forward and the cluster.

EOF
# A forward ends with the Pod it reached (a rollout, a restart): start it again.
while true; do
	wait "$FORWARD" || true
	say "the gateway's port-forward ended; starting it again"
	sleep 1
	forward
done
