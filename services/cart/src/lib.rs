//! The letsgo cart service: one cart per user in Redis, priced from the product service, over
//! gRPC.

pub mod carts;
pub mod config;
pub mod grpc;
pub mod storage;

use letsgo_platform::cache::Cache;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::cart::v1::cart_service_server::CartServiceServer;
use letsgo_platform::proto::product::v1::product_service_client::ProductServiceClient;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{Metrics, Readiness};
use letsgo_platform::{grpc as grpc_server, telemetry};

pub use config::Config;

pub use letsgo_platform::BoxError;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> Result<(), BoxError> {
    let cache = Cache::connect(&config.redis)
        .await
        .map_err(|error| format!("redis (REDIS_URL / REDIS_HOST): {error}"))?;
    let discovery = config.discovery.build().await?;
    let products = ProductServiceClient::new(discovery.channel(ServiceName::Product));

    let metrics = Metrics::new("cart");
    let readiness = Readiness::default();
    let admin = tokio::spawn(telemetry::serve_admin(
        listeners.admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    let carts = carts::Carts::new(
        storage::CartStore::new(cache, config.ttl),
        products,
        config.max_lines,
    );
    readiness.set_ready(true);
    // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
    let registration = discovery
        .register(
            ServiceName::Cart,
            listeners.grpc.local_addr()?.port(),
            shutdown.clone(),
        )
        .await
        .map_err(|error| format!("etcd registration (ETCD_HOSTS): {error}"))?;
    tracing::info!(addr = %listeners.grpc.local_addr()?, "cart service serving");
    grpc_server::serve(
        CartServiceServer::new(grpc::CartApi::new(carts)),
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
    admin.await??;
    tracing::info!("cart service stopped");
    Ok(())
}
