#!/usr/bin/env bash
# Container images built offline: no public registry, no Docker daemon. Debian bases are made
# from Debian's packages (mmdebstrap, with the sources apt already uses), each image is built
# from the repository's own Dockerfile or Containerfile by buildah (--pull=never, the base
# named by a build argument, no network during the build), and written as an OCI archive a
# node's containerd imports (`ctr -n k8s.io images import FILE`).
#
#   scripts/images.sh all            the shop's seven images and the middleware's five
#   scripts/images.sh shop [T...]    the shop's images from the Dockerfile (targets T, else all
#                                    seven): the binaries built here by cargo, then each
#                                    runtime target built with BINARIES=prebuilt
#   scripts/images.sh middleware     postgresql, redis, kafka, etcd and awscli:
#   scripts/images.sh postgresql     Debian's PostgreSQL 15 (localhost/letsgo/debian-postgresql:15)
#   scripts/images.sh redis          Debian's Redis (localhost/letsgo/debian-redis:7.0)
#   scripts/images.sh kafka          Apache Kafka on Debian's Java 17 (the version
#                                    scripts/middleware.sh installs)
#   scripts/images.sh etcd           etcd as scripts/kube.sh builds it from source
#   scripts/images.sh awscli         Debian's AWS CLI, the backups' S3 client
#   scripts/images.sh base [KEY]     a Debian base (runtime, java17, postgresql-15, redis, awscli)
#   scripts/images.sh load SOCKET    import into the containerd at SOCKET (namespace k8s.io)
#                                    every image built here that it lacks or holds otherwise
#   scripts/images.sh buildah ARGS   buildah on the images' store (the tests run them so)
#
# Each build prints one line per image, `IMAGE ARCHIVE`. An image is built again only when
# what it is made from changes (its Containerfile and entrypoint, its binary or jars, its base);
# a second run finds the archive and only prints it.
#
# Settings (environment, defaults in parentheses):
#   LETSGO_IMAGE_REGISTRY (localhost/letsgo), LETSGO_IMAGE_TAG (the chart's appVersion):
#                                                the shop's images' names,
#                                                <REGISTRY>/letsgo-<target>:<TAG>
#   CARGO_TARGET_DIR (target)                    where cargo builds the shop's binaries
#   LETSGO_IMAGE_CACHE (/var/cache/letsgo-images)  base tarballs and image archives
#   LETSGO_IMAGE_STORAGE ($LETSGO_IMAGE_CACHE/storage)  buildah's store of the images, and
#   LETSGO_IMAGE_RUNROOT (/run/letsgo-images)            its run-time state (one per store)
#   LETSGO_KUBE_CACHE (/var/cache/letsgo-kube)     where scripts/kube.sh builds etcd
#   LETSGO_STATE_DIR (/tmp/letsgo)                 the build log (images.log)
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# The Kafka version and install (mw_kafka_install, mw_kafka_home), and apt-get installs.
# shellcheck source=scripts/middleware.sh
. scripts/middleware.sh
# apt_sources
# shellcheck source=scripts/tools.sh
. scripts/tools.sh
MW_STATE=${LETSGO_STATE_DIR:-/tmp/letsgo}
LOG=$MW_STATE/images.log

CACHE=${LETSGO_IMAGE_CACHE:-/var/cache/letsgo-images}
SUITE=bookworm
REGISTRY=${LETSGO_IMAGE_REGISTRY:-localhost/letsgo}
TAG=${LETSGO_IMAGE_TAG:-$(awk -F'"' '/^appVersion:/ {print $2}' charts/letsgo/Chart.yaml)}
SHOP_TARGETS=(user product cart order payment gateway operator)
# Images are named for what they hold: Debian's PostgreSQL 15 is not anyone's `postgres:17`.
LOCAL=localhost/letsgo
KAFKA_IMAGE=$LOCAL/apache-kafka:$KAFKA_VERSION
# buildah's images and containers: a store of these images' own, on overlayfs (vfs copies a
# whole root filesystem for every layer and every container).
STORAGE=${LETSGO_IMAGE_STORAGE:-$CACHE/storage}
RUNROOT=${LETSGO_IMAGE_RUNROOT:-/run/letsgo-images}
BUILDAH=(buildah --root "$STORAGE" --runroot "$RUNROOT" --storage-driver overlay)
# The list of what was built, `IMAGE ARCHIVE` a line: what `load` imports.
BUILT=$CACHE/images.list

