//! Orders: checkout, cancellation, fulfilment, and buyers racing for the last units.

use super::*;

#[tokio::test]
async fn a_shopper_checks_out_pays_and_sees_the_order_paid() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let tea = shop
        .add_product(&admin, "Green Tea", json!(19.9), 5, "food")
        .await;
    let cup = shop.add_product(&admin, "Cup", json!(5), 5, "home").await;
    let (_, alice) = shop.register("alice").await;
    for product_id in [tea, cup] {
        let (status, _) = shop
            .send_json(
                reqwest::Method::POST,
                "/api/v1/cart/add",
                Some(&alice),
                json!({"productId": product_id, "quantity": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&alice),
            json!({"items": [{"productId": tea, "quantity": 2}], "address": "12 Harbour Road, Shanghai", "phone": "13800138000", "remark": "leave at the door"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = body["data"]["orderId"].as_i64().unwrap();
    assert_eq!(body["data"]["totalAmount"], json!(39.8));
    assert!(body["data"]["orderNo"].as_str().unwrap().starts_with("LG"));

    let (_, cart) = shop.get_with_token("/api/v1/cart/", Some(&alice)).await;
    let in_cart: Vec<i64> = cart["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["productId"].as_i64().unwrap())
        .collect();
    assert_eq!(
        in_cart,
        [cup],
        "the ordered product left the cart, the other stayed"
    );

    let (status, body) = shop
        .get_with_token(&format!("/api/v1/order/detail/{order_id}"), Some(&alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    let order = &body["data"]["order"];
    assert_eq!(order["status"], 1);
    assert_eq!(order["paidAt"], 0);
    assert_eq!(order["items"][0]["price"], json!(19.9));
    assert_eq!(order["items"][0]["name"], "Green Tea");

    // Someone else can neither see nor pay it.
    let (_, bob) = shop.register("bob").await;
    let (status, body) = shop
        .get_with_token(&format!("/api/v1/order/detail/{order_id}"), Some(&bob))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/payment/create",
            Some(&bob),
            json!({"orderId": order_id, "paymentType": 1, "amount": 39.8}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);
    let (status, body) = shop
        .get_with_token(&format!("/api/v1/payment/query/{order_id}"), Some(&alice))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 6000);

    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/payment/create",
            Some(&alice),
            json!({"orderId": order_id, "paymentType": 1, "amount": 39.7}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 6003);

    let pay = |amount: Value, key: &'static str| {
        shop.send(
            shop.http
                .post(format!("{}/api/v1/payment/create", shop.base))
                .bearer_auth(&alice)
                .header("Idempotency-Key", key)
                .json(&json!({"orderId": order_id, "paymentType": 2, "amount": amount})),
        )
    };
    let (status, first) = pay(json!(39.8), "checkout-1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for field in ["paymentId", "paymentNo", "payUrl", "qrCode"] {
        assert!(!first["data"][field].is_null(), "payment has {field}");
    }
    let (status, again) = pay(json!(39.8), "checkout-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again["data"], first["data"],
        "the same key and body give the first answer"
    );
    let (status, body) = pay(json!(39.80), "checkout-1").await;
    assert_eq!(status, StatusCode::OK, "39.80 is the same amount: {body}");
    let (status, body) = shop
        .send(
            shop.http
                .post(format!("{}/api/v1/payment/create", shop.base))
                .bearer_auth(&alice)
                .header("Idempotency-Key", "checkout-1")
                .json(&json!({"orderId": order_id, "paymentType": 3, "amount": 39.8})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 1001);

    // The mock provider signs its callback and posts it to the gateway; the payment event
    // then marks the order paid.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut order = Value::Null;
    while tokio::time::Instant::now() < deadline {
        let (_, body) = shop
            .get_with_token(&format!("/api/v1/order/detail/{order_id}"), Some(&alice))
            .await;
        order = body["data"]["order"].clone();
        if order["status"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(order["status"], 2, "paid: {order}");
    assert!(order["paidAt"].as_i64().unwrap() > 0);

    let (status, body) = shop
        .get_with_token(&format!("/api/v1/payment/query/{order_id}"), Some(&alice))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], 2);
    assert_eq!(body["data"]["amount"], json!(39.8));
    assert_eq!(body["data"]["paymentType"], 2);
    assert_eq!(body["data"]["orderId"], order_id);

    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/cancel/{order_id}"),
            Some(&alice),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 5002);

    let (_, body) = shop
        .get_with_token(
            "/api/v1/order/list?page=1&pageSize=10&status=2",
            Some(&alice),
        )
        .await;
    assert_eq!(body["data"]["total"], 1);
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{tea}"), None)
        .await;
    assert_eq!(body["data"]["product"]["stock"], 3);
}

#[tokio::test]
async fn a_pending_order_cancels_and_gives_its_stock_back() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop.add_product(&admin, "Lamp", json!(10), 2, "home").await;
    let (_, carol) = shop.register("carol").await;
    let order = |quantity: i64| {
        shop.send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&carol),
            json!({"items": [{"productId": id, "quantity": quantity}], "address": "3 Garden Lane, Beijing", "phone": "13900139000"}),
        )
    };
    let (status, body) = order(3).await;
    assert_error(status, &body, StatusCode::CONFLICT, 3001);
    let (status, body) = order(2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order_id = body["data"]["orderId"].as_i64().unwrap();
    let (status, body) = order(1).await;
    assert_error(status, &body, StatusCode::CONFLICT, 3001);

    let (status, _) = shop
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/cancel/{order_id}"),
            Some(&carol),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(body["data"]["product"]["stock"], 2, "the stock came back");
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/payment/create",
            Some(&carol),
            json!({"orderId": order_id, "paymentType": 1, "amount": 20}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);

    for bad in [
        json!({"items": [], "address": "3 Garden Lane, Beijing", "phone": "13900139000"}),
        json!({"items": [{"productId": id, "quantity": 1}], "address": "short", "phone": "13900139000"}),
        json!({"items": [{"productId": id, "quantity": 1}], "address": "3 Garden Lane, Beijing", "phone": "139"}),
        json!({"items": [{"productId": id, "quantity": 0}], "address": "3 Garden Lane, Beijing", "phone": "13900139000"}),
    ] {
        let (status, body) = shop
            .send_json(
                reqwest::Method::POST,
                "/api/v1/order/create",
                Some(&carol),
                bad,
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/order/cancel/abc",
            Some(&carol),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
}

#[tokio::test]
async fn an_admin_ships_a_paid_order_and_its_buyer_confirms_receipt() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let kettle = shop
        .add_product(&admin, "Kettle", json!(30), 5, "home")
        .await;
    let (alice_id, alice) = shop.register("alice").await;
    let (_, bob) = shop.register("bob").await;
    let order_id = shop.paid_order(&alice, kettle, json!(30)).await;
    let order = shop.order_of(&alice, order_id).await;
    assert_eq!(
        (order["carrier"].as_str(), order["trackingNo"].as_str()),
        (Some(""), Some(""))
    );

    let (status, body) = shop
        .get_with_token(
            "/api/v1/admin/orders?status=2&page=1&pageSize=10",
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["total"], 1);
    let listed = &body["data"]["orders"][0];
    assert_eq!(listed["id"], order_id);
    assert_eq!(listed["userId"], alice_id);
    assert_eq!(listed["items"][0]["name"], "Kettle");
    let order_no = listed["orderNo"].as_str().unwrap().to_owned();
    let (_, body) = shop
        .get_with_token(
            &format!("/api/v1/admin/orders?keyword={order_no}"),
            Some(&admin),
        )
        .await;
    assert_eq!(
        body["data"]["total"], 1,
        "found by its order number: {body}"
    );
    let (_, body) = shop
        .get_with_token("/api/v1/admin/orders?status=3", Some(&admin))
        .await;
    assert_eq!(body["data"]["total"], 0);

    let shipment = json!({"carrier": "SF Express", "trackingNo": "SF1234567890"});
    let (status, body) = shop.ship(Some(&admin), order_id, shipment.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["success"], true);
    let (status, body) = shop.ship(Some(&admin), order_id, shipment.clone()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same shipment again is fine: {body}"
    );
    let (status, body) = shop
        .ship(
            Some(&admin),
            order_id,
            json!({"carrier": "SF Express", "trackingNo": "SF0000000000"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);

    let shipped = shop.order_of(&alice, order_id).await;
    assert_eq!(shipped["status"], 3);
    assert!(shipped["shippedAt"].as_i64().unwrap() >= shipped["paidAt"].as_i64().unwrap());
    assert_eq!(shipped["completedAt"], 0);
    assert_eq!(shipped["carrier"], "SF Express");
    assert_eq!(shipped["trackingNo"], "SF1234567890");

    let (status, body) = shop.confirm(Some(&bob), order_id).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);
    let (status, body) = shop.confirm(Some(&alice), order_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let completed = shop.order_of(&alice, order_id).await;
    assert_eq!(completed["status"], 4);
    assert!(completed["completedAt"].as_i64().unwrap() >= shipped["shippedAt"].as_i64().unwrap());
    assert_eq!(completed["trackingNo"], "SF1234567890");
    let (status, body) = shop.confirm(Some(&alice), order_id).await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);

    let (_, body) = shop
        .get_with_token("/api/v1/order/list?status=4", Some(&alice))
        .await;
    assert_eq!(body["data"]["total"], 1);
    let (_, body) = shop
        .get_with_token("/api/v1/admin/orders?status=4", Some(&admin))
        .await;
    assert_eq!(body["data"]["orders"][0]["id"], order_id);
}

#[tokio::test]
async fn fulfilment_is_for_admins_and_buyers_and_refuses_bad_input() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let lamp = shop
        .add_product(&admin, "Lamp", json!(10), 10, "home")
        .await;
    let (_, carol) = shop.register("carol").await;
    let shipment = json!({"carrier": "SF Express", "trackingNo": "SF1"});

    // Who may call.
    for token in [None, Some(carol.as_str())] {
        let (want_status, want_code) = match token {
            None => (StatusCode::UNAUTHORIZED, 2003),
            Some(_) => (StatusCode::FORBIDDEN, 2005),
        };
        for path in ["/api/v1/admin/orders", "/api/v1/admin/products"] {
            let (status, body) = shop.get_with_token(path, token).await;
            assert_error(status, &body, want_status, want_code);
        }
        let (status, body) = shop.ship(token, 1, shipment.clone()).await;
        assert_error(status, &body, want_status, want_code);
        let (status, body) = shop
            .send_json(
                reqwest::Method::PUT,
                "/api/v1/product/unlist",
                token,
                json!({"productId": lamp}),
            )
            .await;
        assert_error(status, &body, want_status, want_code);
    }
    let (status, body) = shop.confirm(None, 1).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);

    // What may be shipped or confirmed.
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&carol),
            json!({"items": [{"productId": lamp, "quantity": 1}], "address": "3 Garden Lane, Beijing", "phone": "13900139000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pending = body["data"]["orderId"].as_i64().unwrap();
    let (status, body) = shop.ship(Some(&admin), pending, shipment.clone()).await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);
    let (status, body) = shop.confirm(Some(&carol), pending).await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);
    let (status, _) = shop
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/cancel/{pending}"),
            Some(&carol),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = shop.ship(Some(&admin), pending, shipment.clone()).await;
    assert_error(status, &body, StatusCode::CONFLICT, 5001);
    let (status, body) = shop.ship(Some(&admin), 424_242, shipment.clone()).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);
    let (status, body) = shop.confirm(Some(&carol), 424_242).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);

    // Bad input is 1001, before anything changes.
    let huge = "9".repeat(100_000);
    for bad in [
        json!({}),
        json!({"carrier": "SF Express"}),
        json!({"carrier": 5, "trackingNo": "SF1"}),
        json!({"carrier": "", "trackingNo": "SF1"}),
        json!({"carrier": "SF Express", "trackingNo": "   "}),
        json!({"carrier": "SF\u{0}Express", "trackingNo": "SF1"}),
        json!({"carrier": "SF Express", "trackingNo": "SF1\r\nX-Injected: yes"}),
        json!({"carrier": "SF Express", "trackingNo": "SF\u{202e}1"}),
        json!({"carrier": "x".repeat(51), "trackingNo": "SF1"}),
        json!({"carrier": "SF Express", "trackingNo": huge}),
    ] {
        let (status, body) = shop.ship(Some(&admin), pending, bad.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/admin/orders/abc/ship",
            Some(&admin),
            shipment.clone(),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let (status, body) = shop
        .send(
            shop.http
                .put(format!("{}/api/v1/admin/orders/{pending}/ship", shop.base))
                .bearer_auth(&admin)
                .header("Content-Type", "application/json")
                .body("[\"SF Express\", \"SF1\"]"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let (status, body) = shop.confirm(Some(&carol), -1).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 5000);
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/order/confirm/abc",
            Some(&carol),
            json!({}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let long_keyword = "x".repeat(101);
    for query in [
        "status=9",
        "status=-1",
        "page=0",
        "pageSize=0",
        "pageSize=abc",
        &*format!("keyword={long_keyword}"),
        "keyword=%00",
    ] {
        let (status, body) = shop
            .get_with_token(&format!("/api/v1/admin/orders?{query}"), Some(&admin))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .get_with_token(
            "/api/v1/admin/orders?pageSize=1000&keyword=%25",
            Some(&admin),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a large page is clamped, % is plain text: {body}"
    );
    assert_eq!(body["data"]["total"], 0);
    let order = shop.order_of(&carol, pending).await;
    assert_eq!(
        (order["status"].as_i64(), order["carrier"].as_str()),
        (Some(5), Some(""))
    );
}

#[tokio::test]
async fn many_buyers_racing_for_few_units_get_exactly_that_many_orders() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Rare print", json!(300), 3, "art")
        .await;
    let mut buyers = Vec::new();
    for n in 0..10 {
        buyers.push(shop.register(&format!("buyer{n}")).await.1);
    }
    let attempts = buyers.iter().map(|token| {
        shop.send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(token),
            json!({"items": [{"productId": id, "quantity": 1}], "address": "12 Harbour Road, Shanghai", "phone": "13800138000"}),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(won, 3);
    for (status, body) in results
        .iter()
        .filter(|(status, _)| *status != StatusCode::OK)
    {
        assert_error(*status, body, StatusCode::CONFLICT, 3001);
    }
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(body["data"]["product"]["stock"], 0);
}

/// Once a product is sold out, its next buyers are refused by the gateway itself (the same
/// 409 and 3001, no call behind it), and only while nothing changed: the moment the stock comes
/// back (an order cancelled), buyers get it again. Bad input is still bad input.
#[tokio::test]
async fn a_sold_out_product_is_refused_at_the_gateway_until_its_stock_comes_back() {
    const SOLD_OUT: &str = "letsgo_gateway_sold_out_refusals_total";
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Last lamp", json!(10), 1, "home")
        .await;
    let (_, carol) = shop.register("carol").await;
    let (_, dave) = shop.register("dave").await;
    let order = async |token: &str, phone: &str| {
        shop.send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(token),
            json!({"items": [{"productId": id, "quantity": 1}], "address": "3 Garden Lane, Beijing", "phone": phone}),
        )
        .await
    };
    let (status, body) = order(&carol, "13900139000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let carols = body["data"]["orderId"].as_i64().unwrap();

    // The order service refuses the first late buyer; the gateway keeps that.
    let (status, body) = order(&dave, "13900139001").await;
    assert_error(status, &body, StatusCode::CONFLICT, 3001);
    assert_eq!(shop.counter(SOLD_OUT).await, 0);
    let (status, from_mark) = order(&dave, "13900139001").await;
    assert_error(status, &from_mark, StatusCode::CONFLICT, 3001);
    assert_eq!(
        from_mark["msg"], body["msg"],
        "the same words as the service's"
    );
    assert_eq!(shop.counter(SOLD_OUT).await, 1, "refused by the mark");
    let (status, body) = order(&dave, "not a phone").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);

    let (status, _) = shop
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/cancel/{carols}"),
            Some(&carol),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The stock's return is announced to the gateway (well under a millisecond here); a
    // buyer refused after it would be refused while a unit was free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = order(&dave, "13900139001").await;
        if status == StatusCode::OK {
            break;
        }
        assert_error(status, &body, StatusCode::CONFLICT, 3001);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returned unit was still refused 2 s after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
