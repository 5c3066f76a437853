//! Logs, metrics and the admin listener every long-running letsgo binary has.
//!
//! - logs: `tracing`, one JSON object per line by default, with `trace_id` and `span_id` while a
//!   trace is exported ([`crate::traces`]);
//! - metrics: a Prometheus registry with request counts and durations, served at `/metrics`;
//! - health: `/healthz` answers while the process runs, `/readyz` only while it serves traffic
//!   (it turns unready as soon as shutdown begins, so load balancers drain it first).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{Request, Response, StatusCode, header};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tracing_subscriber::EnvFilter;

use crate::config::TelemetryArgs;
use crate::shutdown::Shutdown;
use crate::traces::TraceExport;

/// Starts logging, and exporting traces when the environment names an OTLP endpoint (see
/// [`crate::traces`]; `service` names the process there unless `OTEL_SERVICE_NAME` does), and
/// caps the allocator's arenas ([`crate::memory`]). Call once, first thing in `main`, inside
/// the runtime; shut the answer down last. An OpenTelemetry variable that cannot be honoured
/// is an error naming it: the binary stops.
pub fn init_logging(
    args: &TelemetryArgs,
    service: &str,
) -> Result<TraceExport, letsgo_traces::SettingError> {
    // The first thing every binary does: the place to settle how it allocates too.
    crate::memory::cap_allocator_arenas();
    letsgo_traces::init(
        args.log_format == crate::config::LogFormat::Json,
        &args.log_filter,
        service,
    )
}

/// Logging for a one-off command (e.g. `letsgo-user grant-admin`): warnings and errors on
/// stderr, so stdout holds only the command's answer.
pub fn init_command_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type DurationFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metrics. Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    requests: Family<RequestLabels, Counter>,
    durations: DurationFamily,
}

impl Metrics {
    /// A registry whose metric names start with `letsgo_`, labelled with the component.
    pub fn new(component: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "letsgo",
            [("component".into(), component.to_owned().into())].into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "requests",
            "Requests answered, by route and status (HTTP status, or gRPC code for gRPC)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by route",
            durations.clone(),
        );
        Metrics {
            registry: Arc::new(RwLock::new(registry)),
            requests,
            durations,
        }
    }

    /// Adds a metric of the caller's own (outbox backlog, cache hits, ...).
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        self.registry
            .write()
            .expect("metrics registry poisoned")
            .register(name, help, metric);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.read().expect("metrics registry poisoned");
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }

    fn observe(&self, route: String, status: String, started: Instant) {
        self.durations
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// A tower layer that counts and times every request it wraps.
    pub fn layer(&self) -> RequestMetricsLayer {
        RequestMetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// See [`Metrics::layer`]. Works for axum routers and tonic servers alike: the route is axum's
/// matched path (never the raw path, which would let clients mint label values) or the gRPC
/// method, and the status is the gRPC code when the answer carries one in its headers (every
/// tonic error does), else the HTTP status.
#[derive(Clone)]
pub struct RequestMetricsLayer {
    metrics: Metrics,
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

/// The route label of a gRPC call to a method no letsgo service has.
pub const UNKNOWN_GRPC_METHOD: &str = "unknown_grpc_method";

/// Every gRPC method letsgo serves, `/<package>.<Service>/<Method>`, read once from the
/// descriptors compiled into the binary, and the health and reflection services' methods.
fn known_grpc_methods() -> &'static HashSet<String> {
    static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
        use prost::Message;
        let mut methods: HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .map(String::from)
        .into();
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into the binary decodes");
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        methods
    });
    &METHODS
}

/// Whether `path` is a method some letsgo service (or health, or reflection) serves.
pub(crate) fn is_known_grpc_method(path: &str) -> bool {
    known_grpc_methods().contains(path)
}

/// The route label, and whether the request is gRPC.
fn route_label<B>(request: &Request<B>) -> (String, bool) {
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if let Some(path) = request.extensions().get::<MatchedPath>() {
        return (path.as_str().to_owned(), is_grpc);
    }
    if is_grpc {
        // Only methods we serve become label values: a client cannot mint them by calling
        // made-up paths.
        let path = request.uri().path();
        let label = if known_grpc_methods().contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_GRPC_METHOD.to_owned()
        };
        (label, true)
    } else {
        ("unmatched".to_owned(), false)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (route, is_grpc) = route_label(&request);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let status = match &result {
                Ok(response) => match response.headers().get("grpc-status") {
                    Some(code) => code.to_str().unwrap_or("unknown").to_owned(),
                    // A gRPC success sends its status in the trailers: OK.
                    None if is_grpc && response.status() == StatusCode::OK => "0".to_owned(),
                    None => response.status().as_u16().to_string(),
                },
                Err(_) => "error".to_owned(),
            };
            metrics.observe(route, status, started);
            result
        })
    }
}

/// Whether the process should receive traffic.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    readiness: Readiness,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn admin_router(metrics: Metrics, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_readiness))
        .with_state(AdminState { metrics, readiness })
}

async fn serve_metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn serve_readiness(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serves the admin router until shutdown.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(metrics, readiness))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::{UNKNOWN_GRPC_METHOD, known_grpc_methods, route_label};

    fn grpc(path: &str) -> Request<()> {
        Request::builder()
            .uri(path)
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    }

    #[test]
    fn grpc_calls_are_labelled_by_known_methods_only() {
        let login = known_grpc_methods()
            .iter()
            .find(|m| m.starts_with("/letsgo.user.v1."))
            .expect("the user service's methods are known")
            .clone();
        assert_eq!(route_label(&grpc(&login)), (login.clone(), true));
        assert_eq!(
            route_label(&grpc("/grpc.health.v1.Health/Check")).0,
            "/grpc.health.v1.Health/Check"
        );
        for made_up in [
            "/letsgo.user.v1.UserService/Nope",
            "/x/y",
            "/a-unique-string-12345",
        ] {
            assert_eq!(
                route_label(&grpc(made_up)),
                (UNKNOWN_GRPC_METHOD.to_owned(), true)
            );
        }
    }
}
