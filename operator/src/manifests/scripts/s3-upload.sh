#!/bin/bash
# Uploads a backup that backup.sh made under $BACKUP_DIR ($BACKUP_NAME, else the newest there)
# to s3://$S3_BUCKET/$S3_PREFIX/<name>/, its dumps first and its MANIFEST last, so a backup
# whose upload broke off has none; then keeps only the newest $BACKUP_KEEP whole backups there
# (and deletes anything older). The operator's CronJob runs this in the aws-cli image once
# backup.sh has dumped into a volume the two containers share; see s3.sh for the connection.
set -euo pipefail
: "${BACKUP_DIR:?where backup.sh put the backup}"
BACKUP_KEEP=${BACKUP_KEEP:-7}
source "$(dirname "${BASH_SOURCE[0]}")/s3.sh"

name=${BACKUP_NAME:-}
if [[ -z $name ]]; then
	for dir in "$BACKUP_DIR"/[0-9]*Z; do
		if [[ -f $dir/MANIFEST ]]; then name=${dir##*/}; fi
	done
fi
if [[ -z $name || ! -f $BACKUP_DIR/$name/MANIFEST ]]; then
	echo "no backup ${name:+named $name }in $BACKUP_DIR to upload" >&2
	exit 1
fi
databases=()
while read -r _bytes db; do
	databases+=("$db")
	s3 cp --only-show-errors "$BACKUP_DIR/$name/$db.dump" "$backups_url$name/$db.dump"
done <"$BACKUP_DIR/$name/MANIFEST"
s3 cp --only-show-errors "$BACKUP_DIR/$name/MANIFEST" "$backups_url$name/MANIFEST"

listing=$(list_backups)
all=() whole=() bytes=0
while read -r backup size state; do
	if [[ -z $backup ]]; then continue; fi
	all+=("$backup")
	if [[ $state == whole ]]; then whole+=("$backup"); fi
	if [[ $backup == "$name" ]]; then bytes=$size; fi
done <<<"$listing"
if ((${#whole[@]} == 0)); then
	echo "$name is not listed whole in $backups_url after its upload" >&2
	exit 1
fi
first_kept=0
if ((${#whole[@]} > BACKUP_KEEP)); then first_kept=$((${#whole[@]} - BACKUP_KEEP)); fi
oldest_kept=${whole[first_kept]}
for backup in "${all[@]}"; do
	if [[ $backup < $oldest_kept ]]; then
		s3 rm --recursive --only-show-errors "$backups_url$backup/"
		echo "deleted $backup"
	fi
done

summary="backup $name: $bytes bytes, databases: ${databases[*]}"
echo "$summary (in $backups_url$name/)"
# What `kubectl describe` and the operator read of the finished Pod.
if [[ -w /dev/termination-log ]]; then echo "$summary" >/dev/termination-log; fi
