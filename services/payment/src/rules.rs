//! What makes a payment valid and how its status may move. No SQL and no proto here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use letsgo_platform::events::topics;
use sha2::{Digest, Sha256};

/// Idempotency keys are promised for 24 h; they are pruned once twice that old.
pub const IDEMPOTENCY_KEY_RETENTION: Duration = Duration::from_secs(48 * 3600);
/// Longest Idempotency-Key accepted: the contract's limit.
pub use letsgo_platform::limits::IDEMPOTENCY_KEY_MAX_CHARS as IDEMPOTENCY_KEY_MAX;
/// Longest provider trade number accepted from a callback.
pub const TRADE_NO_MAX: usize = 128;

/// How the buyer pays. The numbers are the original's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentType {
    Alipay = 1,
    WechatPay = 2,
    Card = 3,
}

impl PaymentType {
    pub fn from_code(code: i32) -> AppResult<PaymentType> {
        match code {
            1 => Ok(PaymentType::Alipay),
            2 => Ok(PaymentType::WechatPay),
            3 => Ok(PaymentType::Card),
            _ => Err(AppError::invalid(
                "paymentType must be 1 (Alipay), 2 (WeChat Pay) or 3 (card)",
            )),
        }
    }

    pub fn code(self) -> i16 {
        self as i16
    }
}

/// Where a payment stands. The numbers are the original's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending = 1,
    Success = 2,
    Failed = 3,
    /// Superseded by a newer payment of the same order, or called off with its order, before
    /// the provider answered.
    Cancelled = 4,
    /// Paid, and its refund asked of the provider (the order could not take it).
    Refunding = 5,
    /// Paid and given back: the provider confirmed the refund.
    Refunded = 6,
}

impl PaymentStatus {
    /// The stored number; the table's CHECK keeps it within 1..=6.
    pub fn from_code(code: i16) -> Option<PaymentStatus> {
        match code {
            1 => Some(PaymentStatus::Pending),
            2 => Some(PaymentStatus::Success),
            3 => Some(PaymentStatus::Failed),
            4 => Some(PaymentStatus::Cancelled),
            5 => Some(PaymentStatus::Refunding),
            6 => Some(PaymentStatus::Refunded),
            _ => None,
        }
    }

    pub fn code(self) -> i16 {
        self as i16
    }

    /// The provider has answered whether the buyer paid.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            PaymentStatus::Success
                | PaymentStatus::Failed
                | PaymentStatus::Refunding
                | PaymentStatus::Refunded
        )
    }
}

pub fn check_ids(user_id: i64, order_id: i64) -> AppResult<()> {
    if user_id <= 0 || order_id <= 0 {
        return Err(AppError::invalid("userId and orderId must be positive"));
    }
    Ok(())
}

/// An empty key means the client sent none.
pub fn check_idempotency_key(key: &str) -> AppResult<()> {
    if key.len() > IDEMPOTENCY_KEY_MAX || key.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(AppError::invalid(format!(
            "Idempotency-Key must be at most {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        )));
    }
    Ok(())
}

/// What the order service says about the order being paid for.
#[derive(Debug, Clone, Copy)]
pub struct OrderToPay {
    pub total_cents: i64,
    pub is_pending: bool,
}

/// Only a pending order may be paid (5001), and only for exactly its total (6003).
pub fn check_payable(order: OrderToPay, amount_cents: i64) -> AppResult<()> {
    if !order.is_pending {
        return Err(AppError::new(
            ErrorCode::BadOrderStatus,
            "only a pending order can be paid",
        ));
    }
    if amount_cents != order.total_cents {
        return Err(AppError::of(ErrorCode::PaymentAmount));
    }
    Ok(())
}

/// The fingerprint an idempotency key is bound to: the same key with another request is a
/// conflict, whichever field differs.
pub fn request_fingerprint(order_id: i64, payment_type: PaymentType, amount_cents: i64) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(b"letsgo.payment.create.v1\0");
    hash.update(order_id.to_be_bytes());
    hash.update(i64::from(payment_type.code()).to_be_bytes());
    hash.update(amount_cents.to_be_bytes());
    hash.finalize().to_vec()
}

/// A payment number people can read out: `PAY`, the UTC time to the second, six random digits.
/// Numbers may collide (the store retries with fresh digits); they never repeat once stored.
pub fn payment_no(now: DateTime<Utc>, random: u128) -> String {
    format!("PAY{}{:06}", now.format("%Y%m%d%H%M%S"), random % 1_000_000)
}

/// What the provider reports about a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderOutcome {
    Succeeded,
    Failed,
    /// The refund we asked for is done.
    Refunded,
}

