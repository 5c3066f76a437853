//! `/api/v1/payment/*`: paying the caller's own orders, and the provider's signed webhook.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use letsgo_platform::errors::{AppError, Envelope};
use letsgo_platform::limits::CALLBACK_BODY_MAX_BYTES;
use letsgo_platform::proto::payment::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, ErrorEnvelope, success};
use crate::app::AppState;
use crate::auth::SignedIn;
use crate::extract::{ApiJson, ApiPath};
use crate::money::Yuan;

/// Longest `Idempotency-Key` accepted.
use letsgo_platform::limits::IDEMPOTENCY_KEY_MAX_CHARS as IDEMPOTENCY_KEY_MAX;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentRequest {
    pub order_id: i64,
    /// 1 Alipay, 2 WeChat Pay, 3 card.
    pub payment_type: i32,
    /// Must equal the order's total.
    #[schema(value_type = f64)]
    pub amount: Yuan,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedPaymentData {
    pub payment_id: i64,
    pub payment_no: String,
    pub pay_url: String,
    pub qr_code: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentData {
    pub payment_id: i64,
    pub payment_no: String,
    pub order_id: i64,
    /// 1 pending, 2 success, 3 failed, 4 cancelled; 5 refunding, 6 refunded (our addition).
    pub status: i32,
    #[schema(value_type = f64)]
    pub amount: Yuan,
    pub payment_type: i32,
    /// 0 until paid.
    pub paid_at: i64,
}

/// The webhook's body, for the document: the payment service parses the raw bytes itself,
/// because the signature covers them exactly as sent.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub struct CallbackBody {
    pub payment_no: String,
    pub order_id: i64,
    /// 2 success, 3 failed.
    pub status: i32,
    /// Yuan, at most two decimals; must match the payment.
    pub amount: f64,
    /// The provider's own transaction number.
    pub trade_no: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackData {
    pub success: bool,
    pub message: String,
}

const UNAUTHORIZED: &str = "2003/2004: no, bad or expired token";

/// Starts paying an order on the (mock) provider. A new payment cancels the order's pending
/// one. Send `Idempotency-Key` to make retries safe: the same key and body give the first
/// answer again.
#[utoipa::path(post, path = "/api/v1/payment/create", tag = "payment", security(("bearer" = [])), request_body = CreatePaymentRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe (1 to 128 visible ASCII characters, kept at least 24 h)")),
    responses(
        (status = 200, description = "A payment to complete at payUrl", body = Envelope<CreatedPaymentData>),
        (status = 400, description = "1001: bad payment type or key; 6003: the amount is not the order's total", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "5000: no such order of the caller's", body = ErrorEnvelope),
        (status = 409, description = "5001: the order is not pending, or is paid or cancelled already; 1001: the Idempotency-Key was used with another body", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: a service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreatePaymentRequest>,
) -> ApiResult<CreatedPaymentData> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => String::new(),
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| AppError::invalid("Idempotency-Key must be printable text"))?
                .trim();
            if key.is_empty()
                || key.len() > IDEMPOTENCY_KEY_MAX
                || key.chars().any(|c| !c.is_ascii_graphic())
            {
                return Err(AppError::invalid(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
                )));
            }
            key.to_owned()
        }
    };
    let reply = state
        .payment_client()
        .create_payment(pb::CreatePaymentRequest {
            user_id: caller.user_id,
            order_id: body.order_id,
            payment_type: body.payment_type,
            amount_cents: body.amount.0,
            idempotency_key,
        })
        .await?
        .into_inner();
    success(CreatedPaymentData {
        payment_id: reply.payment_id,
        payment_no: reply.payment_no,
        pay_url: reply.pay_url,
        qr_code: reply.qr_code,
    })
}

/// The order's latest payment.
#[utoipa::path(get, path = "/api/v1/payment/query/{orderId}", tag = "payment", security(("bearer" = [])),
    params(("orderId" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "The payment", body = Envelope<PaymentData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "6000: no payment for this order of the caller's", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the payment service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn query(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiPath(order_id): ApiPath<i64>,
) -> ApiResult<PaymentData> {
    let payment = state
        .payment_client()
        .query_payment(pb::QueryPaymentRequest {
            user_id: caller.user_id,
            order_id,
        })
        .await?
        .into_inner();
    success(PaymentData {
        payment_id: payment.payment_id,
        payment_no: payment.payment_no,
        order_id: payment.order_id,
        status: payment.status,
        amount: Yuan(payment.amount_cents),
        payment_type: payment.payment_type,
        paid_at: payment.paid_at,
    })
}

/// The provider's webhook: no token, but an `X-Signature: t=<unix>,v1=<hex HMAC-SHA256>` over
/// `"<t>.<raw body>"`. Body: `paymentNo, orderId, status, amount, tradeNo`. A repeated callback
/// changes nothing and answers success.
#[utoipa::path(post, path = "/api/v1/payment/callback", tag = "payment", request_body = CallbackBody,
    params(("X-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>")),
    responses(
        (status = 200, description = "Processed (or processed before)", body = Envelope<CallbackData>),
        (status = 400, description = "1001: a malformed body or an order mismatch; 6003: the amount does not match", body = ErrorEnvelope),
        (status = 401, description = "2003: a missing, wrong or stale signature", body = ErrorEnvelope),
        (status = 404, description = "6000: no such payment", body = ErrorEnvelope),
        (status = 413, description = "1001: a body larger than 4 KiB", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the payment service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn callback(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // Read at most the limit: a larger body is refused before it is buffered or forwarded.
    let Ok(body) = axum::body::to_bytes(body, CALLBACK_BODY_MAX_BYTES).await else {
        let mut refused = AppError::invalid(format!(
            "callback body is larger than {CALLBACK_BODY_MAX_BYTES} bytes"
        ))
        .into_response();
        *refused.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        return refused;
    };
    match forward_callback(&state, &headers, body).await {
        Ok(answer) => answer.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn forward_callback(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<CallbackData> {
    let signature = headers
        .get("x-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let reply = state
        .payment_client()
        .handle_callback(pb::HandleCallbackRequest {
            raw_body: body.to_vec(),
            signature,
        })
        .await?
        .into_inner();
    success(CallbackData {
        success: reply.success,
        message: reply.message,
    })
}
