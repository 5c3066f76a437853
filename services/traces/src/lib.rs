//! Traces and the log lines that name them: one trace per request, followed through the whole
//! shop, exported by OTLP. Shared by the services (through letsgo-platform) and the operator.
//!
//! **Off unless asked for**: an endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp`; `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true` turns it off again. Off, no exporter and no layer are installed and
//! the spans below are never created: what remains is one relaxed atomic load ([`is_on`]) per
//! request, call and event. On, the spans of letsgo's own crates (and warnings and errors, as
//! span events) go in batches by OTLP over HTTP/protobuf (the specification's default) or gRPC
//! (`OTEL_EXPORTER_OTLP_PROTOCOL`), with `OTEL_EXPORTER_OTLP_HEADERS`, named `OTEL_SERVICE_NAME`
//! (the binary's name by default) with `OTEL_RESOURCE_ATTRIBUTES`, and sampled as
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` say (by default every trace a caller did
//! not decline). The variables are read as the specification defines them ([`OtlpSettings`]);
//! a value letsgo cannot honour stops the binary naming the variable, and an export that fails
//! is said in the log once, with its reason, until exports succeed again.
//!
//! **The context travels as a W3C `traceparent`**: in the HTTP headers a client sends the gateway
//! (the gateway continues that trace, or starts one), in the metadata of every gRPC call
//! (letsgo-platform's `RpcChannel` injects it, its gRPC server continues it), in the
//! headers of every Kafka event, and in the outbox row beside the event
//! (letsgo-platform's `events::enqueue`), so an event published after a broker outage still joins the
//! trace that caused it.
//!
//! **Spans name what ran, never the values it ran on**: routes and gRPC methods, event types and
//! consumer groups, storage operations and Redis command names; no SQL text, bind values, keys,
//! tokens or bodies.

mod delivery;
#[cfg(feature = "receiver")]
pub mod receiver;
mod settings;

pub use settings::{OtlpProtocol, OtlpSettings, SettingError};

use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The header (and metadata key, and Kafka header) the context travels in.
pub const TRACEPARENT: &str = "traceparent";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. Everything that only matters to traces (extra spans, context
/// propagation) asks this first, so that it costs nothing when tracing is off.
pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The running export. Keep it for the life of the process and [`TraceExport::shutdown`] it
/// last, so the spans of the final requests are sent.
#[derive(Clone, Default)]
pub struct TraceExport(Option<SdkTracerProvider>);

impl TraceExport {
    /// No export (tracing off).
    pub fn off() -> TraceExport {
        TraceExport(None)
    }

    pub fn is_exporting(&self) -> bool {
        self.0.is_some()
    }

    /// Sends every span ended so far.
    pub async fn flush(&self) {
        if let Some(provider) = self.0.clone() {
            // The SDK blocks until the batch is sent, and the sending needs this runtime.
            let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "could not flush the traces");
            }
        }
    }

    /// Sends the spans still buffered and stops exporting.
    pub async fn shutdown(self) {
        if let Some(provider) = self.0 {
            let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = stopped {
                eprintln!("could not send the last traces: {error}");
            }
        }
    }
}

/// Starts exporting to `settings.endpoint` and answers the layer that turns the process's spans
/// into OpenTelemetry spans, and the export to shut down at exit. `service` names the process
/// when `OTEL_SERVICE_NAME` does not. Must run inside a Tokio runtime (the gRPC exporter's
/// channel lives on it).
pub fn layer<S>(
    settings: &OtlpSettings,
    service: &str,
) -> Result<(impl Layer<S> + Send + Sync + 'static, TraceExport), String>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => {
            // Checked by the settings: each is a valid header, and so valid metadata.
            let mut headers = HeaderMap::new();
            for (name, value) in &settings.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    headers.append(name, value);
                }
            }
            let metadata =
                opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers);
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(settings.endpoint.clone())
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(settings.endpoint.clone())
            .with_headers(settings.headers.iter().cloned().collect())
            .build(),
    }
    .map_err(|error| format!("the OTLP exporter to {}: {error}", settings.endpoint))?;
    let exporter = delivery::Reported::new(
        exporter,
        format!("{} {}", settings.protocol.as_str(), settings.endpoint),
    );
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), which the SDK reads itself.
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_batch_exporter(exporter)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("letsgo"))
        // Attributes a trace viewer would show on every span, at a cost on every span.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // A filter that also sees the context, so that every callsite's interest stays
        // `sometimes` and the filters are asked at every span and event. With a metadata-only
        // filter a callsite the filters all accept is cached as `always`; the macros then skip
        // `enabled`, and the per-layer verdict read at `new_span` is whatever an unrelated
        // `enabled` call (a library's `log_enabled!`) left on the thread: spans went missing
        // from the export at random, their children became roots (tokio-rs/tracing#2519).
        .with_filter(tracing_subscriber::filter::dynamic_filter_fn(
            |metadata, _| {
                if metadata.is_span() {
                    // Our own spans; libraries' spans (h2, hyper, sqlx) would swamp a trace.
                    metadata.target().starts_with("letsgo")
                } else {
                    // Warnings and errors become events on their span (an error marks it failed).
                    *metadata.level() <= Level::WARN
                }
            },
        ));
    ON.store(true, Ordering::Relaxed);
    Ok((layer, TraceExport(Some(provider))))
}

/// The resource: what the environment says (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
/// and `service` as the name when it names none.
fn resource(service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    }
}

struct Headers<'a>(&'a mut HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct ReadHeaders<'a>(&'a HeaderMap);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// A `traceparent` alone, as the outbox and Kafka keep it.
struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct OnlyTraceparent(Option<String>);

impl Injector for OnlyTraceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

/// Writes `span`'s context into outgoing `headers` (HTTP or gRPC metadata).
pub fn inject_into_headers(span: &Span, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut Headers(headers));
}

/// Makes `span` a child of the trace the incoming `headers` carry, if they carry one. Call
/// before the span is first entered.
pub fn continue_from_headers(span: &Span, headers: &HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        continue_from(
            span,
            TraceContextPropagator::new().extract(&ReadHeaders(headers)),
        );
    }
}

/// Makes `span` a child of the span `traceparent` names (from an outbox row or a Kafka header).
pub fn continue_from_traceparent(span: &Span, traceparent: &str) {
    continue_from(
        span,
        TraceContextPropagator::new().extract(&Traceparent(traceparent)),
    );
}

/// Links `span` to the span `traceparent` names without joining its trace: how one span that
/// handles many events (a batch) shows where each of them came from.
pub fn link_traceparent(span: &Span, traceparent: &str) {
    let linked = TraceContextPropagator::new().extract(&Traceparent(traceparent));
    let linked = linked.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

fn continue_from(span: &Span, parent: opentelemetry::Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when tracing is off or the span is disabled: then there is nothing to join.
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` of `span`, when it is part of a trace.
pub fn traceparent_of(span: &Span) -> Option<String> {
    traceparent_in(&span.context())
}

