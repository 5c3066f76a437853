//! The product service's settings.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{
    DatabaseArgs, GrpcServerArgs, RedisArgs, TelemetryArgs, parse_millis, parse_secs,
};
use letsgo_platform::discovery::DiscoveryArgs;

/// letsgo product service: catalogue, search, stock and reviews over gRPC (default :9002).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-product", version, about)]
pub struct Config {
    #[command(flatten)]
    pub grpc: GrpcServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// How long a cached product lives in Redis at most (changes invalidate it sooner).
    #[arg(long = "product-cache-ttl-secs", env = "PRODUCT_CACHE_TTL_SECS", value_name = "PRODUCT_CACHE_TTL_SECS", default_value = "300", value_parser = parse_secs)]
    pub cache_ttl: Duration,
    /// Load the demo catalogue at start when the catalogue is empty (`make up` turns it on).
    #[arg(long, env, default_value_t = false, action = clap::ArgAction::Set)]
    pub demo_catalogue: bool,
    /// How long stock reserved for an order stays held before the order is saved and
    /// commits it; past that it comes back by itself (its order service died, say).
    #[arg(long = "reservation-hold-secs", env = "RESERVATION_HOLD_SECS", value_name = "RESERVATION_HOLD_SECS", default_value = "120", value_parser = parse_secs)]
    pub reservation_hold: Duration,
    /// How often expired reservations are looked for.
    #[arg(long = "reservation-sweep-interval-ms", env = "RESERVATION_SWEEP_INTERVAL_MS", value_name = "RESERVATION_SWEEP_INTERVAL_MS", default_value = "5000", value_parser = parse_millis)]
    pub reservation_sweep_interval: Duration,
    /// Most reservations decided in one transaction: the asks that arrive while others are
    /// being decided wait and go together (a sale's buyers share one product's row and one
    /// commit). 1 decides each ask alone.
    #[arg(long, env, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub reservation_batch_max: u16,
}
