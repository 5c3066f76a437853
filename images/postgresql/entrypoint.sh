#!/bin/bash
# Starts PostgreSQL the way the postgres image's users expect:
#   postgres [OPTION...]   (or OPTION... alone) the server, on $PGDATA; an empty data directory
#                          is initialised first (below). Anything else runs as given.
# Initialisation: initdb with POSTGRES_USER (postgres) as the superuser and POSTGRES_PASSWORD
# as its password, password logins (scram-sha-256) from every address, listening on every
# address; then, on a server reachable only through a private socket, the database POSTGRES_DB
# (POSTGRES_USER's name) is made and the files of /docker-entrypoint-initdb.d run in name
# order: *.sql and *.sql.gz through psql, *.sh run (executable) or sourced. A failed
# initialisation empties the data directory, so the next start begins again instead of
# serving half a cluster.
# The server replaces this shell, so it gets the container's stop signal itself.
set -euo pipefail

say() { printf 'postgres entrypoint: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 64
}

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
if [[ ${1:-} != postgres ]]; then exec "$@"; fi

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
superuser=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$superuser}
host_auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
initdb_dir=/docker-entrypoint-initdb.d

[[ $(id -u) != 0 ]] || die "running as root; PostgreSQL runs as the postgres user (uid 999)"
mkdir -p "$PGDATA"
# PostgreSQL refuses a data directory others may write to; a volume's group settings (fsGroup)
# may have widened it.
chmod 700 "$PGDATA"

initialising=false
socket_dir=
stop_and_empty() {
	if $initialising; then
		say "initialisation failed: emptying $PGDATA so that the next start begins again"
		pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
		find "$PGDATA" -mindepth 1 -delete || true
	fi
	[[ -z $socket_dir ]] || rm -rf "$socket_dir"
}
trap stop_and_empty EXIT

sql() { psql --no-psqlrc -v ON_ERROR_STOP=1 --host "$socket_dir" --username "$superuser" "$@"; }

initialise() {
	if [[ -z ${POSTGRES_PASSWORD:-} && $host_auth != trust ]]; then
		die "POSTGRES_PASSWORD is not set: the superuser $superuser needs a password (or set POSTGRES_HOST_AUTH_METHOD=trust to allow logins without one)"
	fi
	initialising=true
	say "initialising $PGDATA (superuser $superuser, database $database)"
	local pwfile
	pwfile=$(mktemp)
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
	initdb --username="$superuser" --pwfile="$pwfile" --auth-local=trust --auth-host="$host_auth" \
		${POSTGRES_INITDB_ARGS:-} -D "$PGDATA"
	rm -f "$pwfile"
	printf '\nhost all all all %s\n' "$host_auth" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# Reachable through this socket only while the scripts run: no client sees a half-made
	# cluster, and the probes fail until the real server starts.
	socket_dir=$(mktemp -d)
	# psql in the scripts reaches it without options.
	local -x PGHOST=$socket_dir PGUSER=$superuser PGDATABASE=$database
	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k $socket_dir" start >/dev/null
	if [[ $database != postgres ]]; then
		sql --dbname postgres -v name="$database" <<<'CREATE DATABASE :"name";' >/dev/null
	fi
	local file
	for file in "$initdb_dir"/*; do
		[[ -e $file ]] || continue
		case $file in
		*.sql)
			say "running $file"
			sql --dbname "$database" -f "$file" >/dev/null
			;;
		*.sql.gz)
			say "running $file"
			gzip -dc "$file" | sql --dbname "$database" >/dev/null
			;;
		*.sh)
			if [[ -x $file ]]; then
				say "running $file"
				"$file"
			else
				say "sourcing $file"
				# shellcheck disable=SC1090 # the user's script
				. "$file"
			fi
			;;
		*) say "ignoring $file (not .sql, .sql.gz or .sh)" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	initialising=false
	say "initialised; starting PostgreSQL"
}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
	initialise
fi
rm -rf "$socket_dir"
trap - EXIT
exec "$@"
