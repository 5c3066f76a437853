//! The gateway's settings.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{JwtArgs, RedisArgs, TelemetryArgs, parse_millis, parse_secs};
use letsgo_platform::discovery::DiscoveryArgs;

use crate::client_address::TrustedProxies;

/// letsgo HTTP gateway: the original letsGO REST API on :8888, routed to the gRPC services.
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-gateway", version, about)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(
        long = "listen",
        env = "GATEWAY_LISTEN",
        value_name = "GATEWAY_LISTEN",
        default_value = "[::]:8888"
    )]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long = "admin-listen",
        env = "ADMIN_LISTEN",
        value_name = "ADMIN_LISTEN",
        default_value = "[::]:9100"
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
    /// Longest a client may take to send a request head, from its first byte (from the
    /// connection's opening for its first request); a client that is late is disconnected.
    #[arg(long = "header-read-timeout-ms", env = "HEADER_READ_TIMEOUT_MS", value_name = "HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = parse_positive_millis)]
    pub header_read_timeout: Duration,
    /// Longest a connection may sit without a request in flight and without a byte sent
    /// (an idle keep-alive connection, or a client that stopped reading) before it is closed.
    #[arg(long = "idle-timeout-ms", env = "IDLE_TIMEOUT_MS", value_name = "IDLE_TIMEOUT_MS", default_value = "60000", value_parser = parse_positive_millis)]
    pub idle_timeout: Duration,
    /// How long the gateway goes on answering after SIGTERM, every answer with
    /// `Connection: close` so keep-alive clients move to another replica between requests,
    /// before it stops accepting and closes idle connections (0: at once).
    #[arg(long = "shutdown-linger-ms", env = "SHUTDOWN_LINGER_MS", value_name = "SHUTDOWN_LINGER_MS", default_value = "1000", value_parser = parse_millis)]
    pub shutdown_linger: Duration,
    /// Most client connections open at once; one more is answered 503 and closed.
    #[arg(
        long = "max-connections",
        env = "MAX_CONNECTIONS",
        value_name = "MAX_CONNECTIONS",
        default_value = "10000"
    )]
    pub max_connections: NonZeroU32,
    /// The proxies in front of the gateway, as comma-separated CIDRs or addresses (IPv4 or
    /// IPv6). For a connection from one of them, the client is the right-most address in
    /// X-Forwarded-For that is not itself a trusted proxy; anyone else's X-Forwarded-For is
    /// ignored. Empty: the connection's peer is the client.
    #[arg(
        long = "trusted-proxies",
        env = "TRUSTED_PROXIES",
        value_name = "TRUSTED_PROXIES",
        default_value = ""
    )]
    pub trusted_proxies: TrustedProxies,
    /// Failed sign-ins (wrong username or password) one account may have within
    /// LOGIN_FAILURE_WINDOW_SECS; beyond them its sign-ins are answered 429, right password or
    /// not, until one failure is forgiven (one every window / this many).
    #[arg(
        long = "login-failures-per-account",
        env = "LOGIN_FAILURES_PER_ACCOUNT",
        value_name = "LOGIN_FAILURES_PER_ACCOUNT",
        default_value = "5"
    )]
    pub login_failures_per_account: NonZeroU32,
    /// Failed sign-ins one client address (an IPv6 /64) may have within
    /// LOGIN_FAILURE_WINDOW_SECS, whatever the usernames; beyond them its sign-ins are
    /// answered 429 until one failure is forgiven.
    #[arg(
        long = "login-failures-per-address",
        env = "LOGIN_FAILURES_PER_ADDRESS",
        value_name = "LOGIN_FAILURES_PER_ADDRESS",
        default_value = "20"
    )]
    pub login_failures_per_address: NonZeroU32,
    /// The window the failed sign-in budgets refill over, in seconds.
    #[arg(long = "login-failure-window-secs", env = "LOGIN_FAILURE_WINDOW_SECS", value_name = "LOGIN_FAILURE_WINDOW_SECS", default_value = "900", value_parser = parse_positive_secs)]
    pub login_failure_window: Duration,
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

fn parse_positive_millis(text: &str) -> Result<Duration, String> {
    parse_millis(text).and_then(|duration| positive(duration, "milliseconds"))
}

fn parse_positive_secs(text: &str) -> Result<Duration, String> {
    parse_secs(text).and_then(|duration| positive(duration, "seconds"))
}

fn positive(duration: Duration, unit: &str) -> Result<Duration, String> {
    if duration.is_zero() {
        Err(format!("expected at least 1 (whole {unit}), got 0"))
    } else {
        Ok(duration)
    }
}
