//! The user service's settings.

use clap::Parser;
use letsgo_platform::config::{DatabaseArgs, GrpcServerArgs, JwtArgs, KafkaArgs, TelemetryArgs};
use letsgo_platform::discovery::DiscoveryArgs;

/// letsgo user service: accounts, sign-in and profiles over gRPC (default :9001).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-user", version, about)]
pub struct Config {
    #[command(flatten)]
    pub grpc: GrpcServerArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Usernames that are admins whenever they register or sign in, comma-separated.
    #[arg(
        long = "admin-usernames",
        env = "ADMIN_USERNAMES",
        value_name = "ADMIN_USERNAMES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub admin_usernames: Vec<String>,
}
