//! A shop inside the test's process: the services a test asks for, each on free loopback ports
//! through its own `run`, every one told (static discovery) where the others are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::assembly::ServiceError;
use letsgo_platform::config::{LogFormat, Secret, SecretUrl};
use letsgo_platform::discovery::{DiscoveryArgs, DiscoveryChoice, ServiceName};
use letsgo_platform::grpc::Listeners;
use letsgo_platform::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::scratch::{ScratchDatabase, delete_redis_keys};
use crate::{ADMIN_PASSWORD, INTERNAL_TOKEN, JWT_SECRET, WEBHOOK_SECRET};
use crate::{kafka_brokers, postgres_url, redis_url};
use letsgo_test_topics::TopicPrefix;

type Tweak<C> = Option<Box<dyn FnOnce(&mut C) + Send>>;

/// Which services a [`Shop`] runs and how their settings differ from the test defaults.
#[derive(Default)]
#[must_use]
pub struct ShopBuilder {
    user: Tweak<letsgo_user::Config>,
    product: Tweak<letsgo_product::Config>,
    cart: Tweak<letsgo_cart::Config>,
    order: Tweak<letsgo_order::Config>,
    payment: Tweak<letsgo_payment::Config>,
    gateway: Tweak<letsgo_gateway::Config>,
    internal_token: bool,
    absent_at: Option<SocketAddr>,
    kafka_brokers: Option<String>,
}

impl ShopBuilder {
    /// Runs the user service, its settings adjusted by `tweak`.
    pub fn user(mut self, tweak: impl FnOnce(&mut letsgo_user::Config) + Send + 'static) -> Self {
        self.user = Some(Box::new(tweak));
        self
    }

    /// Runs the product service, its settings adjusted by `tweak`.
    pub fn product(
        mut self,
        tweak: impl FnOnce(&mut letsgo_product::Config) + Send + 'static,
    ) -> Self {
        self.product = Some(Box::new(tweak));
        self
    }

    /// Runs the cart service, its settings adjusted by `tweak`.
    pub fn cart(mut self, tweak: impl FnOnce(&mut letsgo_cart::Config) + Send + 'static) -> Self {
        self.cart = Some(Box::new(tweak));
        self
    }

    /// Runs the order service, its settings adjusted by `tweak`.
    pub fn order(mut self, tweak: impl FnOnce(&mut letsgo_order::Config) + Send + 'static) -> Self {
        self.order = Some(Box::new(tweak));
        self
    }

    /// Runs the payment service, its settings adjusted by `tweak`.
    pub fn payment(
        mut self,
        tweak: impl FnOnce(&mut letsgo_payment::Config) + Send + 'static,
    ) -> Self {
        self.payment = Some(Box::new(tweak));
        self
    }

    /// Runs the gateway in front, its settings adjusted by `tweak`.
    pub fn gateway(
        mut self,
        tweak: impl FnOnce(&mut letsgo_gateway::Config) + Send + 'static,
    ) -> Self {
        self.gateway = Some(Box::new(tweak));
        self
    }

    /// All five services and the gateway, with the test defaults.
    pub fn everything(self) -> Self {
        self.user(|_| {})
            .product(|_| {})
            .cart(|_| {})
            .order(|_| {})
            .payment(|_| {})
            .gateway(|_| {})
    }

    /// Every service requires, and every caller sends, [`INTERNAL_TOKEN`].
    pub fn internal_token(mut self) -> Self {
        self.internal_token = true;
        self
    }

    /// The services' brokers, instead of the shared local one (a test's proxy in front of it).
    pub fn kafka_brokers(mut self, brokers: impl Into<String>) -> Self {
        self.kafka_brokers = Some(brokers.into());
        self
    }

    /// Where services that are not run are looked for: a port nothing listens on unless given.
    pub fn absent_services_at(mut self, addr: SocketAddr) -> Self {
        self.absent_at = Some(addr);
        self
    }

    /// Starts the shop: every listener bound first (so each service is told where all the
    /// others are), then the services, each with a scratch database where it has one. Answers
    /// once every gRPC service accepts connections.
    pub async fn start(self) -> Shop {
        self.launch(false).await.1
    }

