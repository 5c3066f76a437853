#!/usr/bin/env bash
# make bench's shop figures on the local cluster's real node: the shop in Pods, the load
# generator on this machine reaching the gateway through its Service's NodePort on 127.0.0.1
# (kube-proxy's rules, then the CNI bridge into the Pod), so what the node's network path costs
# can be read next to `make bench` on `make up`:
#   detail     one cached product's detail, closed loop (make bench's (a))
#   checkout   order create + pay, 16 connections (make bench's (c))
#   flash      the flash sale: buyers with accounts of their own on one product (make bench's (g))
#   hot        orders of one product with stock for all, every one accepted (make bench's (h))
# Figures go to target/bench-kube/*.json and a table at the end. Nothing here asserts.
#
# The shop: scripts/kube-up.sh (cluster, images, operator, Store `shop`) run detached, then the
# Store patched for a benchmark: its gateway Service a LoadBalancer (this node has no
# load-balancer controller; the Service's NodePort is what is reached) and
# `spec.gateway.rateLimit` raised to a million a second, as make bench raises make up's (the
# generator's readers and buyers come from one address); both are put back at the end. The
# cluster keeps running afterwards; `make down` stops it.
#
# Settings (environment, defaults in parentheses):
#   BENCH_DURATION (20s)  BENCH_WARMUP (5s)  BENCH_CONNECTIONS (64)
#   BENCH_CHECKOUT_CONNECTIONS (16)  BENCH_FLASH_BUYERS (2000)  BENCH_FLASH_UNITS (200)
#   BENCH_HOT_BUYERS (3000)  BENCH_HOT_ORDERS_EACH (5; the product has stock for twice
#   as many orders)
#   BENCH_OUT (target/bench-kube)
# and what scripts/kube-up.sh reads (LETSGO_SHOP_NAMESPACE, ...).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-5s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
CHECKOUT_CONNECTIONS=${BENCH_CHECKOUT_CONNECTIONS:-16}
FLASH_BUYERS=${BENCH_FLASH_BUYERS:-2000}
FLASH_UNITS=${BENCH_FLASH_UNITS:-200}
HOT_BUYERS=${BENCH_HOT_BUYERS:-3000}
HOT_ORDERS_EACH=${BENCH_HOT_ORDERS_EACH:-5}
OUT=${BENCH_OUT:-target/bench-kube}
TARGET=${CARGO_TARGET_DIR:-target}
LOADGEN=$TARGET/release/letsgo-loadgen
NS=${LETSGO_SHOP_NAMESPACE:-shop}
UNLIMITED=1000000

say() { printf 'bench-kube: %s\n' "$*" >&2; }
die() {
	printf 'bench-kube: ERROR: %s\n' "$*" >&2
	exit 1
}
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"
mkdir -p "$OUT"

say "building the load generator (as make bench does)"
cargo build -j2 --release --workspace --bins --exclude letsgo-operator

say "the shop on the real node (scripts/kube-up.sh, detached)"
LETSGO_KUBE_UP_DETACH=1 scripts/kube-up.sh
eval "$(scripts/kube.sh env)"
KUBECTL=$LETSGO_KUBECTL

# Put the Store's gateway settings back as they were when the run ends, however it ends: a shop
# left without a rate limit would be open to any one client's flood.
gateway_before=$("$KUBECTL" get store shop -n "$NS" -o 'jsonpath={.spec.gateway}')
[[ -n $gateway_before ]] || gateway_before='{}'
restore() {
	say "restoring the Store's gateway settings: $gateway_before"
	"$KUBECTL" patch store shop -n "$NS" --type json \
		-p "[{\"op\": \"replace\", \"path\": \"/spec/gateway\", \"value\": $gateway_before}]" >/dev/null ||
		say "WARNING: could not restore them; kubectl -n $NS edit store shop"
}
trap restore EXIT
say "Store shop: gateway Service LoadBalancer, rate limit $UNLIMITED/s"
"$KUBECTL" patch store shop -n "$NS" --type merge -p "$(
	printf '{"spec":{"gateway":{"serviceType":"LoadBalancer","rateLimit":{"perSecond":%d,"burst":%d}}}}' \
		"$UNLIMITED" "$UNLIMITED"
)" >/dev/null
# The gateway rolls to the new limit: wait for the operator to write it, for the rollout, and
# for the Store to be Ready on it.
limit() {
	"$KUBECTL" get deploy shop-gateway -n "$NS" \
		-o 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="RATE_LIMIT_PER_SECOND")].value}'
}
deadline=$((SECONDS + 300))
until [[ $(limit) == "$UNLIMITED" ]]; do
	((SECONDS < deadline)) || die "the gateway's RATE_LIMIT_PER_SECOND is '$(limit)', not $UNLIMITED, after 300 s: kubectl -n $NS describe store shop"
	sleep 1
done
"$KUBECTL" rollout status deploy/shop-gateway -n "$NS" --timeout 300s >/dev/null ||
	die "the gateway did not roll out: kubectl -n $NS describe deploy shop-gateway"
