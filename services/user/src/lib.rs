//! The letsgo user service: accounts with argon2id passwords, sign-in tokens and profiles,
//! over gRPC, in PostgreSQL database `user`.

pub mod accounts;
pub mod admins;
pub mod config;
pub mod grpc;
pub mod passwords;
pub mod rules;
pub mod storage;

use letsgo_platform::auth::TokenKeys;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::user::v1::user_service_server::UserServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, events, grpc as grpc_server, telemetry};

pub use config::{Command, Config};

/// The topics this service produces.
pub const TOPICS: &[&str] = &[topics::USER_REGISTERED];

pub use letsgo_platform::BoxError;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    admins::check(&config.initial_admin)?;
    if std::env::var_os("ADMIN_USERNAMES").is_some() {
        tracing::warn!(
            "ADMIN_USERNAMES is no longer read: accounts it made admins stay admins; the \
             initial admin comes from ADMIN_USERNAME and ADMIN_PASSWORD, others from \
             `letsgo-user grant-admin`"
        );
    }
    let pool = open_database(&config).await?;
    let store = storage::UserStore::new(pool.clone());
    admins::ensure_initial(&store, &config.initial_admin).await?;

    if let Some(threads) = config.password_hash_threads {
        passwords::set_threads(threads.get());
    }
    let metrics = Metrics::new("user");
    let readiness = Readiness::default();

    let relay_task = events::spawn_outbox_relay(
        pool.clone(),
        &config.kafka,
        TOPICS,
        &metrics,
        shutdown.clone(),
    )?;

    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let accounts = accounts::Accounts::new(
        store,
        TokenKeys::from_args(&config.jwt),
        &config.initial_admin.admin_username,
    );
    let discovery = config.discovery.build().await?;
    readiness.set_ready(true);
    // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
    let registration = discovery
        .register(
            ServiceName::User,
            listeners.grpc.local_addr()?.port(),
            shutdown.clone(),
        )
        .await
        .map_err(|error| format!("etcd registration (ETCD_HOSTS): {error}"))?;
    tracing::info!(addr = %listeners.grpc.local_addr()?, "user service serving");
    grpc_server::serve(
        UserServiceServer::new(grpc::UserApi::new(accounts)),
        listeners.grpc,
        &config.grpc,
        discovery.internal_auth(),
        metrics,
        readiness,
        shutdown,
    )
    .await?;
    if let Some(registration) = registration {
        registration.await?;
    }
    relay_task.await?;
    admin.await??;
    pool.close().await;
    tracing::info!("user service stopped");
    Ok(())
}

/// The service's database, its schema up to date.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, BoxError> {
    Ok(db::open(
        &config.database,
        letsgo_platform::discovery::ServiceName::User,
        sqlx::migrate!("./migrations"),
    )
    .await?)
}

/// Runs one command-line job (`grant-admin`, `revoke-admin`, `list-admins`, `set-password`)
/// and answers what to print; an error says why it was refused.
pub async fn run_command(config: &Config, command: &Command) -> Result<String, BoxError> {
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