    /// Starts the shop like [`start`](ShopBuilder::start) but, instead of serving the gateway
    /// on a socket, answers its router (with the settings `.gateway(..)` gave): for tests that
    /// drive it with `oneshot`. A request needs `ConnectInfo<SocketAddr>` in its extensions,
    /// as the gateway's server puts there.
    pub async fn start_router(mut self) -> (axum::Router, Shop) {
        if self.gateway.is_none() {
            self = self.gateway(|_| {});
        }
        let (router, shop) = self.launch(true).await;
        (router.expect("the gateway's router"), shop)
    }

    async fn launch(self, router_only: bool) -> (Option<axum::Router>, Shop) {
        crate::log_to_test_output();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let shutdown = Shutdown::new();
        let absent = match self.absent_at {
            Some(addr) => addr,
            None => {
                let closed = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
                closed.local_addr().expect("its address")
            }
        };

        let runs = [
            (ServiceName::User, self.user.is_some()),
            (ServiceName::Product, self.product.is_some()),
            (ServiceName::Cart, self.cart.is_some()),
            (ServiceName::Order, self.order.is_some()),
            (ServiceName::Payment, self.payment.is_some()),
        ];
        let mut listeners = HashMap::new();
        for (service, runs) in runs {
            if runs {
                listeners.insert(service, free_listeners().await);
            }
        }
        let gateway_listeners = match self.gateway {
            Some(_) if !router_only => Some((free_listener().await, free_listener().await)),
            _ => None,
        };
        let addrs: HashMap<ServiceName, SocketAddr> = listeners
            .iter()
            .map(|(service, listeners)| {
                (*service, listeners.grpc.local_addr().expect("its address"))
            })
            .collect();
        let admin_addrs: HashMap<ServiceName, SocketAddr> = listeners
            .iter()
            .map(|(service, listeners)| {
                (*service, listeners.admin.local_addr().expect("its address"))
            })
            .collect();
        let gateway_addr = gateway_listeners
            .as_ref()
            .map(|(listener, _)| listener.local_addr().expect("its address"));

        // On the shared test broker the topics are swept once this process has ended; a
        // broker of the test's own (`.kafka_brokers(..)`) is the test's to clean up.
        let topic_prefix = format!("test-{id}.");
        let topics = self
            .kafka_brokers
            .is_none()
            .then(|| TopicPrefix::exactly(topic_prefix.clone()));
        let mut shop = Shop {
            id,
            shutdown,
            addrs,
            admin_addrs,
            gateway: gateway_addr,
            gateway_admin: gateway_listeners
                .as_ref()
                .map(|(_, admin)| admin.local_addr().expect("its address")),
            databases: HashMap::new(),
            tasks: Vec::new(),
            redis_used: false,
            topic_prefix,
            _topics: topics,
        };
        let settings = Settings {
            shop: &shop,
            absent,
            internal_token: self.internal_token,
            kafka_brokers: self.kafka_brokers.unwrap_or_else(kafka_brokers),
        };
        let mut configs = Configs::default();
        if let Some(tweak) = self.user {
            let mut config = settings.user(&shop_databases(&mut configs, ServiceName::User).await);
            tweak(&mut config);
            configs.user = Some(config);
        }
        if let Some(tweak) = self.product {
            let mut config =
                settings.product(&shop_databases(&mut configs, ServiceName::Product).await);
            tweak(&mut config);
            configs.product = Some(config);
        }
        if let Some(tweak) = self.cart {
            let mut config = settings.cart();
            tweak(&mut config);
            configs.cart = Some(config);
        }
        if let Some(tweak) = self.order {
            let mut config =
                settings.order(&shop_databases(&mut configs, ServiceName::Order).await);
            tweak(&mut config);
            configs.order = Some(config);
        }
        if let Some(tweak) = self.payment {
            let mut config =
                settings.payment(&shop_databases(&mut configs, ServiceName::Payment).await);
            tweak(&mut config);
            configs.payment = Some(config);
        }
        let gateway_config = self.gateway.map(|tweak| {
            let mut config = settings.gateway();
            tweak(&mut config);
            config
        });
        shop.redis_used =
            configs.product.is_some() || configs.cart.is_some() || gateway_config.is_some();
        shop.databases = std::mem::take(&mut configs.databases);

        let mut take = |service| listeners.remove(&service).expect("bound above");
        let stop = shop.shutdown.clone();
        if let Some(config) = configs.user {
            let listeners = take(ServiceName::User);
            shop.spawn(letsgo_user::run(config, listeners, stop.clone()));
        }
        if let Some(config) = configs.product {
            let listeners = take(ServiceName::Product);
            shop.spawn(letsgo_product::run(config, listeners, stop.clone()));
        }
        if let Some(config) = configs.cart {
            let listeners = take(ServiceName::Cart);
            shop.spawn(letsgo_cart::run(config, listeners, stop.clone()));
        }
        if let Some(config) = configs.order {
            let listeners = take(ServiceName::Order);
            shop.spawn(letsgo_order::run(config, listeners, stop.clone()));
        }
        if let Some(config) = configs.payment {
            let listeners = take(ServiceName::Payment);
            shop.spawn(letsgo_payment::run(config, listeners, stop.clone()));
        }
        let mut router = None;
        match (gateway_config, gateway_listeners) {
            (Some(config), Some((listener, admin))) => {
                let gateway = letsgo_gateway::run(config, listener, admin, stop.clone());
                shop.tasks.push(tokio::spawn(async move {
                    gateway.await.map_err(|error| error.to_string())
                }));
            }
            (Some(config), None) => {
                let metrics = letsgo_platform::telemetry::Metrics::new("gateway");
                let state = letsgo_gateway::state_from_config(&config, metrics)
                    .await
                    .unwrap_or_else(|error| panic!("the gateway's state: {error}"));
                router = Some(letsgo_gateway::app(state));
            }
            _ => {}
        }
        for addr in shop.addrs.values() {
            channel_when_up(*addr).await;
        }
        // A bound socket accepts before its service serves: a test that reads a service's
        // database itself must not find it still migrating.
        let mut admins: Vec<SocketAddr> = shop.admin_addrs.values().copied().collect();
        admins.extend(shop.gateway_admin);
        wait_until_ready(admins, &shop.tasks).await;
        (router, shop)
    }
}

