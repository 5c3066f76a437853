# shellcheck shell=bash
# The local control plane's real node, sourced by scripts/kube.sh: Debian's containerd and
# runc, the kubelet and kube-proxy of the pinned Kubernetes module, the CNI bridge, and the
# add-ons of tools/kube/node/addons.yaml (CoreDNS as kube-dns, local-path-provisioner as the
# default StorageClass, metrics-server, kube-network-policies), every one built from source
# once and cached by version, their images made on this machine.
#
# Addresses: the node's Pods live on the bridge letsgo0, 10.244.0.0/24; the bridge's own
# address, 10.244.0.1, is the node's address (the kubelet serves there, Pods reach the host
# there). The API server stays on 127.0.0.1; Pods reach it through the `kubernetes` Service,
# whose endpoint is a forwarder on 10.244.0.1. Nothing listens beyond loopback and the bridge.

CNI_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
LOCAL_PATH_VERSION=v0.0.30
METRICS_SERVER_VERSION=v0.9.0
NETWORK_POLICIES_VERSION=v0.8.0
CRICTL_VERSION=v1.37.0

REAL_NODE=letsgo-node
NODE_ROOT=${LETSGO_NODE_ROOT:-/var/lib/letsgo-node}
NODE_RUN=/run/letsgo-node
CONTAINERD_SOCK=$NODE_RUN/containerd.sock
BRIDGE=letsgo0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
DNS_IP=10.96.0.10
NODE_BIN=$CACHE/node-$K8S_VERSION
CNI_BIN=$CACHE/cni-plugins-$CNI_VERSION
ADDON_BIN=$CACHE/node-addons
IMAGE_DIR=$CACHE/images
# Images of the node itself, named for what they hold.
PAUSE_IMAGE=localhost/letsgo/pause:$K8S_VERSION
COREDNS_IMAGE=localhost/letsgo/coredns:$COREDNS_VERSION
LOCAL_PATH_IMAGE=localhost/letsgo/local-path-provisioner:$LOCAL_PATH_VERSION
METRICS_SERVER_IMAGE=localhost/letsgo/metrics-server:$METRICS_SERVER_VERSION
NETWORK_POLICIES_IMAGE=localhost/letsgo/kube-network-policies:$NETWORK_POLICIES_VERSION
HELPER_IMAGE=localhost/letsgo/busybox:bookworm
BUILDAH=(buildah --storage-driver vfs)

# ------------------------------------------------------------------ building

# Runs `go` with its output in a fresh directory under the cache; moved into place whole.
go_into() { # DIR WHAT COMMAND ARGS... (run as COMMAND OUT-DIR ARGS...)
	local dir=$1 what=$2 cmd=$3 tmp t0=$SECONDS
	shift 3
	[[ -f $dir/.complete ]] && return 0
	say "building $what into $dir"
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.build.XXXXXX") && chmod 755 "$tmp"
	"$cmd" "$tmp" "$@" || { rm -rf "$tmp"; die "building $what failed"; }
	touch "$tmp/.complete"
	rm -rf "$dir"
	mkdir -p "$(dirname "$dir")"
	mv "$tmp" "$dir"
	say "built $what in $((SECONDS - t0))s"
}

