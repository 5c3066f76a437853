#!/usr/bin/env bash
# Local middleware for letsgo: PostgreSQL, Redis, etcd and Apache Kafka (from
# Maven Central, on Debian's Java).  Idempotent; safe to run repeatedly.
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
#   LETSGO_STATE_DIR (/tmp/letsgo)  pidfiles, logs, etcd and Kafka data
#   LETSGO_KAFKA_CACHE (/var/cache/letsgo-kafka)  Apache Kafka's jars, per version
#   KAFKA_CONTROLLER_PORT (Kafka's port + 1)  the local broker's KRaft controller
#   KAFKA_HEAP_OPTS (-Xms64m -Xmx384m)  the local broker's heap
#   KAFKA_JIT_OPTS (-XX:TieredStopAtLevel=1)  the local broker's JIT (C1 only; '' for the JVM's)
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
	local line
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	# Read whole: `| grep -q` leaving early could fail the pipeline under pipefail.
	line=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
	[[ $line == *"$name"* ]]
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

# ---------------------------------------------------------------- Apache Kafka

# Apache Kafka's server jars, resolved from Maven Central by Maven into a cache outside the
# clone, once per version: LETSGO_KAFKA_CACHE/kafka-<version>/libs. Debian ships no Kafka.
KAFKA_VERSION=4.1.1
# Kafka's jars log through SLF4J 1.7; this binding prints to the broker's log file.
KAFKA_SLF4J_VERSION=1.7.36

mw_kafka_home() { printf '%s/kafka-%s\n' "${LETSGO_KAFKA_CACHE:-/var/cache/letsgo-kafka}" "$KAFKA_VERSION"; }

# The major version of the java on PATH (empty when there is none).
mw_java_major() {
	command -v java >/dev/null || return 0
	java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]); exit }'
}

