#!/bin/bash
# A backup of the shop's PostgreSQL: each database in pg_dump's custom format under
# $BACKUP_DIR/<UTC time>/, with a MANIFEST of sizes; then only the newest $BACKUP_KEEP backups
# are kept. A backup appears under its name only once it is whole. The operator's CronJob runs
# this in the PostgreSQL image; the connection comes from PGHOST, PGPORT, PGUSER, PGPASSWORD.
set -euo pipefail
: "${BACKUP_DIR:?where backups go}"
BACKUP_KEEP=${BACKUP_KEEP:-7}
DATABASES=${DATABASES:-user product order payment}

name=$(date -u +%Y%m%dT%H%M%SZ)
partial="$BACKUP_DIR/.partial-$name"
trap 'rm -rf "$partial"' EXIT
mkdir -p "$partial"
for db in $DATABASES; do
	pg_dump --format=custom --no-owner --no-privileges --dbname="$db" --file="$partial/$db.dump"
done
for db in $DATABASES; do
	printf '%s %s\n' "$(stat -c %s "$partial/$db.dump")" "$db"
done >"$partial/MANIFEST"
mv "$partial" "$BACKUP_DIR/$name"

# Backups are named by time, so name order is age order.
mapfile -t all < <(find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*Z' -printf '%f\n' | sort)
for ((i = 0; i < ${#all[@]} - BACKUP_KEEP; i++)); do
	rm -rf "${BACKUP_DIR:?}/${all[i]}"
done

bytes=$(du -sb "$BACKUP_DIR/$name" | cut -f1)
summary="backup $name: $bytes bytes, databases: $DATABASES"
echo "$summary"
# What `kubectl describe` and the operator read of the finished Pod.
if [[ -w /dev/termination-log ]]; then echo "$summary" >/dev/termination-log; fi
