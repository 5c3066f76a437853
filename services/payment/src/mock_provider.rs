//! The mock payment provider: its checkout links, and — so that local runs complete payments by
//! themselves — the signed callback it posts a moment after each payment is created, as a real
//! provider would once the buyer paid. Callbacks are scheduled in the payment database, so they
//! survive a restart.

use std::time::Duration;

use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::traces;
use reqwest::Url;
use tracing::Instrument;

use crate::rules::{ProviderNotice, ProviderOutcome};
use crate::storage::{Checkout, Delivery, DueCallback, PaymentStore, ScheduledCallback};
use crate::webhook::{self, WebhookSecrets};

/// Where a buyer would pay, and what a phone would scan.
pub fn checkout(payment_no: &str) -> Checkout {
    Checkout {
        pay_url: format!("https://pay.mock.letsgo.local/checkout/{payment_no}"),
        qr_code: format!("letsgo-mock-pay://{payment_no}"),
    }
}

/// Deliveries tried before a callback is given up (the payment then stays pending): ten, about
/// three minutes of retries (0.5 s doubling to 64 s), so a gateway that is away for a rollout
/// or a node's restart still gets it. A real provider keeps trying for hours.
const DELIVERY_ATTEMPTS: i32 = 10;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// How long a claimed callback is left to its deliverer before another may post it.
const DELIVERY_LEASE: Duration = Duration::from_secs(30);
/// How often the provider looks for callbacks that are due.
const POLL: Duration = Duration::from_millis(200);

/// Posts the callbacks scheduled with each new payment (`mock_callbacks`, written in the
/// payment's own transaction), so a restart between a payment and its callback delays the
/// callback and loses nothing. Replicas share the table: each claims rows with a lease.
#[derive(Clone)]
pub struct MockProvider {
    http: reqwest::Client,
    callback_url: Url,
    delay: Duration,
    outcome: ProviderOutcome,
    secrets: WebhookSecrets,
}

impl MockProvider {
    pub fn new(
        callback_url: Url,
        delay: Duration,
        outcome: ProviderOutcome,
        secrets: WebhookSecrets,
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
        })
    }

    /// What to schedule with a new payment.
    pub fn schedule(&self) -> ScheduledCallback {
        ScheduledCallback {
            outcome: self.outcome,
            after: self.delay,
        }
    }

    /// Posts due callbacks until shutdown.
    pub async fn run(self, store: PaymentStore, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            match store.claim_callbacks(16, DELIVERY_LEASE).await {
                Ok(due) if !due.is_empty() => {
                    let deliveries = due.into_iter().map(|callback| {
                        let provider = self.clone();
                        async move {
                            let delivery = provider.deliver(&callback).await;
                            (callback, delivery)
                        }
                    });
                    let delivered = tokio::select! {
                        delivered = futures_util::future::join_all(deliveries) => delivered,
                        _ = shutdown.wait() => return,
                    };
                    // The whole batch is recorded in one statement.
                    if let Err(error) = store.record_deliveries(&delivered).await {
                        // The lease runs out and the callbacks are posted again.
                        tracing::warn!(%error, callbacks = delivered.len(), "could not record callback deliveries");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not read due mock callbacks"),
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// One delivery attempt. Connection failures, 429 and 5xx answers are retried with
    /// backoff (at least a 429's Retry-After, up to a minute); another 4xx is final (the
    /// callback was refused and would be again). Each attempt is signed afresh, so a late
    /// retry is never refused as stale.
    async fn deliver(&self, callback: &DueCallback) -> Delivery {
        let notice = ProviderNotice {
            trade_no: callback.trade_no.clone(),
            payment_no: callback.payment_no.clone(),
            order_id: callback.order_id,
            outcome: match ProviderOutcome::from_code(callback.outcome.into()) {
                Ok(outcome) => outcome,
                Err(error) => return Delivery::GivenUp(error.message),
            },
            amount_cents: callback.amount_cents,
        };
        let body = webhook::notice_body(&notice);
        let signature = self.secrets.sign(chrono::Utc::now().timestamp(), &body);
        let mut request = self
            .http
            .post(self.callback_url.clone())
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body);
        // A real provider knows nothing of our traces; the mock carries the payment's on, so a
        // local trace runs from the checkout to the order paid.
        let span = match &callback.traceparent {
            Some(traceparent) if traces::is_on() => {
                let span = tracing::info_span!(
                    parent: None,
                    "mock_provider.callback",
                    otel.name = "POST payment callback",
                    otel.kind = "client",
                );
                traces::continue_from_traceparent(&span, traceparent);
                if let Some(traceparent) = traces::traceparent_of(&span) {
                    request = request.header(traces::TRACEPARENT, traceparent);
                }
                span
            }
            _ => tracing::Span::none(),
        };
        let sent = request.send().instrument(span).await;
        let attempt = callback.attempts;
        let mut retry_delay = FIRST_RETRY_DELAY * 2u32.pow(attempt.clamp(1, 8) as u32 - 1);
        let error = match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(payment_no = %notice.payment_no, attempt, "mock provider callback delivered");
                return Delivery::Delivered;
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
                return Delivery::Refused(format!("answered {}", response.status()));
            }
            Err(error) => error.to_string(),
        };
        if attempt >= DELIVERY_ATTEMPTS {
            tracing::error!(payment_no = %notice.payment_no, %error, "mock provider gave up; the payment stays pending");
            return Delivery::GivenUp(error);
        }
        tracing::warn!(payment_no = %notice.payment_no, attempt, reason = %error, "mock provider callback not delivered; retrying");
        Delivery::Retry {
            error,
            after: retry_delay,
        }
    }
}
