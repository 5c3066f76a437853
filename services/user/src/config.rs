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
    /// Passwords hashed at once (each hash holds 7 MiB and a core while it runs); more wait in
    /// a queue. Default: half the cores, at least one, so sign-in storms leave the service
    /// cores for everything else. One pool per process.
    #[arg(
        long = "password-hash-threads",
        env = "PASSWORD_HASH_THREADS",
        value_name = "PASSWORD_HASH_THREADS"
    )]
    pub password_hash_threads: Option<std::num::NonZeroUsize>,
}
