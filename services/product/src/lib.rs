//! The letsgo product service: the catalogue, search, stock reservations for orders and
//! reviews, over gRPC, in PostgreSQL database `product`, with product detail cached in Redis.

pub mod catalogue;
pub mod config;
pub mod demo;
pub mod grpc;
pub mod product_cache;
pub mod reservations;
pub mod rules;
pub mod storage;

use std::sync::Arc;

use letsgo_platform::assembly::{Assembly, ServiceError};
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::product::v1::product_service_server::ProductServiceServer;
use letsgo_platform::shutdown::Shutdown;

pub use config::Config;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let mut service =
        Assembly::start(ServiceName::Product, &config.discovery, listeners, shutdown).await?;
    let pool = service.postgres(&config.database, migrations()).await?;
    if config.demo_catalogue {
        let added = demo::load_if_empty(&pool).await.map_err(|error| {
            ServiceError::dependency("loading the demo catalogue", "DEMO_CATALOGUE", error)
        })?;
        if added > 0 {
            tracing::info!(added, "loaded the demo catalogue");
        }
    }
    let cache = service.redis(&config.redis).await?;
    let store = storage::CatalogueStore::new(pool);
    let product_cache = product_cache::ProductCache::new(cache, config.cache_ttl);
    let reservations = reservations::Reservations::start(
        store.clone(),
        product_cache.clone(),
        config.reservation_hold,
        usize::from(config.reservation_batch_max),
    );
    let catalogue = Arc::new(catalogue::Catalogue::new(
        store,
        product_cache,
        reservations,
    ));
    // Gives back the stock of reservations no order committed in time.
    let expiring = catalogue.clone();
    service.every(
        "reservation release",
        config.reservation_sweep_interval,
        move || {
            let catalogue = expiring.clone();
            async move { catalogue.release_expired().await }
        },
    );
    service
        .serve(
            ProductServiceServer::new(grpc::ProductApi::new(catalogue)),
            &config.grpc,
        )
        .await
}

/// The service's schema: its migrations, embedded in the binary.
fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}
