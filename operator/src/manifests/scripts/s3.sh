#!/bin/bash
# What s3-upload.sh and s3-download.sh share, sourced by both: the bucket's folder of backups
# (s3://$S3_BUCKET/$S3_PREFIX/, each backup a folder <name>/ in it) and the `aws` CLI pointed at
# the server ($S3_ENDPOINT, when it is not AWS's). The CLI finds its credentials as it always
# does (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, ...).
# Written for bash 4.2 and coreutils: the aws-cli image has little else.
: "${S3_BUCKET:?the bucket}"
S3_PREFIX=${S3_PREFIX:-}
S3_PREFIX=${S3_PREFIX%/}
backups_url="s3://$S3_BUCKET/${S3_PREFIX:+$S3_PREFIX/}"

endpoint_args=()
if [[ -n ${S3_ENDPOINT:-} ]]; then
	endpoint_args=(--endpoint-url "$S3_ENDPOINT")
	# Recent CLIs send and ask for checksums many S3-compatible servers do not know; only where
	# the operation requires one, then.
	export AWS_REQUEST_CHECKSUM_CALCULATION=${AWS_REQUEST_CHECKSUM_CALCULATION:-when_required}
	export AWS_RESPONSE_CHECKSUM_VALIDATION=${AWS_RESPONSE_CHECKSUM_VALIDATION:-when_required}
fi

s3() {
	# (bash 4.2 calls an empty array unbound under set -u.)
	aws ${endpoint_args[@]+"${endpoint_args[@]}"} s3 "$@"
}

# Each backup in the bucket, oldest first, as "<name> <bytes> whole|partial": whole once its
# MANIFEST is there, which is uploaded last. Names are UTC times and S3 lists keys in order, so
# the listing's order is age order.
list_backups() {
	local listing status=0 name current='' bytes=0 state=partial _date _time size key relative
	listing=$(s3 ls --recursive "$backups_url") || status=$?
	# 1: nothing there yet.
	((status == 0 || status == 1)) || return "$status"
	while read -r _date _time size key; do
		[[ -n ${key:-} ]] || continue
		relative=${key#"${S3_PREFIX:+$S3_PREFIX/}"}
		name=${relative%%/*}
		[[ $name =~ ^[0-9]{8}T[0-9]{6}Z$ && $relative == */* ]] || continue
		if [[ $name != "$current" ]]; then
			[[ -z $current ]] || echo "$current $bytes $state"
			current=$name bytes=0 state=partial
		fi
		bytes=$((bytes + size))
		if [[ ${relative#*/} == MANIFEST ]]; then state=whole; fi
	done <<<"$listing"
	[[ -z $current ]] || echo "$current $bytes $state"
}
