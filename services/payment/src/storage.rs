//! The payment tables. All SQL of the service is here.

use chrono::{DateTime, Utc};
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use letsgo_platform::events::{self, Event};
use letsgo_platform::traces;
use serde_json::json;
use sqlx::{FromRow, PgPool};
use tracing::instrument;

use crate::rules::{
    IDEMPOTENCY_KEY_RETENTION, PaymentFacts, PaymentStatus, ProviderOutcome, Settlement,
};

/// A payment as stored.
#[derive(Debug, Clone, FromRow)]
pub struct PaymentRecord {
    pub id: i64,
    pub payment_no: String,
    pub user_id: i64,
    pub order_id: i64,
    pub payment_type: i16,
    pub amount_cents: i64,
    pub status: i16,
    pub pay_url: String,
    pub qr_code: String,
    pub trade_no: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

impl PaymentRecord {
    pub fn status(&self) -> PaymentStatus {
        // The table's CHECK admits only the six statuses.
        PaymentStatus::from_code(self.status).unwrap_or(PaymentStatus::Pending)
    }

    pub fn facts(&self) -> PaymentFacts {
        PaymentFacts {
            order_id: self.order_id,
            amount_cents: self.amount_cents,
            status: self.status(),
        }
    }
}

const PAYMENT_COLUMNS: &str = "id, payment_no, user_id, order_id, payment_type, amount_cents, \
     status, pay_url, qr_code, trade_no, created_at, paid_at";

/// What payment creation answers; what an idempotency key replays.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct CreatedPayment {
    pub payment_id: i64,
    pub payment_no: String,
    pub pay_url: String,
    pub qr_code: String,
}

/// A recorded idempotency key: the fingerprint of the request it was first used with.
#[derive(Debug, Clone, FromRow)]
pub struct IdempotencyRecord {
    pub request_hash: Vec<u8>,
    #[sqlx(flatten)]
    pub reply: CreatedPayment,
}

pub struct NewPayment {
    pub user_id: i64,
    pub order_id: i64,
    pub payment_type: i16,
    pub amount_cents: i64,
    /// The mock provider's answer to schedule with the payment, when it answers by itself.
    pub mock_callback: Option<ScheduledCallback>,
}

/// A callback the mock provider will post: what it reports, and after how long.
#[derive(Debug, Clone, Copy)]
pub struct ScheduledCallback {
    pub outcome: ProviderOutcome,
    pub after: std::time::Duration,
}

/// A claimed callback, ready to post.
#[derive(Debug, Clone, FromRow)]
pub struct DueCallback {
    pub payment_no: String,
    pub kind: String,
    pub order_id: i64,
    pub amount_cents: i64,
    pub outcome: i16,
    pub trade_no: String,
    pub attempts: i32,
    /// The trace of the request that scheduled it, which the callback continues.
    pub traceparent: Option<String>,
}

/// How a delivery attempt ended.
pub enum Delivery {
    Delivered,
    /// Refused for good (a 4xx other than 429).
    Refused(String),
    /// To try again after the delay; given up when attempts are spent.
    Retry {
        error: String,
        after: std::time::Duration,
    },
    GivenUp(String),
}

/// The provider's checkout for a payment number.
pub struct Checkout {
    pub pay_url: String,
    pub qr_code: String,
}

pub struct IdempotencyClaim<'a> {
    pub key: &'a str,
    pub request_hash: &'a [u8],
}

pub enum CreateOutcome {
    Created(PaymentRecord),
    /// Another request recorded the idempotency key first; nothing was written.
    KeyTaken,
}

pub enum SettleOutcome {
    Applied(PaymentRecord),
    AlreadyProcessed,
    UnknownPayment,
}

/// Payment numbers drawn before giving up; a collision needs two payments in one second with
/// the same six random digits, so a second draw practically never happens.
const PAYMENT_NO_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct PaymentStore {
    pool: PgPool,
}