/// A test's shop. Dropped (or [`stopped`](Shop::stop)), its services stop, its databases are
/// dropped and its Redis keys deleted; its Kafka topics (prefix [`Shop::topic_prefix`]) are
/// deleted by the sweep once the test process has ended (see [`TopicPrefix`]).
pub struct Shop {
    id: String,
    shutdown: Shutdown,
    addrs: HashMap<ServiceName, SocketAddr>,
    admin_addrs: HashMap<ServiceName, SocketAddr>,
    gateway: Option<SocketAddr>,
    gateway_admin: Option<SocketAddr>,
    databases: HashMap<ServiceName, ScratchDatabase>,
    tasks: Vec<JoinHandle<Result<(), String>>>,
    redis_used: bool,
    topic_prefix: String,
    _topics: Option<TopicPrefix>,
}

impl Shop {
    pub fn builder() -> ShopBuilder {
        ShopBuilder::default()
    }

    /// What makes this shop's data its own (hex, unique per shop).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The prefix of every Redis key this shop writes.
    pub fn redis_prefix(&self) -> String {
        format!("test:{}:", self.id)
    }

    /// The prefix of every Kafka topic this shop uses.
    pub fn topic_prefix(&self) -> String {
        self.topic_prefix.clone()
    }

    /// Where `service` serves gRPC; panics if the shop does not run it.
    pub fn addr(&self, service: ServiceName) -> SocketAddr {
        *self
            .addrs
            .get(&service)
            .unwrap_or_else(|| panic!("this shop runs no {} service", service.as_str()))
    }