mw_kafka_install() {
	local home log=$MW_STATE/install.log tmp major
	home=$(mw_kafka_home)
	[[ -f $home/.complete ]] && return 0
	major=$(mw_java_major)
	if [[ -z $major ]] || ((major < 17)); then
		mw_apt_install openjdk-17-jre-headless
		major=$(mw_java_major)
		[[ -n $major ]] && ((major >= 17)) ||
			mw_die "kafka: Apache Kafka $KAFKA_VERSION needs Java 17 or later; 'java' on PATH is ${major:-missing} (install openjdk-17-jre-headless)"
	fi
	command -v mvn >/dev/null || mw_apt_install maven
	mw_say "kafka: installing Apache Kafka $KAFKA_VERSION from Maven Central into $home (once; log $log)"
	mkdir -p "${home%/*}"
	tmp=$(mktemp -d "${home%/*}/.install.XXXXXX")
	cat >"$tmp/pom.xml" <<-POM
		<project xmlns="http://maven.apache.org/POM/4.0.0">
		  <modelVersion>4.0.0</modelVersion>
		  <groupId>dev.letsgo</groupId>
		  <artifactId>kafka-broker</artifactId>
		  <version>1</version>
		  <dependencies>
		    <dependency>
		      <groupId>org.apache.kafka</groupId>
		      <artifactId>kafka_2.13</artifactId>
		      <version>$KAFKA_VERSION</version>
		    </dependency>
		    <dependency>
		      <groupId>org.slf4j</groupId>
		      <artifactId>slf4j-simple</artifactId>
		      <version>$KAFKA_SLF4J_VERSION</version>
		    </dependency>
		  </dependencies>
		</project>
	POM
	# A private local repository, dropped afterwards: the cache keeps only the jars.
	if ! (cd "$tmp" && mvn -B -q -Dmaven.repo.local="$tmp/m2" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp/libs") >>"$log" 2>&1; then
		tail -n 20 "$log" >&2
		rm -rf "$tmp"
		mw_die "kafka: Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION; see $log"
	fi
	rm -rf "$tmp/m2" "$tmp/target"
	touch "$tmp/.complete"
	rm -rf "$home"
	mv "$tmp" "$home"
	chmod 755 "$home"
	mw_say "kafka: installed $(find "$home/libs" -name '*.jar' | wc -l) jars ($(du -sh "$home" | cut -f1)) in $home"
}

# Whether HOST PORT answers a Kafka ApiVersions request (v0): a Kafka broker, not merely an open
# port.
# shellcheck disable=SC2016 # $0/$1 expand in the child bash
mw_kafka_answers() {
	local reply
	reply=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		# length 10: api key 18 (ApiVersions), version 0, correlation id 7, no client id
		printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\xff\xff" >&3
		head -c 10 <&3 | od -An -tx1' "$1" "$2" 2>/dev/null) || return 1
	# length (4 bytes), correlation id 7, error code 0
	[[ $(tr -d ' \n' <<<"$reply") =~ ^[0-9a-f]{8}000000070000$ ]]
}

# The local broker's settings (STATE/kafka/server.properties); its log directory is STATE/kafka/data.
mw_kafka_properties() { # PORT CONTROLLER-PORT DATA
	cat <<-PROPS
		# Written by scripts/middleware.sh at each start: one node, broker and controller (KRaft).
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@127.0.0.1:$2
		controller.listener.names=CONTROLLER
		listeners=PLAINTEXT://127.0.0.1:$1,CONTROLLER://127.0.0.1:$2
		advertised.listeners=PLAINTEXT://127.0.0.1:$1
		listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
		inter.broker.listener.name=PLAINTEXT
		log.dirs=$3
		# One broker: internal topics with one replica, groups formed at once.
		offsets.topic.replication.factor=1
		offsets.topic.num.partitions=10
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		share.coordinator.state.topic.replication.factor=1
		share.coordinator.state.topic.min.isr=1
		group.initial.rebalance.delay.ms=0
		# The services create their topics (ensure_topics), with the partitions they are told.
		num.partitions=3
		# A developer's broker: events are kept three days, in small segments, so the disk it
		# takes stays bounded across runs.
		log.retention.hours=72
		log.segment.bytes=16777216
		log.index.size.max.bytes=1048576
	PROPS
}

mw_kafka_start() {
	local home dir=$MW_STATE/kafka data pid cport log=$MW_STATE/kafka.log from
	if [[ -n $(mw_ours tansu tansu) ]]; then
		mw_say "kafka: stopping the Kafka-protocol imitation (tansu) an earlier version of this script started; Apache Kafka replaces it"
		mw_daemon_stop tansu tansu
	fi
	if mw_tcp_open "$KAFKA_H" "$KAFKA_P"; then
		mw_kafka_answers "$KAFKA_H" "$KAFKA_P" ||
			mw_die "kafka: $KAFKA_H:$KAFKA_P accepts connections but does not answer as a Kafka broker (port taken by another program? 'ss -ltnp' names it; or set KAFKA_BROKERS)"
		mw_say "kafka: already running at $KAFKA_H:$KAFKA_P$(mw_ours kafka "$dir/server.properties")"
		return 0
	fi
	if ! mw_is_local "$KAFKA_H"; then
		mw_say "kafka: waiting for remote $KAFKA_H:$KAFKA_P"
		return 0
	fi
	# Installed already unless the port was taken when `ensure` looked (by tansu, stopped above).
	mw_kafka_install
	home=$(mw_kafka_home)
	cport=${KAFKA_CONTROLLER_PORT:-$((KAFKA_P + 1))}
	data=$dir/data
	mkdir -p "$dir"
	mw_tcp_open 127.0.0.1 "$cport" &&
		mw_die "kafka: the controller port 127.0.0.1:$cport is taken ('ss -ltnp' names the program); free it or set KAFKA_CONTROLLER_PORT"
	mw_kafka_properties "$KAFKA_P" "$cport" "$data" >"$dir/server.properties"
	# A pid file whose broker is gone means the last run did not stop it (killed, or the
	# machine went down): Kafka recovers its log directory on start; say so.
	pid=$(mw_pidfile_pid "$MW_STATE/kafka.pid" || true)
	if [[ -n $pid ]] && ! mw_pid_is "$pid" "$dir/server.properties" && [[ -f $data/meta.properties ]]; then
		mw_say "kafka: the broker was not stopped cleanly last time (pid $pid is gone); Kafka recovers $data as it starts (details in $log)"
	fi
	rm -f "$MW_STATE/kafka.pid"
	[[ -f $data/meta.properties ]] || mw_kafka_format "$home" "$dir" "$log"
	from=$(mw_log_size "$log")
	mw_kafka_spawn "$home" "$dir" "$log"
	if ! mw_kafka_wait "$log" "$from"; then
		# A log directory a killed run left unreadable: set it aside and start afresh, loudly.
		if tail -c +"$((from + 1))" "$log" | grep -Eq 'initializeLogDirs|node ID not found|meta\.properties|KafkaStorageException|CorruptRecordException|InconsistentClusterIdException|Invalid cluster.id|NoSuchFileException|is not formatted'; then
			local aside
			aside=$dir/data.unreadable-$(date +%Y%m%d-%H%M%S)
			# Only the newest unreadable directory is kept, so repeated failures do not fill the disk.
			rm -rf "$dir"/data.unreadable-*
			mv "$data" "$aside"
			mw_say "kafka: WARNING: the broker could not read its log directory; moved it to $aside and formatted a new one (the events and offsets it held are not in the new broker; the services' outboxes still hold what they had not published)"
			mw_kafka_format "$home" "$dir" "$log"
			from=$(mw_log_size "$log")
			mw_kafka_spawn "$home" "$dir" "$log"
			mw_kafka_wait "$log" "$from" || mw_kafka_failed "$log" "$from"
		else
			mw_kafka_failed "$log" "$from"
		fi
	fi
	mw_say "kafka: Apache Kafka $KAFKA_VERSION started at 127.0.0.1:$KAFKA_P (controller :$cport, pid $(mw_pidfile_pid "$MW_STATE/kafka.pid"), data $data, log $log)"
}

mw_log_size() { if [[ -f $1 ]]; then stat -c %s "$1"; else echo 0; fi; }

mw_kafka_format() { # HOME DIR LOG
	local id
	id=$(java -cp "$1/libs/*" kafka.tools.StorageTool random-uuid 2>>"$3") ||
		mw_die "kafka: could not make a cluster id with $1 (java: $(mw_java_major)); see $3"
	java -cp "$1/libs/*" kafka.tools.StorageTool format --cluster-id="$id" --config "$2/server.properties" >>"$3" 2>&1 ||
		{ tail -n 15 "$3" >&2; mw_die "kafka: formatting $2/data failed; see $3"; }
	mw_say "kafka: formatted a new log directory $2/data (cluster $id)"
}

mw_kafka_spawn() { # HOME DIR LOG
	local heap=${KAFKA_HEAP_OPTS:--Xms64m -Xmx384m}
	# The JIT compiles with C1 only: the optimising C2 compiler took a quarter of a core for
	# minutes after each start (beside a flash sale on two cores), for speed a local broker's
	# few thousand messages a second never need. KAFKA_JIT_OPTS='' restores the JVM's default.
	local jit=${KAFKA_JIT_OPTS--XX:TieredStopAtLevel=1}
	# Kafka keeps a file open per log segment and index: many test topics need many.
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	# shellcheck disable=SC2086 # the heap and JIT options are words
	mw_spawn kafka "$3" java $heap $jit -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
		-Djava.awt.headless=true -Dorg.slf4j.simpleLogger.showDateTime=true \
		-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd\'T\'HH:mm:ss.SSS \
		-cp "$1/libs/*" kafka.Kafka "$2/server.properties"
}

# Waits until the broker answers Kafka requests; fails (status 1) when it exits or times out.
mw_kafka_wait() { # LOG FROM
	local pid deadline=$((SECONDS + MW_TIMEOUT))
	pid=$(mw_pidfile_pid "$MW_STATE/kafka.pid")
	until mw_kafka_answers 127.0.0.1 "$KAFKA_P"; do
		kill -0 "$pid" 2>/dev/null || return 1
		if ((SECONDS >= deadline)); then
			kill -TERM "$pid" 2>/dev/null
			return 1
		fi
		sleep 0.3
	done
}

mw_kafka_failed() { # LOG FROM
	local why
	why=$(tail -c +"$(($2 + 1))" "$1" | grep -E 'ERROR|Exception|Address already in use' | head -n 3)
	tail -c +"$(($2 + 1))" "$1" | tail -n 15 >&2
	rm -f "$MW_STATE/kafka.pid"
	mw_die "kafka: Apache Kafka did not start${why:+: $why}; see $1"
}

mw_kafka_stop() {
	local f=$MW_STATE/kafka.pid pid
	[[ -f $f ]] || return 0
	pid=$(mw_pidfile_pid "$f" || true)
	if [[ -n $pid ]] && mw_pid_is "$pid" "$MW_STATE/kafka/server.properties"; then
		kill -TERM "$pid" 2>/dev/null || true
		mw_wait_gone kafka "$pid"
		mw_say "kafka: stopped (pid $pid)"
	fi
	rm -f "$f"
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
	if ((local_kafka)); then mw_kafka_install; fi

	# A package's postinst may itself have started a service: the *_start
	# functions re-probe the port and then just report "already running".
	MW_PG_LOG="" MW_ETCD_PID=""
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
	# A local broker this script started was waited for as it started (mw_kafka_start).
	mw_wait "kafka at $KAFKA_H:$KAFKA_P" "" "" mw_kafka_answers "$KAFKA_H" "$KAFKA_P"

	mw_pg_databases
}

mw_stop() {
	[[ -d $MW_STATE ]] || return 0
	mw_daemon_stop tansu tansu
	mw_kafka_stop
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

# What the tests start of their own besides the shared middleware (a TLS Redis, brokers of
# their own from the same Apache Kafka install, certificates): installed when absent; prints
# the exports (LETSGO_KAFKA_HOME: the install whose libs/ the tests' brokers run).
mw_test_tools() {
	local pkgs=()
	mkdir -p "$MW_STATE"
	command -v redis-server >/dev/null || pkgs+=(redis-server)
	command -v openssl >/dev/null || pkgs+=(openssl)
	# Progress goes to stderr: stdout is for eval.
	if ((${#pkgs[@]})); then mw_apt_install "${pkgs[@]}" >&2; fi
	mw_kafka_install >&2
	printf 'export LETSGO_KAFKA_HOME=%q\n' "$(mw_kafka_home)"
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
