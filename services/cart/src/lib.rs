//! The letsgo cart service: one cart per user in Redis, priced from the product service, over
//! gRPC.

pub mod carts;
pub mod config;
pub mod grpc;
pub mod storage;

use letsgo_platform::assembly::{Assembly, ServiceError};
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::proto::cart::v1::cart_service_server::CartServiceServer;
use letsgo_platform::proto::product::v1::product_service_client::ProductServiceClient;
use letsgo_platform::shutdown::Shutdown;

pub use config::Config;

/// Runs the service on `listeners` until `shutdown` triggers.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let mut service =
        Assembly::start(ServiceName::Cart, &config.discovery, listeners, shutdown).await?;
    let cache = service.redis(&config.redis).await?;
    let carts = carts::Carts::new(
        storage::CartStore::new(cache, config.ttl),
        ProductServiceClient::new(service.channel(ServiceName::Product)),
        config.max_lines,
    );
    service
        .serve(
            CartServiceServer::new(grpc::CartApi::new(carts)),
            &config.grpc,
        )
        .await
}