    /// What `service`'s `/metrics` shows now (Prometheus text); panics if the shop does not run
    /// it or it does not answer.
    pub async fn metrics_of(&self, service: ServiceName) -> String {
        let addr = *self
            .admin_addrs
            .get(&service)
            .unwrap_or_else(|| panic!("this shop runs no {} service", service.as_str()));
        // One request on a connection the server closes after answering (HTTP/1.0): all a
        // test needs, without an HTTP client in every service's tests.
        let mut connection = tokio::net::TcpStream::connect(addr)
            .await
            .expect("the admin listener accepts");
        connection
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .expect("the request is sent");
        let mut answer = String::new();
        connection
            .read_to_string(&mut answer)
            .await
            .expect("an answer in text");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "/metrics of {} answered {head}",
            service.as_str()
        );
        body.to_owned()
    }

    /// A channel to `service`, once it accepts connections.
    pub async fn channel(&self, service: ServiceName) -> Channel {
        channel_when_up(self.addr(service)).await
    }

    /// The URL of `service`'s scratch database; panics if the shop does not run it.
    pub fn database_url(&self, service: ServiceName) -> &str {
        &self
            .databases
            .get(&service)
            .unwrap_or_else(|| panic!("this shop has no {} database", service.as_str()))
            .url
    }

    /// `http://` and the gateway's address; panics if the shop runs no gateway.
    pub fn gateway_url(&self) -> String {
        format!(
            "http://{}",
            self.gateway.expect("this shop runs no gateway")
        )
    }

    /// `http://` and the gateway's admin address (metrics, health).
    pub fn gateway_admin_url(&self) -> String {
        format!(
            "http://{}",
            self.gateway_admin.expect("this shop runs no gateway")
        )
    }

    /// The shutdown every part of the shop follows.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Stops every service and waits for each to drain; panics naming a service that failed.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        for task in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => panic!("a service of the shop failed: {error}"),
                Ok(Err(error)) => panic!("a service of the shop panicked: {error}"),
                Err(_) => panic!("a service of the shop did not stop within 30 s"),
            }
        }
    }

    fn spawn(&mut self, run: impl Future<Output = Result<(), ServiceError>> + Send + 'static) {
        self.tasks.push(tokio::spawn(async move {
            run.await.map_err(|error| error.to_string())
        }));
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if self.redis_used {
            delete_redis_keys(redis_url(), self.redis_prefix());
        }
    }
}

/// The settings every test service shares, and each one's test defaults.
struct Settings<'a> {
    shop: &'a Shop,
    absent: SocketAddr,
    internal_token: bool,
    kafka_brokers: String,
}

#[derive(Default)]
struct Configs {
    databases: HashMap<ServiceName, ScratchDatabase>,
    user: Option<letsgo_user::Config>,
    product: Option<letsgo_product::Config>,
    cart: Option<letsgo_cart::Config>,
    order: Option<letsgo_order::Config>,
    payment: Option<letsgo_payment::Config>,
}

/// A scratch database for `service`, kept in `configs`; answers its URL.
async fn shop_databases(configs: &mut Configs, service: ServiceName) -> String {
    let database = ScratchDatabase::create(&postgres_url())
        .await
        .expect("a scratch database (is PostgreSQL running? `make test` starts it)");
    let url = database.url.clone();
    configs.databases.insert(service, database);
    url
}

