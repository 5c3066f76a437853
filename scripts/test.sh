#!/usr/bin/env bash
# The full check, as CI runs it (.ci/run -> make test): rustfmt, clippy, the
# tests under cargo-nextest against real PostgreSQL/Redis/etcd/Kafka (the
# crates keep no doctests: tests live in tests/ and in unit modules). Every
# step runs even if an earlier one failed; the exit status is non-zero if any
# did.
#
#   scripts/test.sh [nextest args...]     e.g. scripts/test.sh -E 'test(login)'
#
# The middleware this run starts is deliberately left running: the next run
# (and a developer's edit-test loop) reuses it instead of starting it again.
# `make down` stops it.
#
# Tests find the middleware through DATABASE_URL_BASE (a URL to the postgres
# database; tests create their own databases), REDIS_URL_BASE, KAFKA_BROKERS
# and ETCD_HOSTS.  NEXTEST_TEST_THREADS (4) sets how many tests run at once.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

# shellcheck source=scripts/tools.sh
. scripts/tools.sh

say() { printf 'test: %s\n' "$*"; }

STEPS=()
FAILED=()
summary() {
	local rc=$?
	((${#FAILED[@]} == 0)) || rc=1
	printf '\n'
	for line in "${STEPS[@]}"; do say "$line"; done
	if ((rc == 0)); then
		say "all passed; wall time $((SECONDS / 60))m$((SECONDS % 60))s"
	else
		say "FAILED${FAILED[*]:+: ${FAILED[*]}}; wall time $((SECONDS / 60))m$((SECONDS % 60))s"
	fi
	exit "$rc"
}
trap summary EXIT
# Stopped from outside: the summary must not read "all passed".
trap 'FAILED+=(interrupted); exit 143' TERM INT

step() { # NAME CMD...
	local name=$1 t0=$SECONDS rc=0
	shift
	say "==> $name: $*"
	"$@" || rc=$?
	if ((rc == 0)); then
		STEPS+=("$(printf '%-9s ok      %4ss' "$name" $((SECONDS - t0)))")
	else
		STEPS+=("$(printf '%-9s FAILED  %4ss  (status %s)' "$name" $((SECONDS - t0)) "$rc")")
		FAILED+=("$name")
	fi
}

# percent-encode for the userinfo part of a URL
urlencode() {
	local LC_ALL=C s=$1 out='' c i
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[a-zA-Z0-9._~-]) out+=$c ;;
		*) printf -v c '%%%02X' "'$c" && out+=$c ;;
		esac
	done
	printf '%s' "$out"
}

scripts/middleware.sh ensure
mw_env=$(scripts/middleware.sh env)
eval "$mw_env"
# LETSGO_KAFKA_HOME: the Apache Kafka install the tests start brokers of their own from
# (a broker to pause, a broker over TLS); a TLS Redis.
test_tools=$(scripts/middleware.sh test-tools)
eval "$test_tools"

auth=$(urlencode "$DB_USER")
if [[ -n ${DB_PASSWORD:-} ]]; then auth+=:$(urlencode "$DB_PASSWORD"); fi
export DATABASE_URL_BASE="postgres://$auth@$DB_HOST:$DB_PORT/postgres"
export REDIS_URL_BASE="redis://$REDIS_HOST:$REDIS_PORT/"
export KAFKA_BROKERS ETCD_HOSTS
export NEXTEST_TEST_THREADS=${NEXTEST_TEST_THREADS:-4}

if ! cargo nextest --version >/dev/null 2>&1; then
	say "installing cargo-nextest (cargo install --locked cargo-nextest)"
	cargo install --locked cargo-nextest
fi

# The storefront's browser test (services/gateway/tests/shop/storefront.rs) drives
# Debian's Chromium through the npm package playwright-core; nothing downloads
# a browser of its own. Installs Chromium when it is missing, and the Node
# packages when node_modules is missing or older than package-lock.json.
# (Runs under `step`, where set -e is off: each command returns on failure.)
ensure_browser_test_deps() {
	local dir=services/gateway/tests/browser
	if [[ ! -x /usr/bin/chromium ]]; then
		say "installing Chromium for the storefront's browser test (apt-get)"
		local sudo=()
		((EUID == 0)) || sudo=(sudo)
		"${sudo[@]}" apt-get update || return
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || return
	fi
	if [[ ! -d $dir/node_modules || $dir/package-lock.json -nt $dir/node_modules ]]; then
		say "installing the browser test's Node packages (npm ci in $dir)"
		(cd "$dir" && npm ci --no-audit --no-fund) || return
	fi
}

# The operator's chart test (operator/tests/chart.rs) runs a real helm and
# kubernetes-validate: helm as scripts/tools.sh installs it, the Kubernetes JSON
# schemas from the PyPI package kubernetes-validate (in a venv under target/tools,
# reused by later runs); HELM_BIN and KUBERNETES_VALIDATE_BIN tell the test where.
ensure_chart_test_tools() {
	local tools=${CARGO_TARGET_DIR:-target}/tools
	ensure_helm || return
	if [[ ! -x $tools/venv/bin/kubernetes-validate ]]; then
		say "installing kubernetes-validate for the chart test (pip, venv in $tools/venv)"
		python3 -m venv "$tools/venv" || return
		"$tools/venv/bin/python" -m pip install --quiet kubernetes-validate || return
	fi
	KUBERNETES_VALIDATE_BIN=$(readlink -f "$tools/venv/bin/kubernetes-validate")
	export KUBERNETES_VALIDATE_BIN
}

# The operator's backup-script test (operator/tests/backup_scripts.rs) uploads to,
# prunes and restores from a real S3-compatible server: moto's moto_server, driven
# by the same `aws` CLI the backup Jobs run (awscli from PyPI). Both live in a venv
# under target/tools, reused by later runs; S3_TOOLS_DIR tells the test where.
ensure_s3_test_tools() {
	local venv=${CARGO_TARGET_DIR:-target}/tools/s3-venv
	if [[ ! -x $venv/bin/aws || ! -x $venv/bin/moto_server ]]; then
		say "installing the AWS CLI and moto's S3 server for the backup test (pip, venv in $venv)"
		python3 -m venv "$venv" || return
		"$venv/bin/python" -m pip install --quiet awscli 'moto[server]' || return
	fi
	S3_TOOLS_DIR=$(readlink -f "$venv/bin")
	export S3_TOOLS_DIR
}

# The gateway's contract test (services/gateway/tests/shop/contract.rs) runs
# schemathesis against the whole shop, from the OpenAPI document it serves: the
# PyPI package, pinned (its checks and options change between releases), in a
# venv under target/tools reused by later runs; SCHEMATHESIS_BIN tells the test where.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
	local venv=${CARGO_TARGET_DIR:-target}/tools/schemathesis-venv
	if [[ $("$venv/bin/st" --version 2>/dev/null) != *" $SCHEMATHESIS_VERSION" ]]; then
		say "installing schemathesis $SCHEMATHESIS_VERSION for the contract test (pip, venv in $venv)"
		python3 -m venv "$venv" || return
		"$venv/bin/python" -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" || return
	fi
	SCHEMATHESIS_BIN=$(readlink -f "$venv/bin/st")
	export SCHEMATHESIS_BIN
}

