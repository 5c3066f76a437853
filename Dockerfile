# Every letsgo binary from one build; one small image per binary, picked with --target:
#
#   docker build --target gateway  -t ghcr.io/letsgo/letsgo-gateway:0.1.0 .
#   docker build --target operator -t ghcr.io/letsgo/letsgo-operator:0.1.0 .
#
# Targets: user, product, cart, order, payment, gateway, operator. The builder stage is shared,
# so building all seven compiles the workspace once. The cache mounts need BuildKit (Docker's
# default builder) or buildah/podman; no Dockerfile frontend is pulled.
#
# Build arguments: the base images, so that a mirror or an image made locally serves, and
# where the binaries come from.
#   BUILDER_IMAGE  the Rust toolchain on Debian 12 (rust:1.95-bookworm)
#   RUNTIME_BASE   Debian 12 (debian:bookworm-slim); ca-certificates and libssl3 are installed
#                  only if it lacks them (apt then needs a mirror)
#   BINARIES       builder: compiled in the builder stage. prebuilt: the build context is a
#                  directory holding the binaries (letsgo-<target>, built on a Debian 12 host),
#                  and the builder stage and its image are not used at all. scripts/images.sh
#                  builds this way with buildah, on a Debian base made from Debian's packages:
#
#   buildah bud --build-arg BINARIES=prebuilt --build-arg RUNTIME_BASE=localhost/letsgo/debian:bookworm \
#     --target gateway -f Dockerfile DIR-HOLDING-letsgo-gateway

ARG BUILDER_IMAGE=rust:1.95-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim
ARG BINARIES=builder

FROM ${BUILDER_IMAGE} AS builder
# protoc compiles the gRPC contracts; librdkafka is built from source with gcc, make and perl,
# against OpenSSL's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p letsgo-user -p letsgo-product -p letsgo-cart -p letsgo-order -p letsgo-payment \
      -p letsgo-gateway -p letsgo-operator --bins \
 && mkdir -p /out \
 && for bin in user product cart order payment gateway operator; do \
      cp target/release/letsgo-$bin /out/; \
    done

# The binaries as the context holds them (BINARIES=prebuilt).
FROM scratch AS prebuilt
COPY . /out/

# The stage the runtime targets copy their binary from: one of the two above.
FROM ${BINARIES} AS binaries

# glibc, zlib and OpenSSL (librdkafka's TLS and SASL/SCRAM), nothing else; runs as an
# unprivileged user with no shell login.
FROM ${RUNTIME_BASE} AS runtime
RUN missing= \
 && for package in ca-certificates libssl3; do \
      dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
        || missing="$missing $package"; \
    done \
 && if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --gid 65532 letsgo \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin letsgo
USER 65532:65532

FROM runtime AS user
COPY --from=binaries /out/letsgo-user /usr/local/bin/
EXPOSE 9001 9101
ENTRYPOINT ["/usr/local/bin/letsgo-user"]

FROM runtime AS product
COPY --from=binaries /out/letsgo-product /usr/local/bin/
EXPOSE 9002 9102
ENTRYPOINT ["/usr/local/bin/letsgo-product"]

FROM runtime AS cart
COPY --from=binaries /out/letsgo-cart /usr/local/bin/
EXPOSE 9003 9103
ENTRYPOINT ["/usr/local/bin/letsgo-cart"]

FROM runtime AS order
COPY --from=binaries /out/letsgo-order /usr/local/bin/
EXPOSE 9004 9104
ENTRYPOINT ["/usr/local/bin/letsgo-order"]

FROM runtime AS payment
COPY --from=binaries /out/letsgo-payment /usr/local/bin/
EXPOSE 9005 9105
ENTRYPOINT ["/usr/local/bin/letsgo-payment"]

FROM runtime AS gateway
COPY --from=binaries /out/letsgo-gateway /usr/local/bin/
EXPOSE 8888 9100
ENTRYPOINT ["/usr/local/bin/letsgo-gateway"]

FROM runtime AS operator
COPY --from=binaries /out/letsgo-operator /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/letsgo-operator"]