impl Settings<'_> {
    fn discovery(&self, discovery: &mut DiscoveryArgs) {
        discovery.discovery = DiscoveryChoice::Static;
        let at = |service| {
            self.shop
                .addrs
                .get(&service)
                .copied()
                .unwrap_or(self.absent)
                .to_string()
        };
        discovery.user_rpc = at(ServiceName::User);
        discovery.product_rpc = at(ServiceName::Product);
        discovery.cart_rpc = at(ServiceName::Cart);
        discovery.order_rpc = at(ServiceName::Order);
        discovery.payment_rpc = at(ServiceName::Payment);
        discovery.internal_auth.internal_token =
            self.internal_token.then(|| Secret::new(INTERNAL_TOKEN));
    }

    fn database(&self, database: &mut letsgo_platform::config::DatabaseArgs, url: &str) {
        database.database_url = Some(SecretUrl::new(url));
    }

    fn redis(&self, redis: &mut letsgo_platform::config::RedisArgs) {
        redis.redis_url = Some(SecretUrl::new(redis_url()));
        redis.redis_key_prefix = self.shop.redis_prefix();
    }

    fn kafka(&self, kafka: &mut letsgo_platform::config::KafkaArgs) {
        kafka.kafka_brokers = self.kafka_brokers.clone();
        kafka.kafka_topic_prefix = self.shop.topic_prefix();
    }

    fn user(&self, database: &str) -> letsgo_user::Config {
        let mut config = parse::<letsgo_user::Config>(&["letsgo-user", "--jwt-secret", JWT_SECRET]);
        self.database(&mut config.database, database);
        self.kafka(&mut config.kafka);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        config.initial_admin.admin_password = Some(Secret::new(ADMIN_PASSWORD));
        config
    }

    fn product(&self, database: &str) -> letsgo_product::Config {
        let mut config = parse::<letsgo_product::Config>(&["letsgo-product"]);
        self.database(&mut config.database, database);
        self.redis(&mut config.redis);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        config.demo_catalogue = false;
        config
    }

    fn cart(&self) -> letsgo_cart::Config {
        let mut config = parse::<letsgo_cart::Config>(&["letsgo-cart"]);
        self.redis(&mut config.redis);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        config
    }

    fn order(&self, database: &str) -> letsgo_order::Config {
        let mut config = parse::<letsgo_order::Config>(&["letsgo-order"]);
        self.database(&mut config.database, database);
        self.kafka(&mut config.kafka);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        // A consumer that restarts rejoins its group within seconds: 6 s is the shortest
        // session Kafka accepts by default (group.min.session.timeout.ms).
        config.kafka_session_timeout = Duration::from_secs(6);
        config
    }

    fn payment(&self, database: &str) -> letsgo_payment::Config {
        let mut args = vec![
            "letsgo-payment".to_owned(),
            "--payment-webhook-secret".to_owned(),
            WEBHOOK_SECRET.to_owned(),
        ];
        // The mock provider's callbacks go to this shop's gateway, when it has one.
        if let Some(gateway) = self.shop.gateway {
            args.extend([
                "--payment-callback-url".to_owned(),
                format!("http://{gateway}/api/v1/payment/callback"),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut config = parse::<letsgo_payment::Config>(&args);
        self.database(&mut config.database, database);
        self.kafka(&mut config.kafka);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        config.kafka_session_timeout = Duration::from_secs(6);
        config
    }

    fn gateway(&self) -> letsgo_gateway::Config {
        let mut config =
            parse::<letsgo_gateway::Config>(&["letsgo-gateway", "--jwt-secret", JWT_SECRET]);
        self.redis(&mut config.redis);
        self.discovery(&mut config.discovery);
        config.telemetry.log_format = LogFormat::Text;
        config
    }
}

/// A service's settings as its binary would read them from `args` (and the environment).
fn parse<C: Parser>(args: &[&str]) -> C {
    C::try_parse_from(args).unwrap_or_else(|error| panic!("{}: {error}", args[0]))
}

async fn free_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port")
}

async fn free_listeners() -> Listeners {
    Listeners {
        grpc: free_listener().await,
        admin: free_listener().await,
    }
}

/// Binds a service's gRPC and admin listeners on free loopback ports and spawns `run` on them
/// (typically `|listeners, shutdown| letsgo_x::run(config, listeners, shutdown)`), for a test
/// that starts a service by hand. Answers the gRPC address and the service's task.
pub async fn start_on_free_ports<F, Fut>(
    run: F,
    shutdown: &Shutdown,
) -> (SocketAddr, JoinHandle<Fut::Output>)
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let listeners = free_listeners().await;
    let addr = listeners.grpc.local_addr().expect("the gRPC port");
    let task = tokio::spawn(run(listeners, shutdown.clone()));
    (addr, task)
}

/// Waits until every admin listener in `admins` answers `/readyz` with 200 (its service has
/// migrated its database and serves), within 60 s; returns early when a service has stopped,
/// so a test of a start that fails sees that failure instead of a timeout.
async fn wait_until_ready(mut admins: Vec<SocketAddr>, tasks: &[JoinHandle<Result<(), String>>]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if tasks.iter().any(JoinHandle::is_finished) {
            return;
        }
        let mut waiting = Vec::new();
        for addr in admins {
            if !answers_ready(addr).await {
                waiting.push(addr);
            }
        }
        if waiting.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the services whose admin listeners are {waiting:?} were not ready within 60 s"
        );
        admins = waiting;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the admin listener at `addr` answers `GET /readyz` with 200 within 5 s.
async fn answers_ready(addr: SocketAddr) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), ask).await,
        Ok(Ok(true))
    )
}

/// A channel to the gRPC server at `addr`, once it accepts connections (within 5 s).
pub async fn channel_when_up(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("a gRPC address");
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not come up");
}
