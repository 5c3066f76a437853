//! The payment flows: creation against the order service with idempotency keys, the query, and
//! the provider's callback.

use std::time::Duration;

use letsgo_platform::discovery::RpcChannel;
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use letsgo_platform::events::Event;
use letsgo_platform::proto::order::v1::{
    GetOrderRequest, OrderStatus, order_service_client::OrderServiceClient,
};

use crate::mock_provider;
use crate::rules::{self, OrderToPay, PaymentType};
use crate::storage::{
    CreateOutcome, CreatedPayment, IdempotencyClaim, NewPayment, PaymentRecord, PaymentStore,
    ScheduledCallback, SettleOutcome,
};
use crate::webhook::{self, WebhookSecrets};

pub struct CreatePayment {
    pub user_id: i64,
    pub order_id: i64,
    pub payment_type: i32,
    pub amount_cents: i64,
    /// Empty when the client sent none.
    pub idempotency_key: String,
}

/// How the callback was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackResult {
    Settled,
    AlreadyProcessed,
}

pub struct Payments {
    store: PaymentStore,
    orders: OrderServiceClient<RpcChannel>,
    secrets: WebhookSecrets,
    signature_tolerance: Duration,
    /// The mock provider's answer to schedule with each new payment; `None` when the buyer's
    /// callbacks come from elsewhere (tests, a person).
    autocomplete: Option<ScheduledCallback>,
}

impl Payments {
    pub fn new(
        store: PaymentStore,
        orders: OrderServiceClient<RpcChannel>,
        secrets: WebhookSecrets,
        signature_tolerance: Duration,
        autocomplete: Option<ScheduledCallback>,
    ) -> Self {
        Payments {
            store,
            orders,
            secrets,
            signature_tolerance,
            autocomplete,
        }
    }

    /// Creates a payment for the caller's own pending order, for exactly its total.
    ///
    /// With an idempotency key, the first successful reply is recorded: the same key with the
    /// same request replays it, whatever happened since; with another request it is a conflict.
    pub async fn create(&self, request: CreatePayment) -> AppResult<CreatedPayment> {
        rules::check_ids(request.user_id, request.order_id)?;
        let payment_type = PaymentType::from_code(request.payment_type)?;
        if request.amount_cents < 0 {
            return Err(AppError::invalid("amount must not be negative"));
        }
        rules::check_idempotency_key(&request.idempotency_key)?;
        let fingerprint =
            rules::request_fingerprint(request.order_id, payment_type, request.amount_cents);
        let key = (!request.idempotency_key.is_empty()).then_some(request.idempotency_key.as_str());
        // A key is looked up only when the order cannot be paid now (a replay after the order
        // was paid, say) or when the creation below finds it taken: a first request costs no
        // lookup of its own.
        if let Err(refused) = self.check_payable(&request).await {
            if let Some(key) = key
                && let Some(reply) = self.replay(request.user_id, key, &fingerprint).await?
            {
                return Ok(reply);
            }
            return Err(refused);
        }

        let created = self
            .store
            .create(
                NewPayment {
                    user_id: request.user_id,
                    order_id: request.order_id,
                    payment_type: payment_type.code(),
                    amount_cents: request.amount_cents,
                    mock_callback: self.autocomplete,
                },
                key.map(|key| IdempotencyClaim {
                    key,
                    request_hash: &fingerprint,
                }),
                || rules::payment_no(chrono::Utc::now(), uuid::Uuid::new_v4().as_u128()),
                mock_provider::checkout,
            )
            .await?;
        let record = match created {
            CreateOutcome::Created(record) => record,
            CreateOutcome::KeyTaken => {
                // A concurrent request with the same key won; answer as a replay of it.
                let key = key.expect("only a keyed creation can lose its key");
                return self
                    .replay(request.user_id, key, &fingerprint)
                    .await?
                    .ok_or_else(|| AppError::system("idempotency key taken but not found"));
            }
        };
        tracing::info!(payment_id = record.id, payment_no = %record.payment_no, order_id = record.order_id, "payment created");
        Ok(CreatedPayment {
            payment_id: record.id,
            payment_no: record.payment_no,
            pay_url: record.pay_url,
            qr_code: record.qr_code,
        })
    }

    /// Whether the caller's order is theirs, pending, and totals the amount asked for.
    async fn check_payable(&self, request: &CreatePayment) -> AppResult<()> {
        let order = self
            .orders
            .clone()
            .get_order(GetOrderRequest {
                user_id: request.user_id,
                order_id: request.order_id,
            })
            .await?
            .into_inner();
        rules::check_payable(
            OrderToPay {
                total_cents: order.total_amount_cents,
                is_pending: order.status() == OrderStatus::Pending,
            },
            request.amount_cents,
        )
    }

    /// The recorded reply of `key`, or `None` when the key is new.
    async fn replay(
        &self,
        user_id: i64,
        key: &str,
        fingerprint: &[u8],
    ) -> AppResult<Option<CreatedPayment>> {
        match self.store.idempotency_record(user_id, key).await? {
            None => Ok(None),
            Some(record) if record.request_hash == fingerprint => Ok(Some(record.reply)),
            Some(_) => Err(AppError::of(ErrorCode::IdempotencyConflict)),
        }
    }

    /// The order's latest payment; 6000 when there is none or the order is someone else's.
    pub async fn latest(&self, user_id: i64, order_id: i64) -> AppResult<PaymentRecord> {
        rules::check_ids(user_id, order_id)?;
        self.store
            .latest_for_order(user_id, order_id)
            .await?
            .ok_or_else(|| AppError::of(ErrorCode::PaymentNotFound))
    }

    /// Verifies the signature over the raw body, then settles the payment and writes its event.
    pub async fn handle_callback(&self, body: &[u8], signature: &str) -> AppResult<CallbackResult> {
        self.secrets.verify(
            signature,
            body,
            chrono::Utc::now().timestamp(),
            self.signature_tolerance,
        )?;
        let notice = webhook::parse_notice(body)?;
        let outcome = self
            .store
            .settle(&notice.payment_no, &notice.trade_no, |payment| {
                rules::settle(payment, &notice)
            })
            .await?;
        match outcome {
            SettleOutcome::Applied(payment) => {
                tracing::info!(payment_id = payment.id, payment_no = %payment.payment_no, status = payment.status, "payment settled");
                Ok(CallbackResult::Settled)
            }
            SettleOutcome::AlreadyProcessed => Ok(CallbackResult::AlreadyProcessed),
            SettleOutcome::UnknownPayment => Err(AppError::of(ErrorCode::PaymentNotFound)),
        }
    }
}

impl Payments {
    /// Handles `order.cancelled`: the order takes no payment from now on; a pending one is
    /// called off and one that succeeded is refunded.
    pub async fn on_order_cancelled(&self, event: &Event) -> AppResult<()> {
        let order_id = event.data["orderId"]
            .as_i64()
            .ok_or_else(|| AppError::invalid("order.cancelled without orderId"))?;
        let refunding = self
            .store
            .on_order_cancelled(CANCELLATION_CONSUMER_GROUP, event.id, order_id)
            .await?;
        for payment_no in refunding {
            tracing::warn!(order_id, %payment_no, "the order was cancelled after its payment succeeded; refunding it");
        }
        Ok(())
    }
}

/// The consumer group that calls off and refunds the payments of cancelled orders.
pub const CANCELLATION_CONSUMER_GROUP: &str = "letsgo-payment";

/// How often idempotency keys past their retention are deleted.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
