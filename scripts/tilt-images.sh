#!/usr/bin/env bash
# Tilt's service images (see Tiltfile): builds the six service images under a tag that is a
# hash of their sources, loads them into the kind or k3d cluster, and applies the example
# Store at that tag. An edit gives a new tag, so the operator rolls the services; the same
# sources give the same tag, so nothing rolls.
#
#   scripts/tilt-images.sh REGISTRY SOURCE...    (the Tiltfile passes its `sources`)
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
registry=${1:?usage: tilt-images.sh REGISTRY SOURCE...}
shift
(($#)) || { echo "tilt-images.sh: no sources given" >&2; exit 2; }

tag=dev-$(git ls-files --cached --others --exclude-standard -- "$@" | sort | xargs sha256sum | sha256sum | cut -c1-12)
echo "tilt-images: tag $tag"
for name in user product cart order payment gateway; do
	image=$registry/letsgo-$name:$tag
	docker build --target "$name" -t "$image" .
	kind load docker-image "$image" || k3d image import "$image"
done
# pullPolicy Never: the images were loaded into the nodes, there is nothing to pull.
sed -e "s|tag: \"0.1.0\"|tag: \"$tag\"\n    pullPolicy: Never|" \
	-e "s|registry: ghcr.io/letsgo|registry: $registry|" examples/store.yaml | kubectl apply -f -