"$KUBECTL" wait store/shop -n "$NS" --for condition=Ready --timeout 300s >/dev/null ||
	die "the Store is not Ready: kubectl -n $NS describe store shop"

PORT=$("$KUBECTL" get svc shop-gateway -n "$NS" -o 'jsonpath={.spec.ports[?(@.name=="http")].nodePort}')
[[ -n $PORT ]] || PORT=$("$KUBECTL" get svc shop-gateway -n "$NS" -o 'jsonpath={.spec.ports[0].nodePort}')
[[ -n $PORT ]] || die "the gateway Service has no NodePort: kubectl -n $NS get svc shop-gateway -o yaml"
URL=http://127.0.0.1:$PORT
for _ in $(seq 60); do
	curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$URL/health" 2>/dev/null && break
	sleep 1
done
curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$URL/health" ||
	die "$URL/health does not answer (kube-proxy's NodePort)"
ADMIN_PASSWORD=$("$KUBECTL" get secret shop-secrets -n "$NS" -o 'jsonpath={.data.admin-password}' | base64 -d)
export ADMIN_PASSWORD

quiet() { # the builds above may still be linking: wait for no rustc
	local deadline=$((SECONDS + 180))
	while pgrep -x rustc >/dev/null && ((SECONDS < deadline)); do sleep 1; done
	say "$1: load average $(cut -d' ' -f1 /proc/loadavg)"
}

say "the gateway on $URL (NodePort)"
quiet detail
"$LOADGEN" --target-url "$URL" --warmup "$WARMUP" --duration "$DURATION" --only detail --fixed-product \
	-c "$CONNECTIONS" --json "$OUT/detail.json" >&2
quiet checkout
"$LOADGEN" --target-url "$URL" --warmup "$WARMUP" --duration "$DURATION" --only checkout \
	-c "$CHECKOUT_CONNECTIONS" --json "$OUT/checkout.json" >&2
quiet flash
"$LOADGEN" flash-sale --target-url "$URL" --buyers "$FLASH_BUYERS" --units "$FLASH_UNITS" \
	-c "$CONNECTIONS" --json "$OUT/flash.json" >&2 || say "the flash sale broke a promise (see its report above)"
quiet hot
"$LOADGEN" flash-sale --target-url "$URL" --buyers "$HOT_BUYERS" --orders-each "$HOT_ORDERS_EACH" \
	--units "$((HOT_BUYERS * HOT_ORDERS_EACH * 2))" -c "$CONNECTIONS" --read-rate 100 --json "$OUT/hot.json" >&2 || say "the orders of one product broke a promise (see its report above)"

python3 - "$OUT" "$URL" <<'PY' | tee "$OUT/report.md"
import json, os, sys
out, url = sys.argv[1], sys.argv[2]
def load(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None
def op(report, name):
    return next((o for o in (report or {}).get("operations", []) if o["name"] == name), None)
def ms(value):
    return "-" if value is None else f"{value:.1f}"
print(f"The shop on the real node, the generator through {url} (kube-proxy's NodePort):\n")
print("| run | figures |")
print("|---|---|")
for name in ("detail", "checkout"):
    o = op(load(name), name)
    if o:
        lat = o.get("latencyMs") or {}
        print(f"| ({'a' if name == 'detail' else 'c'}) {name} | {o['throughputPerSec']:.0f} /s, "
              f"p50 {ms(lat.get('p50'))} ms, p99 {ms(lat.get('p99'))} ms, {o.get('errors', 0)} errors |")
flash = load("flash")
if flash:
    d = flash["decisionMs"]
    p99 = lambda when: (flash["readers"][when]["latencyMs"] or {}).get("p99")
    print(f"| (g) flash sale: {flash['buyers']} buyers on {flash['units']} units, "
          f"{flash['connections']} connections | {flash['decisionsPerSec']:.0f} decisions/s, "
          f"p50 {ms(d['p50'])} / p99 {ms(d['p99'])} / max {ms(d['max'])} ms; {flash['accepted']} sold, "
          f"sold out after {flash['soldOutAfterSecs']} s, {flash['errors']} errors, "
          f"oversold {flash['oversold']} |")
    reads = lambda when: flash["readers"][when]["reads"]
    thin = "" if all(flash["readers"][w].get("enoughForP99") for w in ("before", "during")) else "; too few reads for a p99"
    print(f"| (g) readers' p99 before / during the sale | {ms(p99('before'))} / {ms(p99('during'))} ms"
          f" ({reads('before')} / {reads('during')} reads{thin}) |")
hot = load("hot")
if hot:
    d = hot["decisionMs"]
    print(f"| (h) orders of one product with stock for all: {hot['buyers']} buyers x {hot.get('ordersEach', 1)} orders, "
          f"{hot['connections']} connections | {hot['decisionsPerSec']:.0f} orders/s, "
          f"p50 {ms(d['p50'])} / p99 {ms(d['p99'])} / max {ms(d['max'])} ms; {hot['accepted']} accepted, "
          f"{hot['errors']} errors |")
PY
say "the cluster keeps running; make down stops it"
