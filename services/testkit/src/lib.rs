//! For tests only (a dev-dependency): an in-process shop, or any subset of its services, each
//! started through the service's own `run` (so through the same assembly as the binaries) on
//! free loopback ports, with typed settings a test can adjust, and data of its own: a scratch
//! database per service, a Redis key prefix and a Kafka topic prefix, all gone when the shop is
//! (the topics by the sweep `make test` runs after the tests: see [`TopicPrefix`]).
//!
//! ```ignore
//! let shop = Shop::builder()
//!     .product(|config| config.reservation_hold = Duration::from_secs(1))
//!     .cart(|_| {})
//!     .order(|_| {})
//!     .start()
//!     .await;
//! let orders = OrderServiceClient::new(shop.channel(ServiceName::Order).await);
//! ```
//!
//! Where the middleware is comes from the environment `make test` sets (DATABASE_URL_BASE,
//! REDIS_URL_BASE, KAFKA_BROKERS), defaulting to the local ports `make up` uses.

mod kafka;
mod middleware;
mod processes;
mod scratch;
mod shop;

pub use kafka::{KafkaBroker, KafkaTls, kafka_home};
pub use letsgo_test_topics::{TopicPrefix, registry};
pub use middleware::{kafka_brokers, postgres_url, redis_url};
pub use processes::ShopProcesses;
pub use scratch::{ScratchDatabase, delete_redis_keys};
pub use shop::{Shop, ShopBuilder, channel_when_up, start_on_free_ports};

/// Sends what the code under test logs (warnings and errors; `TEST_LOG` takes a filter such as
/// `debug`) to the test's captured output, so a failing test shows the cause a service logged
/// next to the error it answered (a `database error` says no more than that to its caller).
/// The first subscriber of a process wins: a test that installs its own before this keeps it.
pub fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The sign-in token secret (JWT_SECRET) of every test shop.
pub const JWT_SECRET: &str = "letsgo-test-jwt-secret-0123456789abcdef";
/// The token internal calls carry (INTERNAL_TOKEN) in shops built with
/// [`ShopBuilder::internal_token`].
pub const INTERNAL_TOKEN: &str = "letsgo-test-internal-token-0123456789";
/// The initial admin's password (ADMIN_PASSWORD) in every test shop with a user service.
pub const ADMIN_PASSWORD: &str = "letsgo-test-admin-pass-0123";
/// The payment provider's webhook secret (PAYMENT_WEBHOOK_SECRET) in every test shop.
pub const WEBHOOK_SECRET: &str = "letsgo-test-webhook-secret-0123456789";
