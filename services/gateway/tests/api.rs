//! The gateway end to end: HTTP over a real socket, through the real user service, on a real
//! PostgreSQL database of its own per test.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use letsgo_platform::db::ScratchDatabase;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::shutdown::Shutdown;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const SECRET: &str = "gateway-test-secret-0123";

fn server_url() -> String {
    std::env::var("DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

struct Shop {
    base: String,
    admin: String,
    http: reqwest::Client,
    shutdown: Shutdown,
    _database: Option<ScratchDatabase>,
}

struct ShopOptions {
    rate_per_second: u32,
    burst: u32,
    with_user_service: bool,
}

impl Default for ShopOptions {
    fn default() -> Self {
        ShopOptions {
            rate_per_second: 1000,
            burst: 1000,
            with_user_service: true,
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
        let (user_addr, database) = if options.with_user_service {
            let database = ScratchDatabase::create(&server_url()).await.unwrap();
            let config = letsgo_user::Config::try_parse_from([
                "letsgo-user",
                "--database-url",
                &database.url,
                "--jwt-secret",
                SECRET,
                "--kafka-topic-prefix",
                &format!("gwtest-{}.", database.name()),
                "--log-format",
                "text",
            ])
            .unwrap();
            let listeners = Listeners::bind(&config.grpc, localhost, localhost)
                .await
                .unwrap();
            let addr = listeners.grpc.local_addr().unwrap();
            tokio::spawn(letsgo_user::run(config, listeners, shutdown.clone()));
            (addr, Some(database))
        } else {
            // A port nothing listens on: the user service is down.
            let closed = TcpListener::bind(localhost).await.unwrap();
            let addr = closed.local_addr().unwrap();
            drop(closed);
            (addr, None)
        };
        let config = letsgo_gateway::Config::try_parse_from([
            "letsgo-gateway".to_owned(),
            "--jwt-secret".to_owned(),
            SECRET.to_owned(),
            "--user-rpc".to_owned(),
            user_addr.to_string(),
            "--rate-limit-per-second".to_owned(),
            options.rate_per_second.to_string(),
            "--rate-limit-burst".to_owned(),
            options.burst.to_string(),
            "--log-format".to_owned(),
            "text".to_owned(),
        ])
        .unwrap();
        let listener = TcpListener::bind(localhost).await.unwrap();
        let admin = TcpListener::bind(localhost).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
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
            _database: database,
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
