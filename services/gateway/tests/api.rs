//! The gateway end to end: HTTP over a real socket, through real services (started in this
//! process by letsgo-testkit), on PostgreSQL databases, Redis keys and Kafka topics of each
//! test's own. This file holds the harness (the shop and its HTTP helpers); the tests live in
//! one module per area under `shop/`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::discovery::ServiceName;
use letsgo_testkit::{ADMIN_PASSWORD, JWT_SECRET as SECRET, WEBHOOK_SECRET};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A gateway in front of an in-process shop (or of nothing), with an HTTP client.
struct Shop {
    base: String,
    admin: String,
    http: reqwest::Client,
    kit: letsgo_testkit::Shop,
}

struct ShopOptions {
    rate_per_second: u32,
    burst: u32,
    with_user_service: bool,
    /// Brokers for the services' events; the shared local one when not given.
    kafka_brokers: Option<String>,
    /// Without services: where the gateway looks for them (a closed port when not given).
    services_at: Option<SocketAddr>,
    max_concurrent: usize,
    /// Load the demo catalogue into the product service (the storefront's journey uses it).
    demo_catalogue: bool,
    /// More gateway flags (the settings under test, as an operator writes them), applied over
    /// the ones above.
    gateway_args: Vec<String>,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            rate_per_second: 1000,
            burst: 1000,
            with_user_service: true,
            kafka_brokers: None,
            services_at: None,
            max_concurrent: 1024,
            demo_catalogue: false,
            gateway_args: Vec::new(),
        }
    }
}

impl Shop {
    async fn start() -> Shop {
        Shop::start_with(ShopOptions::default()).await
    }

    /// Every service requires and sends the internal token: each test exercises the internal
    /// calls' authentication.
    async fn start_with(options: ShopOptions) -> Shop {
        let mut builder = letsgo_testkit::Shop::builder().internal_token();
        if options.with_user_service {
            let demo_catalogue = options.demo_catalogue;
            builder = builder
                .user(|_| {})
                .product(move |config| config.demo_catalogue = demo_catalogue)
                .cart(|_| {})
                .order(|_| {})
                .payment(|config| {
                    config.mock_autocomplete = true;
                    config.mock_delay = Duration::from_millis(200);
                });
        }
        if let Some(addr) = options.services_at {
            builder = builder.absent_services_at(addr);
        }
        if let Some(brokers) = options.kafka_brokers {
            builder = builder.kafka_brokers(brokers);
        }
        let flags = options.gateway_args;
        let kit = builder
            .gateway(move |config| {
                // The flags under test make the settings; the kit's wiring (where the services,
                // Redis and the secrets are) is kept.
                if !flags.is_empty() {
                    let args = ["letsgo-gateway", "--jwt-secret", SECRET]
                        .map(str::to_owned)
                        .into_iter()
                        .chain(flags);
                    let wired = std::mem::replace(
                        config,
                        letsgo_gateway::Config::try_parse_from(args).unwrap(),
                    );
                    config.redis = wired.redis;
                    config.discovery = wired.discovery;
                    config.telemetry = wired.telemetry;
                }
                config.rate_limit_per_second = NonZeroU32::new(options.rate_per_second).unwrap();
                config.rate_limit_burst = NonZeroU32::new(options.burst).unwrap();
                config.max_concurrent_requests = options.max_concurrent;
            })
            .start()
            .await;
        let shop = Shop {
            base: kit.gateway_url(),
            admin: kit.gateway_admin_url(),
            http: reqwest::Client::new(),
            kit,
        };
        if options.with_user_service {
            shop.wait_for_user_service().await;
        }
        shop
    }

    async fn wait_for_user_service(&self) {
        for _ in 0..100 {
            let (status, _) = self
                .post(
                    "/api/v1/user/login",
                    json!({"username": "nobody", "password": "whatever"}),
                )
                .await;
            if status == StatusCode::UNAUTHORIZED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the user service did not come up behind the gateway");
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.expect("every answer is JSON");
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn get_with_token(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.send(request).await
    }

    /// Signs in as the initial admin the user service made at start.
    async fn sign_in_admin(&self) -> String {
        let (status, body) = self
            .post(
                "/api/v1/user/login",
                json!({"username": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["token"].as_str().unwrap().to_owned()
    }

    async fn register(&self, username: &str) -> (i64, String) {
        let (status, body) = self
            .post(
                "/api/v1/user/register",
                json!({"username": username, "password": "password123", "email": format!("{username}@example.com"), "phone": "13800138000"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["data"]["userId"].as_i64().unwrap(),
            body["data"]["token"].as_str().unwrap().to_owned(),
        )
    }
}

/// The gateway's router with no socket in between and no services behind it (their address is
/// a port nothing listens on), driven with `oneshot`: for what the router answers, where how it
/// serves does not matter.
struct GatewayApp {
    router: axum::Router,
    _kit: letsgo_testkit::Shop,
}

impl GatewayApp {
    async fn start() -> GatewayApp {
        let (router, kit) = letsgo_testkit::Shop::builder()
            .gateway(|config| {
                config.rate_limit_per_second = NonZeroU32::new(1000).unwrap();
                config.rate_limit_burst = NonZeroU32::new(1000).unwrap();
            })
            .start_router()
            .await;
        GatewayApp { router, _kit: kit }
    }

    /// `method path` with a JSON `body`, from a client at 127.0.0.1; the status and the JSON
    /// answer (null when the answer is not JSON).
    async fn send(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                40_000,
            ))));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send("GET", path, "").await
    }
}

/// A "service" that accepts connections and never answers (calls to it hang until their
/// deadline): its address, and the task holding the connections.
async fn blackhole() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, holder)
}

fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: u64) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
        "{body}"
    );
}

