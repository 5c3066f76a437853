//! The letsgo payment service: payments for pending orders on a mock provider, the provider's
//! signed callbacks, and `payment.succeeded` / `payment.failed` / `payment.refunded` events
//! through the outbox, over gRPC, in PostgreSQL database `payment`. `order.cancelled` events call
//! off an order's pending payment and refund one that succeeded.

pub mod config;
pub mod grpc;
pub mod mock_provider;
pub mod payments;
pub mod rules;
pub mod storage;
pub mod webhook;

use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::order::v1::order_service_client::OrderServiceClient;
use letsgo_platform::proto::payment::v1::payment_service_server::PaymentServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, events, grpc as grpc_server, telemetry};

pub use config::Config;

/// The topics this service produces or consumes.
pub const TOPICS: &[&str] = &[
    topics::PAYMENT_SUCCEEDED,
    topics::PAYMENT_FAILED,
    topics::PAYMENT_REFUNDED,
    topics::ORDER_CANCELLED,
];

pub use letsgo_platform::BoxError;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let pool = open_database(&config).await?;
    let discovery = config.discovery.build().await?;
    let orders = OrderServiceClient::new(discovery.channel(ServiceName::Order));

    let metrics = Metrics::new("payment");
    let readiness = Readiness::default();

    let relay_task = events::spawn_outbox_relay(
        pool.clone(),
        &config.kafka,
        TOPICS,
        &metrics,
        shutdown.clone(),
    )?;

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

    // The mock provider posts refund confirmations always, and the buyer's payment callbacks
    // only when it approves payments by itself.
    let provider = mock_provider::MockProvider::new(
        config.callback_url.clone(),
        config.mock_delay,
        config.mock_outcome,
        config.webhook_secrets.clone(),
    )
    .map_err(|error| format!("mock provider HTTP client: {error}"))?;
    let autocomplete = config.mock_autocomplete.then(|| provider.schedule());
    let provider_task = tokio::spawn(provider.run(store.clone(), shutdown.clone()));
    let payments = std::sync::Arc::new(payments::Payments::new(
        store,
        orders,
        config.webhook_secrets.clone(),
        config.webhook_tolerance,
        autocomplete,
    ));
    let dead_letters = events::DeadLetters::new(pool.clone(), &config.events, &metrics);
    let cancelled_payments = payments.clone();
    let consumer_task = events::spawn_consumer(
        &config.kafka,
        payments::CANCELLATION_CONSUMER_GROUP,
        &[topics::ORDER_CANCELLED],
        config.kafka_session_timeout,
        dead_letters,
        shutdown.clone(),
        move |event| {
            let payments = cancelled_payments.clone();
            async move { payments.on_order_cancelled(&event).await }
        },
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
    prune_task.await?;
    provider_task.await?;
    consumer_task.await?;
    admin.await??;
    pool.close().await;
    tracing::info!("payment service stopped");
    Ok(())
}

/// The service's database, its schema up to date.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, BoxError> {
    Ok(db::open(
        &config.database,
        letsgo_platform::discovery::ServiceName::Payment,
        sqlx::migrate!("./migrations"),
    )
    .await?)
}

/// Runs a dead-letter command (`dead-letters`, `redrive-events`) and answers what to print.
pub async fn run_command(
    config: &Config,
    command: &events::EventCommand,
) -> Result<String, BoxError> {
    Ok(events::run_command(open_database(config).await?, command).await?)
}
