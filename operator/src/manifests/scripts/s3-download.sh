#!/bin/bash
# Downloads the backup $RESTORE_FROM from s3://$S3_BUCKET/$S3_PREFIX/ into
# $BACKUP_DIR/$RESTORE_FROM/, where restore.sh restores it from. Only a whole backup (one with
# its MANIFEST) is taken. The operator's restore Job runs this in the aws-cli image before
# restore.sh; see s3.sh for the connection.
set -euo pipefail
: "${BACKUP_DIR:?where to put the backup}" "${RESTORE_FROM:?the backup to download}"
source "$(dirname "${BASH_SOURCE[0]}")/s3.sh"

listing=$(list_backups)
found=false
while read -r backup _bytes state; do
	if [[ $backup == "$RESTORE_FROM" && $state == whole ]]; then found=true; fi
done <<<"$listing"
if ! $found; then
	echo "no backup named $RESTORE_FROM in $backups_url; there are:" >&2
	while read -r backup _bytes state; do
		if [[ $state == whole ]]; then
			echo "  $backup" >&2
		elif [[ -n $backup ]]; then
			echo "  $backup (its upload did not finish)" >&2
		fi
	done <<<"$listing"
	exit 1
fi
target="$BACKUP_DIR/$RESTORE_FROM"
mkdir -p "$target"
s3 cp --only-show-errors "$backups_url$RESTORE_FROM/MANIFEST" "$target/MANIFEST"
while read -r bytes db; do
	s3 cp --only-show-errors "$backups_url$RESTORE_FROM/$db.dump" "$target/$db.dump"
	got=$(stat -c %s "$target/$db.dump")
	if ((got != bytes)); then
		echo "$db.dump of $RESTORE_FROM is $got bytes, its MANIFEST says $bytes" >&2
		exit 1
	fi
	echo "downloaded $db of $RESTORE_FROM ($bytes bytes)"
done <"$target/MANIFEST"
