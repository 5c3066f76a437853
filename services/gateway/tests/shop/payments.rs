//! Payments: the provider's callbacks, idempotency keys, and a broker outage mid-checkout.

use super::*;

#[tokio::test]
async fn a_callback_with_a_bad_signature_is_401_and_changes_nothing() {
    let shop = Shop::start().await;
    let body = r#"{"paymentNo":"PAY1","orderId":1,"status":2,"amount":10,"tradeNo":"T1"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for signature in [
        None,
        Some(format!("t={now},v1=00ff")),
        Some("garbage".to_owned()),
    ] {
        let mut request = shop
            .http
            .post(format!("{}/api/v1/payment/callback", shop.base))
            .header("Content-Type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Signature", signature);
        }
        let (status, answer) = shop.send(request).await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, 2003);
    }
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_1001_and_changes_nothing() {
    let shop = Shop::start().await;
    let (_, token) = shop.register("arrays").await;
    for body in ["[]", r#"["evil@example.com"]"#, "null", "42", "\"text\""] {
        let (status, answer) = shop
            .send(
                shop.http
                    .put(format!("{}/api/v1/user/profile", shop.base))
                    .bearer_auth(&token)
                    .header("Content-Type", "application/json")
                    .body(body),
            )
            .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, 1001);
    }
    // A JSON type with parameters, or a +json type, is still JSON.
    let (status, answer) = shop
        .send(
            shop.http
                .put(format!("{}/api/v1/user/profile", shop.base))
                .bearer_auth(&token)
                .header("Content-Type", "application/json; charset=utf-8")
                .body(r#" {"avatar":"https://img.example.com/a.png"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test]
async fn an_idempotency_key_is_at_most_128_visible_characters_at_the_gateway() {
    let shop = Shop::start().await;
    let (_, token) = shop.register("keys").await;
    for key in ["k".repeat(129), "has space".to_owned()] {
        let (status, answer) = shop
            .send(
                shop.http
                    .post(format!("{}/api/v1/payment/create", shop.base))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", key)
                    .json(&json!({"orderId": 1, "paymentType": 1, "amount": 1})),
            )
            .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, 1001);
        assert!(answer["msg"].as_str().unwrap().contains("128"), "{answer}");
    }
}

#[tokio::test]
async fn a_callback_built_to_burn_cpu_is_refused_at_once() {
    let shop = Shop::start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Thousands of empty v1 entries (each once cost a MAC over the whole body, per secret).
    let burner = format!("t={now}{}", ",v1=".repeat(5000));
    let small = r#"{"paymentNo":"PAY1","orderId":1,"status":2,"amount":10,"tradeNo":"T1"}"#;
    let request = shop
        .http
        .post(format!("{}/api/v1/payment/callback", shop.base))
        .header("X-Signature", &burner)
        .body(small);
    let (status, answer) = shop.send(request).await;
    assert_error(status, &answer, StatusCode::UNAUTHORIZED, 2003);
    // A large body is refused by the gateway, unread past the limit and never forwarded.
    let request = shop
        .http
        .post(format!("{}/api/v1/payment/callback", shop.base))
        .header("X-Signature", format!("t={now},v1={}", "0".repeat(64)))
        .body(vec![b' '; 1024 * 1024]);
    let (status, answer) = shop.send(request).await;
    assert_error(status, &answer, StatusCode::PAYLOAD_TOO_LARGE, 1001);
}

// ---------------------------------------------------------------- broker outage

#[tokio::test]
async fn a_broker_outage_during_checkouts_delays_events_and_loses_none() {
    // A broker of this test's own (Apache Kafka), so that pausing it touches no other test.
    let broker = letsgo_testkit::KafkaBroker::start();
    let shop = Shop::start_with(ShopOptions {
        kafka_brokers: Some(broker.address().to_owned()),
        ..Default::default()
    })
    .await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Kite", json!(12.5), 100, "toys")
        .await;
    let (_, buyer) = shop.register("buyer").await;

    // The event path works before the outage (this also waits for the consumer to join).
    let first = shop.checkout(&buyer, id, json!(12.5)).await;
    assert!(
        wait_until_paid(&shop, &buyer, first, Duration::from_secs(60)).await,
        "paid before the outage"
    );

    broker.signal("-STOP");
    let mut during = Vec::new();
    for _ in 0..5 {
        // Checkouts go on: every event waits in an outbox.
        during.push(shop.checkout(&buyer, id, json!(12.5)).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/order/detail/{}", during[0]), Some(&buyer))
        .await;
    assert_eq!(
        body["data"]["order"]["status"], 1,
        "no event can arrive while the broker is paused"
    );

    broker.signal("-CONT");
    for order_id in &during {
        assert!(
            wait_until_paid(&shop, &buyer, *order_id, Duration::from_secs(90)).await,
            "order {order_id} paid after the outage"
        );
    }
    // Handled once each: every unit counted as sold exactly once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut sales = 0;
    while tokio::time::Instant::now() < deadline {
        let (_, body) = shop
            .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
            .await;
        sales = body["data"]["product"]["sales"].as_i64().unwrap();
        if sales >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(
        (sales, body["data"]["product"]["sales"].as_i64().unwrap()),
        (6, 6)
    );
    assert_eq!(body["data"]["product"]["stock"], 94);
}
