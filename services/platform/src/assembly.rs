//! One way to put a service together. A service's `run` names what it needs (its database with
//! its migrations, Redis, the outbox relay, event consumers, background jobs) on an
//! [`Assembly`], builds its domain from what those answer, and hands its tonic server to
//! [`Assembly::serve`], which does the rest the same way for every service: the admin listener
//! (metrics, health) from the first moment, readiness once it can answer, registration where
//! discovery needs it, the gRPC server, and on shutdown the drain, the background tasks' end and
//! the pools' close.
//!
//! ```ignore
//! let mut service = Assembly::start(ServiceName::Cart, &config.discovery, listeners, shutdown).await?;
//! let cache = service.redis(&config.redis).await?;
//! let carts = Carts::new(CartStore::new(cache, config.ttl), ...);
//! service.serve(CartServiceServer::new(CartApi::new(carts)), &config.grpc).await
//! ```

use std::convert::Infallible;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::Request;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::config::GrpcServerArgs;
use crate::discovery::{Discovery, DiscoveryArgs, ServiceName};
use crate::grpc::Listeners;
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Metrics, Readiness};

/// Why a service could not start, or stopped in failure. Each names the setting to look at.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting's value cannot be used.
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    /// Something the service needs, found through `setting`, could not be reached or prepared.
    #[error("{dependency} ({setting}): {reason}")]
    Dependency {
        dependency: &'static str,
        setting: &'static str,
        reason: String,
    },
    /// The service's database schema could not be brought up to date.
    #[error("migrations: {0}")]
    Migrations(String),
    /// A listener failed while serving.
    #[error("serving {what}: {reason}")]
    Serving { what: &'static str, reason: String },
    /// A background task ended in a panic.
    #[error("the {task} task panicked: {reason}")]
    TaskPanicked { task: &'static str, reason: String },
}

impl ServiceError {
    pub fn setting(setting: &'static str, reason: impl Display) -> Self {
        ServiceError::Setting {
            setting,
            reason: reason.to_string(),
        }
    }

    pub fn dependency(
        dependency: &'static str,
        setting: &'static str,
        reason: impl Display,
    ) -> Self {
        ServiceError::Dependency {
            dependency,
            setting,
            reason: reason.to_string(),
        }
    }
}

impl From<crate::discovery::DiscoveryConfigError> for ServiceError {
    fn from(error: crate::discovery::DiscoveryConfigError) -> Self {
        ServiceError::Setting {
            setting: error.setting,
            reason: error.reason,
        }
    }
}

/// A service being put together: what it needs, started in the order `run` asks for them, and
/// everything it started, stopped in order when it is served and shut down. Dropped before
/// [`serve`](Assembly::serve) (a start-up error), it stops what it started.
pub struct Assembly {
    name: ServiceName,
    grpc: Option<tokio::net::TcpListener>,
    shutdown: Shutdown,
    metrics: Metrics,
    readiness: Readiness,
    discovery: Discovery,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    admin: Option<JoinHandle<std::io::Result<()>>>,
    #[cfg(feature = "postgres")]
    pool: Option<sqlx::PgPool>,
}

impl Assembly {
    /// Starts the admin listener (metrics, health: not ready yet) and builds the service's
    /// discovery (connecting to etcd in etcd mode).
    pub async fn start(
        name: ServiceName,
        discovery: &DiscoveryArgs,
        listeners: Listeners,
        shutdown: Shutdown,
    ) -> Result<Assembly, ServiceError> {
        let metrics = Metrics::new(name.as_str());
        let readiness = Readiness::default();
        let discovery = discovery.build().await?;
        let Listeners { grpc, admin } = listeners;
        let admin_task = tokio::spawn(telemetry::serve_admin(
            admin,
            metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        Ok(Assembly {
            name,
            grpc: Some(grpc),
            shutdown,
            metrics,
            readiness,
            discovery,
            tasks: Vec::new(),
            admin: Some(admin_task),
            #[cfg(feature = "postgres")]
            pool: None,
        })
    }

    /// The service's metrics registry, for what its domain counts.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The shutdown every task of the service follows.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The discovery the service reaches the others through.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// A balanced channel to another service.
    pub fn channel(&self, service: ServiceName) -> crate::discovery::RpcChannel {
        self.discovery.channel(service)
    }

    /// The service's own database (the one the shop's facts give it, unless DATABASE_URL names
    /// another), created when missing, its schema brought up to date by `migrator` and the
    /// platform's tables. Closed when the service stops.
    #[cfg(feature = "postgres")]
    pub async fn postgres(
        &mut self,
        args: &crate::config::DatabaseArgs,
        migrator: sqlx::migrate::Migrator,
    ) -> Result<sqlx::PgPool, ServiceError> {
        let pool = crate::db::open(args, self.name, migrator).await?;
        self.pool = Some(pool.clone());
        Ok(pool)
    }

    /// The service's Redis connection, its keys under the configured prefix.
    #[cfg(feature = "redis")]
    pub async fn redis(
        &mut self,
        args: &crate::config::RedisArgs,
    ) -> Result<crate::cache::Cache, ServiceError> {
        crate::cache::Cache::connect(args)
            .await
            .map_err(|error| ServiceError::dependency("Redis", "REDIS_URL / REDIS_HOST", error))
    }

    /// Publishes the outbox of the service's database to Kafka until shutdown, creating
    /// `topics` first where the broker allows. Needs [`postgres`](Assembly::postgres) first.
    #[cfg(feature = "kafka")]
    pub fn outbox_relay(
        &mut self,
        kafka: &crate::config::KafkaArgs,
        topics: &'static [&'static str],
    ) -> Result<(), ServiceError> {
        let pool = self.pool("the outbox relay")?;
        let relay = crate::events::spawn_outbox_relay(
            pool,
            kafka,
            topics,
            &self.metrics,
            self.shutdown.clone(),
        )
        .map_err(|reason| ServiceError::setting("KAFKA_BROKERS / KAFKA_*", reason))?;
        self.tasks.push(("outbox relay", relay));
        Ok(())
    }

    /// Consumes `topics` as consumer group `group` until shutdown: each event handled by
    /// `handler` in its own transaction with the record that it was handled, an event that
    /// keeps failing parked in the database's dead letters. Needs
    /// [`postgres`](Assembly::postgres) first.
    #[cfg(feature = "kafka")]
    #[allow(clippy::too_many_arguments)]
    pub fn consume<F, Fut, E>(
        &mut self,
        kafka: &crate::config::KafkaArgs,
        events: &crate::config::EventConsumerArgs,
        group: &'static str,
        topics: &'static [&'static str],
        session_timeout: Duration,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        F: Fn(crate::events::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: crate::events::HandlerError + Send + 'static,
    {
        self.consume_batched(
            kafka,
            events,
            group,
            topics,
            session_timeout,
            None::<fn(Vec<crate::events::Event>) -> std::future::Ready<Result<(), E>>>,
            handler,
        )
    }

    /// [`consume`](Assembly::consume), with events that arrive together offered to `batch`
    /// first, to be handled in one transaction; a batch it refuses goes to `handler` event by
    /// event (see [`EventConsumer::run_batched`](crate::events::EventConsumer::run_batched)).
    #[cfg(feature = "kafka")]
    #[allow(clippy::too_many_arguments)]
    pub fn consume_batched<B, BFut, F, Fut, E>(
        &mut self,
        kafka: &crate::config::KafkaArgs,
        events: &crate::config::EventConsumerArgs,
        group: &'static str,
        topics: &'static [&'static str],
        session_timeout: Duration,
        batch: Option<B>,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        B: Fn(Vec<crate::events::Event>) -> BFut + Send + Sync + 'static,
        BFut: Future<Output = Result<(), E>> + Send,
        F: Fn(crate::events::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: crate::events::HandlerError + Send,
    {
        let pool = self.pool("an event consumer")?;
        let dead_letters = crate::events::DeadLetters::new(pool, events, &self.metrics);
        let consumer = crate::events::spawn_consumer(
            kafka,
            group,
            topics,
            session_timeout,
            dead_letters,
            self.shutdown.clone(),
            batch,
            handler,
        );
        self.tasks.push((group, consumer));
        Ok(())
    }

    /// Runs `job` now and then every `interval` (at least 50 ms) until shutdown; a failure is
    /// logged under `name` and the job runs again at its next turn.
    pub fn every<F, Fut, T, E>(&mut self, name: &'static str, interval: Duration, job: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send,
        E: Display,
    {
        let shutdown = self.shutdown.clone();
        let interval = interval.max(Duration::from_millis(50));
        let task = tokio::spawn(async move {
            while !shutdown.is_triggered() {
                if let Err(error) = job().await {
                    tracing::warn!(%error, job = name, "background job failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.wait() => {}
                }
            }
        });
        self.tasks.push((name, task));
    }

    /// Runs `task` (which should end at shutdown) beside the server; the service waits for it
    /// before it stops.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Serves `service` (with health and, when enabled, reflection) until shutdown: ready and,
    /// in etcd mode, registered once it can answer; on shutdown it leaves etcd, turns not ready,
    /// drains the calls in flight, then waits for its background tasks and closes its database.
    pub async fn serve<S>(mut self, service: S, grpc: &GrpcServerArgs) -> Result<(), ServiceError>
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let listener = self.grpc.take().ok_or_else(|| ServiceError::Serving {
            what: "gRPC",
            reason: "served twice".to_owned(),
        })?;
        let addr = listener
            .local_addr()
            .map_err(|error| ServiceError::Serving {
                what: "gRPC",
                reason: error.to_string(),
            })?;
        self.readiness.set_ready(true);
        // Findable only once it can answer; it leaves (etcd) as soon as shutdown begins.
        let registration = self
            .discovery
            .register(self.name, addr.port(), self.shutdown.clone())
            .await
            .map_err(|error| ServiceError::dependency("etcd registration", "ETCD_HOSTS", error))?;
        let binary = self.name.binary();
        tracing::info!(%addr, "{binary} serving");
        let served = crate::grpc::serve(
            service,
            listener,
            grpc,
            self.discovery.internal_auth(),
            self.metrics.clone(),
            self.readiness.clone(),
            self.shutdown.clone(),
        )
        .await
        .map_err(|error| ServiceError::Serving {
            what: "gRPC",
            reason: error.to_string(),
        });
        // Whatever ended the server, the rest stops with it.
        self.shutdown.trigger();
        let mut outcome = served;
        if let Some(registration) = registration {
            outcome = outcome.and(join("etcd registration", registration).await);
        }
        for (name, task) in std::mem::take(&mut self.tasks) {
            outcome = outcome.and(join(name, task).await);
        }
        if let Some(admin) = self.admin.take() {
            let admin = match admin.await {
                Ok(served) => served.map_err(|error| ServiceError::Serving {
                    what: "the admin listener (ADMIN_LISTEN)",
                    reason: error.to_string(),
                }),
                Err(error) => Err(panicked("admin listener", error)),
            };
            outcome = outcome.and(admin);
        }
        #[cfg(feature = "postgres")]
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        tracing::info!("{binary} stopped");
        outcome
    }

    #[cfg(feature = "kafka")]
    fn pool(&self, needed_by: &str) -> Result<sqlx::PgPool, ServiceError> {
        self.pool.clone().ok_or_else(|| ServiceError::Setting {
            setting: "DATABASE_URL",
            reason: format!(
                "{needed_by} of the {} service needs its database, opened first",
                self.name.as_str()
            ),
        })
    }
}

impl Drop for Assembly {
    /// A start-up that failed half-way: what was started stops at once.
    fn drop(&mut self) {
        for (_, task) in &self.tasks {
            task.abort();
        }
        if let Some(admin) = &self.admin {
            admin.abort();
        }
    }
}

async fn join(name: &'static str, task: JoinHandle<()>) -> Result<(), ServiceError> {
    task.await.map_err(|error| panicked(name, error))
}

fn panicked(task: &'static str, error: tokio::task::JoinError) -> ServiceError {
    ServiceError::TaskPanicked {
        task,
        reason: error.to_string(),
    }
}

/// A service binary's `main` once its settings are parsed: logging (and trace export) set up,
/// its listeners bound (the configured addresses or the service's defaults), `run` until
/// SIGTERM or Ctrl-C, the last spans flushed; a failure becomes a message naming the binary and
/// a failing exit status.
pub async fn run_until_signalled<F, Fut>(
    service: ServiceName,
    telemetry: &crate::config::TelemetryArgs,
    grpc: &GrpcServerArgs,
    run: F,
) -> ExitCode
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), ServiceError>>,
{
    let binary = service.binary();
    let traces = match telemetry::init_logging(telemetry, &binary) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (grpc_addr, admin_addr) = service.default_addresses();
    let result = match Listeners::bind(grpc, grpc_addr, admin_addr).await {
        Ok(listeners) => run(listeners, Shutdown::on_signals()).await,
        Err(error) => Err(error),
    };
    // The spans of the last requests.
    traces.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "{binary} failed");
            eprintln!("{binary}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What a service binary's `main` does for a one-off command (`grant-admin`, `redrive-events`,
/// ...): warnings and errors go to stderr, the answer to stdout, a refusal to stderr with a
/// failing exit status.
pub async fn run_command<Fut>(service: ServiceName, job: Fut) -> ExitCode
where
    Fut: Future<Output = Result<String, crate::BoxError>>,
{
    telemetry::init_command_logging();
    match job.await {
        Ok(answer) => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", service.binary());
            ExitCode::FAILURE
        }
    }
}