go_build_node() { # OUT
	(cd "$MODULE" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -p "${LETSGO_KUBE_BUILD_JOBS:-2}" -trimpath \
		-ldflags "$(version_ldflags)" -o "$1/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy &&
		CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$1/pause" ./pause)
}

go_install() { # OUT PACKAGE@VERSION...
	local out=$1
	shift
	CGO_ENABLED=0 GOBIN=$out GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" "$@"
}

build_node() {
	go_into "$NODE_BIN" "kubelet and kube-proxy $K8S_VERSION" go_build_node
	local cni=github.com/containernetworking/plugins/plugins
	go_into "$CNI_BIN" "CNI plugins $CNI_VERSION" go_install "$cni/main/bridge@$CNI_VERSION" \
		"$cni/main/loopback@$CNI_VERSION" "$cni/ipam/host-local@$CNI_VERSION" "$cni/meta/portmap@$CNI_VERSION"
	go_into "$ADDON_BIN/coredns-$COREDNS_VERSION" "CoreDNS $COREDNS_VERSION" \
		go_install "github.com/coredns/coredns@$COREDNS_VERSION"
	go_into "$ADDON_BIN/local-path-provisioner-$LOCAL_PATH_VERSION" "local-path-provisioner $LOCAL_PATH_VERSION" \
		go_install "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
	# v0.9.x asks for a newer Go than Debian's machines here have (1.26.10).
	go_into "$ADDON_BIN/metrics-server-$METRICS_SERVER_VERSION" "metrics-server $METRICS_SERVER_VERSION" \
		go_install "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
	go_into "$ADDON_BIN/kube-network-policies-$NETWORK_POLICIES_VERSION" "kube-network-policies $NETWORK_POLICIES_VERSION" \
		go_install "sigs.k8s.io/kube-network-policies/cmd@$NETWORK_POLICIES_VERSION"
	go_into "$ADDON_BIN/crictl-$CRICTL_VERSION" "crictl $CRICTL_VERSION" \
		go_install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
}

# ------------------------------------------------------------------ packages

node_packages() {
	local pkgs=() tool
	for tool in containerd:containerd runc:runc iptables:iptables nft:nftables conntrack:conntrack \
		socat:socat buildah:buildah mmdebstrap:mmdebstrap ip:iproute2; do
		command -v "${tool%%:*}" >/dev/null || pkgs+=("${tool#*:}")
	done
	((${#pkgs[@]})) || return 0
	((EUID == 0)) || die "the node needs ${pkgs[*]}: install them (apt-get install ${pkgs[*]})"
	say "installing ${pkgs[*]} (apt-get)"
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null ||
		die "apt-get install ${pkgs[*]} failed: install them by hand"
}

# What the kernel must offer; each missing part is named.
node_kernel() {
	((EUID == 0)) || die "the real node runs containers: run as root (or LETSGO_KUBE_NODE=kwok for the fake node only)"
	grep -qw overlay /proc/filesystems || die "the kernel lacks overlayfs (containerd's snapshotter): load the overlay module"
	[[ -d /proc/sys/net/bridge ]] || die "bridge netfilter is missing (/proc/sys/net/bridge): load br_netfilter"
	[[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no memory cgroup under /sys/fs/cgroup"
	echo 1 >/proc/sys/net/ipv4/ip_forward || die "cannot enable net.ipv4.ip_forward"
	echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables || die "cannot enable net.bridge.bridge-nf-call-iptables"
}

# ------------------------------------------------------------------ images

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# An image holding only static binaries (from scratch) under /usr/local/bin, written as an OCI
# archive once; IMAGE's tag carries the version, so the archive's name does too.
scratch_image() { # IMAGE ENTRYPOINT BINARY...
	local image=$1 entrypoint=$2 archive ctr
	shift 2
	archive=$IMAGE_DIR/$(printf '%s' "${image#localhost/}" | tr '/:' '__').oci.tar
	[[ -s $archive ]] && return 0
	mkdir -p "$IMAGE_DIR"
	ctr=$("${BUILDAH[@]}" from scratch)
	"${BUILDAH[@]}" copy --quiet --chmod 0755 "$ctr" "$@" /usr/local/bin/ >/dev/null
	"${BUILDAH[@]}" config --entrypoint "[\"/usr/local/bin/$entrypoint\"]" --user 65532:65532 "$ctr"
	"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
	"${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.tmp:$image" >/dev/null
	"${BUILDAH[@]}" rmi "$image" >/dev/null 2>&1 || true
	mv "$archive.tmp" "$archive"
	say "image $image ($(du -h "$archive" | cut -f1))"
}

# An image from a Debian root filesystem made by mmdebstrap with PACKAGES.
debian_image() { # IMAGE ENTRYPOINT PACKAGES [BINARY...]
	local image=$1 entrypoint=$2 packages=$3 archive ctr rootfs sources
	shift 3
	archive=$IMAGE_DIR/$(printf '%s' "${image#localhost/}" | tr '/:' '__').oci.tar
	[[ -s $archive ]] && return 0
	mkdir -p "$IMAGE_DIR"
	sources=$(apt_sources) || die "mmdebstrap needs apt's sources"
	rootfs=$(mktemp "$CACHE/.rootfs.XXXXXX.tar")
	mmdebstrap --quiet --variant=minbase --include="$packages" \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
		bookworm "$rootfs" "$sources" >>"$STATE/images.log" 2>&1 ||
		{ rm -f "$rootfs"; die "mmdebstrap for $image failed; see $STATE/images.log"; }
	ctr=$("${BUILDAH[@]}" from scratch)
	"${BUILDAH[@]}" add --quiet "$ctr" "$rootfs" / >/dev/null
	rm -f "$rootfs"
	if (($#)); then "${BUILDAH[@]}" copy --quiet --chmod 0755 "$ctr" "$@" /usr/local/bin/ >/dev/null; fi
	"${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--entrypoint "[\"$entrypoint\"]" "$ctr"
	"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
	"${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.tmp:$image" >/dev/null
	"${BUILDAH[@]}" rmi "$image" >/dev/null 2>&1 || true
	mv "$archive.tmp" "$archive"
	say "image $image ($(du -h "$archive" | cut -f1))"
}


# Debian's static busybox: the shell the volume provisioner's helper Pods run.
busybox_image() {
	local archive=$IMAGE_DIR/letsgo_busybox_bookworm.oci.tar dir ctr applet
	[[ -s $archive ]] && return 0
	dir=$(mktemp -d)
	(cd "$dir" && apt-get download -q busybox-static >/dev/null 2>&1) || { rm -rf "$dir"; die "apt-get download busybox-static failed"; }
	dpkg-deb -x "$dir"/busybox-static_*.deb "$dir/root"
	mkdir -p "$dir/root/tmp"
	for applet in $("$dir/root/bin/busybox" --list); do
		[[ -e $dir/root/bin/$applet ]] || ln -s busybox "$dir/root/bin/$applet"
	done
	rm -rf "$dir/root/usr/share"
	mkdir -p "$IMAGE_DIR"
	ctr=$("${BUILDAH[@]}" from scratch)
	"${BUILDAH[@]}" copy --quiet "$ctr" "$dir/root/" / >/dev/null
	"${BUILDAH[@]}" config --env PATH=/bin --cmd '["/bin/sh"]' "$ctr"
	"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$HELPER_IMAGE" >/dev/null
	"${BUILDAH[@]}" push --quiet "$HELPER_IMAGE" "oci-archive:$archive.tmp:$HELPER_IMAGE" >/dev/null
	"${BUILDAH[@]}" rmi "$HELPER_IMAGE" >/dev/null 2>&1 || true
	rm -rf "$dir"
	mv "$archive.tmp" "$archive"
	say "image $HELPER_IMAGE ($(du -h "$archive" | cut -f1))"
}

node_images() {
	scratch_image "$PAUSE_IMAGE" pause "$NODE_BIN/pause"
	scratch_image "$COREDNS_IMAGE" coredns "$ADDON_BIN/coredns-$COREDNS_VERSION/coredns"
	scratch_image "$LOCAL_PATH_IMAGE" local-path-provisioner \
		"$ADDON_BIN/local-path-provisioner-$LOCAL_PATH_VERSION/local-path-provisioner"
	scratch_image "$METRICS_SERVER_IMAGE" metrics-server "$ADDON_BIN/metrics-server-$METRICS_SERVER_VERSION/metrics-server"
	# knftables runs Debian's nft; the binary is named cmd by `go install .../cmd`.
	debian_image "$NETWORK_POLICIES_IMAGE" /usr/local/bin/cmd nftables \
		"$ADDON_BIN/kube-network-policies-$NETWORK_POLICIES_VERSION/cmd"
	busybox_image
}

ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# Every archive in the image cache whose image containerd lacks.
load_images() {
	local have archive name
	have=$(ctr_ images ls -q)
	for archive in "$IMAGE_DIR"/*.oci.tar; do
		[[ -e $archive ]] || continue
		name=$(tar -xOf "$archive" index.json 2>/dev/null | grep -o '"org.opencontainers.image.ref.name":"[^"]*"' | head -n1 | cut -d'"' -f4)
		[[ -n $name ]] && grep -qxF "$name" <<<"$have" && continue
		ctr_ images import --no-unpack=false "$archive" >/dev/null || die "importing $archive into containerd failed"
		say "loaded ${name:-$archive}"
	done
}

# ------------------------------------------------------------------ node certificates

node_certificates() {
	local pki=$STATE/pki
	[[ -f $pki/.node-complete ]] && return 0
	(
		cd "$pki"
		client() { # NAME SUBJECT
			openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
			printf 'extendedKeyUsage=clientAuth\n' >"$1.ext"
			openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
				-out "$1.crt" -days 3650 -extfile "$1.ext" 2>/dev/null
		}
		client kubelet "/O=system:nodes/CN=system:node:$REAL_NODE"
		client kube-proxy "/CN=system:kube-proxy"
		client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
		openssl req -newkey rsa:2048 -nodes -keyout kubelet-serving.key -out kubelet-serving.csr \
			-subj "/CN=$REAL_NODE" 2>/dev/null
		printf 'subjectAltName=IP:%s,IP:127.0.0.1,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$REAL_NODE" >kubelet-serving.ext
		openssl x509 -req -in kubelet-serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out kubelet-serving.crt -days 3650 -extfile kubelet-serving.ext 2>/dev/null
		# The aggregation layer's own CA: the API server proves itself to metrics-server with it.
		openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt \
			-days 3650 -subj "/CN=letsgo-front-proxy-ca" 2>/dev/null
		openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr \
			-subj "/CN=front-proxy-client" 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >front-proxy-client.ext
		openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key \
			-CAcreateserial -out front-proxy-client.crt -days 3650 -extfile front-proxy-client.ext 2>/dev/null
	) || die "making the node's certificates in $pki failed"
	local who
	for who in kubelet kube-proxy; do
		"$K8S_BIN/kubectl" config set-cluster local --server="https://127.0.0.1:$PORT" \
			--certificate-authority="$pki/ca.crt" --embed-certs=true --kubeconfig="$STATE/$who.kubeconfig" >/dev/null
		"$K8S_BIN/kubectl" config set-credentials "$who" --client-certificate="$pki/$who.crt" \
			--client-key="$pki/$who.key" --embed-certs=true --kubeconfig="$STATE/$who.kubeconfig" >/dev/null
		"$K8S_BIN/kubectl" config set-context local --cluster=local --user="$who" \
			--kubeconfig="$STATE/$who.kubeconfig" >/dev/null
		"$K8S_BIN/kubectl" config use-context local --kubeconfig="$STATE/$who.kubeconfig" >/dev/null
	done
	touch "$pki/.node-complete"
}

# The API server's flags the real node needs (the kubelet's address, aggregation for
# metrics-server, the `kubernetes` Service's endpoint on the bridge).
apiserver_node_flags() {
	local pki=$STATE/pki
	printf '%s\n' --advertise-address="$NODE_IP" \
		--kubelet-preferred-address-types=InternalIP \
		--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
		--requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
		--requestheader-allowed-names=front-proxy-client \
		--requestheader-username-headers=X-Remote-User \
		--requestheader-group-headers=X-Remote-Group \
		--requestheader-extra-headers-prefix=X-Remote-Extra- \
		--proxy-client-cert-file="$pki/front-proxy-client.crt" \
		--proxy-client-key-file="$pki/front-proxy-client.key" \
		--enable-aggregator-routing=true
}

# ------------------------------------------------------------------ processes

# The Pods' network namespaces live in /run/netns. iproute2's `ip netns add` (the image tests
# use it) binds that directory onto itself the first time, when it is no mount point yet: the
# namespaces of the Pods running then are hidden under the bind, containerd cannot remove them
# (EBUSY), and their Pods stay Terminating for ever, holding their CPU requests (seen on a fresh
# machine: the next tests' Pods found no CPU). Made a shared mount point here, before any Pod
# runs, as `ip netns` would make it, so nothing binds it again.
netns_mount() {
	mkdir -p /run/netns
	mountpoint -q /run/netns || mount --bind /run/netns /run/netns
	mount --make-shared /run/netns
}

node_bridge() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge || die "cannot make the bridge $BRIDGE (ip link add)"
	fi
	# Read whole first: grep -q stopping early would fail the pipeline (pipefail, SIGPIPE).
	local addresses
	addresses=$(ip -o -4 addr show dev "$BRIDGE")
	[[ $addresses == *"inet $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
}

start_apiserver_forwarder() {
	alive apiserver-forwarder && return 0
	# Named for what it is (argv[0]), so the pidfile checks recognise it.
	spawn apiserver-forwarder bash -c 'exec -a apiserver-forwarder socat "$@"' socat "TCP-LISTEN:$PORT,bind=$NODE_IP,reuseaddr,fork" "TCP:127.0.0.1:$PORT"
	wait_for apiserver-forwarder bash -c ": <>/dev/tcp/$NODE_IP/$PORT"
}

start_containerd() {
	alive containerd && return 0
	mkdir -p "$NODE_ROOT/containerd" "$NODE_RUN" "$STATE/cni"
	cat >"$STATE/containerd.toml" <<-EOF
		version = 2
		root = "$NODE_ROOT/containerd"
		state = "$NODE_RUN/containerd"
		disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
		[grpc]
		  address = "$CONTAINERD_SOCK"
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$NODE_ROOT/opt"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  # No process here may lower its oom_score_adj (the sandbox lacks CAP_SYS_RESOURCE).
		  restrict_oom_score_adj = true
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "$CNI_BIN"
		    conf_dir = "$STATE/cni"
	EOF
	cat >"$STATE/cni/10-letsgo.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "letsgo",
		  "plugins": [
		    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "hairpinMode": true,
		     "ipam": {"type": "host-local", "dataDir": "$NODE_RUN/ipam",
		              "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
		              "routes": [{"dst": "0.0.0.0/0"}]}},
		    {"type": "portmap", "capabilities": {"portMappings": true}}
		  ]
		}
	EOF
	spawn containerd containerd --config "$STATE/containerd.toml"
	wait_for containerd ctr_ version
}

start_kubelet() {
	alive kubelet && return 0
	local pki=$STATE/pki
	mkdir -p "$NODE_ROOT/kubelet"
	cat >"$STATE/kubelet.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: $NODE_IP
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: $pki/ca.crt}
		authorization: {mode: Webhook}
		tlsCertFile: $pki/kubelet-serving.crt
		tlsPrivateKeyFile: $pki/kubelet-serving.key
		cgroupDriver: cgroupfs
		failCgroupV1: false
		failSwapOn: false
		containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
		clusterDNS: [$DNS_IP]
		clusterDomain: cluster.local
		# cadvisor finds no filesystem figures for this machine's root device: evict on memory only,
		# and leave image garbage collection to 'make down'.
		evictionHard: {memory.available: 200Mi}
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		serializeImagePulls: false
		maxPods: 110
		shutdownGracePeriod: 0s
	EOF
	spawn kubelet "$NODE_BIN/kubelet" --config="$STATE/kubelet.yaml" \
		--kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$REAL_NODE" \
		--node-ip="$NODE_IP" --root-dir="$NODE_ROOT/kubelet" --v=1
	wait_for kubelet kubectl_ get node "$REAL_NODE"
}

start_kube_proxy() {
	alive kube-proxy && return 0
	cat >"$STATE/kube-proxy.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
		mode: iptables
		clusterCIDR: $CLUSTER_CIDR
		hostnameOverride: $REAL_NODE
		bindAddress: 127.0.0.1
		healthzBindAddress: 127.0.0.1:10256
		metricsBindAddress: 127.0.0.1:10249
		nodePortAddresses: [127.0.0.0/8]
		conntrack: {maxPerCore: 0, min: 0}
	EOF
	spawn kube-proxy "$NODE_BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
	# shellcheck disable=SC2016
	wait_for kube-proxy bash -c 'exec 3<>/dev/tcp/127.0.0.1/10256 && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && grep -q "200 OK" <&3'
}

# kube-network-policies hands each new connection between Pods to its controller through an
# nfqueue, with an nftables `queue` rule. Kernels built without CONFIG_NFT_QUEUE (this kind of
# machine's) refuse that rule, and no policy would be enforced; iptables' NFQUEUE target (xt,
# present there) then hands the same connections to the same queue. The controller's verdicts
# are the same either way: it decides from the packet's Pods and the policies, not the rule.
QUEUE_RULE=(FORWARD -s "$POD_SUBNET" -d "$POD_SUBNET" -m conntrack --ctstate NEW
	-m comment --comment "letsgo: new connections between Pods to kube-network-policies"
	-j NFQUEUE --queue-num 100 --queue-bypass)

nft_has_queue() {
	printf 'table inet letsgo-probe {\n chain c {\n  type filter hook forward priority 0;\n  queue num 100 bypass\n }\n}\n' |
		nft -c -f - >/dev/null 2>&1
}

network_policy_queue() {
	nft_has_queue && return 0
	iptables -C "${QUEUE_RULE[@]}" 2>/dev/null && return 0
	iptables -I "${QUEUE_RULE[0]}" 1 "${QUEUE_RULE[@]:1}" ||
		die "cannot add the NFQUEUE rule NetworkPolicies need (iptables -I ${QUEUE_RULE[*]}): the kernel needs CONFIG_NETFILTER_XT_TARGET_NFQUEUE or CONFIG_NFT_QUEUE"
	say "this kernel has no nftables queue expression: new connections between Pods go to kube-network-policies by iptables' NFQUEUE"
}

apply_addons() {
	sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g; s|@LOCAL_PATH_IMAGE@|$LOCAL_PATH_IMAGE|g" \
		-e "s|@METRICS_SERVER_IMAGE@|$METRICS_SERVER_IMAGE|g; s|@NETWORK_POLICIES_IMAGE@|$NETWORK_POLICIES_IMAGE|g" \
		-e "s|@HELPER_IMAGE@|$HELPER_IMAGE|g; s|@DNS_IP@|$DNS_IP|g; s|@NODE@|$REAL_NODE|g" \
		-e "s|@VOLUME_DIR@|$NODE_ROOT/volumes|g" "$MODULE/node/addons.yaml" |
		kubectl_ apply --server-side --force-conflicts --field-manager=letsgo-kube -f - >/dev/null ||
		die "applying the node's add-ons failed"
	local what
	for what in "deployment/coredns -n kube-system" "deployment/local-path-provisioner -n local-path-storage" \
		"deployment/metrics-server -n kube-system" "daemonset/kube-network-policies -n kube-system"; do
		# shellcheck disable=SC2086 # the words of $what are the arguments
		wait_for kubelet kubectl_ rollout status $what --timeout=2s
	done
	wait_for kubelet kubectl_ wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=2s
}

# What a boot leaves of the node: its disks (images, the kubelet's directory, the volumes) and
# nothing of its processes or /run. Whatever an earlier run left is killed (the Pods' processes,
# containerd's shims) and what a reboot empties is removed: containerd's task state, the
# addresses the CNI handed out, the Pods' network namespaces and the kubelet's volume mounts.
# containerd then finds every sandbox dead and the kubelet starts each Pod again, with a new
# address. Only while neither containerd nor the kubelet runs.
node_boot() {
	local cgroup pid mount
	for cgroup in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d $cgroup ]] || continue
		for pid in $(find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null || true
		done
	done
	for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
		kill -KILL "$pid" 2>/dev/null || true
	done
	for mount in $(awk -v root="$NODE_ROOT/kubelet/pods" -v run="$NODE_RUN" '$2 ~ "^(" root "|" run ")" {print $2}' /proc/mounts | sort -r); do
		umount -l "$mount" 2>/dev/null || true
	done
	clear_pod_netns
	rm -rf "$NODE_RUN/containerd" "$NODE_RUN/ipam"
}

# The Pods' network namespace files (the CNI's `cni-*` in /run/netns): unmounted and removed.
# One mounted before /run/netns was bound onto itself (iproute2's `ip netns add` does that, and
# the image tests use it) is hidden under that bind: umount cannot reach it, unlinking it fails
# (EBUSY), and containerd, failing the same way, would report its sandbox's status as an error
# every second for ever. Moving the bind aside for a moment reaches them; /run here may be a
# disk that keeps them across a machine's restart.
clear_pod_netns() {
	local aside left
	# A machine that never ran a Pod has no /run/netns (and find's failure would end the script).
	[[ -d /run/netns ]] || return 0
	if mountpoint -q /run/netns; then
		aside=$(mktemp -d)
		if mount --move /run/netns "$aside"; then
			unmount_pod_netns
			mount --move "$aside" /run/netns
		fi
		rmdir "$aside" 2>/dev/null || true
	fi
	unmount_pod_netns
	left=$(find /run/netns -maxdepth 1 -name 'cni-*' 2>/dev/null | wc -l)
	[[ $left == 0 ]] || say "$left network namespace files of earlier Pods could not be removed from /run/netns"
}

unmount_pod_netns() {
	local netns
	for netns in /run/netns/cni-*; do
		[[ -e $netns ]] || continue
		while grep -q " $netns " /proc/mounts && umount -l "$netns" 2>/dev/null; do :; done
		rm -f "$netns" 2>/dev/null || true
	done
}

# A reboot of the node, as far as its processes go: the kubelet, kube-proxy, containerd, the
# API server's forwarder and every container die at once (SIGKILL, no graceful shutdown: a
# power cut, a kernel panic), then the node boots and they start again. The Pods come back by
# themselves.
restart_node() {
	local name pid
	for name in kubelet kube-proxy containerd apiserver-forwarder; do
		pid=$(pid_of "$name") || continue
		alive "$name" && kill -KILL "$pid" 2>/dev/null
		rm -f "$STATE/$name.pid"
	done
	node_boot
	say "node $REAL_NODE: every process killed, /run's state gone; starting again"
	netns_mount
	node_bridge
	start_apiserver_forwarder
	start_containerd
	start_kubelet
	start_kube_proxy
	network_policy_queue
	wait_for kubelet kubectl_ wait --for=condition=Ready "node/$REAL_NODE" --timeout=2s
}

start_node() {
	node_packages
	node_kernel
	build_node
	node_images
	node_certificates
	node_bridge
	start_apiserver_forwarder
	# A node that went down without `make down` (a killed machine, a crash) boots afresh.
	if ! alive containerd && ! alive kubelet; then node_boot; fi
	netns_mount
	start_containerd
	load_images
	start_kubelet
	start_kube_proxy
	network_policy_queue
	wait_for kubelet kubectl_ wait --for=condition=Ready "node/$REAL_NODE" --timeout=2s
	apply_addons
}

# Stops the node and removes what its Pods left: sandboxes (through the CRI, so CNI releases
# their addresses), mounts, kube-proxy's rules. Images stay in containerd for the next start.
stop_node() {
	stop_together kubelet
	if [[ -S $CONTAINERD_SOCK ]] && alive containerd; then
		"$ADDON_BIN/crictl-$CRICTL_VERSION/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" rmp -fa >/dev/null 2>&1 || true
	fi
	stop_together kube-proxy containerd apiserver-forwarder
	[[ -x $NODE_BIN/kube-proxy ]] && "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
	while iptables -D "${QUEUE_RULE[@]}" 2>/dev/null; do :; done
	clear_pod_netns
	local mount
	for mount in $(awk -v root="$NODE_ROOT/kubelet" -v run="$NODE_RUN" '$2 ~ "^(" root "|" run ")" {print $2}' /proc/mounts | sort -r); do
		umount -l "$mount" 2>/dev/null || true
	done
	# The cluster's data goes with the control plane's: its Pods and volumes go too.
	rm -rf "$NODE_ROOT/kubelet" "$NODE_ROOT/volumes" "$NODE_RUN/ipam"
	ip link del "$BRIDGE" 2>/dev/null || true
}
