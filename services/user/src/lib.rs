//! The letsgo user service: accounts with argon2id passwords, sign-in tokens and profiles,
//! over gRPC, in PostgreSQL database `user`.

pub mod accounts;
pub mod config;
pub mod grpc;
pub mod passwords;
pub mod rules;
pub mod storage;

use std::net::{Ipv4Addr, SocketAddr};

use letsgo_platform::auth::TokenKeys;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::user::v1::user_service_server::UserServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, events, grpc as grpc_server, telemetry};

pub use config::Config;

/// The topics this service produces.
pub const TOPICS: &[&str] = &["user.registered"];

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The default listeners: gRPC on :9001, admin on :9101.
pub fn default_addresses() -> (SocketAddr, SocketAddr) {
    let any = Ipv4Addr::UNSPECIFIED;
    (
        SocketAddr::from((any, ServiceName::User.default_port())),
        SocketAddr::from((any, ServiceName::User.default_admin_port())),
    )
}

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let pool = db::connect(
        &config.database.url("user"),
        config.database.db_max_connections,
    )
    .await
    .map_err(|error| format!("database (DATABASE_URL / DB_HOST): {error}"))?;
    db::migrate(&pool, sqlx::migrate!("./migrations"))
        .await
        .map_err(|error| format!("migrations: {error}"))?;

    if let Some(threads) = config.password_hash_threads {
        passwords::set_threads(threads.get());
    }
    let metrics = Metrics::new("user");
    let readiness = Readiness::default();

    let relay_task =
        events::spawn_outbox_relay(pool.clone(), &config.kafka, TOPICS, shutdown.clone())?;

    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let accounts = accounts::Accounts::new(
        storage::UserStore::new(pool.clone()),
        TokenKeys::from_args(&config.jwt),
        rules::AdminList::new(&config.admin_usernames),
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
