//! The web storefront at `/`: its files and headers over HTTP, and a shopper's whole journey in
//! a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core from
//! `tests/browser/shop.mjs`) against the real services, in process, on PostgreSQL, Redis and the
//! Kafka-protocol broker.
//!
//! The browser test needs `node` and `tests/browser/node_modules` (`npm ci` there);
//! `scripts/test.sh` installs both, and Chromium, when they are missing. Its screenshots go to
//! `$STOREFRONT_SCREENSHOTS` when set (`docs/screenshots` refreshes the README's), else to a
//! scratch directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use letsgo_platform::db::ScratchDatabase;
use letsgo_platform::grpc::Listeners;
use letsgo_platform::shutdown::Shutdown;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::json;
use tokio::net::TcpListener;

const SECRET: &str = "storefront-test-secret-0123";
const WEBHOOK_SECRET: &str = "storefront-test-webhook-secret";
/// How long the whole browser journey may take, on a busy machine.
const BROWSER_BUDGET: Duration = Duration::from_secs(240);

fn server_url() -> String {
    std::env::var("DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL_BASE").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The gateway, and behind it either every service or none.
struct Shop {
    base: String,
    shutdown: Shutdown,
    redis_prefix: Option<String>,
    _databases: Vec<ScratchDatabase>,
}

impl Shop {
    /// The gateway alone: every service address is a closed port.
    async fn gateway_only() -> Shop {
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let closed = TcpListener::bind(localhost).await.unwrap();
        let nowhere = closed.local_addr().unwrap().to_string();
        drop(closed);
        let listener = TcpListener::bind(localhost).await.unwrap();
        let shutdown = Shutdown::new();
        let base = start_gateway(listener, [&nowhere; 5], &shutdown).await;
        Shop {
            base,
            shutdown,
            redis_prefix: None,
            _databases: Vec::new(),
        }
    }

    /// User, product (with the demo catalogue), cart, order and payment services, and the
    /// gateway, each on port 0; the mock payment provider calls this gateway back.
    async fn start() -> Shop {
        let shutdown = Shutdown::new();
        let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let brokers =
            std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
        let listener = TcpListener::bind(localhost).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());

        let user_db = ScratchDatabase::create(&server_url()).await.unwrap();
        let product_db = ScratchDatabase::create(&server_url()).await.unwrap();
        let order_db = ScratchDatabase::create(&server_url()).await.unwrap();
        let payment_db = ScratchDatabase::create(&server_url()).await.unwrap();
        let prefix = format!("sftest:{}:", user_db.name());
        let topics = format!("sftest-{}.", user_db.name());

        let config = letsgo_user::Config::try_parse_from([
            "letsgo-user",
            "--database-url",
            &user_db.url,
            "--jwt-secret",
            SECRET,
            "--admin-usernames",
            "admin",
            "--kafka-topic-prefix",
            &topics,
            "--kafka-brokers",
            &brokers,
            "--log-format",
            "text",
            "--discovery",
            "static",
        ])
        .unwrap();
        let listeners = Listeners::bind(&config.grpc, localhost, localhost)
            .await
            .unwrap();
        let user_addr = listeners.grpc.local_addr().unwrap().to_string();
        tokio::spawn(letsgo_user::run(config, listeners, shutdown.clone()));

        let config = letsgo_product::Config::try_parse_from([
            "letsgo-product",
            "--database-url",
            &product_db.url,
            "--redis-url",
            &redis_url(),
            "--redis-key-prefix",
            &prefix,
            "--demo-catalogue",
            "true",
            "--log-format",
            "text",
            "--discovery",
            "static",
        ])
        .unwrap();
        let listeners = Listeners::bind(&config.grpc, localhost, localhost)
            .await
            .unwrap();
        let product_addr = listeners.grpc.local_addr().unwrap().to_string();
        tokio::spawn(letsgo_product::run(config, listeners, shutdown.clone()));

        let config = letsgo_cart::Config::try_parse_from([
            "letsgo-cart",
            "--redis-url",
            &redis_url(),
            "--redis-key-prefix",
            &prefix,
            "--product-rpc",
            &product_addr,
            "--log-format",
            "text",
            "--discovery",
            "static",
        ])
        .unwrap();
        let listeners = Listeners::bind(&config.grpc, localhost, localhost)
            .await
            .unwrap();
        let cart_addr = listeners.grpc.local_addr().unwrap().to_string();
        tokio::spawn(letsgo_cart::run(config, listeners, shutdown.clone()));

        let config = letsgo_order::Config::try_parse_from([
            "letsgo-order",
            "--database-url",
            &order_db.url,
            "--product-rpc",
            &product_addr,
            "--cart-rpc",
            &cart_addr,
            "--kafka-topic-prefix",
            &topics,
            "--kafka-brokers",
            &brokers,
            "--kafka-session-timeout-ms",
            "3000",
            "--log-format",
            "text",
            "--discovery",
            "static",
        ])
        .unwrap();
        let listeners = Listeners::bind(&config.grpc, localhost, localhost)
            .await
            .unwrap();
        let order_addr = listeners.grpc.local_addr().unwrap().to_string();
        tokio::spawn(letsgo_order::run(config, listeners, shutdown.clone()));

        let callback = format!("{base}/api/v1/payment/callback");
        let config = letsgo_payment::Config::try_parse_from([
            "letsgo-payment",
            "--database-url",
            &payment_db.url,
            "--order-rpc",
            &order_addr,
            "--payment-webhook-secret",
            WEBHOOK_SECRET,
            "--payment-callback-url",
            &callback,
            "--kafka-topic-prefix",
            &topics,
            "--kafka-brokers",
            &brokers,
            "--log-format",
            "text",
            "--discovery",
            "static",
        ])
        .unwrap();
        let listeners = Listeners::bind(&config.grpc, localhost, localhost)
            .await
            .unwrap();
        let payment_addr = listeners.grpc.local_addr().unwrap().to_string();
        tokio::spawn(letsgo_payment::run(config, listeners, shutdown.clone()));

        let base = start_gateway(
            listener,
            [
                &user_addr,
                &product_addr,
                &cart_addr,
                &order_addr,
                &payment_addr,
            ],
            &shutdown,
        )
        .await;
        let shop = Shop {
            base,
            shutdown,
            redis_prefix: Some(prefix),
            _databases: vec![user_db, product_db, order_db, payment_db],
        };
        shop.wait_until_serving().await;
        shop
    }

    /// Until sign-in answers (user service up) and the demo catalogue is in.
    async fn wait_until_serving(&self) {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if self.answers_sign_in(&http).await && self.has_products(&http).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the shop did not come up behind the gateway");
    }

    async fn answers_sign_in(&self, http: &reqwest::Client) -> bool {
        let login = http
            .post(format!("{}/api/v1/user/login", self.base))
            .json(&json!({"username": "nobody", "password": "whatever"}))
            .send()
            .await;
        login.is_ok_and(|response| response.status() == StatusCode::UNAUTHORIZED)
    }

    async fn has_products(&self, http: &reqwest::Client) -> bool {
        let Ok(response) = http
            .get(format!("{}/api/v1/product/list?pageSize=1", self.base))
            .send()
            .await
        else {
            return false;
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["data"]["total"].as_i64().unwrap_or(0) > 0
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

/// Serves the gateway on `listener` (rate limits raised: a page load is a burst of requests)
/// and answers its base URL.
async fn start_gateway(listener: TcpListener, services: [&str; 5], shutdown: &Shutdown) -> String {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let [user, product, cart, order, payment] = services;
    let config = letsgo_gateway::Config::try_parse_from([
        "letsgo-gateway",
        "--jwt-secret",
        SECRET,
        "--user-rpc",
        user,
        "--product-rpc",
        product,
        "--cart-rpc",
        cart,
        "--order-rpc",
        order,
        "--payment-rpc",
        payment,
        "--rate-limit-per-second",
        "10000",
        "--rate-limit-burst",
        "10000",
        "--log-format",
        "text",
        "--discovery",
        "static",
    ])
    .unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(letsgo_gateway::run(
        config,
        listener,
        admin,
        shutdown.clone(),
    ));
    base
}

#[tokio::test]
async fn the_storefront_is_served_with_strict_headers() {
    let shop = Shop::gateway_only().await;
    let http = reqwest::Client::new();

    let page = http.get(format!("{}/", shop.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let policy = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "img-src 'self' https: data:",
    ] {
        assert!(policy.contains(directive), "{policy} has {directive}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    for inline in ["<script>", "onclick=", "onload=", "onerror=", "style="] {
        assert!(!html.contains(inline), "no inline code or styles: {inline}");
    }

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("dom.js", "text/javascript; charset=utf-8"),
        ("styles.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let asset = http
            .get(format!("{}/assets/{file}", shop.base))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{file}");
        assert_eq!(asset.headers()[CONTENT_TYPE], content_type, "{file}");
        assert_eq!(asset.headers()[CACHE_CONTROL], "no-cache", "{file}");
        assert_eq!(asset.headers()["x-content-type-options"], "nosniff");
        assert!(asset.headers().contains_key(CONTENT_SECURITY_POLICY));
        // Revalidation: the same file answers 304 to its own ETag.
        let etag = asset.headers()[ETAG].clone();
        let again = http
            .get(format!("{}/assets/{file}", shop.base))
            .header(IF_NONE_MATCH, etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
    }
    let script = http
        .get(format!("{}/assets/app.js", shop.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("import * as api from './api.js'"));

    for path in [
        "/assets/nothing.js",
        "/assets/..%2FCargo.toml",
        "/index.php",
    ] {
        let missing = http
            .get(format!("{}{path}", shop.base))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["code"], 1007, "{path}: {body}");
    }
    // The API is where it was.
    let health = http
        .get(format!("{}/health", shop.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("STOREFRONT_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                // Relative to the repository root, like the make targets.
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(dir)
            }
        }
        None => std::env::temp_dir().join(format!("letsgo-storefront-{}", std::process::id())),
    }
}

/// Runs `node shop.mjs <base> <dir>` with its output in a log file, killed after `budget`;
/// answers whether it succeeded and what it printed.
fn run_browser_script(base: &str, dir: &Path, budget: Duration) -> (bool, String) {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    std::fs::create_dir_all(dir).unwrap();
    // The log stays out of the screenshot directory, which may be docs/screenshots.
    let log_path =
        std::env::temp_dir().join(format!("letsgo-storefront-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(browser.join("shop.mjs"))
        .arg(base)
        .arg(dir)
        .current_dir(&browser)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run node ({error}): scripts/test.sh installs Node's test dependencies")
        });
    let started = Instant::now();
    let succeeded = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if started.elapsed() > budget {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    (succeeded, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storefront_sign_up_to_paid_order_in_a_real_browser() {
    let shop = Shop::start().await;
    let dir = screenshot_dir();
    let base = shop.base.clone();
    let script_dir = dir.clone();
    let (succeeded, output) =
        tokio::task::spawn_blocking(move || run_browser_script(&base, &script_dir, BROWSER_BUDGET))
            .await
            .unwrap();
    assert!(
        succeeded,
        "the browser journey failed (screenshots in {}):\n{output}",
        dir.display()
    );
    for page in [
        "home",
        "product",
        "cart",
        "order",
        "orders",
        "admin",
        "home-phone",
    ] {
        let png = dir.join(format!("{page}.png"));
        assert!(png.is_file(), "{} was saved", png.display());
    }
    if std::env::var_os("STOREFRONT_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
