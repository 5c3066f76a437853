//! The cart service's settings.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{GrpcServerArgs, RedisArgs, TelemetryArgs, parse_secs};
use letsgo_platform::discovery::DiscoveryArgs;

/// letsgo cart service: one cart per user in Redis over gRPC (default :9003).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-cart", version, about)]
pub struct Config {
    #[command(flatten)]
    pub grpc: GrpcServerArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Most distinct products one cart may hold.
    #[arg(
        long = "cart-max-lines",
        env = "CART_MAX_LINES",
        value_name = "CART_MAX_LINES",
        default_value_t = 100
    )]
    pub max_lines: u32,
    /// A cart untouched this long is forgotten.
    #[arg(long = "cart-ttl-secs", env = "CART_TTL_SECS", value_name = "CART_TTL_SECS", default_value = "2592000", value_parser = parse_secs)]
    pub ttl: Duration,
}