say() { printf 'images: %s\n' "$*" >&2; }
die() {
	printf 'images: ERROR: %s\n' "$*" >&2
	exit 1
}

ensure_tools() {
	local pkgs=()
	mkdir -p "$MW_STATE" "$CACHE"
	command -v buildah >/dev/null || pkgs+=(buildah)
	command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
	# buildah's runtime (RUN steps, and the tests that run an image)
	command -v runc >/dev/null || pkgs+=(runc)
	if ((${#pkgs[@]})); then mw_apt_install "${pkgs[@]}" >&2; fi
}

# One build at a time: two would race for the same archives and names.
take_lock() {
	exec 9>"$CACHE/.lock"
	if ! flock --nonblock 9; then
		say "waiting for another scripts/images.sh to finish"
		flock 9
	fi
}


have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

hash_of() { sha256sum | cut -c1-12; }

# ------------------------------------------------------------------ Debian bases

# What each base holds, as mmdebstrap options (one a line): minbase plus these packages.
# shellcheck disable=SC2016 # $1 in a hook is mmdebstrap's, expanded when the hook runs
base_spec() {
	case $1 in
	# The shop's runtime (glibc, zlib, and OpenSSL for librdkafka) and etcd's.
	runtime) echo --include=ca-certificates,libssl3 ;;
	java17) echo --include=openjdk-17-jre-headless,ca-certificates ;;
	# No cluster of Debian's own (the image initialises its data directory at the first
	# start), and no private key made at install time that every copy of the image would share.
	postgresql-15) printf '%s\n' --include=postgresql-15 \
		'--essential-hook=mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/no-main-cluster.conf"' \
		'--customize-hook=rm -f "$1/etc/ssl/private/ssl-cert-snakeoil.key" "$1/etc/ssl/certs/ssl-cert-snakeoil.pem"' ;;
	redis) echo --include=redis-server ;;
	awscli) echo --include=awscli ;;
	*) die "no Debian base named '$1' (runtime, java17, postgresql-15, redis, awscli)" ;;
	esac
}

base_image() {
	if [[ $1 == runtime ]]; then echo "$LOCAL/debian:$SUITE"; else echo "$LOCAL/debian:$SUITE-$1"; fi
}

# The base's root filesystem tarball, named for what it was made from.
base_tarball() {
	local options
	options=$(base_spec "$1")
	printf '%s/debian-%s-%s-%s.tar\n' "$CACHE" "$SUITE" "$1" "$(printf '%s\n' "$SUITE" "$options" "$(mmdebstrap_common)" | hash_of)"
}

# Copyright files stay; the rest of the documentation and the translations go. /usr is merged
# by mmdebstrap's hook (usr-is-merged) rather than by the usrmerge package and the Perl it needs.
mmdebstrap_common() {
	printf '%s\n' --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
}

