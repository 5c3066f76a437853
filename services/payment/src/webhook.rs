//! The provider's webhook: the `X-Signature` it carries and the body it describes.
//!
//! The header is `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. The
//! timestamp is inside the signed text, so a captured callback cannot be replayed once it is
//! older than the tolerance; the body is verified as the exact bytes received, before any
//! parsing.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::rules::{ProviderNotice, ProviderOutcome, TRADE_NO_MAX};
use letsgo_platform::money;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: an HMAC key guessable by brute force protects nothing (RFC 7518:
/// at least the hash's 32 bytes).
pub const SECRET_MIN_BYTES: usize = letsgo_platform::config::HMAC_KEY_MIN_BYTES;
/// Largest callback body read; a real one is a few hundred bytes. Checked before anything
/// else, the signature included: the body is what each MAC has to hash.
pub use letsgo_platform::limits::CALLBACK_BODY_MAX_BYTES as BODY_MAX_BYTES;
/// Longest `X-Signature` read: a timestamp and [`SIGNATURES_MAX`] signatures fit with room.
pub const HEADER_MAX_BYTES: usize = 512;
/// Most `v1` signatures in one header (a provider rotating its secret sends two).
pub const SIGNATURES_MAX: usize = 4;
/// A `v1` signature: an HMAC-SHA256, 32 bytes as hex.
const SIGNATURE_HEX_LEN: usize = 64;

/// The webhook secrets, from `PAYMENT_WEBHOOK_SECRET`: the first signs, every one verifies, so
/// a secret is rotated by putting the new one first and dropping the old one later.
#[derive(Clone)]
pub struct WebhookSecrets(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "WebhookSecrets({} redacted)", self.0.len())
    }
}

impl WebhookSecrets {
    /// Parses a comma-separated list; each secret must be at least 32 bytes.
    pub fn parse(list: &str) -> Result<WebhookSecrets, String> {
        let secrets: Vec<Vec<u8>> = list
            .split(',')
            .map(str::trim)
            .filter(|secret| !secret.is_empty())
            .map(|secret| secret.as_bytes().to_vec())
            .collect();
        if secrets.is_empty() {
            return Err("at least one secret is required".to_owned());
        }
        if secrets.iter().any(|secret| secret.len() < SECRET_MIN_BYTES) {
            return Err(format!(
                "each secret must be at least {SECRET_MIN_BYTES} bytes long"
            ));
        }
        Ok(WebhookSecrets(Arc::new(secrets)))
    }

    fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `X-Signature` value for `body` sent at `timestamp`, signed with the first secret.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let digest = Self::mac(&self.0[0], timestamp, body)
            .finalize()
            .into_bytes();
        format!("t={timestamp},v1={}", hex::encode(digest))
    }

    /// Accepts `header` for `body` when one of its signatures matches one of the secrets
    /// (compared in constant time) and its timestamp is within `tolerance` of `now`.
    /// Anything else is a 2003.
    pub fn verify(
        &self,
        header: &str,
        body: &[u8],
        now: i64,
        tolerance: Duration,
    ) -> AppResult<()> {
        // Bounded work before any hashing: the body's size, then the header's shape.
        if body.len() > BODY_MAX_BYTES {
            return Err(AppError::invalid("callback body is too large"));
        }
        let signature = WebhookSignature::parse(header)?;
        let age = now.abs_diff(signature.timestamp);
        if age > tolerance.as_secs() {
            return Err(refused("signature timestamp is outside the tolerance"));
        }
        // The body is hashed once per secret; each signature is then compared with that MAC in
        // constant time (verify_slice on a copy of the finished state hashes nothing more).
        let matches = self.0.iter().any(|secret| {
            let mac = Self::mac(secret, signature.timestamp, body);
            signature
                .digests
                .iter()
                .any(|digest| mac.clone().verify_slice(digest).is_ok())
        });
        if !matches {
            return Err(refused("signature does not match"));
        }
        Ok(())
    }
}

fn refused(reason: &str) -> AppError {
    AppError::new(
        ErrorCode::InvalidToken,
        format!("invalid callback signature: {reason}"),
    )
}

