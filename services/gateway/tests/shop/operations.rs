//! Metrics, health and logs.

use super::*;

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
