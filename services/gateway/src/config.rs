//! The gateway's settings.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{JwtArgs, RedisArgs, TelemetryArgs, parse_millis};
use letsgo_platform::discovery::DiscoveryArgs;

/// letsgo HTTP gateway: the original letsGO REST API on :8888, routed to the gRPC services.
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-gateway", version, about)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(
        long = "listen",
        env = "GATEWAY_LISTEN",
        value_name = "GATEWAY_LISTEN",
        default_value = "0.0.0.0:8888"
    )]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long = "admin-listen",
        env = "ADMIN_LISTEN",
        value_name = "ADMIN_LISTEN",
        default_value = "0.0.0.0:9100"
    )]
    pub admin_listen: SocketAddr,
    /// Longest a request may take before it is answered 503.
    #[arg(long = "request-timeout-ms", env = "REQUEST_TIMEOUT_MS", value_name = "REQUEST_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub request_timeout: Duration,
    /// Sustained requests per second allowed to one client (a user, or an address when
    /// signed out).
    #[arg(
        long = "rate-limit-per-second",
        env = "RATE_LIMIT_PER_SECOND",
        value_name = "RATE_LIMIT_PER_SECOND",
        default_value = "100"
    )]
    pub rate_limit_per_second: NonZeroU32,
    /// Requests one client may send in a burst above the sustained rate.
    #[arg(
        long = "rate-limit-burst",
        env = "RATE_LIMIT_BURST",
        value_name = "RATE_LIMIT_BURST",
        default_value = "200"
    )]
    pub rate_limit_burst: NonZeroU32,
    /// Most requests served at once; beyond it requests are answered 503 at once instead of
    /// queueing without bound.
    #[arg(
        long = "max-concurrent-requests",
        env = "MAX_CONCURRENT_REQUESTS",
        value_name = "MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024
    )]
    pub max_concurrent_requests: usize,
    /// Longest a product detail answer stays in the gateway's cache; changes drop it sooner
    /// (announced by the product service through Redis). 0 turns the cache off.
    #[arg(long = "product-cache-ttl-ms", env = "PRODUCT_CACHE_TTL_MS", value_name = "PRODUCT_CACHE_TTL_MS", default_value = "30000", value_parser = parse_millis)]
    pub product_cache_ttl: Duration,
    /// Most product detail answers the gateway keeps. 0 turns the cache off.
    #[arg(
        long = "product-cache-entries",
        env = "PRODUCT_CACHE_ENTRIES",
        value_name = "PRODUCT_CACHE_ENTRIES",
        default_value_t = 10_000
    )]
    pub product_cache_entries: usize,
    /// Most memory the product detail answers may take, in MiB. 0 turns the cache off.
    #[arg(
        long = "product-cache-max-mib",
        env = "PRODUCT_CACHE_MAX_MIB",
        value_name = "PRODUCT_CACHE_MAX_MIB",
        default_value_t = 32
    )]
    pub product_cache_max_mib: usize,
    /// The Redis the product service announces its changes on (for the product cache only:
    /// without it the cache stays off and every detail is asked of the product service).
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}
