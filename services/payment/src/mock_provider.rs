//! The mock payment provider: its checkout links, and — so that local runs complete payments by
//! themselves — the signed callback it posts a moment after each payment is created, as a real
//! provider would once the buyer paid.

use std::time::Duration;

use letsgo_platform::shutdown::Shutdown;
use reqwest::Url;

use crate::rules::{ProviderNotice, ProviderOutcome};
use crate::storage::Checkout;
use crate::webhook::{self, WebhookSecrets};

/// Where a buyer would pay, and what a phone would scan.
pub fn checkout(payment_no: &str) -> Checkout {
    Checkout {
        pay_url: format!("https://pay.mock.letsgo.local/checkout/{payment_no}"),
        qr_code: format!("letsgo-mock-pay://{payment_no}"),
    }
}

/// Deliveries tried before a callback is given up (the payment then stays pending).
const DELIVERY_ATTEMPTS: u32 = 5;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Answers every new payment with a signed callback, unless turned off.
#[derive(Clone)]
pub struct MockProvider {
    http: reqwest::Client,
    callback_url: Url,
    delay: Duration,
    outcome: ProviderOutcome,
    secrets: WebhookSecrets,
    shutdown: Shutdown,
}

impl MockProvider {
    pub fn new(
        callback_url: Url,
        delay: Duration,
        outcome: ProviderOutcome,
        secrets: WebhookSecrets,
        shutdown: Shutdown,
    ) -> Result<MockProvider, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(MockProvider {
            http,
            callback_url,
            delay,
            outcome,
            secrets,
            shutdown,
        })
    }

    /// Posts the callback for a just-created payment after the configured delay, in the
    /// background.
    pub fn complete_later(&self, payment_no: String, order_id: i64, amount_cents: i64) {
        let notice = ProviderNotice {
            trade_no: format!("MOCK{}", uuid::Uuid::new_v4().simple()),
            payment_no,
            order_id,
            outcome: self.outcome,
            amount_cents,
        };
        let provider = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = provider.shutdown.wait() => {}
                _ = provider.deliver(notice) => {}
            }
        });
    }

    /// Retries connection failures, 429 and 5xx answers with backoff (at least as long as a
    /// 429's Retry-After, up to a minute); another 4xx is final (the callback was refused and
    /// would be again). Each attempt is signed afresh, so a late retry is never refused as stale.
    async fn deliver(&self, notice: ProviderNotice) {
        tokio::time::sleep(self.delay).await;
        let body = webhook::notice_body(&notice);
        let mut retry_delay = FIRST_RETRY_DELAY;
        for attempt in 1..=DELIVERY_ATTEMPTS {
            let signature = self.secrets.sign(chrono::Utc::now().timestamp(), &body);
            let sent = self
                .http
                .post(self.callback_url.clone())
                .header("content-type", "application/json")
                .header("x-signature", signature)
                .body(body.clone())
                .send()
                .await;
            let retry_reason = match sent {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(payment_no = %notice.payment_no, attempt, "mock provider callback delivered");
                    return;
                }
                Ok(response)
                    if response.status().is_server_error()
                        || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    let asked = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|secs| Duration::from_secs(secs.min(60)));
                    if let Some(asked) = asked {
                        retry_delay = retry_delay.max(asked);
                    }
                    format!("answered {}", response.status())
                }
                Ok(response) => {
                    tracing::warn!(payment_no = %notice.payment_no, status = %response.status(), "mock provider callback refused");
                    return;
                }
                Err(error) => error.to_string(),
            };
            tracing::warn!(payment_no = %notice.payment_no, attempt, reason = %retry_reason, "mock provider callback not delivered");
            if attempt < DELIVERY_ATTEMPTS {
                tokio::time::sleep(retry_delay).await;
                retry_delay *= 2;
            }
        }
        tracing::error!(payment_no = %notice.payment_no, "mock provider gave up; the payment stays pending");
    }
}
