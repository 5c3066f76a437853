# syntax=docker/dockerfile:1
# Every letsgo binary from one build; one small image per binary, picked with --target:
#
#   docker build --target gateway  -t ghcr.io/letsgo/letsgo-gateway:0.1.0 .
#   docker build --target operator -t ghcr.io/letsgo/letsgo-operator:0.1.0 .
#
# Targets: user, product, cart, order, payment, gateway, operator. The builder stage is shared,
# so building all seven compiles the workspace once.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
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

# glibc, zlib and OpenSSL (librdkafka's TLS and SASL/SCRAM), nothing else; runs as an
# unprivileged user with no shell login.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 letsgo \
 && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin letsgo
USER 65532:65532

FROM runtime AS user
COPY --from=builder /out/letsgo-user /usr/local/bin/
EXPOSE 9001 9101
ENTRYPOINT ["/usr/local/bin/letsgo-user"]

FROM runtime AS product
COPY --from=builder /out/letsgo-product /usr/local/bin/
EXPOSE 9002 9102
ENTRYPOINT ["/usr/local/bin/letsgo-product"]

FROM runtime AS cart
COPY --from=builder /out/letsgo-cart /usr/local/bin/
EXPOSE 9003 9103
ENTRYPOINT ["/usr/local/bin/letsgo-cart"]

FROM runtime AS order
COPY --from=builder /out/letsgo-order /usr/local/bin/
EXPOSE 9004 9104
ENTRYPOINT ["/usr/local/bin/letsgo-order"]

FROM runtime AS payment
COPY --from=builder /out/letsgo-payment /usr/local/bin/
EXPOSE 9005 9105
ENTRYPOINT ["/usr/local/bin/letsgo-payment"]

FROM runtime AS gateway
COPY --from=builder /out/letsgo-gateway /usr/local/bin/
EXPOSE 8888 9100
ENTRYPOINT ["/usr/local/bin/letsgo-gateway"]

FROM runtime AS operator
COPY --from=builder /out/letsgo-operator /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/letsgo-operator"]
