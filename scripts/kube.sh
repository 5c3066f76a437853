#!/usr/bin/env bash
# A real Kubernetes cluster on this machine, built from source: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, a real node that runs containers
# (scripts/kube-node.sh: kubelet, kube-proxy, Debian's containerd and runc, a CNI bridge,
# CoreDNS, local-path-provisioner, metrics-server, kube-network-policies) and a kwok fake node
# beside it (tainted; Pods that tolerate it are reported Running and Ready, no container runs).
#
#   scripts/kube.sh build    build the pinned binaries into the cache (once per version)
#   scripts/kube.sh ensure   build, then start whatever is not running; waits until the
#                            API answers and the nodes are Ready; prints `export KUBECONFIG=...`
#   scripts/kube.sh run      ensure, then stay in the foreground; Ctrl-C stops it (make cluster)
#   scripts/kube.sh stop     stop what ensure started, the node's Pods too (make down)
#   scripts/kube.sh restart-node  kill the real node's kubelet, kube-proxy, containerd and
#                            every container at once, clear what a reboot clears, start them
#                            again (what a node's reboot does; its Pods come back by themselves)
#   scripts/kube.sh env      print the export lines (KUBECONFIG, LETSGO_KUBECTL, LETSGO_KUBE_BIN)
#
# The Kubernetes version is the one tools/kube/go.mod requires, etcd's the one
# tools/kube/etcd/go.mod requires (its own module: etcd pins other versions of the
# libraries both use), kwok's is KWOK_VERSION below, the node's parts' in scripts/kube-node.sh.
# etcd must be built: Debian's 3.4 lacks watch progress requests, without which the apiserver
# refuses the streaming lists client-go (kwok's too) asks for, and Pods are then seen late.
# Binaries live in $LETSGO_KUBE_CACHE/<component>-<version>/, so a second run, a clean clone or
# CI finds them; Go's module and build caches are the user's (~/go/pkg/mod, ~/.cache/go-build).
#
# Settings (environment, defaults in parentheses):
#   LETSGO_KUBE_CACHE (/var/cache/letsgo-kube)  built binaries and the node's images
#   LETSGO_KUBE_STATE (/tmp/letsgo-kube)        certificates, kubeconfig, logs, etcd data
#   LETSGO_KUBE_PORT  (16443)                   kube-apiserver's port; etcd uses 12379/12380
#   LETSGO_KUBE_TIMEOUT (120)                   seconds each component may take to be ready
#   LETSGO_KUBE_NODE (real)                     real: both nodes (needs root); kwok: the fake one
#   LETSGO_NODE_ROOT (/var/lib/letsgo-node)     containerd's images, the kubelet's Pods, volumes
set -euo pipefail

ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
MODULE=$ROOT/tools/kube
KWOK_VERSION=v0.7.0
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$MODULE/go.mod")
[[ -n $K8S_VERSION ]] || { echo "kube: no 'require k8s.io/kubernetes <version>' line in $MODULE/go.mod" >&2; exit 1; }
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$MODULE/etcd/go.mod")
[[ -n $ETCD_VERSION ]] || { echo "kube: no go.etcd.io/etcd/server/v3 requirement in $MODULE/etcd/go.mod" >&2; exit 1; }

CACHE=${LETSGO_KUBE_CACHE:-/var/cache/letsgo-kube}
STATE=${LETSGO_KUBE_STATE:-/tmp/letsgo-kube}
PORT=${LETSGO_KUBE_PORT:-16443}
ETCD_PORT=12379
ETCD_PEER_PORT=12380
TIMEOUT=${LETSGO_KUBE_TIMEOUT:-120}
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
KUBECONFIG_FILE=$STATE/admin.kubeconfig
NODE=letsgo-fake-node
# real: the fake node and a real one (scripts/kube-node.sh); kwok: the fake node alone.
NODE_MODE=${LETSGO_KUBE_NODE:-real}
[[ $NODE_MODE == real || $NODE_MODE == kwok ]] || { echo "kube: LETSGO_KUBE_NODE must be real or kwok, not '$NODE_MODE'" >&2; exit 1; }

say() { printf 'kube: %s\n' "$*" >&2; }
die() {
	printf 'kube: ERROR: %s\n' "$*" >&2
	exit 1
}

need() { # COMMAND WHAT-TO-INSTALL
	command -v "$1" >/dev/null || die "$1 not found: install $2"
}

# ------------------------------------------------------------------ building

