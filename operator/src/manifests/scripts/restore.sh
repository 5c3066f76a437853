#!/bin/bash
# Restores the backup $RESTORE_FROM (a name under $BACKUP_DIR, as backup.sh made it): each
# database is made anew and filled from its dump. What was written after the backup is lost.
# The connection comes from PGHOST, PGPORT, PGUSER, PGPASSWORD; the role needs CREATEDB.
set -euo pipefail
: "${BACKUP_DIR:?where backups are}" "${RESTORE_FROM:?the backup to restore}"
source_dir="$BACKUP_DIR/$RESTORE_FROM"
if [[ ! -f $source_dir/MANIFEST ]]; then
	echo "no backup named $RESTORE_FROM in $BACKUP_DIR; there are:" >&2
	find "$BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*Z' -printf '  %f\n' | sort >&2
	exit 1
fi
while read -r _bytes db; do
	# A database made meanwhile (a retried Job, a service that started first) is replaced.
	psql --no-psqlrc -v ON_ERROR_STOP=1 --dbname=postgres \
		-c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" -c "CREATE DATABASE \"$db\""
	pg_restore --no-owner --no-privileges --exit-on-error --dbname="$db" "$source_dir/$db.dump"
	echo "restored $db from $RESTORE_FROM"
done <"$source_dir/MANIFEST"
