#!/usr/bin/env bash
# Every image command Tilt runs (see the Tiltfile) lives here, so that a test can run exactly what
# Tilt runs: the operator's image for the Tiltfile's custom_build, the six service images and the
# example Store for its `shop-images` resource. The builder and the loader are settings; the
# Tiltfile picks them from the kube context unless told otherwise.
#
#   scripts/tilt-images.sh operator          build $EXPECTED_REF (set by Tilt's custom_build: the
#                                            chart's operator image at a tag of Tilt's) and load it
#   scripts/tilt-images.sh shop SOURCE...    build and load the six service images at a tag hashed
#                                            from the SOURCE files (the Tiltfile's `sources`), then
#                                            apply examples/store.yaml at that tag. The same sources
#                                            give the same tag, so nothing rolls; an edit rolls the shop
#   scripts/tilt-images.sh tag SOURCE...     print that tag
#   scripts/tilt-images.sh print-store TAG   print the Store `shop` applies at TAG
#   scripts/tilt-images.sh middleware        (containerd loader) build the middleware's images
#                                            offline, load them, print them as the chart's values
#                                            (`middlewareImages.KEY=IMAGE`, one a line)
#   scripts/tilt-images.sh settings          check the settings, print them (`NAME=VALUE`)
#
# Settings (environment; the Tiltfile passes its own):
#   LETSGO_BUILDER (docker)    docker or podman: `build --target NAME` of the Dockerfile (the Rust
#                              build runs in the builder image, which is pulled);
#                              buildah: scripts/images.sh (Debian bases made from Debian's packages,
#                              the binaries built here by cargo, no registry reached)
#   LETSGO_LOADER (kind)       how the cluster gets the images:
#                              kind, k3d, minikube  their own import into the cluster's nodes
#                              containerd           imported into the containerd at
#                                                   LETSGO_CONTAINERD_SOCKET (scripts/kube.sh's node)
#                              registry             pushed to LETSGO_REGISTRY, pulled by the cluster
#                              none                 the cluster runs docker's own images
#                                                   (docker-desktop, rancher-desktop with dockerd)
#   LETSGO_REGISTRY (localhost/letsgo)  the images are REGISTRY/letsgo-NAME:TAG; with the registry
#                              loader it must be given (a registry the cluster pulls from)
#   LETSGO_KIND_CLUSTER (kind), LETSGO_K3D_CLUSTER (k3s-default),
#   LETSGO_MINIKUBE_PROFILE (minikube)   which cluster the loader imports into
#   LETSGO_CONTAINERD_SOCKET (/run/letsgo-node/containerd.sock)
#   LETSGO_TILT_NAMESPACE (default)      the Store's namespace
#   KUBECTL (kubectl)
#
# Runs with macOS's bash 3.2 and BSD tools: no sed, no GNU-only options, no bash 4 features.
# The buildah builder needs Linux (scripts/images.sh does).
set -euo pipefail

cd "$(dirname "$0")/.."

BUILDER=${LETSGO_BUILDER:-docker}
LOADER=${LETSGO_LOADER:-kind}
REGISTRY=${LETSGO_REGISTRY:-localhost/letsgo}
KIND_CLUSTER=${LETSGO_KIND_CLUSTER:-kind}
K3D_CLUSTER=${LETSGO_K3D_CLUSTER:-k3s-default}
MINIKUBE_PROFILE=${LETSGO_MINIKUBE_PROFILE:-minikube}
SOCKET=${LETSGO_CONTAINERD_SOCKET:-/run/letsgo-node/containerd.sock}
NAMESPACE=${LETSGO_TILT_NAMESPACE:-default}
KUBECTL=${KUBECTL:-kubectl}
SERVICES="user product cart order payment gateway"
# scripts/images.sh names what it builds by tag; the buildah builder builds every image under this
# one tag and gives it its real name when loading, so a day of edits leaves one archive per image
# in its cache rather than one per edit.
STAGING_TAG=tilt-build

