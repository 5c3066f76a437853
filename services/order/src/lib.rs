//! The letsgo order service: orders from basket to paid, shipped and completed, or cancelled,
//! over gRPC, in PostgreSQL database `order`. Stock is reserved through the product service;
//! events leave through the outbox; `payment.succeeded` events mark orders paid,
//! `payment.refunded` ones refunded.

pub mod cart_removals;
pub mod config;
pub mod grpc;
pub mod orders;
pub mod rules;
pub mod saving;
pub mod settlement;
pub mod storage;

use letsgo_platform::assembly::{Assembly, ServiceError};
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::cart::v1::cart_service_client::CartServiceClient;
use letsgo_platform::proto::order::v1::order_service_server::OrderServiceServer;
use letsgo_platform::proto::product::v1::product_service_client::ProductServiceClient;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::{db, events};

pub use config::Config;

/// The topics this service produces or consumes.
pub const TOPICS: &[&str] = &[
    topics::ORDER_CREATED,
    topics::ORDER_CANCELLED,
    topics::ORDER_PAID,
    topics::ORDER_SHIPPED,
    topics::ORDER_COMPLETED,
    topics::PAYMENT_SUCCEEDED,
    topics::PAYMENT_REFUNDED,
];

/// The payment service's events this service consumes.
const PAYMENT_TOPICS: &[&str] = &[topics::PAYMENT_SUCCEEDED, topics::PAYMENT_REFUNDED];

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let mut service =
        Assembly::start(ServiceName::Order, &config.discovery, listeners, shutdown).await?;
    let pool = service.postgres(&config.database, migrations()).await?;
    let orders = orders::Orders::new(
        storage::OrderStore::new(pool),
        ProductServiceClient::new(service.channel(ServiceName::Product)),
        CartServiceClient::new(service.channel(ServiceName::Cart)),
        config.payment_timeout,
        config.auto_complete,
    );
    // Stock commits and sales counts settle in batches; the settling loop's own handle does
    // not queue, so the loop ends once every other handle is gone.
    let (queue, backlog) = settlement::queue();
    let settling = orders.clone();
    let orders = orders.settling_through(queue);
    let stopping = service.shutdown().clone();
    service.spawn("settlement", backlog.run(settling, stopping));
    service.outbox_relay(&config.kafka, TOPICS)?;
    let paid_orders = orders.clone();
    let paid_together = orders.clone();
    service.consume_batched(
        &config.kafka,
        &config.events,
        orders::PAYMENT_CONSUMER_GROUP,
        PAYMENT_TOPICS,
        config.kafka_session_timeout,
        // Payments that succeeded together mark their orders paid in one transaction.
        Some(move |events| {
            let orders = paid_together.clone();
            async move { orders.on_payment_events(events).await }
        }),
        move |event| {
            let orders = paid_orders.clone();
            async move { orders.on_payment_event(&event).await }
        },
    )?;
    // Cancels orders unpaid in time, completes those delivered long enough ago.
    let swept_orders = orders.clone();
    service.every("order sweep", config.sweep_interval, move || {
        let orders = swept_orders.clone();
        async move { orders.sweep().await }
    });
    service
        .serve(
            OrderServiceServer::new(grpc::OrderApi::new(orders)),
            &config.grpc,
        )
        .await
}

/// The service's database, its schema up to date, for a command.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, ServiceError> {
    db::open(&config.database, ServiceName::Order, migrations()).await
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