impl ProviderOutcome {
    /// The callback's `status`: 2 success, 3 failed, 6 refunded (the payment statuses they
    /// lead to).
    pub fn from_code(code: i64) -> AppResult<ProviderOutcome> {
        match code {
            2 => Ok(ProviderOutcome::Succeeded),
            3 => Ok(ProviderOutcome::Failed),
            6 => Ok(ProviderOutcome::Refunded),
            _ => Err(AppError::invalid(
                "status must be 2 (success), 3 (failed) or 6 (refunded)",
            )),
        }
    }

    pub fn code(self) -> i64 {
        self.status().code().into()
    }

    pub fn status(self) -> PaymentStatus {
        match self {
            ProviderOutcome::Succeeded => PaymentStatus::Success,
            ProviderOutcome::Failed => PaymentStatus::Failed,
            ProviderOutcome::Refunded => PaymentStatus::Refunded,
        }
    }

    /// The event the outcome is announced by.
    pub fn event_type(self) -> &'static str {
        match self {
            ProviderOutcome::Succeeded => topics::PAYMENT_SUCCEEDED,
            ProviderOutcome::Failed => topics::PAYMENT_FAILED,
            ProviderOutcome::Refunded => topics::PAYMENT_REFUNDED,
        }
    }
}

/// A provider callback, parsed and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderNotice {
    pub payment_no: String,
    pub order_id: i64,
    pub outcome: ProviderOutcome,
    pub amount_cents: i64,
    pub trade_no: String,
}

/// The facts of a stored payment that a callback is checked against.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFacts {
    pub order_id: i64,
    pub amount_cents: i64,
    pub status: PaymentStatus,
}

/// What a callback does to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The payment takes the provider's outcome (a cancelled payment too: the buyer did pay
    /// or fail on the provider, and the order deserves to hear of it).
    Apply(ProviderOutcome),
    /// The provider already answered once; a repeated callback changes nothing.
    AlreadyProcessed,
}

