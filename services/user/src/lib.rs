//! The letsgo user service: accounts with argon2id passwords, sign-in tokens and profiles,
//! over gRPC, in PostgreSQL database `user`.

pub mod accounts;
pub mod admins;
pub mod config;
pub mod grpc;
pub mod passwords;
pub mod rules;
pub mod storage;

use letsgo_platform::assembly::{Assembly, ServiceError};
use letsgo_platform::auth::TokenKeys;
use letsgo_platform::db;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::user::v1::user_service_server::UserServiceServer;
use letsgo_platform::shutdown::Shutdown;

pub use config::{Command, Config};

/// The topics this service produces.
pub const TOPICS: &[&str] = &[topics::USER_REGISTERED];

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    admins::check(&config.initial_admin)?;
    if std::env::var_os("ADMIN_USERNAMES").is_some() {
        tracing::warn!(
            "ADMIN_USERNAMES is no longer read: accounts it made admins stay admins; the \
             initial admin comes from ADMIN_USERNAME and ADMIN_PASSWORD, others from \
             `letsgo-user grant-admin`"
        );
    }
    let mut service =
        Assembly::start(ServiceName::User, &config.discovery, listeners, shutdown).await?;
    let pool = service.postgres(&config.database, migrations()).await?;
    let store = storage::UserStore::new(pool);
    admins::ensure_initial(&store, &config.initial_admin)
        .await
        .map_err(|reason| {
            ServiceError::dependency(
                "the initial admin account",
                "DATABASE_URL / DB_HOST",
                reason,
            )
        })?;
    if let Some(threads) = config.password_hash_threads {
        passwords::set_threads(threads.get());
    }
    service.outbox_relay(&config.kafka, TOPICS)?;
    let accounts = accounts::Accounts::new(
        store,
        TokenKeys::from_args(&config.jwt),
        &config.initial_admin.admin_username,
    );
    service
        .serve(
            UserServiceServer::new(grpc::UserApi::new(accounts)),
            &config.grpc,
        )
        .await
}

/// The service's database, its schema up to date, for a command.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, ServiceError> {
    db::open(&config.database, ServiceName::User, migrations()).await
}

/// Runs one command-line job (`grant-admin`, `revoke-admin`, `list-admins`, `set-password`)
/// and answers what to print; an error says why it was refused.
pub async fn run_command(
    config: &Config,
    command: &Command,
) -> Result<String, letsgo_platform::BoxError> {
    let pool = open_database(config).await?;
    let store = storage::UserStore::new(pool.clone());
    let outcome = match command {
        Command::GrantAdmin { username } => admins::grant(&store, username).await,
        Command::RevokeAdmin { username } => admins::revoke(&store, username).await,
        Command::ListAdmins => admins::list(&store).await,
        Command::SetPassword { username } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|error| format!("reading the password from stdin: {error}"))?;
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            admins::set_password(&store, username, password).await
        }
    };
    pool.close().await;
    Ok(outcome?)
}

/// The service's schema: its migrations, embedded in the binary.
fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}