# -X flags so the binaries report the real version (Helm's kubeVersion checks and kwok read it).
version_ldflags() {
	local v=$K8S_VERSION major minor pkg flags="-s -w"
	major=${v#v}
	major=${major%%.*}
	minor=${v#v"$major".}
	minor=${minor%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	printf '%s' "$flags"
}

build() {
	need go "Go 1.24 or newer (https://go.dev/doc/install; Debian's golang is too old)"
	local tmp t0=$SECONDS
	if [[ ! -f $K8S_BIN/.complete ]]; then
		say "building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) into $K8S_BIN; the first build takes about 5 minutes on two cores (downloading about 1 GB of modules)"
		mkdir -p "$CACHE"
		tmp=$(mktemp -d "$CACHE/.build.XXXXXX") && chmod 755 "$tmp"
		(cd "$MODULE" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -p "${LETSGO_KUBE_BUILD_JOBS:-2}" -trimpath \
			-ldflags "$(version_ldflags)" -o "$tmp/" \
			k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl) ||
			{ rm -rf "$tmp"; die "go build of Kubernetes $K8S_VERSION failed"; }
		touch "$tmp/.complete"
		rm -rf "$K8S_BIN"
		mv "$tmp" "$K8S_BIN"
		say "built Kubernetes $K8S_VERSION in $((SECONDS - t0))s ($(du -sh "$K8S_BIN" | cut -f1))"
	fi
	if [[ ! -f $ETCD_BIN/.complete ]]; then
		t0=$SECONDS
		say "building etcd $ETCD_VERSION into $ETCD_BIN"
		mkdir -p "$CACHE"
		tmp=$(mktemp -d "$CACHE/.build.XXXXXX") && chmod 755 "$tmp"
		(cd "$MODULE/etcd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" \
			-o "$tmp/etcd" go.etcd.io/etcd/server/v3) ||
			{ rm -rf "$tmp"; die "go build of etcd $ETCD_VERSION failed"; }
		touch "$tmp/.complete"
		rm -rf "$ETCD_BIN"
		mv "$tmp" "$ETCD_BIN"
		say "built etcd $ETCD_VERSION in $((SECONDS - t0))s"
	fi
	if [[ ! -f $KWOK_BIN/.complete ]]; then
		t0=$SECONDS
		say "building kwok $KWOK_VERSION into $KWOK_BIN"
		mkdir -p "$CACHE"
		tmp=$(mktemp -d "$CACHE/.build.XXXXXX") && chmod 755 "$tmp"
		CGO_ENABLED=0 GOBIN=$tmp go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" ||
			{ rm -rf "$tmp"; die "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION failed"; }
		touch "$tmp/.complete"
		rm -rf "$KWOK_BIN"
		mv "$tmp" "$KWOK_BIN"
		say "built kwok $KWOK_VERSION in $((SECONDS - t0))s"
	fi
	if [[ $NODE_MODE == real ]]; then build_node; fi
}

# ------------------------------------------------------------------ processes

# shellcheck disable=SC2016 # $0 expands in the child bash
port_open() { timeout 2 bash -c ': <>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

pid_of() { [[ -s $STATE/$1.pid ]] && head -n1 "$STATE/$1.pid" | tr -dc '0-9'; }

# The command line of process PID, its arguments joined by spaces; empty when it is gone.
# Read whole (no `| grep -q`: under pipefail, grep leaving early can fail the pipeline).
cmdline_of() { # PID
	local line
	line=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || true
	printf '%s' "$line"
}

# Our pidfile names a live process whose command line mentions the binary.
alive() { # NAME
	local pid
	pid=$(pid_of "$1") || return 1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cmdline_of "$pid") == *"$1"* ]]
}

spawn() { # NAME CMD...
	local name=$1
	shift
	# fd 9 is the lock of ensure: the daemons must not inherit it.
	(cd "$STATE" && exec setsid nohup "$@" </dev/null >"$STATE/$name.log" 2>&1 9>&-) &
	local pid=$! _
	printf '%s\n' "$pid" >"$STATE/$name.pid"
	# Until the child has exec'd, its command line is this script's, and alive() would take
	# it for dead (seen: "etcd exited during start-up" while etcd was starting fine).
	for _ in $(seq 100); do
		[[ $(cmdline_of "$pid") == *"$name"* ]] && return 0
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
}

# Our pidfile names a live process, whatever its command line says: wait_for's test of a
# process it has just started or found alive. Its command line is not asked there: read while
# the process passes from setsid to nohup to the daemon (each an exec), it can come back empty
# (seen: "kube-proxy exited during start-up" with kube-proxy starting fine, its log still empty).
running() { # NAME
	local pid
	pid=$(pid_of "$1") || return 1
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

wait_for() { # NAME CHECK...
	local name=$1 deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		if ! running "$name"; then
			tail -n 20 "$STATE/$name.log" >&2 || true
			die "$name exited during start-up; see $STATE/$name.log"
		fi
		((SECONDS < deadline)) || {
			tail -n 20 "$STATE/$name.log" >&2 || true
			die "$name not ready after ${TIMEOUT}s; see $STATE/$name.log"
		}
		sleep 0.5
	done
}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# apt_sources
# shellcheck source=scripts/tools.sh
. "$ROOT/scripts/tools.sh"
# shellcheck source=scripts/kube-node.sh
. "$ROOT/scripts/kube-node.sh"

# ------------------------------------------------------------------ certificates

# A CA, the apiserver's serving certificate, an admin client certificate (group
# system:masters) and the service-account signing key: made once per state dir.
certificates() {
	local pki=$STATE/pki
	[[ -f $pki/.complete ]] && return 0
	if ! command -v openssl >/dev/null; then
		local sudo=()
		((EUID == 0)) || sudo=(sudo)
		say "installing openssl (apt-get)"
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >/dev/null ||
			die "openssl is missing and apt-get install openssl failed"
	fi
	rm -rf "$pki"
	mkdir -p "$pki"
	(
		cd "$pki"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
			-subj "/CN=letsgo-local-ca" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
			-subj "/CN=kube-apiserver" 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' >apiserver.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
			-subj "/O=system:masters/CN=letsgo-admin" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >admin.ext
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out admin.crt -days 3650 -extfile admin.ext 2>/dev/null
		openssl genrsa -out sa.key 2048 2>/dev/null
		openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	) || die "making certificates in $pki failed"
	touch "$pki/.complete"
	"$K8S_BIN/kubectl" config set-cluster local --server="https://127.0.0.1:$PORT" \
		--certificate-authority="$pki/ca.crt" --embed-certs=true --kubeconfig="$KUBECONFIG_FILE" >/dev/null
	"$K8S_BIN/kubectl" config set-credentials admin --client-certificate="$pki/admin.crt" \
		--client-key="$pki/admin.key" --embed-certs=true --kubeconfig="$KUBECONFIG_FILE" >/dev/null
	"$K8S_BIN/kubectl" config set-context local --cluster=local --user=admin \
		--kubeconfig="$KUBECONFIG_FILE" >/dev/null
	"$K8S_BIN/kubectl" config use-context local --kubeconfig="$KUBECONFIG_FILE" >/dev/null
}

# ------------------------------------------------------------------ components

# etcd's /health over plain bash (a fresh machine may have no curl).
# shellcheck disable=SC2016 # $0 expands in the child bash
etcd_healthy() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && grep -q "\"health\":\"true\"" <&3' "$ETCD_PORT"
}

start_etcd() {
	alive etcd && return 0
	port_open "$ETCD_PORT" && die "port $ETCD_PORT is taken by another process (etcd for the control plane wants it)"
	local url=http://127.0.0.1:$ETCD_PORT v unset=()
	# etcd reads ETCD_* variables as flags: start it with none of the caller's.
	for v in $(compgen -v ETCD_ || true); do unset+=(-u "$v"); done
	spawn etcd env "${unset[@]}" "$ETCD_BIN/etcd" --name letsgo-kube --data-dir "$STATE/etcd" \
		--listen-client-urls "$url" --advertise-client-urls "$url" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "letsgo-kube=http://127.0.0.1:$ETCD_PEER_PORT" \
		--quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --logger=zap --log-outputs=stderr
	wait_for etcd etcd_healthy
}

start_apiserver() {
	alive kube-apiserver && return 0
	port_open "$PORT" && die "port $PORT is taken by another process (set LETSGO_KUBE_PORT)"
	local pki=$STATE/pki node_flags=(--endpoint-reconciler-type=none)
	if [[ $NODE_MODE == real ]]; then mapfile -t node_flags < <(apiserver_node_flags); fi
	spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$ETCD_PORT" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$PORT" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 \
		--authorization-mode=Node,RBAC --allow-privileged=true \
		--enable-admission-plugins=NodeRestriction,PodNodeSelector,PodTolerationRestriction \
		"${node_flags[@]}" --profiling=false --v=1
	wait_for kube-apiserver kubectl_ get --raw /readyz
}

start_controller_manager() {
	alive kube-controller-manager && return 0
	local pki=$STATE/pki
	spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$KUBECONFIG_FILE" --leader-elect=false \
		--bind-address=127.0.0.1 --secure-port=0 \
		--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
		--use-service-account-credentials=true \
		--node-monitor-grace-period=5m \
		--cluster-name=letsgo-local --profiling=false --v=1
	# The service-account controller makes each namespace's "default": Pods wait for it.
	wait_for kube-controller-manager kubectl_ get serviceaccount default -n default
}

start_scheduler() {
	alive kube-scheduler && return 0
	spawn kube-scheduler "$K8S_BIN/kube-scheduler" \
		--kubeconfig="$KUBECONFIG_FILE" --leader-elect=false \
		--bind-address=127.0.0.1 --secure-port=0 --profiling=false --v=1
	wait_for kube-scheduler kubectl_ get lease -n kube-system kube-scheduler --ignore-not-found
}

# The fake node: registered by us, kept Ready by kwok (it renews the node's Lease
# in kube-node-lease, as a kubelet does), which also moves every Pod scheduled to
# it to Running and Ready. kube-controller-manager gives a silent node 5 minutes
# (--node-monitor-grace-period) before it marks the node's Pods not ready: a busy
# machine must not fail the tests by delaying a heartbeat.
start_kwok() {
	if ! alive kwok; then
		spawn kwok "$KWOK_BIN/kwok" --kubeconfig="$KUBECONFIG_FILE" \
			--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
			--cidr=10.245.0.0/16 --node-ip=127.0.0.1 \
			--node-lease-duration-seconds=40 \
			--server-address=""
	fi
	kubectl_ apply --server-side --field-manager=letsgo-kube -f - >/dev/null <<-EOF
		apiVersion: v1
		kind: Node
		metadata:
		  name: $NODE
		  labels:
		    kubernetes.io/hostname: $NODE
		    kubernetes.io/os: linux
		    kubernetes.io/arch: amd64
		    type: kwok
		  annotations:
		    kwok.x-k8s.io/node: fake
		    node.alpha.kubernetes.io/ttl: "0"
		spec:
		  taints: [{key: letsgo.dev/fake-node, value: "true", effect: NoSchedule}]
		status:
		  allocatable: {cpu: "64", memory: 256Gi, pods: "1000", ephemeral-storage: 1Ti}
		  capacity: {cpu: "64", memory: 256Gi, pods: "1000", ephemeral-storage: 1Ti}
	EOF
	wait_for kwok kubectl_ wait --for=condition=Ready "node/$NODE" --timeout=2s
}

ensure() {
	mkdir -p "$CACHE" "$STATE"
	# Tests call this in parallel: one at a time builds and starts, the rest find it running.
	exec 9>"$STATE/.lock"
	flock 9
	build
	certificates
	if [[ $NODE_MODE == real ]]; then node_certificates; fi
	start_etcd
	start_apiserver
	start_controller_manager
	start_scheduler
	start_kwok
	if [[ $NODE_MODE == real ]]; then start_node; fi
	say "control plane $K8S_VERSION ready at https://127.0.0.1:$PORT (logs in $STATE)"
}

# SIGTERM to each named component at once, then wait (SIGKILL after 10 s).
stop_together() { # NAME...
	local name pid i pids=()
	for name in "$@"; do
		pid=$(pid_of "$name") || continue
		if [[ -n $pid ]] && alive "$name"; then
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$name:$pid")
		fi
		rm -f "$STATE/$name.pid"
	done
	for entry in "${pids[@]}"; do
		pid=${entry#*:}
		for ((i = 0; i < 40; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$pid" 2>/dev/null || true
		say "${entry%%:*}: stopped (pid $pid)"
	done
}

stop() {
	[[ -d $STATE ]] || return 0
	stop_node
	stop_together kwok kube-scheduler kube-controller-manager
	stop_together kube-apiserver
	stop_together etcd
	# The cluster's data goes with it: the next start is a fresh cluster.
	rm -rf "$STATE/etcd"
}

print_env() {
	printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
	printf 'export LETSGO_KUBECTL=%q\n' "$K8S_BIN/kubectl"
	printf 'export LETSGO_KUBE_BIN=%q\n' "$K8S_BIN"
}

case ${1:-} in
build) build ;;
ensure)
	ensure
	print_env
	;;
run)
	ensure
	trap 'stop; exit 0' INT TERM
	say "kubectl is $K8S_BIN/kubectl; Ctrl-C stops the control plane"
	print_env
	while alive kube-apiserver; do sleep 2; done
	die "kube-apiserver exited; see $STATE/kube-apiserver.log"
	;;
stop) stop ;;
restart-node)
	[[ $NODE_MODE == real ]] || die "restart-node needs the real node (LETSGO_KUBE_NODE=real)"
	mkdir -p "$STATE"
	exec 9>"$STATE/.lock"
	flock 9
	alive kube-apiserver || die "the control plane is not running (scripts/kube.sh ensure)"
	restart_node
	;;
env) print_env ;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
