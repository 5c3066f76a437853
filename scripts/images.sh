#!/usr/bin/env bash
# Container images built offline: no public registry, no Docker daemon. A Debian base is made
# from Debian's packages (mmdebstrap, with the sources apt already uses), the image is built
# from the repository's Containerfile by buildah (--pull=never, the base named by a build
# argument), and written as an OCI archive a node's containerd imports
# (`ctr -n k8s.io images import FILE`).
#
#   scripts/images.sh kafka        Apache Kafka (the version scripts/middleware.sh installs;
#                                  built again when images/kafka/ changes):
#                                  prints the image's name and its archive's path
#   scripts/images.sh base-java    the Debian base with Java 17 that Kafka's image starts from
#
# Settings (environment, defaults in parentheses):
#   LETSGO_IMAGE_CACHE (/var/cache/letsgo-images)  base tarballs and image archives, by version
#   LETSGO_STATE_DIR (/tmp/letsgo)                 install log
# Built once: a second run finds the archive (or the base) and only prints it.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
# The Kafka version and install (mw_kafka_install, mw_kafka_home), and apt-get installs.
# shellcheck source=scripts/middleware.sh
. scripts/middleware.sh
MW_STATE=${LETSGO_STATE_DIR:-/tmp/letsgo}

CACHE=${LETSGO_IMAGE_CACHE:-/var/cache/letsgo-images}
SUITE=bookworm
# Images are named for what they hold: Debian 12's Java 17 is not anyone's upstream image.
BASE_JAVA=localhost/letsgo/debian-java17:$SUITE
KAFKA_IMAGE=localhost/letsgo/apache-kafka:$KAFKA_VERSION
BUILDAH=(buildah --storage-driver vfs)

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

# The deb822 sources apt uses here; mmdebstrap takes them in place of a mirror.
apt_sources() {
	local f
	for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
		[[ -s $f ]] && printf '%s\n' "$f" && return 0
	done
	die "no apt sources found (/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list)"
}

have_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# A Debian root filesystem with Java 17 as a buildah image: minbase plus the JRE and CA
# certificates, documentation and translations left out.
base_java() {
	local tar=$CACHE/debian-$SUITE-java17.tar log=$MW_STATE/images.log ctr
	ensure_tools
	if ! [[ -s $tar ]]; then
		say "making the Debian $SUITE base with Java 17 (mmdebstrap, once; log $log)"
		mmdebstrap --variant=minbase --include=openjdk-17-jre-headless,ca-certificates \
			--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
			"$SUITE" "$tar.tmp" "$(apt_sources)" >>"$log" 2>&1 ||
			{ rm -f "$tar.tmp"; tail -n 15 "$log" >&2; die "mmdebstrap failed; see $log"; }
		mv "$tar.tmp" "$tar"
	fi
	if ! have_image "$BASE_JAVA"; then
		ctr=$("${BUILDAH[@]}" from scratch)
		"${BUILDAH[@]}" add "$ctr" "$tar" / >/dev/null
		"${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
		"${BUILDAH[@]}" commit --quiet "$ctr" "$BASE_JAVA" >/dev/null
		"${BUILDAH[@]}" rm "$ctr" >/dev/null
		say "base image $BASE_JAVA from $tar"
	fi
	printf '%s\n' "$BASE_JAVA"
}

kafka() {
	local archive context home log=$MW_STATE/images.log inputs
	# The archive is named for what it was built from: a changed Containerfile or entrypoint
	# builds anew, and the archives of older inputs go.
	inputs=$(cat images/kafka/* | sha256sum | cut -c1-12)
	archive=$CACHE/apache-kafka-$KAFKA_VERSION-$inputs.oci.tar
	if [[ -s $archive ]] && have_image "$KAFKA_IMAGE"; then
		printf '%s %s\n' "$KAFKA_IMAGE" "$archive"
		return 0
	fi
	base_java >/dev/null
	mw_kafka_install >&2
	home=$(mw_kafka_home)
	context=$(mktemp -d)
	# shellcheck disable=SC2064 # the path is fixed now
	trap "rm -rf '$context'" EXIT
	cp -r images/kafka/. "$context/"
	cp -r "$home/libs" "$context/libs"
	mkdir "$context/empty"
	say "building $KAFKA_IMAGE (buildah, log $log)"
	"${BUILDAH[@]}" bud --pull=never --quiet --build-arg "BASE=$BASE_JAVA" \
		-f "$context/Containerfile" -t "$KAFKA_IMAGE" "$context" >>"$log" 2>&1 ||
		{ tail -n 15 "$log" >&2; die "building $KAFKA_IMAGE failed; see $log"; }
	# The image this tag named before is left without a name: dropped, so rebuilds do not pile up.
	"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
	rm -f "$CACHE/apache-kafka-$KAFKA_VERSION"*.oci.tar
	"${BUILDAH[@]}" push --quiet "$KAFKA_IMAGE" "oci-archive:$archive.tmp:$KAFKA_IMAGE" >>"$log" 2>&1 ||
		{ rm -f "$archive.tmp"; die "writing $archive failed; see $log"; }
	mv "$archive.tmp" "$archive"
	say "built $KAFKA_IMAGE ($(du -h "$archive" | cut -f1) archive: $archive)"
	printf '%s %s\n' "$KAFKA_IMAGE" "$archive"
}

case ${1:-} in
kafka) kafka ;;
base-java) base_java ;;
*)
	printf 'usage: %s kafka|base-java\n' "${0##*/}" >&2
	exit 2
	;;
esac
