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
#   LETSGO_KUBE_UP_DETACH (unset)   1: return once the Store is Ready, without a forward, and
#                                   leave the cluster running (scripts/bench-kube.sh does)
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
DETACH=${LETSGO_KUBE_UP_DETACH:-}
[[ $DETACH == 1 ]] || ! port_taken "$PORT" || die "127.0.0.1:$PORT is taken (make up running?): stop it or set LETSGO_GATEWAY_PORT"

say "starting the cluster (scripts/kube.sh ensure)"
eval "$(scripts/kube.sh ensure)"
KUBECTL=$LETSGO_KUBECTL
trap 'stop_all; exit 130' INT TERM

say "building the images (scripts/images.sh all; the first build takes a while)"
images=$(scripts/images.sh all) || die "building the images failed (see above)"
image_of() { # NAME-PART
	awk -v part="$1" '$1 ~ part {print $1; exit}' <<<"$images"
}
TAG=$(awk -F'"' '/^appVersion:/ {print $2}' charts/letsgo/Chart.yaml)
scripts/images.sh load /run/letsgo-node/containerd.sock >/dev/null || die "loading the images into the node failed"
# The images keep their tag when the code changes, so a Pod started before an image was
# imported anew still runs the old one. stale NAMESPACE POD-PREFIX COMPONENT: some running Pod
# of the component runs another image than the node now holds under its tag.
ctr_node() { ctr -a /run/letsgo-node/containerd.sock -n k8s.io "$@"; }
image_id() { # IMAGE: its config digest, what a Pod's status reports as imageID
	local manifest
	manifest=$(ctr_node images ls | awk -v ref="$1" '$1 == ref {print $3}')
	[[ -n $manifest ]] && ctr_node content get "$manifest" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])'
}
stale() {
	local want
	want=$(image_id "localhost/letsgo/letsgo-$3:$TAG") || return 1
	"$KUBECTL" get pods -n "$1" -o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].imageID}{"\n"}{end}' |
		awk -v prefix="$2" -v want="$want" 'index($1, prefix) == 1 && $2 != "" && $2 !~ want {found = 1} END {exit !found}'
}

ensure_helm
# Helm installs the CRD once and never upgrades it: apply this tree's, so a cluster kept from an
# older checkout accepts the Store's newer fields instead of pruning them.
"$KUBECTL" apply --server-side --force-conflicts -f charts/letsgo/crds/store.yaml >/dev/null ||
	die "applying the Store CRD failed"
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
if stale "$OPERATOR_NS" letsgo-operator- operator; then
	say "the operator's image changed: restarting it"
	"$KUBECTL" rollout restart deploy/letsgo-operator -n "$OPERATOR_NS" >/dev/null
	"$KUBECTL" rollout status deploy/letsgo-operator -n "$OPERATOR_NS" --timeout 5m >/dev/null ||
		die "the operator did not restart: kubectl -n $OPERATOR_NS get pods"
fi

say "applying $STORE to namespace $NS"
"$KUBECTL" apply -n "$NS" -f "$STORE" >/dev/null
for component in user product cart order payment gateway; do
	if stale "$NS" "shop-$component-" "$component"; then
		say "$component's image changed: restarting shop-$component"
		"$KUBECTL" rollout restart "deploy/shop-$component" -n "$NS" >/dev/null
	fi
done
deadline=$((SECONDS + TIMEOUT))
until [[ $("$KUBECTL" get store shop -n "$NS" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
	if ((SECONDS > deadline)); then
		"$KUBECTL" get store,pods -n "$NS" >&2 || true
		die "the Store was not Ready after ${TIMEOUT}s: kubectl describe store shop -n $NS"
	fi
	sleep 3
done
say "Store shop is Ready after $(elapsed)"
if [[ $DETACH == 1 ]]; then
	trap - INT TERM
	say "the cluster keeps running (LETSGO_KUBE_UP_DETACH=1); make down stops it"
	exit 0
fi

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