# KEY: the base as a buildah image (its tarball made first, once); prints the image's name.
# dpkg's status file is kept beside the tarball: the images' versions are read from it.
debian_base() {
	local key=$1 image tar options=() common=() ctr sources
	image=$(base_image "$key")
	tar=$(base_tarball "$key")
	mapfile -t options < <(base_spec "$key")
	mapfile -t common < <(mmdebstrap_common)
	if ! [[ -s $tar && -s ${tar%.tar}.status ]]; then
		local t0=$SECONDS
		say "making the Debian $SUITE base '$key' (mmdebstrap, once; log $LOG)"
		rm -rf "$tar.tmp" "$tar.status.d"
		sources=$(apt_sources) || die "mmdebstrap needs apt's sources"
		mkdir -p "$tar.status.d"
		mmdebstrap --format=tar "${common[@]}" "${options[@]}" \
			--customize-hook="copy-out /var/lib/dpkg/status $tar.status.d" \
			"$SUITE" "$tar.tmp" "$sources" >>"$LOG" 2>&1 ||
			{
				rm -rf "$tar.tmp" "$tar.status.d"
				tail -n 15 "$LOG" >&2
				die "mmdebstrap failed; see $LOG"
			}
		mv "$tar.status.d/status" "${tar%.tar}.status"
		rmdir "$tar.status.d"
		mv "$tar.tmp" "$tar"
		# The tarballs of an older package list go.
		local old
		for old in "$CACHE/debian-$SUITE-$key-"????????????.{tar,status}; do
			[[ $old == "$tar" || $old == "${tar%.tar}.status" ]] || rm -f "$old"
		done
		say "made $tar in $((SECONDS - t0)) s ($(du -h "$tar" | cut -f1))"
	fi
	# The image records its tarball: a new tarball makes a new image.
	if [[ $("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "org.letsgo.debian-rootfs"}}' "$image" 2>/dev/null) != "${tar##*/}" ]]; then
		ctr=$("${BUILDAH[@]}" from scratch)
		"${BUILDAH[@]}" add "$ctr" "$tar" / >/dev/null
		"${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--label "org.letsgo.debian-rootfs=${tar##*/}" "$ctr"
		"${BUILDAH[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
		say "base image $image from $tar"
	fi
	printf '%s\n' "$image"
}

# KEY PACKAGE: the package's version in the base (its tarball made first).
package_version() {
	local tar
	debian_base "$1" >/dev/null
	tar=$(base_tarball "$1")
	awk -v p="$2" '$1 == "Package:" {name = $2} $1 == "Version:" && name == p {print $2}' "${tar%.tar}.status"
}

# ------------------------------------------------------------------ building

# IMAGE SLUG INPUTS: the archive of IMAGE built from INPUTS (a hash), if there is one and the
# image is in buildah's storage (the tests run it from there).
archive_path() { printf '%s/%s-%s.oci.tar\n' "$CACHE" "$2" "$3"; }

found() {
	local archive
	archive=$(archive_path "$@")
	if [[ -s $archive ]] && have_image "$1"; then
		record "$1" "$archive"
		printf '%s %s\n' "$1" "$archive"
		return 0
	fi
	return 1
}

# IMAGE ARCHIVE: remembered for `load`.
record() {
	local tmp
	tmp=$(mktemp "$BUILT.XXXXXX")
	{
		[[ -f $BUILT ]] && awk -v image="$1" '$1 != image' "$BUILT"
		printf '%s %s\n' "$1" "$2"
	} >"$tmp"
	chmod 644 "$tmp"
	mv "$tmp" "$BUILT"
}

# IMAGE SLUG INPUTS CONTEXT CONTAINERFILE [BUD-OPTION...]: builds, writes the archive (the older
# archives of SLUG and the image IMAGE named before go), prints `IMAGE ARCHIVE`.
build() {
	local image=$1 slug=$2 inputs=$3 context=$4 file=$5 archive previous containers id name t0=$SECONDS
	shift 5
	archive=$(archive_path "$image" "$slug" "$inputs")
	previous=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
	containers=$("${BUILDAH[@]}" containers --quiet --noheading)
	say "building $image (buildah, log $LOG)"
	"${BUILDAH[@]}" bud --pull=never --network none --quiet "$@" \
		--label "org.opencontainers.image.revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		-f "$file" -t "$image" "$context" >>"$LOG" 2>&1 ||
		{
			tail -n 15 "$LOG" >&2
			die "building $image failed; see $LOG"
		}
	# buildah 1.28 leaves the working containers of the stages a COPY --from read.
	while read -r id name; do
		if [[ $name == *-working-container && $containers != *"${id:0:12}"* ]]; then
			"${BUILDAH[@]}" rm "$id" >/dev/null
		fi
	done < <("${BUILDAH[@]}" containers --noheading --notruncate --format '{{.ContainerID}} {{.ContainerName}}')
	# The image this name held before is dropped, so rebuilds do not pile up.
	if [[ -n $previous && $previous != "$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$image")" ]]; then
		"${BUILDAH[@]}" rmi "$previous" >/dev/null 2>&1 || true
	fi
	rm -f "$CACHE/$slug-"????????????.oci.tar
	"${BUILDAH[@]}" push --quiet "$image" "oci-archive:$archive.tmp:$image" >>"$LOG" 2>&1 ||
		{
			rm -f "$archive.tmp"
			die "writing $archive failed; see $LOG"
		}
	mv "$archive.tmp" "$archive"
	record "$image" "$archive"
	say "built $image in $((SECONDS - t0)) s ($(du -h "$archive" | cut -f1) archive: $archive)"
	printf '%s %s\n' "$image" "$archive"
}

# A build's context: a fresh directory in $CONTEXT, removed when the script ends.
new_context() {
	CONTEXT=$(mktemp -d "$CACHE/.context.XXXXXX")
	CONTEXTS+=("$CONTEXT")
}
CONTEXTS=()
trap 'rm -rf "${CONTEXTS[@]}"' EXIT

# DIR: a hash of every file in images/DIR, by name and content.
hash_dir() { (cd "images/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | hash_of; }

# DIR IMAGE BASE-KEY [EXTRA-INPUT] [-- BUD-OPTION...]: images/DIR's Containerfile on the base;
# the context is images/DIR plus what the caller puts in $CONTEXT_EXTRA (a function run in the
# context directory).
CONTEXT_EXTRA=
middleware_image() {
	local dir=$1 image=$2 key=$3 extra=${4:-} base inputs slug
	shift 4
	[[ ${1:-} == -- ]] && shift
	base=$(debian_base "$key")
	slug=${image#"$LOCAL"/}
	slug=${slug//[:\/]/-}
	inputs=$(printf '%s\n' "$(hash_dir "$dir")" "$(basename "$(base_tarball "$key")")" "$extra" "$*" | hash_of)
	found "$image" "$slug" "$inputs" && return 0
	new_context
	cp -r "images/$dir/." "$CONTEXT/"
	if [[ -n $CONTEXT_EXTRA ]]; then (cd "$CONTEXT" && "$CONTEXT_EXTRA"); fi
	build "$image" "$slug" "$inputs" "$CONTEXT" "$CONTEXT/Containerfile" --build-arg "BASE=$base" "$@"
}

postgresql() {
	local version
	version=$(package_version postgresql-15 postgresql-15)
	CONTEXT_EXTRA='' middleware_image postgresql "$LOCAL/debian-postgresql:15" postgresql-15 "$version" -- \
		--build-arg PG_MAJOR=15 --label "org.opencontainers.image.version=$version"
}

# major.minor of a Debian version (epoch and revision dropped): the tag that security updates
# within the release keep.
major_minor() {
	local v=${1#*:}
	v=${v%%-*}
	printf '%s\n' "${v%.*}"
}

redis() {
	local version
	version=$(package_version redis redis-server)
	CONTEXT_EXTRA='' middleware_image redis "$LOCAL/debian-redis:$(major_minor "$version")" redis "$version" -- \
		--label "org.opencontainers.image.version=$version"
}

awscli() {
	local version
	version=$(package_version awscli awscli)
	CONTEXT_EXTRA='' middleware_image awscli "$LOCAL/debian-awscli:$(major_minor "$version")" awscli "$version" -- \
		--label "org.opencontainers.image.version=$version"
}

kafka_context() {
	cp -r "$(mw_kafka_home)/libs" libs
	mkdir empty
}

kafka() {
	mw_kafka_install >&2
	CONTEXT_EXTRA=kafka_context middleware_image kafka "$KAFKA_IMAGE" java17 \
		"$(cd "$(mw_kafka_home)/libs" && ls -l)" -- --label "org.opencontainers.image.version=$KAFKA_VERSION"
}

# etcd as scripts/kube.sh builds it (the version tools/kube/etcd/go.mod requires; a static
# binary): Debian's 3.4 is older than what the operator's StatefulSet was written for.
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' tools/kube/etcd/go.mod)
ETCD_BIN=${LETSGO_KUBE_CACHE:-/var/cache/letsgo-kube}/etcd-$ETCD_VERSION
etcd_context() { cp "$ETCD_BIN/etcd" etcd; }
etcd() {
	[[ -n $ETCD_VERSION ]] || die "no go.etcd.io/etcd/server/v3 requirement in tools/kube/etcd/go.mod"
	if [[ ! -f $ETCD_BIN/.complete ]]; then
		say "etcd $ETCD_VERSION is not built yet: scripts/kube.sh build"
		scripts/kube.sh build >&2
	fi
	[[ -f $ETCD_BIN/.complete ]] || die "scripts/kube.sh build left no etcd in $ETCD_BIN"
	CONTEXT_EXTRA=etcd_context middleware_image etcd "$LOCAL/etcd:$ETCD_VERSION" runtime \
		"$(sha256sum <"$ETCD_BIN/etcd")" -- --label "org.opencontainers.image.version=$ETCD_VERSION"
}

# The shop's images, from the Dockerfile a user builds: the binaries built here (a bookworm
# host, as the runtime base is), each target then built with BINARIES=prebuilt, its context a
# directory holding its binary; no Rust image is needed.
# All seven are built whichever images are asked for: cargo unifies features over the packages
# of one build, so building fewer would make other binaries than `all` makes.
SHOP=()
shop_binaries() {
	local target packages=()
	SHOP=("$@")
	((${#SHOP[@]})) || SHOP=("${SHOP_TARGETS[@]}")
	for target in "${SHOP[@]}"; do
		[[ " ${SHOP_TARGETS[*]} " == *" $target "* ]] || die "no shop image '$target' (${SHOP_TARGETS[*]})"
	done
	for target in "${SHOP_TARGETS[@]}"; do packages+=(-p "letsgo-$target"); done
	# A test that runs this script hands on the environment cargo gave it (CARGO_PKG_NAME,
	# CARGO_MANIFEST_DIR, ...); build scripts that watch those variables (ring's) would run
	# again and every crate above them be compiled anew, so cargo runs without them.
	local name unset=()
	for name in $(compgen -e); do
		case $name in
		CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | \
			CARGO_TARGET_TMPDIR | OUT_DIR | NEXTEST*) unset+=(-u "$name") ;;
		esac
	done
	say "cargo build --release ${packages[*]} (into ${CARGO_TARGET_DIR:-target}/release)"
	env "${unset[@]}" cargo build --release -j2 --locked "${packages[@]}" --bins >&2 ||
		die "cargo build failed (its messages are above)"
}

shop_images() {
	local target base binaries=${CARGO_TARGET_DIR:-target}/release image slug inputs
	base=$(debian_base runtime)
	for target in "${SHOP[@]}"; do
		image=$REGISTRY/letsgo-$target:$TAG
		slug=${image//[:\/]/-}
		inputs=$(cat Dockerfile "$binaries/letsgo-$target" <(basename "$(base_tarball runtime)") | hash_of)
		found "$image" "$slug" "$inputs" && continue
		new_context
		cp "$binaries/letsgo-$target" "$CONTEXT/"
		# --layers: the targets share the runtime stage, built once.
		build "$image" "$slug" "$inputs" "$CONTEXT" Dockerfile --layers --target "$target" \
			--build-arg BINARIES=prebuilt --build-arg "RUNTIME_BASE=$base" \
			--label "org.opencontainers.image.version=$TAG"
	done
}

middleware() {
	postgresql
	redis
	kafka
	etcd
	awscli
}

# SOCKET: every image of $BUILT that the node's containerd lacks, or holds with another
# manifest, imported from its archive.
load() {
	local socket=${1:?usage: images.sh load SOCKET} listed image archive want have
	command -v ctr >/dev/null || die "ctr not found: install containerd (apt-get install containerd)"
	[[ -S $socket ]] || die "$socket is not a socket: is the node's containerd running?"
	[[ -s $BUILT ]] || die "no images built yet (scripts/images.sh all)"
	listed=$(ctr --address "$socket" -n k8s.io images ls) ||
		die "ctr cannot list the images of the containerd at $socket"
	while read -r image archive; do
		# A node without the image would leave its Pods in ErrImageNeverPull: stop here instead.
		[[ -s $archive ]] || die "$image: its archive $archive is gone: build the images again (scripts/images.sh all)"
		# The manifest's digest, as the archive's index names it and ctr lists it.
		want=$(tar -xOf "$archive" index.json | grep -o '"digest":"sha256:[0-9a-f]*"' | head -n1 | cut -d'"' -f4)
		have=$(awk -v ref="$image" '$1 == ref {print $3}' <<<"$listed")
		if [[ -n $want && $want == "$have" ]]; then
			say "$image: already on the node"
			continue
		fi
		say "$image: importing $archive"
		ctr --address "$socket" -n k8s.io images import "$archive" >&2 ||
			die "importing $archive into the containerd at $socket failed"
		printf '%s\n' "$image"
	done <"$BUILT"
}

case ${1:-} in
all | shop | middleware | postgresql | redis | kafka | etcd | awscli | base)
	ensure_tools
	# cargo keeps its own lock: the binaries are built before the images' lock is taken.
	if [[ $1 == all ]]; then shop_binaries; fi
	if [[ $1 == shop ]]; then shop_binaries "${@:2}"; fi
	take_lock
	# What builds leave unnamed (older images, stages no longer used) goes at the end.
	trap 'rm -rf "${CONTEXTS[@]}"; "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true' EXIT
	;;
esac
case ${1:-} in
all)
	shop_images
	middleware
	;;
shop) shop_images ;;
middleware | postgresql | redis | kafka | etcd | awscli) "$1" ;;
base) debian_base "${2:-runtime}" ;;
load)
	shift
	load "$@"
	;;
buildah)
	shift
	exec "${BUILDAH[@]}" "$@"
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
