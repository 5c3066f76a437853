//! Traces end to end: the spans of one checkout, collected by an OTLP receiver of the test's
//! own, make one trace from the gateway through order, product and payment to the consumed
//! `payment.succeeded` event: through the in-process shop, and through the shop as separate
//! processes (the binaries, as they run in production) exporting over gRPC and over
//! HTTP/protobuf, where the context crosses real process boundaries.
//!
//! The in-process test's exporting subscriber is its own: `set_default` on the test's
//! current-thread runtime, where every service of the shop runs, so the other tests of the
//! binary (and the process-wide subscriber one of them installs) are untouched.

use std::time::Duration;

use letsgo_platform::traces::{self, OtlpProtocol, OtlpSettings};
use letsgo_testkit::{ADMIN_PASSWORD, ShopProcesses};
use letsgo_traces::receiver::{ReceivedSpan, Receiver};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use super::Shop;

/// The trace the test's client says its checkout belongs to, and the client's own span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
const ADDRESS: &str = "88 Lantern Street, Hangzhou";

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CONSUMER: i32 = 5;

/// Spans whose parent is neither the client's span nor another span of the trace.
fn orphans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|span| {
            span.parent_span_id != CLIENT_SPAN_ID
                && !spans
                    .iter()
                    .any(|other| other.span_id == span.parent_span_id)
        })
        .collect()
}

fn consumed_payment_success(spans: &[ReceivedSpan]) -> Option<&ReceivedSpan> {
    spans.iter().find(|span| {
        span.kind == SPAN_KIND_CONSUMER
            && span.attribute("messaging.destination.name")
                == letsgo_platform::events::topics::PAYMENT_SUCCEEDED
            && span
                .attribute("messaging.consumer.group.name")
                .ends_with("letsgo-order")
    })
}

