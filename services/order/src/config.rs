//! The order service's settings.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{
    DatabaseArgs, EventConsumerArgs, GrpcServerArgs, KafkaArgs, TelemetryArgs, parse_millis,
    parse_secs,
};
use letsgo_platform::discovery::DiscoveryArgs;
use letsgo_platform::events::EventCommand;

/// letsgo order service: orders from basket to paid, shipped and completed, or cancelled, over
/// gRPC (default :9004).
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
    /// A shipped order the buyer has not confirmed completes by itself this long after it
    /// shipped (14 days; 1 second to 10 years).
    #[arg(long = "order-auto-complete-secs", env = "ORDER_AUTO_COMPLETE_SECS", value_name = "ORDER_AUTO_COMPLETE_SECS", default_value = "1209600", value_parser = parse_auto_complete)]
    pub auto_complete: Duration,
    /// How often the sweeper looks for expired orders and unfinished follow-ups.
    #[arg(long = "order-sweep-interval-ms", env = "ORDER_SWEEP_INTERVAL_MS", value_name = "ORDER_SWEEP_INTERVAL_MS", default_value = "5000", value_parser = parse_millis)]
    pub sweep_interval: Duration,
    /// Kafka session timeout of the payment-events consumer.
    #[arg(long = "kafka-session-timeout-ms", env = "KAFKA_SESSION_TIMEOUT_MS", value_name = "KAFKA_SESSION_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub kafka_session_timeout: Duration,
}

/// Whole seconds from 1 to ten years: the sweeper subtracts it from the clock.
fn parse_auto_complete(text: &str) -> Result<Duration, String> {
    const TEN_YEARS_SECS: u64 = 10 * 366 * 24 * 3600;
    let period = parse_secs(text)?;
    if period.is_zero() || period.as_secs() > TEN_YEARS_SECS {
        return Err(format!(
            "expected 1 to {TEN_YEARS_SECS} seconds (ten years), got {text:?}"
        ));
    }
    Ok(period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auto_complete_period_defaults_to_fourteen_days_and_is_bounded() {
        let config = Config::try_parse_from(["letsgo-order"]).unwrap();
        assert_eq!(config.auto_complete, Duration::from_secs(14 * 24 * 3600));
        for bad in ["0", "-1", "soon", "999999999999"] {
            assert!(
                Config::try_parse_from(["letsgo-order", "--order-auto-complete-secs", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }
}
