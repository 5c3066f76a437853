#!/usr/bin/env bash
# Each service binary's size on disk and its resident memory once ready and idle, as a
# Markdown table: the figures docs/performance.md compares before and after a change to what
# the binaries link. Each binary runs alone on spare ports (+20000) against the middleware
# scripts/middleware.sh describes (started by `make up` or `make test`), with throwaway
# secrets, static discovery and no catalogue; it is measured IDLE_SECS (5) after it turns ready,
# then stopped with SIGTERM. Its topics and keys carry the prefix `footprint.` and its
# databases are letsgo_footprint_<service> (all reused by the next run): never the shop's own,
# whose outbox a relay of its own would otherwise publish elsewhere.
#   scripts/footprint.sh [BIN_DIR]   (default: $CARGO_TARGET_DIR/release or target/release)
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

BIN_DIR=${1:-${CARGO_TARGET_DIR:-target}/release}
IDLE_SECS=${IDLE_SECS:-5}
eval "$(scripts/middleware.sh env)"

# shellcheck source=scripts/services.sh
source scripts/services.sh
status_kib() { sed -n "s/^$2:[[:space:]]*\\([0-9]*\\) kB/\\1/p" "/proc/$1/status" 2>/dev/null || echo 0; }

# RSS is split as the kernel counts it: anonymous (heap, stacks: the process's own) and
# file-backed (the binary's and libraries' code and data pages, shared by every process that
# maps them). PSS divides each shared page among the processes that map it: the memory this
# process costs the machine.
pss_kib() { sed -n 's/^Pss:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
printf '| binary | size (MiB) | idle RSS (MiB) | of it anonymous | of it file-backed | PSS (MiB) |\n|---|---|---|---|---|---|\n'
for entry in "${SERVICES[@]}"; do
	read -r name port admin ready <<<"$entry"
	bin=$BIN_DIR/$name
	[[ -x $bin ]] || {
		echo "footprint: $bin is missing: build it with cargo build --release -p $name" >&2
		exit 1
	}
	url=$(readiness_url "$name" "$port" "$admin" "$ready" 20000)
	secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
	env GRPC_LISTEN=127.0.0.1:$((port + 20000)) GATEWAY_LISTEN=127.0.0.1:$((port + 20000)) \
		ADMIN_LISTEN=127.0.0.1:$((admin + 20000)) JWT_SECRET="$secret" PAYMENT_WEBHOOK_SECRET="$secret" \
		KAFKA_TOPIC_PREFIX=footprint. REDIS_KEY_PREFIX=footprint: DB_NAME="letsgo_footprint_${name#letsgo-}" \
		DEMO_CATALOGUE=false DISCOVERY=static LOG_FORMAT=text "$bin" </dev/null >"/tmp/footprint-$name.log" 2>&1 &
	pid=$!
	up=
	for _ in $(seq 600); do
		if curl -fsS --noproxy '*' --max-time 2 -o /dev/null "$url" 2>/dev/null; then
			up=1
			break
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	[[ -n $up ]] || {
		echo "footprint: $name did not turn ready; see /tmp/footprint-$name.log" >&2
		kill -TERM "$pid" 2>/dev/null || true
		exit 1
	}
	sleep "$IDLE_SECS"
	rss=$(status_kib "$pid" VmRSS)
	anon=$(status_kib "$pid" RssAnon)
	file=$(status_kib "$pid" RssFile)
	pss=$(pss_kib "$pid")
	size=$(stat -c %s "$bin")
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	awk -v n="$name" -v s="$size" -v r="$rss" -v a="$anon" -v f="$file" -v p="$pss" \
		'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", n, s / 1048576, r / 1024, a / 1024, f / 1024, p / 1024 }'
done
