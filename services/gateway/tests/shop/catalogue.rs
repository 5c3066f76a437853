//! The catalogue and the cart: browsing, the detail cache, admin changes, reviews.

use super::*;

#[tokio::test]
async fn product_detail_is_served_from_the_gateways_cache_and_follows_every_change() {
    const HITS: &str = "letsgo_gateway_product_cache_hits_total";
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Kettle", json!(25), 5, "home")
        .await;

    // The cache serves once its subscription to the product service's announcements is live.
    let mut hits = 0;
    for _ in 0..200 {
        assert_eq!(shop.stock_of(id).await, 5);
        hits = shop.counter(HITS).await;
        if hits > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(hits > 0, "the second read of a product is a cache hit");
    assert_eq!(shop.stock_of(id).await, 5);
    assert!(shop.counter(HITS).await > hits, "and so is the next");

    // An order reserves stock in the product service: announced, so the cached 5 goes.
    let (_, dora) = shop.register("dora").await;
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&dora),
            json!({"items": [{"productId": id, "quantity": 2}], "address": "8 River Street, Hangzhou", "phone": "13700137000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    shop.wait_for_stock(id, 3).await;
    assert_eq!(
        shop.stock_of(id).await,
        3,
        "and the fresh answer is what is cached"
    );

    // An admin's change through this gateway is visible in the very next read.
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/stock",
            Some(&admin),
            json!({"productId": id, "stock": 9}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(shop.stock_of(id).await, 9);
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/update",
            Some(&admin),
            json!({"id": id, "name": "Electric Kettle"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(body["data"]["product"]["name"], "Electric Kettle");

    // Cancelling gives the stock back, in the product service: announced again.
    let order_id = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&dora),
            json!({"items": [{"productId": id, "quantity": 4}], "address": "8 River Street, Hangzhou", "phone": "13700137000"}),
        )
        .await
        .1["data"]["orderId"]
        .as_i64()
        .unwrap();
    shop.wait_for_stock(id, 5).await;
    let (status, _) = shop
        .send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/cancel/{order_id}"),
            Some(&dora),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    shop.wait_for_stock(id, 9).await;
}

#[tokio::test]
async fn a_shopper_browses_searches_and_fills_a_cart() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let tea = shop
        .add_product(&admin, "Green Tea", json!(19.9), 10, "food")
        .await;
    let pot = shop
        .add_product(&admin, "Teapot", json!(99.99), 3, "home")
        .await;
    shop.add_product(&admin, "Hammer", json!(35), 5, "tools")
        .await;

    let (status, body) = shop
        .get_with_token("/api/v1/product/list?page=1&pageSize=2", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["total"], 3);
    assert_eq!(body["data"]["products"].as_array().unwrap().len(), 2);
    let (_, body) = shop
        .get_with_token("/api/v1/product/list?category=food", None)
        .await;
    assert_eq!(body["data"]["products"][0]["id"], tea);
    let (_, body) = shop
        .get_with_token("/api/v1/product/list?sortBy=price&order=asc", None)
        .await;
    let prices: Vec<f64> = body["data"]["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["price"].as_f64().unwrap())
        .collect();
    assert_eq!(prices, [19.9, 35.0, 99.99]);

    let (_, body) = shop
        .get_with_token("/api/v1/product/search?keyword=tea", None)
        .await;
    assert_eq!(body["data"]["total"], 2);
    assert_eq!(body["data"]["products"][0]["id"], tea);

    let (status, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{pot}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let product = &body["data"]["product"];
    assert_eq!(product["price"], json!(99.99));
    assert_eq!(product["stock"], 3);
    assert_eq!(product["attributes"], "{\"origin\": \"test\"}");
    for field in [
        "id",
        "name",
        "description",
        "category",
        "images",
        "sales",
        "createdAt",
        "updatedAt",
    ] {
        assert!(!product[field].is_null(), "product has {field}");
    }

    let (_, alice) = shop.register("alice").await;
    let add = |product_id: i64, quantity: i64| {
        shop.send_json(
            reqwest::Method::POST,
            "/api/v1/cart/add",
            Some(&alice),
            json!({"productId": product_id, "quantity": quantity}),
        )
    };
    assert_eq!(add(tea, 2).await.0, StatusCode::OK);
    assert_eq!(add(pot, 1).await.0, StatusCode::OK);
    assert_eq!(add(tea, 1).await.0, StatusCode::OK);
    let (status, body) = shop.get_with_token("/api/v1/cart/", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["totalCount"], 4);
    assert_eq!(body["data"]["totalPrice"], json!(159.69));
    let tea_line = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["productId"] == tea)
        .unwrap()
        .clone();
    assert_eq!(tea_line["id"], tea);
    assert_eq!(tea_line["quantity"], 3);
    assert_eq!(tea_line["price"], json!(19.9));
    assert_eq!(tea_line["name"], "Green Tea");
    assert_eq!(tea_line["stock"], 10);

    let (status, _) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/cart/update",
            Some(&alice),
            json!({"productId": tea, "quantity": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = shop
        .send_json(
            reqwest::Method::DELETE,
            &format!("/api/v1/cart/remove/{pot}"),
            Some(&alice),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = shop.get_with_token("/api/v1/cart/", Some(&alice)).await;
    assert_eq!(body["data"]["totalPrice"], json!(19.9));

    // Another shopper's cart is their own.
    let (_, bob) = shop.register("bob").await;
    let (_, body) = shop.get_with_token("/api/v1/cart/", Some(&bob)).await;
    assert_eq!(body["data"]["items"], json!([]));
    assert_eq!(body["data"]["totalCount"], 0);

    let (status, _) = shop
        .send_json(
            reqwest::Method::DELETE,
            "/api/v1/cart/clear",
            Some(&alice),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = shop.get_with_token("/api/v1/cart/", Some(&alice)).await;
    assert_eq!(body["data"]["items"], json!([]));
}

#[tokio::test]
async fn only_admins_add_or_change_products() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let (_, carol) = shop.register("carol").await;
    let product = json!({"name": "Lamp", "description": "bright", "price": 10, "stock": 1, "category": "home", "images": ["https://img.example.com/l.jpg"]});
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/product/add",
            None,
            product.clone(),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/product/add",
            Some(&carol),
            product.clone(),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
    let id = shop.add_product(&admin, "Lamp", json!(10), 1, "home").await;

    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/update",
            Some(&carol),
            json!({"id": id, "name": "Mine now"}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/update",
            Some(&admin),
            json!({"id": id, "stock": 99}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/update",
            Some(&admin),
            json!({"id": id, "price": 12.5, "name": "Lamp XL"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(body["data"]["product"]["price"], json!(12.5));
    assert_eq!(body["data"]["product"]["name"], "Lamp XL");
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/update",
            Some(&admin),
            json!({"id": 424242, "name": "ghost"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);

    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/stock",
            Some(&admin),
            json!({"productId": id, "delta": 4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["stock"], 5);
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(
        body["data"]["product"]["stock"], 5,
        "the detail is not stale after a stock change"
    );
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/product/stock",
            Some(&carol),
            json!({"productId": id, "stock": 0}),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
}

#[tokio::test]
async fn bad_catalogue_input_is_400_with_1001() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    for price in [
        json!(19.999),
        json!("19.9"),
        json!(-1),
        json!(0),
        json!(null),
    ] {
        let (status, body) = shop
            .send_json(
                reqwest::Method::POST,
                "/api/v1/product/add",
                Some(&admin),
                json!({"name": "x", "description": "", "price": price, "stock": 1, "category": "c", "images": ["https://img.example.com/x.jpg"]}),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/product/add",
            Some(&admin),
            json!({"name": "x", "description": "", "price": 1, "stock": 1, "category": "c", "images": []}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    for path in [
        "/api/v1/product/detail/abc",
        "/api/v1/product/list?page=0",
        "/api/v1/product/list?pageSize=0",
        "/api/v1/product/list?page=x",
        "/api/v1/product/list?sortBy=colour",
        "/api/v1/product/list?order=sideways",
        "/api/v1/product/search",
        "/api/v1/product/search?keyword=",
    ] {
        let (status, body) = shop.get_with_token(path, None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .get_with_token("/api/v1/product/list?pageSize=1000", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a large page size is clamped, not refused: {body}"
    );
    let (status, body) = shop
        .get_with_token("/api/v1/product/detail/424242", None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);
    let (status, body) = shop
        .get_with_token(
            "/api/v1/product/search?keyword=%27%3B%20DROP%20TABLE%20products%3B%20--",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["total"], 0);
}

#[tokio::test]
async fn cart_mistakes_get_the_original_codes() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Pen", json!(1.5), 5, "office")
        .await;
    let (_, dave) = shop.register("dave").await;
    let cart = |method, path: &'static str, body| shop.send_json(method, path, Some(&dave), body);

    let (status, body) = cart(
        reqwest::Method::POST,
        "/api/v1/cart/add",
        json!({"productId": 424242, "quantity": 1}),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);
    for quantity in [json!(0), json!(1000), json!(1.5), json!("2")] {
        let (status, body) = cart(
            reqwest::Method::POST,
            "/api/v1/cart/add",
            json!({"productId": id, "quantity": quantity}),
        )
        .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    assert_eq!(
        cart(
            reqwest::Method::POST,
            "/api/v1/cart/add",
            json!({"productId": id, "quantity": 999})
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, body) = cart(
        reqwest::Method::POST,
        "/api/v1/cart/add",
        json!({"productId": id, "quantity": 1}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 4002);
    let (status, body) = cart(
        reqwest::Method::DELETE,
        "/api/v1/cart/remove/424242",
        json!({}),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 4001);
    let (status, body) = cart(
        reqwest::Method::PUT,
        "/api/v1/cart/update",
        json!({"productId": 424242, "quantity": 1}),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 4001);
    let (status, body) = cart(
        reqwest::Method::DELETE,
        "/api/v1/cart/remove/abc",
        json!({}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let (status, body) = shop.get_with_token("/api/v1/cart/", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
}

#[tokio::test]
async fn reviews_show_on_the_product() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Novel", json!(45), 5, "books")
        .await;
    let (_, erin) = shop.register("erin").await;
    let (_, frank) = shop.register("frank").await;
    for (token, rating) in [(&erin, 5), (&frank, 2)] {
        let (status, body) = shop
            .send_json(
                reqwest::Method::POST,
                "/api/v1/product/review",
                Some(token),
                json!({"productId": id, "rating": rating, "comment": "read it"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["data"]["reviewId"].as_i64().unwrap() > 0);
    }
    let (_, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
        .await;
    assert_eq!(body["data"]["product"]["rating"], json!(3.5));
    assert_eq!(body["data"]["product"]["reviewCount"], 2);
    let (status, body) = shop
        .get_with_token(
            &format!("/api/v1/product/reviews/{id}?page=1&pageSize=10"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["total"], 2);
    assert_eq!(body["data"]["reviews"][0]["rating"], 2, "newest first");

    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/product/review",
            None,
            json!({"productId": id, "rating": 5}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/product/review",
            Some(&erin),
            json!({"productId": id, "rating": 9}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
}

// ---------------------------------------------------------------- checkout

#[tokio::test]
async fn an_unlisted_product_leaves_the_shop_and_carts_until_relisted() {
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let teapot = shop
        .add_product(&admin, "Iron Teapot", json!(88.5), 5, "home")
        .await;
    let cup = shop.add_product(&admin, "Cup", json!(5), 5, "home").await;
    let (_, dave) = shop.register("dave").await;
    for product_id in [teapot, cup] {
        let (status, _) = shop
            .send_json(
                reqwest::Method::POST,
                "/api/v1/cart/add",
                Some(&dave),
                json!({"productId": product_id, "quantity": 1}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{teapot}"), None)
        .await;
    assert_eq!(status, StatusCode::OK); // now in the gateway's cache
    assert_eq!(body["data"]["product"]["listed"], true);

    let unlist = |body: Value| {
        shop.send_json(
            reqwest::Method::PUT,
            "/api/v1/product/unlist",
            Some(&admin),
            body,
        )
    };
    let (status, body) = unlist(json!({"productId": teapot})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = unlist(json!({"productId": teapot, "listed": false})).await;
    assert_eq!(status, StatusCode::OK, "twice is fine: {body}");

    let (status, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{teapot}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);
    let names = |body: &Value| -> Vec<String> {
        body["data"]["products"]
            .as_array()
            .unwrap()
            .iter()
            .map(|product| product["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, body) = shop.get_with_token("/api/v1/product/list", None).await;
    assert_eq!(names(&body), ["Cup"]);
    let (_, body) = shop
        .get_with_token("/api/v1/product/search?keyword=teapot", None)
        .await;
    assert_eq!(body["data"]["total"], 0);
    let (status, body) = shop
        .get_with_token(&format!("/api/v1/product/reviews/{teapot}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);

    // Mid-checkout: the cart drops it, and ordering it takes nothing.
    let (_, cart) = shop.get_with_token("/api/v1/cart/", Some(&dave)).await;
    assert_eq!(cart["data"]["items"].as_array().unwrap().len(), 1, "{cart}");
    assert_eq!(cart["data"]["items"][0]["productId"], cup);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/cart/add",
            Some(&dave),
            json!({"productId": teapot, "quantity": 1}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&dave),
            json!({"items": [{"productId": cup, "quantity": 1}, {"productId": teapot, "quantity": 1}],
                   "address": "12 Harbour Road, Shanghai", "phone": "13800138000"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);
    assert_eq!(shop.stock_of(cup).await, 5, "the basket took nothing");

    // The admins' catalogue shows it, off sale, with its stock untouched.
    let (status, body) = shop
        .get_with_token("/api/v1/admin/products?keyword=teapot", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["products"][0]["id"], teapot);
    assert_eq!(body["data"]["products"][0]["listed"], false);
    assert_eq!(body["data"]["products"][0]["stock"], 5);
    let (_, body) = shop
        .get_with_token("/api/v1/admin/products?page=1&pageSize=10", Some(&admin))
        .await;
    assert_eq!(body["data"]["total"], 2);

    for bad in [
        json!({}),
        json!({"productId": "teapot"}),
        json!({"productId": teapot, "listed": "no"}),
    ] {
        let (status, body) = unlist(bad).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = unlist(json!({"productId": 424_242})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 3000);

    let (status, body) = unlist(json!({"productId": teapot, "listed": true})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = shop
        .get_with_token(&format!("/api/v1/product/detail/{teapot}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["product"]["listed"], true);
    let (_, body) = shop.get_with_token("/api/v1/product/list", None).await;
    assert_eq!(names(&body).len(), 2);
    let (status, body) = shop
        .send_json(
            reqwest::Method::POST,
            "/api/v1/order/create",
            Some(&dave),
            json!({"items": [{"productId": teapot, "quantity": 1}], "address": "12 Harbour Road, Shanghai", "phone": "13800138000"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "on sale again: {body}");
}
