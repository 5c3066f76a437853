//! The letsgo HTTP gateway: the original letsGO REST contract on :8888, routed to the gRPC
//! services, with token checks, per-client rate limits, timeouts, the `{code,msg,data}`
//! envelope on every answer, and the OpenAPI document.

pub mod app;
pub mod auth;
pub mod client_address;
pub mod config;
pub mod extract;
pub mod money;
pub mod openapi;
pub mod product_cache;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod sign_in_throttle;
pub mod storefront;

use std::time::Duration;

use letsgo_platform::auth::TokenKeys;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::{self, Metrics, Readiness};
use tokio::net::TcpListener;

use crate::app::ClientLimits;
use crate::product_cache::ProductDetailCache;
use crate::server::ConnectionLimits;
use crate::sign_in_throttle::{FailureBudget, SignInThrottle};

pub use app::{AppState, app};
pub use config::Config;

pub use letsgo_platform::BoxError;

/// Builds the state a [`Config`] describes.
pub async fn state_from_config(config: &Config, metrics: Metrics) -> Result<AppState, BoxError> {
    let discovery = config.discovery.build().await?;
    let rate_limit =
        rate_limit::ClientRateLimit::new(config.rate_limit_per_second, config.rate_limit_burst);
    rate_limit.spawn_pruning(Duration::from_secs(60));
    let sign_in_throttle = SignInThrottle::new(
        FailureBudget::new(
            config.login_failures_per_account,
            config.login_failure_window,
        ),
        FailureBudget::new(
            config.login_failures_per_address,
            config.login_failure_window,
        ),
        sign_in_throttle::TRACKED_KEYS,
        &metrics,
    );
    sign_in_throttle.spawn_pruning();
    let product_details = ProductDetailCache::new(
        config.product_cache_ttl,
        config.product_cache_entries,
        config.product_cache_max_mib.saturating_mul(1024 * 1024),
        &metrics,
    );
    product_details.listen(config.redis.client()?, &config.redis.redis_key_prefix);
    Ok(AppState::new(
        &discovery,
        TokenKeys::from_args(&config.jwt),
        ClientLimits {
            trusted_proxies: config.trusted_proxies.clone(),
            rate_limit,
            sign_in_throttle,
        },
        product_details,
        config.request_timeout,
        config.max_concurrent_requests,
        metrics,
    ))
}

/// Serves the API on `listener` and the admin endpoints on `admin` until `shutdown`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), BoxError> {
    let metrics = Metrics::new("gateway");
    let readiness = Readiness::default();
    let state = state_from_config(&config, metrics.clone()).await?;
    let limits = ConnectionLimits {
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections.get(),
    };
    let admin_task = tokio::spawn(telemetry::serve_admin(
        admin,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    ));
    readiness.set_ready(true);
    tracing::info!(addr = %listener.local_addr()?, "gateway serving");
    let drain = {
        let shutdown = shutdown.clone();
        let readiness = readiness.clone();
        async move {
            shutdown.wait().await;
            readiness.set_ready(false);
        }
    };
    server::serve(
        listener,
        app(state),
        limits,
        &metrics,
        drain,
        config.shutdown_linger,
    )
    .await;
    admin_task.await??;
    tracing::info!("gateway stopped");
    Ok(())
}
