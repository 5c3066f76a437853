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

use std::sync::Arc;

use letsgo_platform::assembly::{Assembly, ServiceError};
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::order::v1::order_service_client::OrderServiceClient;
use letsgo_platform::proto::payment::v1::payment_service_server::PaymentServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::{db, events};

pub use config::Config;

/// The topics this service produces or consumes.
pub const TOPICS: &[&str] = &[
    topics::PAYMENT_SUCCEEDED,
    topics::PAYMENT_FAILED,
    topics::PAYMENT_REFUNDED,
    topics::ORDER_CANCELLED,
];

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let mut service =
        Assembly::start(ServiceName::Payment, &config.discovery, listeners, shutdown).await?;
    let pool = service.postgres(&config.database, migrations()).await?;
    let store = storage::PaymentStore::new(pool);
    service.outbox_relay(&config.kafka, TOPICS)?;
    let pruned = store.clone();
    service.every(
        "idempotency key pruning",
        payments::PRUNE_INTERVAL,
        move || {
            let store = pruned.clone();
            async move {
                let deleted = store.prune_idempotency_keys().await?;
                if deleted > 0 {
                    tracing::info!(deleted, "pruned old idempotency keys");
                }
                Ok::<_, letsgo_platform::errors::AppError>(())
            }
        },
    );

    // The mock provider posts refund confirmations always, and the buyer's payment callbacks
    // only when it approves payments by itself.
    let provider = mock_provider::MockProvider::new(
        config.callback_url.clone(),
        config.mock_delay,
        config.mock_outcome,
        config.webhook_secrets.clone(),
    )
    .map_err(|error| {
        ServiceError::dependency(
            "the mock provider's HTTP client",
            "PAYMENT_CALLBACK_URL",
            error,
        )
    })?;
    let autocomplete = config.mock_autocomplete.then(|| provider.schedule());
    service.spawn(
        "mock provider",
        provider.run(store.clone(), service.shutdown().clone()),
    );
    let payments = Arc::new(payments::Payments::new(
        store,
        OrderServiceClient::new(service.channel(ServiceName::Order)),
        config.webhook_secrets.clone(),
        config.webhook_tolerance,
        autocomplete,
    ));
    let cancelled = payments.clone();
    service.consume(
        &config.kafka,
        &config.events,
        payments::CANCELLATION_CONSUMER_GROUP,
        &[topics::ORDER_CANCELLED],
        config.kafka_session_timeout,
        move |event| {
            let payments = cancelled.clone();
            async move { payments.on_order_cancelled(&event).await }
        },
    )?;
    service
        .serve(
            PaymentServiceServer::new(grpc::PaymentApi::new(payments)),
            &config.grpc,
        )
        .await
}

/// The service's database, its schema up to date, for a command.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, ServiceError> {
    db::open(&config.database, ServiceName::Payment, migrations()).await
}

/// Runs a dead-letter command (`dead-letters`, `redrive-events`) and answers what to print.
pub async fn run_command(
    config: &Config,
    command: &events::EventCommand,
) -> Result<String, letsgo_platform::BoxError> {
    Ok(events::run_command(open_database(config).await?, command).await?)
}

/// The service's schema: its migrations, embedded in the binary.
fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}