/// Refuses a callback that does not describe the payment (1001 for another order, 6003 for
/// another amount), then decides what it changes.
pub fn settle(payment: PaymentFacts, notice: &ProviderNotice) -> AppResult<Settlement> {
    if notice.order_id != payment.order_id {
        return Err(AppError::invalid(
            "orderId does not match the payment's order",
        ));
    }
    if notice.amount_cents != payment.amount_cents {
        return Err(AppError::of(ErrorCode::PaymentAmount));
    }
    if notice.outcome == ProviderOutcome::Refunded {
        // Only a refund we asked for can be confirmed.
        return match payment.status {
            PaymentStatus::Refunding => Ok(Settlement::Apply(notice.outcome)),
            PaymentStatus::Refunded => Ok(Settlement::AlreadyProcessed),
            _ => Err(AppError::new(
                ErrorCode::BadOrderStatus,
                "no refund was asked for this payment",
            )),
        };
    }
    if payment.status.is_settled() {
        return Ok(Settlement::AlreadyProcessed);
    }
    Ok(Settlement::Apply(notice.outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(order_id: i64, amount_cents: i64) -> ProviderNotice {
        ProviderNotice {
            payment_no: "PAY20261125120000123456".into(),
            order_id,
            outcome: ProviderOutcome::Succeeded,
            amount_cents,
            trade_no: "T1".into(),
        }
    }

    fn facts(status: PaymentStatus) -> PaymentFacts {
        PaymentFacts {
            order_id: 7,
            amount_cents: 1990,
            status,
        }
    }

    #[test]
    fn only_the_three_payment_methods_are_accepted() {
        assert_eq!(PaymentType::from_code(2).unwrap(), PaymentType::WechatPay);
        for bad in [0, 4, -1] {
            assert_eq!(
                PaymentType::from_code(bad).unwrap_err().code,
                ErrorCode::InvalidParams
            );
        }
    }

    #[test]
    fn a_paid_order_or_a_wrong_amount_cannot_be_paid() {
        let pending = OrderToPay {
            total_cents: 1990,
            is_pending: true,
        };
        assert!(check_payable(pending, 1990).is_ok());
        assert_eq!(
            check_payable(pending, 1999).unwrap_err().code,
            ErrorCode::PaymentAmount
        );
        let paid = OrderToPay {
            is_pending: false,
            ..pending
        };
        assert_eq!(
            check_payable(paid, 1990).unwrap_err().code,
            ErrorCode::BadOrderStatus
        );
    }

    #[test]
    fn fingerprints_differ_when_any_field_differs() {
        let base = request_fingerprint(1, PaymentType::Alipay, 100);
        assert_eq!(base, request_fingerprint(1, PaymentType::Alipay, 100));
        assert_ne!(base, request_fingerprint(2, PaymentType::Alipay, 100));
        assert_ne!(base, request_fingerprint(1, PaymentType::Card, 100));
        assert_ne!(base, request_fingerprint(1, PaymentType::Alipay, 101));
    }

    #[test]
    fn payment_numbers_read_as_time_and_six_digits() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T08:09:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(payment_no(now, 42), "PAY20261125080910000042");
        assert_eq!(payment_no(now, 12_345_678).len(), 23);
    }

    #[test]
    fn callbacks_settle_open_payments_once() {
        let open = notice(7, 1990);
        assert_eq!(
            settle(facts(PaymentStatus::Pending), &open).unwrap(),
            Settlement::Apply(ProviderOutcome::Succeeded)
        );
        assert_eq!(
            settle(facts(PaymentStatus::Cancelled), &open).unwrap(),
            Settlement::Apply(ProviderOutcome::Succeeded)
        );
        assert_eq!(
            settle(facts(PaymentStatus::Failed), &open).unwrap(),
            Settlement::AlreadyProcessed
        );
        assert_eq!(
            settle(facts(PaymentStatus::Pending), &notice(8, 1990))
                .unwrap_err()
                .code,
            ErrorCode::InvalidParams
        );
        assert_eq!(
            settle(facts(PaymentStatus::Success), &notice(7, 1))
                .unwrap_err()
                .code,
            ErrorCode::PaymentAmount
        );
        // A refunded payment's late success callback changes nothing.
        assert_eq!(
            settle(facts(PaymentStatus::Refunding), &open).unwrap(),
            Settlement::AlreadyProcessed
        );
    }

    #[test]
    fn only_a_refund_we_asked_for_is_confirmed() {
        let refunded = ProviderNotice {
            outcome: ProviderOutcome::Refunded,
            ..notice(7, 1990)
        };
        assert_eq!(
            settle(facts(PaymentStatus::Refunding), &refunded).unwrap(),
            Settlement::Apply(ProviderOutcome::Refunded)
        );
        assert_eq!(
            settle(facts(PaymentStatus::Refunded), &refunded).unwrap(),
            Settlement::AlreadyProcessed
        );
        for status in [PaymentStatus::Pending, PaymentStatus::Success] {
            assert_eq!(
                settle(facts(status), &refunded).unwrap_err().code,
                ErrorCode::BadOrderStatus
            );
        }
    }
}
