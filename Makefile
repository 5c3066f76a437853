# letsgo developer entry points.  `make` alone lists them.
# Extra arguments for the test runner: make test ARGS='-E "test(login)"'

.DEFAULT_GOAL := help
.PHONY: help up test build lint middleware cluster kube-up down bench bench-kube images

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

# Images. `make images`: the shop's seven (the Dockerfile's targets, from binaries built here)
# and the managed middleware's five, built offline with buildah on Debian bases made from
# Debian's packages (scripts/images.sh all), as OCI archives in /var/cache/letsgo-images;
# `scripts/images.sh load SOCKET` imports them into a node's containerd. With DOCKER=docker (or
# podman): the seven shop images only, built by that tool from the rust and debian images.
# Tagged $(REGISTRY)/letsgo-<target>:$(TAG).
DOCKER ?=
REGISTRY ?= $(if $(DOCKER),ghcr.io/letsgo,localhost/letsgo)
TAG ?= $(shell awk -F'"' '/^appVersion:/ {print $$2}' charts/letsgo/Chart.yaml)
IMAGES := user product cart order payment gateway operator

images: ## Build every image offline (buildah); DOCKER=docker builds the shop's with Docker
ifeq ($(DOCKER),)
	LETSGO_IMAGE_REGISTRY=$(REGISTRY) LETSGO_IMAGE_TAG=$(TAG) scripts/images.sh all
else
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: '$(DOCKER)' not found; install it, or leave DOCKER unset to build with buildah" >&2; exit 1; }
	@set -e; for t in $(IMAGES); do \
		echo "$(DOCKER) build --target $$t -t $(REGISTRY)/letsgo-$$t:$(TAG) ."; \
		$(DOCKER) build --target $$t -t $(REGISTRY)/letsgo-$$t:$(TAG) .; \
	done
endif

bench: ## Load benchmarks against this machine's ceilings (starts make up if :8888 is free)
	scripts/bench.sh

bench-kube: ## The bench's detail, checkout and flash sale on the real node, through kube-proxy's NodePort
	scripts/bench-kube.sh

cluster: ## A real Kubernetes control plane on loopback (built once); prints KUBECONFIG; Ctrl-C stops it
	scripts/kube.sh run

kube-up: ## The shop on the local cluster's real node (images built here, Helm, the Store); Ctrl-C stops it
	scripts/kube-up.sh

down: ## Stop the middleware and the control plane the scripts started
	scripts/kube.sh stop
	scripts/middleware.sh stop
