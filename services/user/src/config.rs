//! The user service's settings.

use clap::Parser;
use letsgo_platform::config::{
    DatabaseArgs, GrpcServerArgs, JwtArgs, KafkaArgs, Secret, TelemetryArgs,
};
use letsgo_platform::discovery::DiscoveryArgs;

/// letsgo user service: accounts, sign-in and profiles over gRPC (default :9001).
#[derive(Debug, Clone, Parser)]
#[command(name = "letsgo-user", version, about)]
pub struct Config {
    /// Without a command the service runs; a command does its job on the database and exits.
    #[command(subcommand)]
    pub command: Option<Command>,
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
    #[command(flatten)]
    pub initial_admin: InitialAdminArgs,
    /// Passwords hashed at once (each hash holds 7 MiB and a core while it runs); a few more per
    /// thread wait in a queue, and calls beyond it are refused at once with 1006 (HTTP 429).
    /// Default: half the cores, at least one, no more than an eighth of the memory limit holds,
    /// so sign-in storms leave the service cores for everything else. One pool per process.
    #[arg(long, env)]
    pub password_hash_threads: Option<std::num::NonZeroUsize>,
}

/// Jobs on the accounts that run once and exit, e.g. through `kubectl exec`. They use the
/// service's own database settings.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Makes an existing account an admin (effective at its next sign-in).
    GrantAdmin {
        /// The account's username (any case).
        username: String,
    },
    /// Takes admin rights away (effective at once: the gateway checks admin calls against the
    /// account). The last admin is never revoked.
    RevokeAdmin {
        /// The account's username (any case).
        username: String,
    },
    /// Lists the admins.
    ListAdmins,
    /// Sets an account's password to the first line read from stdin (for a lost admin
    /// password: `kubectl exec -i ... -- letsgo-user set-password admin < file`).
    SetPassword {
        /// The account's username (any case).
        username: String,
    },
}

/// The admin account made at start when it does not exist.
#[derive(Debug, Clone, clap::Args)]
pub struct InitialAdminArgs {
    /// Username of the initial admin. Nobody can register it.
    #[arg(long, env, default_value = "admin")]
    pub admin_username: String,
    /// The initial admin's password (at least 12 characters), used only when the account is
    /// created: changing it later changes nothing. Unset: no account is created and the
    /// username stays reserved; grant admin rights with `grant-admin`.
    #[arg(long, env, hide_env_values = true)]
    pub admin_password: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_password_is_redacted_in_debug_prints() {
        let config = Config::try_parse_from([
            "letsgo-user",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--admin-password",
            "correct-horse-battery",
        ])
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("correct-horse-battery"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn grant_and_revoke_take_a_username() {
        let config = Config::try_parse_from([
            "letsgo-user",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "grant-admin",
            "bob",
        ])
        .unwrap();
        assert!(
            matches!(config.command, Some(Command::GrantAdmin { username }) if username == "bob")
        );
        assert!(
            Config::try_parse_from([
                "letsgo-user",
                "--jwt-secret",
                "0123456789abcdef0123456789abcdef",
                "revoke-admin",
            ])
            .is_err()
        );
    }
}