/// A client of the gateway at `base`.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = match body {
            Some(body) => self.http.post(format!("{}{path}", self.base)).json(&body),
            None => self.http.get(format!("{}{path}", self.base)),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        // The client's checkout is one span of its own: every call carries it.
        let answer = request
            .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
            .send()
            .await
            .unwrap();
        let status = answer.status();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn token(&self, path: &str, body: Value) -> String {
        let (status, body) = self.send(path, None, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        body["data"]["token"].as_str().unwrap().to_owned()
    }

    /// A product, a buyer, and the buyer's order of it paid by the mock provider's callback:
    /// answers the buyer's token.
    async fn checkout(&self) -> String {
        let admin = self
            .token(
                "/api/v1/user/login",
                json!({"username": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        let (status, body) = self
            .send(
                "/api/v1/product/add",
                Some(&admin),
                Some(json!({"name": "Desk Lamp", "description": "A lamp for a desk", "price": 25,
                    "stock": 10, "category": "home", "images": ["https://img.example.com/lamp.jpg"], "attributes": "{}"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let lamp = body["data"]["productId"].as_i64().unwrap();
        let buyer = self
            .token(
                "/api/v1/user/register",
                json!({"username": "tracer", "password": "password123",
                    "email": "tracer@example.com", "phone": "13800138000"}),
            )
            .await;
        let (status, body) = self
            .send(
                "/api/v1/order/create",
                Some(&buyer),
                Some(json!({"items": [{"productId": lamp, "quantity": 1}],
                    "address": ADDRESS, "phone": "13800138000"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let order_id = body["data"]["orderId"].as_i64().unwrap();
        let (status, body) = self
            .send(
                "/api/v1/payment/create",
                Some(&buyer),
                Some(json!({"orderId": order_id, "paymentType": 1, "amount": 25})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = self
                .send(
                    &format!("/api/v1/order/detail/{order_id}"),
                    Some(&buyer),
                    None,
                )
                .await;
            if body["data"]["order"]["status"] == 2 {
                return buyer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the mock provider's callback paid order {order_id} within 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The spans of the checkout's trace, once the consumer's span is in and no span waits for
/// its parent (spans are sent in batches; the consumer's ends just after the order shows paid),
/// or after 30 s.
async fn the_trace(receiver: &Receiver, flush: impl AsyncFn()) -> Vec<ReceivedSpan> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        flush().await;
        let spans = receiver.of_trace(TRACE_ID);
        let complete = consumed_payment_success(&spans).is_some() && orphans(&spans).is_empty();
        if complete || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn one_checkout_is_one_trace_from_the_gateway_to_the_consumed_payment_event() {
    let (receiver, collector) = Receiver::start().await;
    let settings = OtlpSettings {
        protocol: OtlpProtocol::Grpc,
        endpoint: format!("http://{collector}"),
        headers: Vec::new(),
    };
    let (layer, export) =
        traces::layer(&settings, "letsgo-test-shop").expect("an exporter to the receiver");
    let _exporting = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let shop = Shop::start().await;
    let client = Client {
        http: shop.http.clone(),
        base: shop.base.clone(),
    };
    let buyer = client.checkout().await;
    let spans = the_trace(&receiver, async || export.flush().await).await;
    assert_one_checkout_trace(&spans, &buyer);
}

/// The checkout's spans make one unbroken tree through every part of the shop, and carry no
/// values.
fn assert_one_checkout_trace(spans: &[ReceivedSpan], buyer: &str) {
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();

    // The gateway continued the client's trace for both calls...
    for route in ["POST /api/v1/order/create", "POST /api/v1/payment/create"] {
        let span = spans
            .iter()
            .find(|span| span.name == route)
            .unwrap_or_else(|| panic!("no gateway span {route} in the trace: {names:?}"));
        assert_eq!(span.kind, SPAN_KIND_SERVER);
        assert_eq!(span.parent_span_id, CLIENT_SPAN_ID, "{route}");
        assert_eq!(span.attribute("http.response.status_code"), "200");
    }
    // ...and the provider's callback, which carried the payment's trace back in.
    assert!(
        names.contains(&"POST /api/v1/payment/callback"),
        "{names:?}"
    );
    // Every service the checkout went through continued it.
    for service in [
        "letsgo.order.v1.OrderService",
        "letsgo.product.v1.ProductService",
        "letsgo.payment.v1.PaymentService",
    ] {
        assert!(
            spans
                .iter()
                .any(|span| span.kind == SPAN_KIND_SERVER
                    && span.attribute("rpc.service") == service),
            "no server span of {service} in the trace: {names:?}"
        );
    }
    // The payment's event went through the outbox and Kafka and was consumed in the same trace.
    let consumed = consumed_payment_success(spans)
        .unwrap_or_else(|| panic!("the consumed payment.succeeded is not in the trace: {names:?}"));
    assert_eq!(consumed.name, "process payment.succeeded");
    assert!(
        spans
            .iter()
            .any(|span| span.name == "publish payment.succeeded"),
        "{names:?}"
    );
    // Storage and Redis calls are spans with their operation, never their values.
    for (system, crate_target) in [
        ("postgresql", "letsgo_order::storage"),
        ("postgresql", "letsgo_product::storage"),
        ("postgresql", "letsgo_payment::storage"),
        ("redis", "letsgo_platform::cache"),
    ] {
        assert!(
            spans
                .iter()
                .any(|span| span.attribute("db.system.name") == system
                    && span.attribute("target") == crate_target
                    && !span.attribute("db.operation.name").is_empty()),
            "no {system} span from {crate_target}: {names:?}"
        );
    }
    for span in spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(ADDRESS) && !value.contains(buyer),
                "{} carries a value in {key}: {value}",
                span.name
            );
        }
    }
    // One unbroken tree: every span hangs from the client's span through spans of the trace.
    let orphans = orphans(spans);
    assert!(
        orphans.is_empty(),
        "spans whose parent is not in the trace: {orphans:#?}"
    );
}

/// The shop as separate processes, exporting by `protocol` to a receiver of the test's own
/// with a header, as a hosted backend's key is sent: the checkout is one trace across the
/// processes, every process's spans carry its own service name and the resource attributes the
/// environment gives.
async fn one_checkout_is_one_trace_across_processes(protocol: OtlpProtocol) {
    let (receiver, collector) = match protocol {
        OtlpProtocol::Grpc => Receiver::start().await,
        OtlpProtocol::HttpProtobuf => Receiver::start_http().await,
    };
    let endpoint = format!("http://{collector}");
    let shop = ShopProcesses::start(&[
        // The general endpoint: over HTTP the exporter adds /v1/traces itself.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.as_str()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20test-key",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
        // Batches every 200 ms rather than 5 s: the test waits less.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await;
    let client = Client {
        http: reqwest::Client::new(),
        base: shop.gateway_url(),
    };
    let buyer = client.checkout().await;
    let spans = the_trace(&receiver, async || {}).await;
    assert_one_checkout_trace(&spans, &buyer);

    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(ReceivedSpan::service).collect();
    for binary in [
        "letsgo-gateway",
        "letsgo-order",
        "letsgo-product",
        "letsgo-payment",
    ] {
        assert!(services.contains(binary), "{binary} is not in {services:?}");
    }
    for span in &spans {
        assert_eq!(span.authorization, "Bearer test-key", "{}", span.name);
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("test"),
            "{}",
            span.name
        );
    }
    // No process complained about its export.
    for binary in [
        "letsgo-gateway",
        "letsgo-order",
        "letsgo-product",
        "letsgo-payment",
    ] {
        let log = shop.log_of(binary);
        assert!(
            !log.contains("not reaching the OTLP collector"),
            "{binary}: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_the_processes_over_grpc() {
    one_checkout_is_one_trace_across_processes(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_the_processes_over_http_protobuf() {
    one_checkout_is_one_trace_across_processes(OtlpProtocol::HttpProtobuf).await;
}

/// A binary whose OpenTelemetry settings cannot be honoured does not start: it says which
/// variable and why, and exits failing, before it listens.
#[test]
fn a_binary_refuses_to_start_with_settings_it_cannot_honour() {
    for (variable, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://api.example.com"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key"),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_letsgo-gateway"));
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") {
                command.env_remove(name);
            }
        }
        if variable != "OTEL_EXPORTER_OTLP_ENDPOINT" {
            command.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        }
        let output = command
            .env(variable, value)
            .env("JWT_SECRET", letsgo_testkit::JWT_SECRET)
            // Were it to start, it would listen where nothing can clash.
            .env("GATEWAY_LISTEN", "127.0.0.1:0")
            .env("ADMIN_LISTEN", "127.0.0.1:0")
            .output()
            .expect("the gateway's binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{variable}={value} started");
        assert!(
            stderr.contains(&format!("letsgo-gateway: {variable}: ")),
            "{variable}={value}: {stderr}"
        );
    }
}

/// An export that cannot reach its collector is said in the log once, with the reason, while
/// the binary goes on serving.
#[tokio::test]
async fn a_collector_out_of_reach_is_said_once_and_serving_goes_on() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (listen, admin, closed) = (free(), free(), free());
    let log_path =
        std::env::temp_dir().join(format!("letsgo-gateway-{listen}.log").replace(':', "-"));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_letsgo-gateway"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let mut gateway = command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("JWT_SECRET", letsgo_testkit::JWT_SECRET)
        .env("REDIS_URL", letsgo_testkit::redis_url())
        .env("GATEWAY_LISTEN", listen.to_string())
        .env("ADMIN_LISTEN", admin.to_string())
        .env("LOG_FORMAT", "json")
        .stdout(log_file)
        .spawn()
        .expect("the gateway's binary runs");
    let http = reqwest::Client::new();
    let mut served = 0;
    for _ in 0..100 {
        if let Ok(answer) = http.get(format!("http://{listen}/health")).send().await
            && answer.status() == StatusCode::OK
        {
            served += 1;
            if served == 10 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, 10, "the gateway serves while its spans go nowhere");
    // Several batches' time: each failed, one line said so.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = gateway.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let said: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("not reaching the OTLP collector"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert!(said[0].contains(&closed.to_string()), "{}", said[0]);
    assert!(said[0].contains("\"level\":\"WARN\""), "{}", said[0]);
}