# The operator's control-plane suite (operator/tests/control_plane.rs) runs against
# kube-apiserver, kube-controller-manager, kube-scheduler and a kwok node, the end-to-end
# suite (operator/tests/cluster.rs) on the real node beside it, all built from source by
# scripts/kube.sh (cached outside the clone; the first build takes minutes).
# Started here, before the tests, so the build is not charged to a test; the tests
# find it running (and would start it themselves when run alone). Left running, like
# the middleware; `make down` stops it.
ensure_control_plane() {
	scripts/kube.sh ensure >/dev/null
}

# Every image the tests run (operator/tests/images.rs runs each as the operator configures
# it; the real node's suite, operator/tests/cluster.rs, runs them all, loaded into the node
# here): Debian bases made with mmdebstrap, the shop's release binaries and buildah builds,
# cached in /var/cache/letsgo-images, so a first run's minutes are not charged to a test (the
# tests find them built and loaded). A warm run only checks.
ensure_images() {
	scripts/images.sh all >/dev/null &&
		scripts/images.sh load /run/letsgo-node/containerd.sock >/dev/null
}

step fmt cargo fmt --all -- --check
step clippy cargo clippy -j2 --workspace --all-targets -- -D warnings
step browser ensure_browser_test_deps
step charttools ensure_chart_test_tools
step s3tools ensure_s3_test_tools
step apitools ensure_schemathesis
step cluster ensure_control_plane
step images ensure_images
# Tests list each Kafka topic prefix they make, with their process id (in
# $LETSGO_TEST_TOPICS, else /tmp/letsgo-test-topics: shared with tests run by
# hand); the sweep deletes the topics of every prefix whose process has ended
# (before the tests: runs killed or run by hand; after them: this one), so the
# shared broker keeps only the shop's own topics. A small crate of its own, so
# building it compiles no service again.
sweep_test_topics() {
	cargo run -q -j2 -p letsgo-test-topics --bin letsgo-sweep-test-topics
}
step topics sweep_test_topics
# The real node's suite (operator/tests/cluster.rs) drives its load with the letsgo-loadgen
# binary beside its own; `cargo nextest run` builds only test targets and the binaries of
# packages that have integration tests, which the load generator has not (on a machine that
# never ran `cargo build`, every load test failed looking for it).
step loadgen cargo build -q -j2 -p letsgo-loadgen
# nextest's -j is its test-thread count (NEXTEST_TEST_THREADS above); the
# compile is capped with --build-jobs.
step nextest cargo nextest run --build-jobs 2 --workspace --no-fail-fast "$@"
step cleanup sweep_test_topics
