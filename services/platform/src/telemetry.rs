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
use tracing_subscriber::Layer as SubscriberLayer;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryArgs;
use crate::shutdown::Shutdown;
use crate::traces::TraceExport;

/// Starts logging, and exporting traces when the environment names an OTLP endpoint (see
/// [`crate::traces`]; `service` names the process there unless `OTEL_SERVICE_NAME` does). Call
/// once, first thing in `main`, inside the runtime; shut the answer down last.
pub fn init_logging(args: &TelemetryArgs, service: &str) -> TraceExport {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if args.log_format == "json" {
        json_logs(std::io::stdout).boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let (spans, export, failure) = match crate::traces::OtlpSettings::from_env() {
        None => (None, TraceExport::off(), None),
        Some(settings) => match crate::traces::layer(&settings, service) {
            Ok((layer, export)) => (Some(layer), export, None),
            Err(error) => (None, TraceExport::off(), Some(error)),
        },
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .init();
    if let Some(error) = failure {
        tracing::error!(%error, "traces are not exported");
    }
    export
}

/// One JSON object per line, the event's fields at the top level, with the trace and span ids
/// while a trace is active.
pub fn json_logs<S, W>(writer: W) -> impl SubscriberLayer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(WithTraceIds(
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false),
        ))
}

/// Adds `trace_id` and `span_id` to the JSON object the inner format writes, when the event
/// happens inside a traced span; otherwise writes the inner format's line untouched.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    N: for<'writer> FormatFields<'writer> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = crate::traces::current_ids() else {
            return self.0.format_event(context, writer, event);
        };
        let mut line = String::new();
        self.0
            .format_event(context, Writer::new(&mut line), event)?;
        match line.strip_suffix("}\n") {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
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
    use std::sync::{Arc, Mutex};

    use axum::http::Request;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::{UNKNOWN_GRPC_METHOD, json_logs, known_grpc_methods, route_label};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_carry_the_trace_and_span_ids_inside_a_trace() {
        // A provider without an exporter: spans get ids and go nowhere.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(json_logs(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "outside any span");
            tracing::info_span!("request").in_scope(|| tracing::info!("inside a span"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["answer"], 42);
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "inside a span");
        let trace_id = lines[1]["trace_id"].as_str().expect("a trace id");
        let span_id = lines[1]["span_id"].as_str().expect("a span id");
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        assert_eq!(span_id.len(), 16, "{span_id}");
        assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
    }

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
