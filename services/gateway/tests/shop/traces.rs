//! Traces end to end: the spans of one checkout through the in-process shop, collected by an
//! OTLP receiver of the test's own, make one trace from the gateway through order, product and
//! payment to the consumed `payment.succeeded` event.
//!
//! The exporting subscriber is this test's alone: `set_default` on the test's current-thread
//! runtime, where every service of the shop runs, so the other tests of the binary (and the
//! process-wide subscriber one of them installs) are untouched.

use std::time::Duration;

use letsgo_platform::traces::{self, OtlpSettings};
use letsgo_traces::receiver::{ReceivedSpan, Receiver};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;

use super::{Shop, wait_until_paid};

/// The trace the test's client says its checkout belongs to, and the client's own span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

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

#[tokio::test]
async fn one_checkout_is_one_trace_from_the_gateway_to_the_consumed_payment_event() {
    let (receiver, collector) = Receiver::start().await;
    let settings = OtlpSettings {
        endpoint: format!("http://{collector}"),
    };
    let (layer, export) =
        traces::layer(&settings, "letsgo-test-shop").expect("an exporter to the receiver");
    let _exporting = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let lamp = shop
        .add_product(&admin, "Desk Lamp", json!(25), 10, "home")
        .await;
    let (_, buyer) = shop.register("tracer").await;

    // The client's checkout is one span of its own: both its calls carry it.
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01");
    let address = "88 Lantern Street, Hangzhou";
    let call = |path: &str, body: Value| {
        shop.http
            .post(format!("{}{path}", shop.base))
            .bearer_auth(&buyer)
            .header("traceparent", &traceparent)
            .json(&body)
            .send()
    };
    let ordered = call(
        "/api/v1/order/create",
        json!({"items": [{"productId": lamp, "quantity": 1}], "address": address, "phone": "13800138000"}),
    )
    .await
    .unwrap();
    assert_eq!(ordered.status(), StatusCode::OK);
    let order_id = ordered.json::<Value>().await.unwrap()["data"]["orderId"]
        .as_i64()
        .unwrap();
    let paid = call(
        "/api/v1/payment/create",
        json!({"orderId": order_id, "paymentType": 1, "amount": 25}),
    )
    .await
    .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    assert!(
        wait_until_paid(&shop, &buyer, order_id, Duration::from_secs(60)).await,
        "the mock provider's callback paid the order"
    );

    // Spans are sent in batches, and the consumer's ends just after the order shows paid.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        export.flush().await;
        let spans = receiver.of_trace(TRACE_ID);
        let complete = consumed_payment_success(&spans).is_some() && orphans(&spans).is_empty();
        if complete || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
    let consumed = consumed_payment_success(&spans)
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
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(address) && !value.contains(&buyer),
                "{} carries a value in {key}: {value}",
                span.name
            );
        }
    }
    // One unbroken tree: every span hangs from the client's span through spans of the trace.
    let orphans = orphans(&spans);
    assert!(
        orphans.is_empty(),
        "spans whose parent is not in the trace: {orphans:#?}"
    );
}
