//! The web storefront at `/`: its files and headers over HTTP, and a shopper's whole journey in
//! a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core from
//! `tests/browser/shop.mjs`) against the real services, in process, on PostgreSQL, Redis and the
//! Kafka-protocol broker.
//!
//! The browser test needs `node` and `tests/browser/node_modules` (`npm ci` there);
//! `scripts/test.sh` installs both, and Chromium, when they are missing. Its screenshots go to
//! `$STOREFRONT_SCREENSHOTS` when set (`docs/screenshots` refreshes the README's), else to a
//! scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH};

use super::{Shop, ShopOptions};

const BROWSER_BUDGET: Duration = Duration::from_secs(240);

#[tokio::test]
async fn the_storefront_is_served_with_strict_headers() {
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        ..Default::default()
    })
    .await;
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
                std::path::PathBuf::from(
                    std::env::var_os("CARGO_MANIFEST_DIR")
                        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
                )
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
    let browser = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("tests/browser");
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
        .env("ADMIN_PASSWORD", super::ADMIN_PASSWORD)
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
    let shop = Shop::start_with(ShopOptions {
        demo_catalogue: true,
        ..Default::default()
    })
    .await;
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
        "admin-orders",
        "home-phone",
    ] {
        let png = dir.join(format!("{page}.png"));
        assert!(png.is_file(), "{} was saved", png.display());
    }
    if std::env::var_os("STOREFRONT_SCREENSHOTS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
