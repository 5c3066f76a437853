# letsgo developer entry points.  `make` alone lists them.
# Extra arguments for the test runner: make test ARGS='-E "test(login)"'

.DEFAULT_GOAL := help
.PHONY: help up test build lint middleware cluster down bench images

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: ## Start middleware, build and run every service; Ctrl-C stops it all
	scripts/up.sh

test: ## fmt check, clippy and every test (nextest) against real middleware
	scripts/test.sh $(ARGS)

build: ## Build every binary (debug)
	cargo build -j2 --workspace --bins

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy -j2 --workspace --all-targets -- -D warnings

middleware: ## Install/start PostgreSQL, Redis, etcd and Apache Kafka
	scripts/middleware.sh ensure

# Images: one Dockerfile target per binary, tagged $(REGISTRY)/letsgo-<target>:$(TAG).
REGISTRY ?= ghcr.io/letsgo
TAG ?= $(shell awk -F'"' '/^appVersion:/ {print $$2}' charts/letsgo/Chart.yaml)
IMAGES := user product cart order payment gateway operator
DOCKER ?= docker

images: ## Build every image (REGISTRY=ghcr.io/letsgo TAG=<chart appVersion>)
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' not found; install Docker (or set DOCKER=podman)" >&2; exit 1; }
	@set -e; for t in $(IMAGES); do \
		echo "$(DOCKER) build --target $$t -t $(REGISTRY)/letsgo-$$t:$(TAG) ."; \
		$(DOCKER) build --target $$t -t $(REGISTRY)/letsgo-$$t:$(TAG) .; \
	done

bench: ## Load benchmarks against this machine's ceilings (starts make up if :8888 is free)
	scripts/bench.sh

cluster: ## A real Kubernetes control plane on loopback (built once); prints KUBECONFIG; Ctrl-C stops it
	scripts/kube.sh run

down: ## Stop the middleware and the control plane the scripts started
	scripts/kube.sh stop
	scripts/middleware.sh stop