impl PaymentStore {
    pub fn new(pool: PgPool) -> Self {
        PaymentStore { pool }
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "idempotency_record"))]
    pub async fn idempotency_record(
        &self,
        user_id: i64,
        key: &str,
    ) -> AppResult<Option<IdempotencyRecord>> {
        Ok(sqlx::query_as(
            "SELECT request_hash, payment_id, payment_no, pay_url, qr_code FROM idempotency_keys \
             WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// In one transaction: cancels the order's pending payment, inserts the new one and
    /// records the idempotency key with the reply.
    ///
    /// Creations for one order are serialised by an advisory lock keyed by the order id (the
    /// first creation of an order has no row to lock), so two at once never both leave a
    /// pending payment. A key recorded meanwhile by another request rolls everything back.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "create"))]
    pub async fn create(
        &self,
        payment: NewPayment,
        claim: Option<IdempotencyClaim<'_>>,
        mut next_payment_no: impl FnMut() -> String,
        checkout: impl Fn(&str) -> Checkout,
    ) -> AppResult<CreateOutcome> {
        let mut transaction = self.pool.begin().await?;
        lock_order(&mut transaction, payment.order_id).await?;
        // The order service may not have heard yet of a success or a cancellation: this
        // service knows, and takes no second charge.
        let (paid, cancelled): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM payments WHERE order_id = $1 AND status = 2), \
                    EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1)",
        )
        .bind(payment.order_id)
        .fetch_one(&mut *transaction)
        .await?;
        if paid {
            return Err(AppError::new(
                ErrorCode::BadOrderStatus,
                "this order is paid already",
            ));
        }
        if cancelled {
            return Err(AppError::new(
                ErrorCode::BadOrderStatus,
                "this order is cancelled",
            ));
        }
        sqlx::query(
            "UPDATE payments SET status = 4, updated_at = now() WHERE order_id = $1 AND status = 1",
        )
        .bind(payment.order_id)
        .execute(&mut *transaction)
        .await?;
        let mut inserted = None;
        for _ in 0..PAYMENT_NO_ATTEMPTS {
            let payment_no = next_payment_no();
            let checkout = checkout(&payment_no);
            inserted = sqlx::query_as::<_, PaymentRecord>(&format!(
                "INSERT INTO payments (payment_no, user_id, order_id, payment_type, amount_cents, \
                 pay_url, qr_code) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (payment_no) DO NOTHING RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(&payment_no)
            .bind(payment.user_id)
            .bind(payment.order_id)
            .bind(payment.payment_type)
            .bind(payment.amount_cents)
            .bind(checkout.pay_url)
            .bind(checkout.qr_code)
            .fetch_optional(&mut *transaction)
            .await?;
            if inserted.is_some() {
                break;
            }
        }
        let Some(record) = inserted else {
            return Err(AppError::system("no free payment number after 5 draws"));
        };
        if let Some(callback) = payment.mock_callback {
            sqlx::query(
                "INSERT INTO mock_callbacks (payment_no, order_id, amount_cents, outcome, trade_no, due_at, traceparent) \
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)",
            )
            .bind(&record.payment_no)
            .bind(record.order_id)
            .bind(record.amount_cents)
            .bind(callback.outcome.status().code())
            .bind(format!("MOCK{}", uuid::Uuid::new_v4().simple()))
            .bind(callback.after.as_secs_f64())
            .bind(traces::current_traceparent())
            .execute(&mut *transaction)
            .await?;
        }
        if let Some(claim) = claim {
            // Waits for a concurrent holder of the key to finish; inserts nothing if it committed.
            let recorded = sqlx::query(
                "INSERT INTO idempotency_keys (user_id, idempotency_key, request_hash, payment_id, \
                 payment_no, pay_url, qr_code) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id, idempotency_key) DO NOTHING",
            )
            .bind(record.user_id)
            .bind(claim.key)
            .bind(claim.request_hash)
            .bind(record.id)
            .bind(&record.payment_no)
            .bind(&record.pay_url)
            .bind(&record.qr_code)
            .execute(&mut *transaction)
            .await?;
            if recorded.rows_affected() == 0 {
                transaction.rollback().await?;
                return Ok(CreateOutcome::KeyTaken);
            }
        }
        transaction.commit().await?;
        Ok(CreateOutcome::Created(record))
    }

    /// Claims up to `limit` due callbacks for `lease`: another replica will not post them
    /// until it runs out.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "claim_callbacks"))]
    pub async fn claim_callbacks(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> AppResult<Vec<DueCallback>> {
        Ok(sqlx::query_as(
            "UPDATE mock_callbacks SET due_at = now() + make_interval(secs => $2), \
             attempts = attempts + 1, updated_at = now() \
             WHERE (payment_no, kind) IN (SELECT payment_no, kind FROM mock_callbacks \
               WHERE state = 'pending' AND due_at <= now() ORDER BY due_at LIMIT $1 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING payment_no, kind, order_id, amount_cents, outcome, trade_no, attempts, \
             traceparent",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records how each delivery attempt of a batch ended, in one statement.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "record_deliveries"))]
    pub async fn record_deliveries(&self, deliveries: &[(DueCallback, Delivery)]) -> AppResult<()> {
        let mut payment_nos = Vec::with_capacity(deliveries.len());
        let mut kinds = Vec::with_capacity(deliveries.len());
        let mut states = Vec::with_capacity(deliveries.len());
        let mut errors = Vec::with_capacity(deliveries.len());
        let mut afters = Vec::with_capacity(deliveries.len());
        for (callback, delivery) in deliveries {
            let (state, error, after) = match delivery {
                Delivery::Delivered => ("delivered", "", 0.0),
                Delivery::Refused(error) => ("refused", error.as_str(), 0.0),
                Delivery::Retry { error, after } => {
                    ("pending", error.as_str(), after.as_secs_f64())
                }
                Delivery::GivenUp(error) => ("given_up", error.as_str(), 0.0),
            };
            payment_nos.push(callback.payment_no.as_str());
            kinds.push(callback.kind.as_str());
            states.push(state);
            errors.push(error);
            afters.push(after);
        }
        sqlx::query(
            "UPDATE mock_callbacks AS m SET state = d.state, last_error = d.error, \
             due_at = now() + make_interval(secs => d.after), updated_at = now() \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) \
               AS d (payment_no, kind, state, error, after) \
             WHERE m.payment_no = d.payment_no AND m.kind = d.kind AND m.state = 'pending'",
        )
        .bind(&payment_nos)
        .bind(&kinds)
        .bind(&states)
        .bind(&errors)
        .bind(&afters)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The order's latest payment, if it is this user's.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "latest_for_order"))]
    pub async fn latest_for_order(
        &self,
        user_id: i64,
        order_id: i64,
    ) -> AppResult<Option<PaymentRecord>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 AND user_id = $2 \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(order_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Applies a provider callback to the payment `payment_no` and writes its event, in one
    /// transaction. The order is locked first (as creations and cancellations lock it), then
    /// the row, so concurrent callbacks of one payment settle it once; `decide` (the domain's
    /// rule) sees the locked row and may refuse the callback.
    ///
    /// A success the order cannot take (it is cancelled, or another payment of it succeeded)
    /// is refunded at once: the payment turns refunding and the provider is asked.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "settle"))]
    pub async fn settle(
        &self,
        payment_no: &str,
        trade_no: &str,
        decide: impl FnOnce(PaymentFacts) -> AppResult<Settlement>,
    ) -> AppResult<SettleOutcome> {
        let mut transaction = self.pool.begin().await?;
        let order_id: Option<i64> =
            sqlx::query_scalar("SELECT order_id FROM payments WHERE payment_no = $1")
                .bind(payment_no)
                .fetch_optional(&mut *transaction)
                .await?;
        let Some(order_id) = order_id else {
            return Ok(SettleOutcome::UnknownPayment);
        };
        lock_order(&mut transaction, order_id).await?;
        let current: PaymentRecord = sqlx::query_as(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_no = $1 FOR UPDATE"
        ))
        .bind(payment_no)
        .fetch_one(&mut *transaction)
        .await?;
        let outcome = match decide(current.facts())? {
            Settlement::AlreadyProcessed => return Ok(SettleOutcome::AlreadyProcessed),
            Settlement::Apply(outcome) => outcome,
        };
        if outcome == ProviderOutcome::Succeeded
            && let Some(reason) = refund_reason(&mut transaction, &current).await?
        {
            let refunding: PaymentRecord = sqlx::query_as(&format!(
                "UPDATE payments SET status = 5, trade_no = $2, paid_at = now(), refund_reason = $3, \
                 updated_at = now() WHERE id = $1 RETURNING {PAYMENT_COLUMNS}"
            ))
            .bind(current.id)
            .bind(trade_no)
            .bind(reason)
            .fetch_one(&mut *transaction)
            .await?;
            ask_refund(&mut transaction, &refunding).await?;
            transaction.commit().await?;
            tracing::warn!(
                payment_no,
                order_id,
                reason,
                "a payment succeeded that its order cannot take; refunding it"
            );
            return Ok(SettleOutcome::Applied(refunding));
        }
        let settled: PaymentRecord = sqlx::query_as(&format!(
            "UPDATE payments SET status = $2, updated_at = now(), \
             trade_no = CASE WHEN $2 = 6 THEN trade_no ELSE $3 END, \
             paid_at = CASE WHEN $2 = 2 THEN now() WHEN $2 = 6 THEN paid_at END, \
             refunded_at = CASE WHEN $2 = 6 THEN now() END \
             WHERE id = $1 RETURNING {PAYMENT_COLUMNS}"
        ))
        .bind(current.id)
        .bind(outcome.status().code())
        .bind(trade_no)
        .fetch_one(&mut *transaction)
        .await?;
        let event = Event::new(
            outcome.event_type(),
            json!({
                "paymentId": settled.id,
                "paymentNo": settled.payment_no,
                "orderId": settled.order_id,
                "userId": settled.user_id,
                "amountCents": settled.amount_cents,
                "tradeNo": settled.trade_no,
            }),
        )
        .map_err(AppError::system)?;
        events::enqueue(&mut transaction, &settled.order_id.to_string(), &event).await?;
        transaction.commit().await?;
        Ok(SettleOutcome::Applied(settled))
    }

    /// Handles `order.cancelled` once per event: from now on the order takes no payment; a
    /// pending one is called off (the mock provider will not post its success), and one that
    /// succeeded already is refunded. Answers the payments it refunds.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "on_order_cancelled"))]
    pub async fn on_order_cancelled(
        &self,
        group: &str,
        event_id: uuid::Uuid,
        order_id: i64,
    ) -> AppResult<Vec<String>> {
        let mut transaction = self.pool.begin().await?;
        if !events::mark_handled(&mut transaction, group, event_id).await? {
            return Ok(Vec::new());
        }
        lock_order(&mut transaction, order_id).await?;
        sqlx::query("INSERT INTO cancelled_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(order_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "UPDATE mock_callbacks SET state = 'voided', updated_at = now() \
             WHERE kind = 'payment' AND state = 'pending' AND payment_no IN \
               (SELECT payment_no FROM payments WHERE order_id = $1 AND status = 1)",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE payments SET status = 4, updated_at = now() WHERE order_id = $1 AND status = 1",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        let refunding: Vec<PaymentRecord> = sqlx::query_as(&format!(
            "UPDATE payments SET status = 5, refund_reason = 'order cancelled', updated_at = now() \
             WHERE order_id = $1 AND status = 2 RETURNING {PAYMENT_COLUMNS}"
        ))
        .bind(order_id)
        .fetch_all(&mut *transaction)
        .await?;
        for payment in &refunding {
            ask_refund(&mut transaction, payment).await?;
        }
        transaction.commit().await?;
        Ok(refunding.into_iter().map(|p| p.payment_no).collect())
    }

    /// Deletes idempotency keys past their retention; answers how many went.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "prune_idempotency_keys"))]
    pub async fn prune_idempotency_keys(&self) -> AppResult<u64> {
        let deleted = sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(IDEMPOTENCY_KEY_RETENTION.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}

/// Serialises everything that decides an order's payments: creations, callbacks and
/// cancellations of one order take this lock first.
async fn lock_order(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    order_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(order_id)
        .execute(&mut **transaction)
        .await?;
    Ok(())
}

/// Why `payment`'s success cannot stand, if it cannot.
async fn refund_reason(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    payment: &PaymentRecord,
) -> Result<Option<&'static str>, sqlx::Error> {
    let (cancelled, paid): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1), \
                EXISTS (SELECT 1 FROM payments WHERE order_id = $1 AND status = 2 AND id <> $2)",
    )
    .bind(payment.order_id)
    .bind(payment.id)
    .fetch_one(&mut **transaction)
    .await?;
    Ok(if cancelled {
        Some("order cancelled")
    } else if paid {
        Some("order paid by another payment")
    } else {
        None
    })
}

/// Asks the provider to refund `payment`. The only provider is the mock one, which confirms
/// with a signed callback like a payment's, posted from `mock_callbacks`.
async fn ask_refund(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    payment: &PaymentRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mock_callbacks (payment_no, kind, order_id, amount_cents, outcome, trade_no, due_at, traceparent) \
         VALUES ($1, 'refund', $2, $3, 6, $4, now(), $5) ON CONFLICT DO NOTHING",
    )
    .bind(&payment.payment_no)
    .bind(payment.order_id)
    .bind(payment.amount_cents)
    .bind(format!("RFND{}", uuid::Uuid::new_v4().simple()))
    .bind(traces::current_traceparent())
    .execute(&mut **transaction)
    .await?;
    Ok(())
}
