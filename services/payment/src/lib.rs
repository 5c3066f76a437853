//! The letsgo payment service: payments for pending orders on a mock provider, the provider's
//! signed callbacks, and `payment.succeeded` / `payment.failed` events through the outbox, over
//! gRPC, in PostgreSQL database `payment`.

pub mod config;
pub mod grpc;
pub mod mock_provider;
pub mod payments;
pub mod rules;
pub mod storage;
pub mod webhook;

use std::net::{Ipv4Addr, SocketAddr};

use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::order::v1::order_service_client::OrderServiceClient;
use letsgo_platform::proto::payment::v1::payment_service_server::PaymentServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, events, grpc as grpc_server, telemetry};

pub use config::Config;

/// The topics this service produces.
pub const TOPICS: &[&str] = &["payment.succeeded", "payment.failed"];

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The default listeners: gRPC on :9005, admin on :9105.
pub fn default_addresses() -> (SocketAddr, SocketAddr) {
    let any = Ipv4Addr::UNSPECIFIED;
    (
        SocketAddr::from((any, ServiceName::Payment.default_port())),
        SocketAddr::from((any, ServiceName::Payment.default_admin_port())),
    )
}

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let pool = db::connect(
        &config.database.url("payment"),
        config.database.db_max_connections,
    )
    .await
    .map_err(|error| format!("database (DATABASE_URL / DB_HOST): {error}"))?;
    db::migrate(&pool, sqlx::migrate!("./migrations"))
        .await
        .map_err(|error| format!("migrations: {error}"))?;
    let discovery = config.discovery.build().await?;
    let orders = OrderServiceClient::new(discovery.channel(ServiceName::Order));

    let metrics = Metrics::new("payment");
    let readiness = Readiness::default();

    let relay_task =
        events::spawn_outbox_relay(pool.clone(), &config.kafka, TOPICS, shutdown.clone())?;

    let store = storage::PaymentStore::new(pool.clone());
    let prune_task = tokio::spawn(payments::prune_idempotency_keys_hourly(
        store.clone(),
        shutdown.clone(),
    ));

    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let provider = if config.mock_autocomplete {
        Some(
            mock_provider::MockProvider::new(
                config.callback_url.clone(),
                config.mock_delay,
                config.mock_outcome,
                config.webhook_secrets.clone(),
            )
            .map_err(|error| format!("mock provider HTTP client: {error}"))?,
        )
    } else {
        None
    };
    let provider_task = provider
        .clone()
        .map(|provider| tokio::spawn(provider.run(store.clone(), shutdown.clone())));
    let payments = payments::Payments::new(
        store,
        orders,
        config.webhook_secrets.clone(),
        config.webhook_tolerance,
        provider,
    );
    readiness.set_ready(true);
    // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
    let registration = discovery
        .register(
            ServiceName::Payment,
            listeners.grpc.local_addr()?.port(),
            shutdown.clone(),
        )
        .await
        .map_err(|error| format!("etcd registration (ETCD_HOSTS): {error}"))?;
    tracing::info!(addr = %listeners.grpc.local_addr()?, "payment service serving");
    grpc_server::serve(
        PaymentServiceServer::new(grpc::PaymentApi::new(payments)),
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
    prune_task.await?;
    if let Some(task) = provider_task {
        task.await?;
    }
    admin.await??;
    pool.close().await;
    tracing::info!("payment service stopped");
    Ok(())
}