/// A parsed `X-Signature` header. Unknown schemes (`v0=...`) are ignored, so a provider can
/// add a new scheme beside `v1` without breaking us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSignature {
    pub timestamp: i64,
    pub digests: Vec<Vec<u8>>,
}

impl WebhookSignature {
    pub fn parse(header: &str) -> AppResult<WebhookSignature> {
        if header.len() > HEADER_MAX_BYTES {
            return Err(refused("header is too long"));
        }
        let mut timestamp = None;
        let mut digests = Vec::new();
        for part in header.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| refused("malformed header"))?;
            match name {
                "t" => {
                    let seconds = value
                        .parse::<i64>()
                        .map_err(|_| refused("malformed timestamp"))?;
                    if timestamp.replace(seconds).is_some() {
                        return Err(refused("more than one timestamp"));
                    }
                }
                "v1" => {
                    if value.len() != SIGNATURE_HEX_LEN {
                        return Err(refused("a v1 signature is 64 hex digits"));
                    }
                    if digests.len() == SIGNATURES_MAX {
                        return Err(refused("too many v1 signatures"));
                    }
                    digests.push(hex::decode(value).map_err(|_| refused("malformed v1"))?);
                }
                _ => {}
            }
        }
        match timestamp {
            Some(timestamp) if !digests.is_empty() => Ok(WebhookSignature { timestamp, digests }),
            _ => Err(refused("t and v1 are required")),
        }
    }
}

/// The callback body as the provider writes it (the original's field names).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallbackBody {
    payment_no: String,
    order_id: i64,
    status: i64,
    /// Kept as its JSON text so the yuan are read digit by digit, never through a float.
    amount: Box<RawValue>,
    trade_no: String,
}

/// Reads a verified callback body; anything malformed is a 1001.
pub fn parse_notice(body: &[u8]) -> AppResult<ProviderNotice> {
    if body.len() > BODY_MAX_BYTES {
        return Err(AppError::invalid("callback body is too large"));
    }
    let body: CallbackBody = serde_json::from_slice(body)
        .map_err(|error| AppError::invalid(format!("malformed callback body: {error}")))?;
    if body.payment_no.is_empty() || body.payment_no.len() > 64 {
        return Err(AppError::invalid("paymentNo is required"));
    }
    if body.trade_no.len() > TRADE_NO_MAX {
        return Err(AppError::invalid(format!(
            "tradeNo must be at most {TRADE_NO_MAX} characters"
        )));
    }
    Ok(ProviderNotice {
        payment_no: body.payment_no,
        order_id: body.order_id,
        outcome: ProviderOutcome::from_code(body.status)?,
        amount_cents: money::parse_cents(body.amount.get())?,
        trade_no: body.trade_no,
    })
}