say() { printf 'tilt-images: %s\n' "$*" >&2; }
die() {
	printf 'tilt-images: ERROR: %s\n' "$*" >&2
	exit 1
}

check_settings() {
	case $BUILDER in
	docker | podman | buildah) ;;
	*) die "LETSGO_BUILDER=$BUILDER is not a builder: docker, podman or buildah" ;;
	esac
	case $LOADER in
	kind | k3d | minikube | containerd | registry | none) ;;
	*) die "LETSGO_LOADER=$LOADER is not a loader: kind, k3d, minikube, containerd, registry or none" ;;
	esac
	if [[ $LOADER == registry && -z ${LETSGO_REGISTRY:-} ]]; then
		die "LETSGO_LOADER=registry pushes to LETSGO_REGISTRY, which is not set (e.g. localhost:5001/letsgo, a registry the cluster pulls from)"
	fi
	if [[ $LOADER == none && $BUILDER != docker ]]; then
		die "LETSGO_LOADER=none leaves the images in the builder's store, which only a cluster on docker's daemon reads (docker-desktop, rancher-desktop with dockerd): use LETSGO_BUILDER=docker, or a loader"
	fi
}

# TOOL HOW-TO-GET-IT: stops before any build when a tool of the chosen settings is missing.
need() {
	command -v "$1" >/dev/null 2>&1 ||
		die "$1 not found, needed by LETSGO_BUILDER=$BUILDER LETSGO_LOADER=$LOADER: $2"
}

need_tools() {
	case $BUILDER in
	docker) need docker "install Docker (https://docs.docker.com/get-docker/), or set LETSGO_BUILDER" ;;
	podman) need podman "install podman (https://podman.io/docs/installation), or set LETSGO_BUILDER" ;;
	buildah) ;; # scripts/images.sh installs buildah, mmdebstrap and runc itself
	esac
	case $LOADER in
	kind) need kind "install kind (https://kind.sigs.k8s.io), or set LETSGO_LOADER" ;;
	k3d) need k3d "install k3d (https://k3d.io), or set LETSGO_LOADER" ;;
	minikube) need minikube "install minikube (https://minikube.sigs.k8s.io), or set LETSGO_LOADER" ;;
	containerd)
		need ctr "install containerd, which ships ctr (apt-get install containerd)"
		[[ -S $SOCKET ]] ||
			die "LETSGO_CONTAINERD_SOCKET=$SOCKET is not a socket: is the node's containerd running? (scripts/kube.sh ensure)"
		;;
	registry | none) ;;
	esac
}

need_kubectl() {
	command -v "$KUBECTL" >/dev/null 2>&1 ||
		die "KUBECTL=$KUBECTL not found: install kubectl (https://kubernetes.io/docs/tasks/tools/) or set KUBECTL"
}

ctr_() { ctr --address "$SOCKET" --namespace k8s.io "$@"; }

# Archives and lists on their way, removed when the script ends.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/letsgo-tilt.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# ARCHIVE: a docker-archive tarball imported by the loader.
load_archive() {
	case $LOADER in
	kind) kind load image-archive "$1" --name "$KIND_CLUSTER" >&2 ;;
	k3d) k3d image import "$1" --cluster "$K3D_CLUSTER" >&2 ;;
	minikube) minikube image load "$1" --profile "$MINIKUBE_PROFILE" >&2 ;;
	containerd) ctr_ images import "$1" >&2 ;;
	esac
}