impl Shop {
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    async fn add_product(
        &self,
        admin: &str,
        name: &str,
        price: Value,
        stock: i64,
        category: &str,
    ) -> i64 {
        let (status, body) = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/product/add",
                Some(admin),
                json!({"name": name, "description": format!("{name} for everyday use"), "price": price,
                       "stock": stock, "category": category, "images": ["https://img.example.com/x.jpg"],
                       "attributes": "{\"origin\":\"test\"}"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["productId"].as_i64().unwrap()
    }
}

impl Shop {
    /// A counter from the admin port's /metrics (0 when absent).
    async fn counter(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // `name{labels} value` or `name value`
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?;
                let rest = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once('}')?.1,
                    None => rest,
                };
                rest.trim().parse().ok()
            })
            .unwrap_or(0)
    }

    async fn stock_of(&self, id: i64) -> i64 {
        let (status, body) = self
            .get_with_token(&format!("/api/v1/product/detail/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["product"]["stock"].as_i64().unwrap()
    }

    /// The stock the detail shows once it is `expected`; the product service's change
    /// announcement reaches the gateway's cache moments after the change's own answer.
    async fn wait_for_stock(&self, id: i64, expected: i64) {
        let mut seen = self.stock_of(id).await;
        for _ in 0..100 {
            if seen == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            seen = self.stock_of(id).await;
        }
        panic!("product {id}: stock {seen}, expected {expected}");
    }
}

impl Shop {
    /// Runs a `letsgo-user` command (grant-admin, revoke-admin, ...) on the shop's user
    /// database, as an operator does with `kubectl exec`.
    async fn user_command(&self, words: &[&str]) -> String {
        let url = self.kit.database_url(ServiceName::User);
        let mut args = vec!["letsgo-user", "--database-url", url, "--jwt-secret", SECRET];
        args.extend_from_slice(words);
        let config = letsgo_user::Config::try_parse_from(args).unwrap();
        let command = config.command.clone().unwrap();
        letsgo_user::run_command(&config, &command).await.unwrap()
    }
}

impl Shop {
    /// A paid order of one unit of `product_id` at `price`, for the shopper with `token`.
    async fn paid_order(&self, token: &str, product_id: i64, price: Value) -> i64 {
        let order_id = self.checkout(token, product_id, price).await;
        assert!(
            wait_until_paid(self, token, order_id, Duration::from_secs(30)).await,
            "order {order_id} turns paid"
        );
        order_id
    }

    async fn ship(&self, token: Option<&str>, order_id: i64, body: Value) -> (StatusCode, Value) {
        self.send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/admin/orders/{order_id}/ship"),
            token,
            body,
        )
        .await
    }

    async fn confirm(&self, token: Option<&str>, order_id: i64) -> (StatusCode, Value) {
        self.send_json(
            reqwest::Method::PUT,
            &format!("/api/v1/order/confirm/{order_id}"),
            token,
            json!({}),
        )
        .await
    }

    async fn order_of(&self, token: &str, order_id: i64) -> Value {
        let (status, body) = self
            .get_with_token(&format!("/api/v1/order/detail/{order_id}"), Some(token))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["order"].clone()
    }
}

async fn wait_until_paid(shop: &Shop, token: &str, order_id: i64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let (_, body) = shop
            .get_with_token(&format!("/api/v1/order/detail/{order_id}"), Some(token))
            .await;
        if body["data"]["order"]["status"] == 2 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

impl Shop {
    /// Orders one unit and pays for it; answers the order id.
    async fn checkout(&self, token: &str, product_id: i64, price: Value) -> i64 {
        let (status, body) = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/order/create",
                Some(token),
                json!({"items": [{"productId": product_id, "quantity": 1}], "address": "12 Harbour Road, Shanghai", "phone": "13800138000"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let order_id = body["data"]["orderId"].as_i64().unwrap();
        let (status, body) = self
            .send_json(
                reqwest::Method::POST,
                "/api/v1/payment/create",
                Some(token),
                json!({"orderId": order_id, "paymentType": 1, "amount": price}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        order_id
    }
}

#[path = "shop/storefront.rs"]
mod storefront;

// ---------------------------------------------------------------- slow and abusive clients

#[path = "shop/abuse.rs"]
mod abuse;

// ---------------------------------------------------------------- traces

#[path = "shop/traces.rs"]
mod traces;

#[path = "shop/accounts.rs"]
mod accounts;

#[path = "shop/contract.rs"]
mod contract;

#[path = "shop/load.rs"]
mod load;

#[path = "shop/operations.rs"]
mod operations;

#[path = "shop/catalogue.rs"]
mod catalogue;

#[path = "shop/orders.rs"]
mod orders;

#[path = "shop/payments.rs"]
mod payments;