/// The `traceparent` of the span being run (the innermost entered one), when tracing is on and
/// it is part of a trace: what an event written now should carry.
pub fn current_traceparent() -> Option<String> {
    if !is_on() {
        return None;
    }
    opentelemetry::Context::map_current(traceparent_in)
}

fn traceparent_in(context: &opentelemetry::Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut found = OnlyTraceparent(None);
    TraceContextPropagator::new().inject_context(context, &mut found);
    found.0
}

/// The trace and span ids of the span being run, as lowercase hex, for log lines.
pub fn current_ids() -> Option<(String, String)> {
    opentelemetry::Context::map_current(|context| {
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid()
            .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
    })
}

/// A gRPC method path (`/letsgo.order.v1.OrderService/CreateOrder`) as the span name
/// (`letsgo.order.v1.OrderService/CreateOrder`), the service and the method.
pub fn grpc_method_parts(path: &str) -> (&str, &str, &str) {
    let name = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = name.rsplit_once('/').unwrap_or((name, ""));
    (name, service, method)
}

/// Records the gRPC status an answer's headers carry on `span` (a span for a call), marking the
/// span failed when the server failed. A success carries its status in the trailers: no header,
/// nothing to record.
pub fn record_grpc_status(span: &Span, headers: &HeaderMap) {
    if let Some(code) = headers
        .get("grpc-status")
        .and_then(|code| code.to_str().ok())
    {
        span.record("rpc.grpc.status_code", code);
        if is_server_failure(code) {
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Whether a gRPC status code (as its header carries it) is a failure of the server rather than
/// an answer about the request (not found, out of stock): the span is marked failed.
pub fn is_server_failure(code: &str) -> bool {
    // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
    matches!(code, "2" | "4" | "12" | "13" | "14" | "15")
}

/// Installs the process's subscriber: logs (one JSON object per line when `json`, text for a
/// person otherwise) filtered by `filter` (env-filter syntax), and the export of traces when the
/// environment asks for it ([`OtlpSettings::from_env`]), `service` naming the process unless
/// `OTEL_SERVICE_NAME` does. Call once, first thing, inside the runtime; shut the answer down
/// last. An OpenTelemetry variable that cannot be honoured is an error naming it, and nothing
/// is installed: the binary should stop.
pub fn init(json: bool, filter: &str, service: &str) -> Result<TraceExport, SettingError> {
    let settings = OtlpSettings::from_env()?;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(settings) = settings else {
        // One filter for everything: applied globally, no per-layer state to go stale.
        tracing_subscriber::registry()
            .with(filter)
            .with(log_lines(json))
            .init();
        return Ok(TraceExport::off());
    };
    let (spans, export) = layer(&settings, service).map_err(|problem| SettingError {
        setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
        problem,
    })?;
    // Two verdicts per span: the logs' (RUST_LOG) and the export's (every span of letsgo).
    tracing_subscriber::registry()
        .with(log_lines(json).with_filter(filter))
        .with(spans)
        .init();
    Ok(export)
}

/// The log lines on stdout: JSON for a collector, text for a person.
fn log_lines<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    if json {
        json_logs(std::io::stdout).boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    }
}

/// One JSON object per line, the event's fields at the top level, with the trace and span ids
/// while a trace is active.
pub fn json_logs<S, W>(writer: W) -> impl Layer<S> + Send + Sync + 'static
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
        let Some((trace_id, span_id)) = current_ids() else {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn nothing_is_installed_while_tracing_is_off() {
        // This test binary never installs a layer: nothing is on, no traceparent is made.
        assert!(!is_on());
        assert_eq!(current_traceparent(), None);
        assert!(!TraceExport::off().is_exporting());
    }

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            grpc_method_parts("/letsgo.order.v1.OrderService/CreateOrder"),
            (
                "letsgo.order.v1.OrderService/CreateOrder",
                "letsgo.order.v1.OrderService",
                "CreateOrder"
            )
        );
        assert!(is_server_failure("14"));
        assert!(!is_server_failure("5"), "NOT_FOUND is an answer");
    }

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
}