# IMAGE: docker's or podman's image handed to the cluster.
load_from_cli() {
	case $BUILDER/$LOADER in
	*/none) ;;
	*/registry) "$BUILDER" push "$1" >&2 ;;
	docker/kind) kind load docker-image "$1" --name "$KIND_CLUSTER" >&2 ;;
	docker/k3d) k3d image import "$1" --cluster "$K3D_CLUSTER" >&2 ;;
	docker/minikube) minikube image load "$1" --profile "$MINIKUBE_PROFILE" >&2 ;;
	*)
		if [[ $BUILDER == podman ]]; then
			podman save --format docker-archive -o "$SCRATCH/image.tar" "$1" >&2
		else
			docker save -o "$SCRATCH/image.tar" "$1" >&2
		fi
		load_archive "$SCRATCH/image.tar"
		rm -f "$SCRATCH/image.tar"
		;;
	esac
}

# REGISTRY TAG NAME...: the Dockerfile's targets NAME built as REGISTRY/letsgo-NAME:TAG and
# handed to the cluster.
deliver() {
	local registry=$1 tag=$2 name image
	shift 2
	case $BUILDER in
	docker | podman)
		for name in "$@"; do
			image=$registry/letsgo-$name:$tag
			say "building $image ($BUILDER)"
			"$BUILDER" build --target "$name" -t "$image" . >&2
			say "loading $image ($LOADER)"
			load_from_cli "$image"
		done
		;;
	buildah)
		# Tilt may build the operator and the shop at once: the staging names and the node's
		# imports are shared, so one run at a time (buildah is Linux's, and so is flock).
		mkdir -p "${LETSGO_IMAGE_CACHE:-/var/cache/letsgo-images}"
		exec 8>"${LETSGO_IMAGE_CACHE:-/var/cache/letsgo-images}/.tilt.lock"
		flock 8
		say "building $* with scripts/images.sh (buildah) as $registry/letsgo-NAME:$STAGING_TAG"
		LETSGO_IMAGE_REGISTRY=$registry LETSGO_IMAGE_TAG=$STAGING_TAG scripts/images.sh shop "$@" >&2
		if [[ $LOADER == containerd ]]; then
			# images.sh imports what the node lacks (the middleware's images too); the node
			# then names each image as the manifests do.
			scripts/images.sh load "$SOCKET" >/dev/null
		fi
		for name in "$@"; do
			image=$registry/letsgo-$name:$tag
			say "loading $image ($LOADER)"
			case $LOADER in
			containerd) ctr_ images tag --force "$registry/letsgo-$name:$STAGING_TAG" "$image" >/dev/null ;;
			registry) scripts/images.sh buildah push "$registry/letsgo-$name:$STAGING_TAG" "docker://$image" >&2 ;;
			*)
				scripts/images.sh buildah push --quiet "$registry/letsgo-$name:$STAGING_TAG" \
					"docker-archive:$SCRATCH/image.tar:$image" >&2
				load_archive "$SCRATCH/image.tar"
				rm -f "$SCRATCH/image.tar"
				;;
			esac
		done
		;;
	esac
}

