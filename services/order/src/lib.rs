//! The letsgo order service: orders from basket to paid, shipped and completed, or cancelled,
//! over gRPC, in PostgreSQL database `order`. Stock is reserved through the product service;
//! events leave through the outbox; `payment.succeeded` events mark orders paid,
//! `payment.refunded` ones refunded.

pub mod config;
pub mod grpc;
pub mod orders;
pub mod rules;
pub mod storage;

use std::time::Duration;

use letsgo_platform::discovery::ServiceName;
use letsgo_platform::events;
use letsgo_platform::events::topics;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::cart::v1::cart_service_client::CartServiceClient;
use letsgo_platform::proto::order::v1::order_service_server::OrderServiceServer;
use letsgo_platform::proto::product::v1::product_service_client::ProductServiceClient;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, grpc as grpc_server, telemetry};

pub use config::Config;

pub use letsgo_platform::BoxError;

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
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let pool = open_database(&config).await?;
    let discovery = config.discovery.build().await?;
    let orders = orders::Orders::new(
        storage::OrderStore::new(pool.clone()),
        ProductServiceClient::new(discovery.channel(ServiceName::Product)),
        CartServiceClient::new(discovery.channel(ServiceName::Cart)),
        config.payment_timeout,
        config.auto_complete,
    );

    let metrics = Metrics::new("order");
    let readiness = Readiness::default();
    let dead_letters = events::DeadLetters::new(pool.clone(), &config.events, &metrics);
    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let relay_task = events::spawn_outbox_relay(
        pool.clone(),
        &config.kafka,
        TOPICS,
        &metrics,
        shutdown.clone(),
    )?;
    let payment_orders = orders.clone();
    let consumer_task = events::spawn_consumer(
        &config.kafka,
        orders::PAYMENT_CONSUMER_GROUP,
        PAYMENT_TOPICS,
        config.kafka_session_timeout,
        dead_letters,
        shutdown.clone(),
        move |event| {
            let orders = payment_orders.clone();
            async move { orders.on_payment_event(&event).await }
        },
    );

    let sweeper_orders = orders.clone();
    let sweeper_shutdown = shutdown.clone();
    let sweep_interval = config.sweep_interval;
    let sweeper = tokio::spawn(async move {
        while !sweeper_shutdown.is_triggered() {
            if let Err(error) = sweeper_orders.sweep().await {
                tracing::warn!(%error, "order sweep failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(sweep_interval.max(Duration::from_millis(50))) => {}
                _ = sweeper_shutdown.wait() => {}
            }
        }
    });

    readiness.set_ready(true);
    // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
    let registration = discovery
        .register(
            ServiceName::Order,
            listeners.grpc.local_addr()?.port(),
            shutdown.clone(),
        )
        .await
        .map_err(|error| format!("etcd registration (ETCD_HOSTS): {error}"))?;
    tracing::info!(addr = %listeners.grpc.local_addr()?, "order service serving");
    grpc_server::serve(
        OrderServiceServer::new(grpc::OrderApi::new(orders)),
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
    consumer_task.await?;
    sweeper.await?;
    admin.await??;
    pool.close().await;
    tracing::info!("order service stopped");
    Ok(())
}

/// The service's database, its schema up to date.
async fn open_database(config: &Config) -> Result<sqlx::PgPool, BoxError> {
    Ok(db::open(
        &config.database,
        letsgo_platform::discovery::ServiceName::Order,
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
