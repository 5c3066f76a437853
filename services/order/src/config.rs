//! The order service's settings.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{
    DatabaseArgs, EventConsumerArgs, GrpcServerArgs, KafkaArgs, TelemetryArgs, parse_millis,
    parse_secs,
};
use letsgo_platform::discovery::DiscoveryArgs;
use letsgo_platform::events::EventCommand;

/// letsgo order service: orders from basket to paid or cancelled over gRPC (default :9004).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-order", version, about)]
pub struct Config {
    /// Without a command the service runs; a command does its job on the database and exits.
    #[command(subcommand)]
    pub command: Option<EventCommand>,
    #[command(flatten)]
    pub grpc: GrpcServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub events: EventConsumerArgs,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// An order still unpaid this long after creation is cancelled and its stock released.
    #[arg(long = "order-payment-timeout-secs", env = "ORDER_PAYMENT_TIMEOUT_SECS", value_name = "ORDER_PAYMENT_TIMEOUT_SECS", default_value = "1800", value_parser = parse_secs)]
    pub payment_timeout: Duration,
    /// How often the sweeper looks for expired orders and unfinished follow-ups.
    #[arg(long = "order-sweep-interval-ms", env = "ORDER_SWEEP_INTERVAL_MS", value_name = "ORDER_SWEEP_INTERVAL_MS", default_value = "5000", value_parser = parse_millis)]
    pub sweep_interval: Duration,
    /// Kafka session timeout of the payment-events consumer.
    #[arg(long = "kafka-session-timeout-ms", env = "KAFKA_SESSION_TIMEOUT_MS", value_name = "KAFKA_SESSION_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub kafka_session_timeout: Duration,
}