/// Writes the callback body the provider sends for `notice`.
pub fn notice_body(notice: &ProviderNotice) -> Vec<u8> {
    let body = CallbackBody {
        payment_no: notice.payment_no.clone(),
        order_id: notice.order_id,
        status: notice.outcome.code(),
        amount: RawValue::from_string(money::yuan_text(notice.amount_cents))
            .expect("a yuan token is a JSON number"),
        trade_no: notice.trade_no.clone(),
    };
    serde_json::to_vec(&body).expect("a callback body always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::parse(
            "new-secret-0123456789abcdef0123456789,old-secret-0123456789abcdef0123456789",
        )
        .unwrap()
    }

    #[test]
    fn a_signature_made_with_any_listed_secret_verifies() {
        let body = br#"{"paymentNo":"P1"}"#;
        let header = secrets().sign(NOW, body);
        assert!(header.starts_with(&format!("t={NOW},v1=")));
        assert!(secrets().verify(&header, body, NOW, TOLERANCE).is_ok());
        let old_only = WebhookSecrets::parse("old-secret-0123456789abcdef0123456789").unwrap();
        let old_header = old_only.sign(NOW, body);
        assert!(secrets().verify(&old_header, body, NOW, TOLERANCE).is_ok());
    }

    #[test]
    fn a_changed_body_a_stale_time_or_a_malformed_header_is_refused() {
        let body = br#"{"paymentNo":"P1"}"#;
        let header = secrets().sign(NOW, body);
        let refused = |header: &str, body: &[u8], now: i64| {
            secrets()
                .verify(header, body, now, TOLERANCE)
                .unwrap_err()
                .code
        };
        assert_eq!(refused(&header, b"{}", NOW), ErrorCode::InvalidToken);
        assert_eq!(refused(&header, body, NOW + 301), ErrorCode::InvalidToken);
        assert_eq!(refused(&header, body, NOW - 301), ErrorCode::InvalidToken);
        assert!(
            secrets()
                .verify(&header, body, NOW + 300, TOLERANCE)
                .is_ok()
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(refused(bad, body, NOW), ErrorCode::InvalidToken, "{bad}");
        }
    }

    #[test]
    fn a_header_or_body_built_to_burn_cpu_is_refused_before_any_hashing() {
        let body = br#"{"paymentNo":"P1"}"#;
        let valid = secrets().sign(NOW, body);
        let signature = valid.split_once(",v1=").unwrap().1.to_owned();
        let verify = |header: &str, body: &[u8]| secrets().verify(header, body, NOW, TOLERANCE);
        // Thousands of entries, empty ones, short ones: refused on their shape.
        let many = format!("t={NOW}{}", ",v1=".repeat(5000));
        assert_eq!(
            verify(&many, body).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            verify(&format!("t={NOW},v1="), body).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        let five = format!("t={NOW}{}", format!(",v1={}", "0".repeat(64)).repeat(5));
        assert!(
            five.len() <= HEADER_MAX_BYTES,
            "the count, not the length, refuses it"
        );
        assert_eq!(
            verify(&five, body).unwrap_err().code,
            ErrorCode::InvalidToken
        );
        // A large body is refused whatever the signature says.
        let large = vec![b' '; BODY_MAX_BYTES + 1];
        assert_eq!(
            verify(&valid, &large).unwrap_err().code,
            ErrorCode::InvalidParams
        );
        // Up to four signatures, the right one among them, still verify.
        let rotated = format!(
            "t={NOW},v1={},v1={},v1={signature}",
            "1".repeat(64),
            "2".repeat(64)
        );
        assert!(verify(&rotated, body).is_ok());
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(WebhookSecrets::parse("").is_err());
        assert!(WebhookSecrets::parse("short").is_err());
        assert!(
            WebhookSecrets::parse("long-enough-secret-0123456789abcdef,sixteen-bytes-ok").is_err()
        );
        assert!(!format!("{:?}", secrets()).contains("secret-0123"));
    }

    #[test]
    fn callback_bodies_round_trip_with_exact_amounts() {
        let notice = ProviderNotice {
            payment_no: "PAY1".into(),
            order_id: 9,
            outcome: ProviderOutcome::Failed,
            amount_cents: 1990,
            trade_no: "T9".into(),
        };
        let body = notice_body(&notice);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"paymentNo":"PAY1","orderId":9,"status":3,"amount":19.90,"tradeNo":"T9"}"#
        );
        assert_eq!(parse_notice(&body).unwrap(), notice);
    }

    #[test]
    fn malformed_bodies_are_invalid_params() {
        for bad in [
            &br#"{"paymentNo":"P","orderId":1,"status":2,"amount":19.999,"tradeNo":"T"}"#[..],
            br#"{"paymentNo":"P","orderId":1,"status":5,"amount":1,"tradeNo":"T"}"#,
            br#"{"paymentNo":"P","orderId":"1","status":2,"amount":1,"tradeNo":"T"}"#,
            br#"{"paymentNo":"P","orderId":1,"status":2,"amount":"1","tradeNo":"T"}"#,
            br#"{"paymentNo":"P","orderId":1,"status":2,"amount":-1,"tradeNo":"T"}"#,
            br#"not json"#,
        ] {
            assert_eq!(
                parse_notice(bad).unwrap_err().code,
                ErrorCode::InvalidParams,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