# SOURCE...: `dev-` and 12 hex digits, a hash of the files' names and contents (tracked and new,
# not ignored). git hashes the contents: sha256sum is not on every machine.
tag_of() {
	(($#)) || die "no sources given: the Tiltfile passes its \`sources\`"
	git ls-files --cached --others --exclude-standard -- "$@" | LC_ALL=C sort -u |
		while IFS= read -r file; do
			# A tracked file deleted in the working tree is not part of the build.
			if [[ -f $file ]]; then printf '%s\n' "$file"; fi
		done >"$SCRATCH/files"
	[[ -s $SCRATCH/files ]] || die "no files under the sources $*"
	git hash-object --stdin-paths <"$SCRATCH/files" >"$SCRATCH/blobs"
	printf 'dev-%s\n' "$(paste -d ' ' "$SCRATCH/blobs" "$SCRATCH/files" | git hash-object --stdin | cut -c1-12)"
}

# TAG: examples/store.yaml with the images at REGISTRY and TAG. Loaded images are never pulled
# (Never: a missing one shows as ErrImageNeverPull instead of a pull from somewhere else); a
# registry's are pulled once per tag (IfNotPresent: the tags are content hashes).
print_store() {
	local tag=${1:?usage: tilt-images.sh print-store TAG} policy=Never
	if [[ $LOADER == registry ]]; then policy=IfNotPresent; fi
	awk -v registry="$REGISTRY" -v tag="$tag" -v policy="$policy" '
		/^  image:[[:space:]]*$/ { image = 1; print; next }
		/^  [^ ]/ { image = 0 }
		image && /^    registry:/ { print "    registry: " registry; set_registry = 1; next }
		image && /^    tag:/ { print "    tag: \"" tag "\""; print "    pullPolicy: " policy; set_tag = 1; next }
		image && /^    pullPolicy:/ { next }
		{ print }
		END {
			if (!set_registry || !set_tag) {
				print "tilt-images: ERROR: examples/store.yaml has no spec.image.registry or tag line to set" > "/dev/stderr"
				exit 1
			}
		}' examples/store.yaml
}

shop() {
	local tag
	tag=$(tag_of "$@")
	need_tools
	need_kubectl
	say "tag $tag"
	# shellcheck disable=SC2086 # the names, one a word
	deliver "$REGISTRY" "$tag" $SERVICES
	print_store "$tag" >"$SCRATCH/store.yaml"
	"$KUBECTL" apply -n "$NAMESPACE" -f "$SCRATCH/store.yaml" >&2
	printf '%s\n' "$tag"
}

# Tilt's custom_build: EXPECTED_REF is the chart's operator image (REGISTRY/letsgo-operator) at
# a tag Tilt chose; the image must exist under that name when the command ends.
operator() {
	local ref=${EXPECTED_REF:-} repository tag
	[[ -n $ref ]] ||
		die "EXPECTED_REF is not set: Tilt's custom_build sets it (by hand: EXPECTED_REF=localhost/letsgo/letsgo-operator:TAG $0 operator)"
	repository=${ref%:*}
	tag=${ref##*:}
	[[ $repository == */letsgo-operator && $tag != */* ]] ||
		die "EXPECTED_REF=$ref is not REGISTRY/letsgo-operator:TAG"
	need_tools
	deliver "${repository%/letsgo-operator}" "$tag" operator
}

# The middleware's images for a cluster that reaches no public registry (the local node), as
# scripts/kube-up.sh gives them to the chart.
middleware() {
	local image archive key
	[[ $LOADER == containerd ]] ||
		die "the middleware's images are built offline for the local node (LETSGO_LOADER=containerd); other clusters pull the official ones"
	need_tools
	scripts/images.sh middleware >"$SCRATCH/middleware"
	scripts/images.sh load "$SOCKET" >/dev/null
	while read -r image archive; do
		case $image in
		*/debian-postgresql:*) key=postgres ;;
		*/debian-redis:*) key=redis ;;
		*/apache-kafka:*) key=kafka ;;
		*/etcd:*) key=etcd ;;
		*/debian-awscli:*) key=backup ;;
		*) die "scripts/images.sh middleware built $image ($archive), which no chart value names" ;;
		esac
		printf 'middlewareImages.%s=%s\n' "$key" "$image"
	done <"$SCRATCH/middleware"
}

check_settings
# ${1+"$@"}: bash 3.2 calls an empty "$@" unbound under set -u.
case ${1:-} in
operator) operator ;;
shop)
	shift
	shop ${1+"$@"}
	;;
tag)
	shift
	tag_of ${1+"$@"}
	;;
print-store)
	shift
	print_store ${1+"$@"}
	;;
middleware) middleware ;;
settings)
	need_tools
	printf '%s\n' "LETSGO_BUILDER=$BUILDER" "LETSGO_LOADER=$LOADER" "LETSGO_REGISTRY=$REGISTRY"
	;;
*)
	awk 'NR > 1 && /^set -euo/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
	exit 2
	;;
esac
