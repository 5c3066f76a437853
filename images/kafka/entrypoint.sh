#!/bin/bash
# Starts Apache Kafka configured from the environment, as the apache/kafka image is:
#   KAFKA_<NAME>=value  the broker setting <name>: lower case, "_" -> ".", "__" -> "_",
#                       "___" -> "-" (KAFKA_LOG_DIRS -> log.dirs)
#   CLUSTER_ID          formats a log directory that has never been formatted (KRaft)
#   KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_OPTS  options for the JVM, not settings
# The settings go to $KAFKA_CONFIG_DIR/server.properties (/opt/kafka/config), written anew at
# each start; the broker then replaces this shell, so it gets the Pod's SIGTERM itself.
set -euo pipefail

config_dir=${KAFKA_CONFIG_DIR:-/opt/kafka/config}
properties=$config_dir/server.properties
classpath='/opt/kafka/libs/*'

die() {
	printf 'kafka entrypoint: %s\n' "$*" >&2
	exit 64
}

mkdir -p "$config_dir"
: >"$properties"
for name in $(compgen -e | grep '^KAFKA_' | sort); do
	case $name in
	KAFKA_HEAP_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_OPTS | KAFKA_CONFIG_DIR) continue ;;
	esac
	key=${name#KAFKA_}
	key=${key,,}
	key=${key//___/$'\x01'}
	key=${key//__/$'\x02'}
	key=${key//_/.}
	key=${key//$'\x01'/-}
	key=${key//$'\x02'/_}
	value=${!name}
	[[ $value != *$'\n'* ]] || die "$name holds a line break; a setting is one line"
	printf '%s=%s\n' "$key" "$value" >>"$properties"
done
grep -q '^process\.roles=' "$properties" ||
	die "KAFKA_PROCESS_ROLES is not set (broker,controller for one node); settings come from KAFKA_* variables"

log_dirs=$(sed -n 's/^log\.dirs=//p' "$properties")
first_dir=${log_dirs%%,*}
[[ -n $first_dir ]] || die "KAFKA_LOG_DIRS is not set: the log directory must be on the data volume"
if [[ ! -f $first_dir/meta.properties ]]; then
	[[ -n ${CLUSTER_ID:-} ]] || die "$first_dir has never been formatted and CLUSTER_ID is not set"
	java -cp "$classpath" kafka.tools.StorageTool format --ignore-formatted --cluster-id="$CLUSTER_ID" --config "$properties"
fi

# shellcheck disable=SC2086 # the option variables are lists of words
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} \
	${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError} \
	${KAFKA_OPTS:-} -Djava.awt.headless=true -cp "$classpath" kafka.Kafka "$properties"
