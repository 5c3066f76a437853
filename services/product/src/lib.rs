//! The letsgo product service: the catalogue, search, stock reservations for orders and
//! reviews, over gRPC, in PostgreSQL database `product`, with product detail cached in Redis.

pub mod catalogue;
pub mod config;
pub mod demo;
pub mod grpc;
pub mod product_cache;
pub mod rules;
pub mod storage;

use letsgo_platform::cache::Cache;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::product::v1::product_service_server::ProductServiceServer;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{db, grpc as grpc_server, telemetry};

pub use config::Config;

pub use letsgo_platform::BoxError;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let pool = db::open(
        &config.database,
        letsgo_platform::discovery::ServiceName::Product,
        sqlx::migrate!("./migrations"),
    )
    .await?;
    if config.demo_catalogue {
        let added = demo::load_if_empty(&pool).await?;
        if added > 0 {
            tracing::info!(added, "loaded the demo catalogue");
        }
    }
    let cache = Cache::connect(&config.redis)
        .await
        .map_err(|error| format!("redis (REDIS_URL / REDIS_HOST): {error}"))?;

    let metrics = Metrics::new("product");
    let readiness = Readiness::default();
    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));

    let catalogue = std::sync::Arc::new(catalogue::Catalogue::new(
        storage::CatalogueStore::new(pool.clone()),
        product_cache::ProductCache::new(cache, config.cache_ttl),
        config.reservation_hold,
    ));
    let sweeper = tokio::spawn(release_expired_reservations(
        catalogue.clone(),
        config.reservation_sweep_interval,
        shutdown.clone(),
    ));
    let discovery = config.discovery.build().await?;
    readiness.set_ready(true);
    // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
    let registration = discovery
        .register(
            ServiceName::Product,
            listeners.grpc.local_addr()?.port(),
            shutdown.clone(),
        )
        .await
        .map_err(|error| format!("etcd registration (ETCD_HOSTS): {error}"))?;
    tracing::info!(addr = %listeners.grpc.local_addr()?, "product service serving");
    grpc_server::serve(
        ProductServiceServer::new(grpc::ProductApi::new(catalogue)),
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
    sweeper.await?;
    admin.await??;
    pool.close().await;
    tracing::info!("product service stopped");
    Ok(())
}

/// Gives back the stock of reservations no order committed in time, every `interval`.
async fn release_expired_reservations(
    catalogue: std::sync::Arc<catalogue::Catalogue>,
    interval: std::time::Duration,
    shutdown: Shutdown,
) {
    while !shutdown.is_triggered() {
        if let Err(error) = catalogue.release_expired().await {
            tracing::warn!(%error, "could not release expired reservations");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval.max(std::time::Duration::from_millis(50))) => {}
            _ = shutdown.wait() => {}
        }
    }
}
