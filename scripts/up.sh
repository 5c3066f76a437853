#!/usr/bin/env bash
# Run the whole shop on this machine: middleware, every service binary, then
# the gateway on http://127.0.0.1:8888.  Ctrl-C stops the binaries and the
# middleware this run started (middleware that was already running is left).
#
# Settings (environment, defaults in parentheses):
#   JWT_SECRET         token signing key, >= 32 bytes (random for this run)
#   PAYMENT_WEBHOOK_SECRET  payment callback signing key(s) (random for this run)
#   INTERNAL_TOKEN     the token of internal gRPC calls (random for this run)
#   ADMIN_USERNAME     (admin)   the initial admin, made when its account does not exist
#   ADMIN_PASSWORD     its password (generated once, kept in $LETSGO_STATE_DIR/admin-password)
#   LOG_FORMAT (text)   RUST_LOG (info)
#   OTEL_EXPORTER_OTLP_ENDPOINT (none: off)  export traces there, e.g. http://127.0.0.1:4318
#     (and OTEL_EXPORTER_OTLP_PROTOCOL=grpc for :4317, OTEL_TRACES_SAMPLER, ...; README "Tracing")
#   DEMO_CATALOGUE     (true)    load demo products into an empty catalogue
#   MOCK_PROVIDER_AUTOCOMPLETE (true)  the mock provider approves payments by itself
#   LETSGO_PROFILE     release (default) or debug
#   CARGO_TARGET_DIR   (target)
#   LETSGO_STATE_DIR   (/tmp/letsgo)   logs in $LETSGO_STATE_DIR/logs
#   LETSGO_WAIT_TIMEOUT (60)  seconds a binary may take to become ready
#   DB_SSLMODE (disable for a database on 127.0.0.1/localhost, else the services' prefer)
# and whatever scripts/middleware.sh reads (DB_HOST, DB_PORT, DB_USER, ...).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

# shellcheck source=scripts/services.sh
source scripts/services.sh
GATEWAY_URL=http://127.0.0.1:8888

STATE=${LETSGO_STATE_DIR:-/tmp/letsgo}
LOGS=$STATE/logs
TIMEOUT=${LETSGO_WAIT_TIMEOUT:-60}
TARGET=${CARGO_TARGET_DIR:-target}

say() { printf 'up: %s\n' "$*"; }
die() {
	printf 'up: ERROR: %s\n' "$*" >&2
	exit 1
}

# ------------------------------------------------------------ processes

PIDS=() # binaries started by this run
declare -A NAME_OF=()

