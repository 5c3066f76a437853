//! The payment service's settings.

use std::time::Duration;

use clap::Parser;
use letsgo_platform::config::{
    DatabaseArgs, EventConsumerArgs, GrpcServerArgs, KafkaArgs, TelemetryArgs, parse_millis,
    parse_secs,
};
use letsgo_platform::discovery::DiscoveryArgs;
use reqwest::Url;

use crate::rules::ProviderOutcome;
use crate::webhook::WebhookSecrets;

/// letsgo payment service: payments on a mock provider and its signed callbacks over gRPC
/// (default :9005).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-payment", version, about)]
pub struct Config {
    /// Without a command the service runs; a command does its job on the database and exits.
    #[command(subcommand)]
    pub command: Option<letsgo_platform::events::EventCommand>,
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
    /// Kafka session timeout of the order-events consumer.
    #[arg(long = "kafka-session-timeout-ms", env = "KAFKA_SESSION_TIMEOUT_MS", value_name = "KAFKA_SESSION_TIMEOUT_MS", default_value = "10000", value_parser = parse_millis)]
    pub kafka_session_timeout: Duration,
    /// HMAC secrets of the provider's callback signatures, comma-separated, each at least 16
    /// bytes: the first signs, all verify (put a new secret first to rotate).
    #[arg(long = "payment-webhook-secret", env = "PAYMENT_WEBHOOK_SECRET", value_name = "PAYMENT_WEBHOOK_SECRET", hide_env_values = true, value_parser = WebhookSecrets::parse)]
    pub webhook_secrets: WebhookSecrets,
    /// Furthest a callback signature's timestamp may be from now.
    #[arg(long = "payment-webhook-tolerance-secs", env = "PAYMENT_WEBHOOK_TOLERANCE_SECS", value_name = "PAYMENT_WEBHOOK_TOLERANCE_SECS", default_value = "300", value_parser = parse_secs)]
    pub webhook_tolerance: Duration,
    /// Where the mock provider posts its callbacks: the gateway's callback route.
    #[arg(
        long = "payment-callback-url",
        env = "PAYMENT_CALLBACK_URL",
        value_name = "PAYMENT_CALLBACK_URL",
        default_value = "http://127.0.0.1:8888/api/v1/payment/callback",
        value_parser = parse_callback_url
    )]
    pub callback_url: Url,
    /// Whether the mock provider answers each new payment with a callback by itself: off, so a
    /// shop never approves its own payments; a demo (`make up`, the example Store) turns it on.
    #[arg(long = "mock-provider-autocomplete", env = "MOCK_PROVIDER_AUTOCOMPLETE", value_name = "MOCK_PROVIDER_AUTOCOMPLETE", default_value_t = false, action = clap::ArgAction::Set)]
    pub mock_autocomplete: bool,
    /// How long the mock provider "takes" before it calls back.
    #[arg(long = "mock-provider-delay-ms", env = "MOCK_PROVIDER_DELAY_MS", value_name = "MOCK_PROVIDER_DELAY_MS", default_value = "1000", value_parser = parse_millis)]
    pub mock_delay: Duration,
    /// What the mock provider reports: `success` or `fail`.
    #[arg(long = "mock-provider-outcome", env = "MOCK_PROVIDER_OUTCOME", value_name = "MOCK_PROVIDER_OUTCOME", default_value = "success", value_parser = parse_outcome)]
    pub mock_outcome: ProviderOutcome,
}

fn parse_callback_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?} is not an http(s) URL"));
    }
    Ok(url)
}

fn parse_outcome(text: &str) -> Result<ProviderOutcome, String> {
    match text {
        "success" => Ok(ProviderOutcome::Succeeded),
        "fail" => Ok(ProviderOutcome::Failed),
        _ => Err(format!("expected `success` or `fail`, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_secret_is_required_by_name() {
        let error = Config::try_parse_from(["letsgo-payment"]).unwrap_err();
        assert!(
            error.to_string().contains("PAYMENT_WEBHOOK_SECRET"),
            "{error}"
        );
    }

    #[test]
    fn defaults_post_successful_callbacks_to_the_gateway() {
        let config = Config::try_parse_from([
            "letsgo-payment",
            "--payment-webhook-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .unwrap();
        assert!(
            !config.mock_autocomplete,
            "a real shop never approves its own payments"
        );
        assert_eq!(config.mock_outcome, ProviderOutcome::Succeeded);
        assert_eq!(config.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(
            config.callback_url.as_str(),
            "http://127.0.0.1:8888/api/v1/payment/callback"
        );
        assert!(!format!("{config:?}").contains("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn a_malformed_callback_url_or_outcome_is_refused_by_name() {
        let parse = |flag: &str, value: &str| {
            Config::try_parse_from([
                "letsgo-payment",
                "--payment-webhook-secret",
                "0123456789abcdef0123456789abcdef",
                flag,
                value,
            ])
            .unwrap_err()
            .to_string()
        };
        assert!(parse("--payment-callback-url", "ftp://x/").contains("PAYMENT_CALLBACK_URL"));
        assert!(parse("--mock-provider-outcome", "maybe").contains("MOCK_PROVIDER_OUTCOME"));
    }
}
