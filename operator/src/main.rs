//! The letsgo operator: serves `/metrics` and `/healthz`, waits to lead, then reconciles Stores
//! until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use clap::Parser;
use letsgo_operator::controller::{self, Context, Scope};
use letsgo_operator::leader::{self, LeaderElector, LeaseConfig};
use letsgo_operator::manifests::InstallDefaults;
use letsgo_operator::metrics::Metrics;
use tracing::{error, info};

/// letsgo operator: turns each Store resource into a running shop.
#[derive(Debug, Parser)]
#[command(version)]
struct Config {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    /// `[::]` takes IPv4 too, and is `0.0.0.0` on a host without IPv6.
    #[arg(long, env = "METRICS_LISTEN", default_value = "[::]:8080")]
    metrics_listen: SocketAddr,
    /// Elect a leader on a Lease, so several replicas are safe; off only for a single local run.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "letsgo-operator")]
    lease_name: String,
    /// Namespace of the Lease: the operator's own (the chart passes it); the client's default otherwise.
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease: the pod name (the chart passes it).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "LEASE_DURATION_SECS", default_value_t = 15)]
    lease_duration_secs: u64,
    /// Reconcile only the Stores of this namespace; every namespace when unset.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Log filter in tracing's env-filter syntax.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// PostgreSQL image of every Store that names none (a mirror's, or one made locally); the
    /// official `postgres` image when unset.
    #[arg(long, env = "DEFAULT_POSTGRES_IMAGE", value_parser = image_name)]
    default_postgres_image: Option<String>,
    /// Redis image of every Store that names none; the official `redis` image when unset.
    #[arg(long, env = "DEFAULT_REDIS_IMAGE", value_parser = image_name)]
    default_redis_image: Option<String>,
    /// Apache Kafka image of every Store that names none; `apache/kafka` when unset.
    #[arg(long, env = "DEFAULT_KAFKA_IMAGE", value_parser = image_name)]
    default_kafka_image: Option<String>,
    /// etcd image of every Store that names none; the official etcd image when unset.
    #[arg(long, env = "DEFAULT_ETCD_IMAGE", value_parser = image_name)]
    default_etcd_image: Option<String>,
    /// Image of the backups' `aws` CLI for every Store that names none; `amazon/aws-cli` when unset.
    #[arg(long, env = "DEFAULT_BACKUP_IMAGE", value_parser = image_name)]
    default_backup_image: Option<String>,
    /// Pull secrets (comma-separated Secret names) every Pod the operator makes gets, looked up
    /// in each Store's namespace.
    #[arg(long, env = "IMAGE_PULL_SECRETS", value_delimiter = ',', value_parser = secret_name)]
    image_pull_secrets: Vec<String>,
    /// The cluster's DNS domain: the shops' components reach each other by fully qualified
    /// names under it (`<service>.<namespace>.svc.<domain>.`).
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local", value_parser = cluster_domain)]
    cluster_domain: String,
}

/// A DNS domain: labels of letters, digits and '-', joined by dots.
fn cluster_domain(value: &str) -> Result<String, String> {
    let domain = value.trim_end_matches('.');
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if valid {
        Ok(domain.to_ascii_lowercase())
    } else {
        Err(format!("{value:?} is not a DNS domain"))
    }
}

/// An image reference: no spaces, not empty (the registry checks the rest).
fn image_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(format!("{value:?} is not an image reference"));
    }
    Ok(value.to_owned())
}

/// A Secret's name: a DNS subdomain.
fn secret_name(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a Secret name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

impl Config {
    fn install_defaults(&self) -> InstallDefaults {
        InstallDefaults {
            postgres_image: self.default_postgres_image.clone(),
            redis_image: self.default_redis_image.clone(),
            kafka_image: self.default_kafka_image.clone(),
            etcd_image: self.default_etcd_image.clone(),
            backup_image: self.default_backup_image.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            cluster_domain: Some(self.cluster_domain.clone()),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines (for a terminal).
    Text,
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let traces = match letsgo_traces::init(
        config.log_format == LogFormat::Json,
        &config.log_filter,
        "letsgo-operator",
    ) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("letsgo-operator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!(%message, "operator stopped");
            ExitCode::FAILURE
        }
    };
    traces.shutdown().await;
    code
}

async fn run(config: Config) -> Result<(), String> {
    let metrics = Arc::new(Metrics::default());
    let listener = bind(config.metrics_listen)
        .await
        .map_err(|error| format!("METRICS_LISTEN {}: {error}", config.metrics_listen))?;
    let app = admin_router(metrics.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            error!(%error, "admin listener failed");
        }
    });
    info!(listen = %config.metrics_listen, "admin listener up");

    let client = kube::Client::try_default()
        .await
        .map_err(|error| format!("connecting to Kubernetes: {error}"))?;
    let identity = config
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "letsgo-operator".to_owned());
    let defaults = config.install_defaults();
    info!(?defaults, "defaults of every Store");
    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), Some(identity.clone()))
            .with_defaults(defaults),
    );

    let scope = match config.watch_namespace.clone().filter(|n| !n.is_empty()) {
        Some(namespace) => Scope::Namespace(namespace),
        None => Scope::Cluster,
    };
    info!(?scope, "watching Stores");
    if !config.leader_election {
        controller::run(ctx, scope).await;
        return Ok(());
    }
    let lease = LeaseConfig {
        name: config.lease_name,
        namespace: config
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity,
        lease_duration: Duration::from_secs(config.lease_duration_secs.max(2)),
        renew_every: Duration::from_secs((config.lease_duration_secs / 3).max(1)),
    };
    let leadership = leader::lead(LeaderElector::new(client, lease)).await;
    metrics.leader.set(1);
    let mut leading = leadership.leading.clone();
    let outcome = tokio::select! {
        () = controller::run(ctx, scope) => Ok(()),
        // Exiting is the safe way out: the pod restarts as a follower, and no reconcile of
        // ours can overlap the next leader's.
        _ = leading.wait_for(|leads| !*leads) => Err("lost the leader Lease".to_owned()),
    };
    drop(leading);
    leadership.release().await;
    metrics.leader.set(0);
    outcome
}

/// Binds `addr`; `[::]` (dual-stack on Linux) falls back to `0.0.0.0` where the kernel has no
/// IPv6 (EAFNOSUPPORT, EADDRNOTAVAIL), as the services' listeners do.
async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Err(error)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && matches!(error.raw_os_error(), Some(97 | 99)) =>
        {
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        result => result,
    }
}

fn admin_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