# pid is alive and not a zombie
running() {
	local s
	kill -0 "$1" 2>/dev/null || return 1
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
	s=${s##*) }
	[[ ${s%% *} != Z ]]
}

# shellcheck disable=SC2016 # $0 expands in the child bash
port_open() { timeout 2 bash -c ': <>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

# "name (pid N)" of the process listening on a port, when ss can tell
port_owner() {
	command -v ss >/dev/null || return 0
	ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1
}

check_ports() { # NAME PORT...
	local name=$1 port who
	shift
	for port; do
		port_open "$port" || continue
		who=$(port_owner "$port")
		die "port $port, which $name listens on, is already in use${who:+ by $who}." \
			"Is letsgo already running (another 'make up')? Stop it first, or free the port."
	done
}

HTTP=curl
http_ok() {
	if [[ $HTTP == curl ]]; then
		curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$1"
	else
		python3 -c 'import sys, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=2)' "$1"
	fi
} >/dev/null 2>&1

fail_with_log() { # LOG MESSAGE
	printf -- '----- last lines of %s -----\n' "$1" >&2
	tail -n 30 "$1" >&2 || true
	printf -- '-----\n' >&2
	die "$2"
}

start() { # NAME PORT ADMIN URL
	local name=$1 port=$2 admin=$3 url=$4 log=$LOGS/$1.log pid rc deadline
	check_ports "$name" "$port" "$admin"
	say "starting $name (log $log)"
	# Only the user service reads the initial admin's password.
	if [[ $name == letsgo-user ]]; then
		ADMIN_PASSWORD=$ADMIN_PASSWORD "$BIN_DIR/$name" </dev/null >"$log" 2>&1 &
	else
		"$BIN_DIR/$name" </dev/null >"$log" 2>&1 &
	fi
	pid=$!
	PIDS+=("$pid")
	NAME_OF[$pid]=$name
	deadline=$((SECONDS + TIMEOUT))
	until http_ok "$url"; do
		if ! running "$pid"; then
			rc=0
			wait "$pid" || rc=$?
			fail_with_log "$log" "$name exited with status $rc while starting; see $log"
		fi
		((SECONDS < deadline)) || fail_with_log "$log" "$name not ready at $url after ${TIMEOUT}s; see $log"
		sleep 0.5
	done
	say "$name is ready"
}

# ------------------------------------------------------------ middleware

# `scripts/middleware.sh stop` stops everything it has ever started (it keeps
# markers in $STATE).  So that Ctrl-C stops only what *this* run started, the
# markers that already existed, unchanged, before `ensure` are set aside while
# `stop` runs, then put back.
MW_MARKERS=(postgres.started redis.started etcd.pid kafka.pid)
declare -A MW_BEFORE=()
MW_ENSURED=0
fingerprint() { stat -c '%i %y' "$1" 2>/dev/null; }

# shellcheck disable=SC2317 # reached from the EXIT trap
stop_middleware() {
	local m aside=$STATE/.up-aside.$$ kept=()
	for m in "${MW_MARKERS[@]}"; do
		if [[ -n ${MW_BEFORE[$m]:-} && $(fingerprint "$STATE/$m") == "${MW_BEFORE[$m]}" ]]; then
			mkdir -p "$aside" && mv "$STATE/$m" "$aside/$m" && kept+=("${m%%.*}")
		fi
	done
	scripts/middleware.sh stop || say "WARNING: scripts/middleware.sh stop failed"
	for m in "${MW_MARKERS[@]}"; do
		if [[ -e $aside/$m ]]; then mv "$aside/$m" "$STATE/$m"; fi
	done
	rmdir "$aside" 2>/dev/null || true
	if ((${#kept[@]})); then
		say "left running (started before this run): ${kept[*]}; 'make down' stops them"
	fi
}

# ------------------------------------------------------------ shutdown

CLEANED=0
# shellcheck disable=SC2317 # runs as the EXIT trap
cleanup() {
	local rc=$? pid i alive=()
	((CLEANED == 0)) || exit "$rc"
	CLEANED=1
	trap '' INT TERM
	set +e
	for pid in "${PIDS[@]}"; do
		running "$pid" && alive+=("$pid")
	done
	if ((${#alive[@]})); then
		say "stopping the letsgo binaries"
		kill -TERM "${alive[@]}" 2>/dev/null
		for ((i = 0; i < 20; i++)); do
			local still=()
			for pid in "${alive[@]}"; do
				running "$pid" && still+=("$pid")
			done
			alive=("${still[@]}")
			((${#alive[@]})) || break
			sleep 0.5
		done
		for pid in "${alive[@]}"; do
			say "${NAME_OF[$pid]} (pid $pid) did not stop within 10s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null
		done
		wait 2>/dev/null
	fi
	if ((MW_ENSURED)); then
		stop_middleware
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ main

case ${LETSGO_PROFILE:-release} in
# The operator is not part of a local shop. The load generator builds with the services (it is
# small) so `make bench` resolves the same dependency features and reuses this build.
release) BUILD=(cargo build -j2 --release --workspace --bins --exclude letsgo-operator) BIN_DIR=$TARGET/release ;;
debug) BUILD=(cargo build -j2 --workspace --bins --exclude letsgo-operator) BIN_DIR=$TARGET/debug ;;
*) die "LETSGO_PROFILE must be 'release' or 'debug', not '$LETSGO_PROFILE'" ;;
esac

if [[ -z ${JWT_SECRET:-} ]]; then
	JWT_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	say "JWT_SECRET is not set: using a random one for this run (sign-ins do not survive a restart)"
elif (($(printf '%s' "$JWT_SECRET" | wc -c) < 32)); then
	die "JWT_SECRET must be at least 32 bytes long (e.g. openssl rand -hex 32)"
fi
if [[ -z ${INTERNAL_TOKEN:-} ]]; then
	# Every internal gRPC call carries it and every service requires it.
	INTERNAL_TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
fi
if [[ -z ${PAYMENT_WEBHOOK_SECRET:-} ]]; then
	PAYMENT_WEBHOOK_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	say "PAYMENT_WEBHOOK_SECRET is not set: using a random one for this run (the mock provider signs with it)"
fi
ADMIN_USERNAME=${ADMIN_USERNAME:-admin}
ADMIN_PASSWORD_FILE=$STATE/admin-password
if [[ -z ${ADMIN_PASSWORD:-} ]]; then
	if [[ -s $ADMIN_PASSWORD_FILE ]]; then
		ADMIN_PASSWORD=$(<"$ADMIN_PASSWORD_FILE")
	else
		mkdir -p "$STATE"
		ADMIN_PASSWORD=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
		(umask 077 && printf '%s\n' "$ADMIN_PASSWORD" >"$ADMIN_PASSWORD_FILE")
		say "ADMIN_PASSWORD is not set: generated one, kept in $ADMIN_PASSWORD_FILE"
		GENERATED_PASSWORD=1
	fi
fi
if [[ -n ${ADMIN_USERNAMES:-} ]]; then
	say "ADMIN_USERNAMES is no longer read: the admin is $ADMIN_USERNAME; grant others with letsgo-user grant-admin NAME"
fi
LOG_FORMAT=${LOG_FORMAT:-text}
# The product service loads a demo catalogue into an empty shop, so a newcomer sees products.
DEMO_CATALOGUE=${DEMO_CATALOGUE:-true}
# The demo's mock provider approves payments by itself (off by default in the binary).
MOCK_PROVIDER_AUTOCOMPLETE=${MOCK_PROVIDER_AUTOCOMPLETE:-true}
export JWT_SECRET PAYMENT_WEBHOOK_SECRET INTERNAL_TOKEN ADMIN_USERNAME LOG_FORMAT DEMO_CATALOGUE MOCK_PROVIDER_AUTOCOMPLETE

if ! command -v curl >/dev/null && ! command -v python3 >/dev/null; then
	say "installing curl (apt-get) to probe readiness"
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl; } >/dev/null; then
		die "could not install curl"
	fi
fi
command -v curl >/dev/null || HTTP=python3

# Which listed binaries the workspace builds (python3 reads cargo's metadata;
# without it, whatever the build leaves in the target directory decides).
WANT=()
if command -v python3 >/dev/null && bins=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]:
            print(t["name"])'); then
	for entry in "${SERVICES[@]}"; do
		read -r name port admin _ <<<"$entry"
		if grep -qx -- "$name" <<<"$bins"; then
			WANT+=("$entry")
			check_ports "$name" "$port" "$admin" # fail before the long build
		fi
	done
	((${#WANT[@]})) || die "the workspace builds none of: ${SERVICES[*]%% *}"
else
	WANT=("${SERVICES[@]}")
fi

mkdir -p "$STATE" "$LOGS"
for m in "${MW_MARKERS[@]}"; do
	MW_BEFORE[$m]=$(fingerprint "$STATE/$m" || true)
done
MW_ENSURED=1
scripts/middleware.sh ensure
mw_env=$(scripts/middleware.sh env)
eval "$mw_env"
# A database on this machine is reached over loopback, where TLS protects nothing (the bytes
# never leave the kernel) and costs every query on both ends (10-15% of a sale's orders, see
# docs/performance.md): the services speak plain to it unless DB_SSLMODE says otherwise. A
# database elsewhere keeps the services' own default, prefer.
case ${DB_HOST:-} in
127.0.0.1 | localhost | ::1) export DB_SSLMODE=${DB_SSLMODE:-disable} ;;
esac

say "building: ${BUILD[*]}"
t_build=$SECONDS
"${BUILD[@]}"
t_build=$((SECONDS - t_build))

# A new state directory beside an older database (a reboot clears /tmp, not
# PostgreSQL's data): the admin account may exist with a password nobody has
# any more. It gets the one just generated, so the banner tells the truth; a
# password given in ADMIN_PASSWORD, or kept from an earlier run, is never set.
# Only an admin's: a plain account that took the name is someone else's.
if [[ -n ${GENERATED_PASSWORD:-} && -x $BIN_DIR/letsgo-user ]] &&
	"$BIN_DIR/letsgo-user" list-admins 2>/dev/null | grep -qxF -- "$ADMIN_USERNAME"; then
	if answer=$(printf '%s\n' "$ADMIN_PASSWORD" | "$BIN_DIR/letsgo-user" set-password "$ADMIN_USERNAME" 2>&1); then
		say "the existing account $ADMIN_USERNAME now has the password kept in $ADMIN_PASSWORD_FILE"
	else
		say "WARNING: could not give $ADMIN_USERNAME the new password: $answer"
	fi
fi

t_start=$SECONDS
STARTED=()
for entry in "${WANT[@]}"; do
	read -r name port admin path <<<"$entry"
	url=$(readiness_url "$name" "$port" "$admin" "$path")
	if [[ ! -x $BIN_DIR/$name ]]; then
		say "skipping $name: not built by this workspace yet"
		continue
	fi
	start "$name" "$port" "$admin" "$url"
	STARTED+=("$entry")
done
((${#STARTED[@]})) || die "no letsgo binary found in $BIN_DIR"
t_start=$((SECONDS - t_start))
t_ready=$SECONDS

if [[ -x scripts/demo-catalogue.sh ]]; then
	say "loading the demo catalogue (scripts/demo-catalogue.sh)"
	GATEWAY_URL=$GATEWAY_URL scripts/demo-catalogue.sh || die "scripts/demo-catalogue.sh failed (status $?)"
fi

printf '\n  letsgo is up: %s\n\n' "$GATEWAY_URL"
for entry in "${STARTED[@]}"; do
	read -r name port admin _ <<<"$entry"
	printf '  %-15s :%-5s  metrics http://127.0.0.1:%s/metrics\n' "$name" "$port" "$admin"
done
printf '\n  admin    %s / %s   (sign in at %s/#/signin)\n' "$ADMIN_USERNAME" "$ADMIN_PASSWORD" "$GATEWAY_URL"
printf '           the password is the one the account was made with; a lost one is replaced with\n'
printf '           %s/letsgo-user set-password %s  (the new one on stdin)\n' "$BIN_DIR" "$ADMIN_USERNAME"
printf '\n  logs     %s/<binary>.log   (tail -f %s/*.log)\n' "$LOGS" "$LOGS"
printf '  healthy  %ss after start (build %ss, binaries %ss)\n' "$t_ready" "$t_build" "$t_start"
printf '\n  Ctrl-C stops everything.\n\n'

# Wait in the foreground so Ctrl-C reaches the trap; a binary that dies on its
# own takes the rest down with it.
set +e
wait -n -p done_pid "${PIDS[@]}"
rc=$?
set -e
if [[ -n ${done_pid:-} ]]; then
	name=${NAME_OF[$done_pid]}
	# Ctrl-C in a terminal signals every process of the group at once: a binary
	# that drained and exited cleanly may be reaped before this shell's own trap.
	if ((rc == 0)); then
		say "$name stopped; stopping everything"
		exit 0
	fi
	fail_with_log "$LOGS/$name.log" "$name exited unexpectedly (status $rc); stopping everything"
fi
die "wait failed (status $rc); stopping everything"
