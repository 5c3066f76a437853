//! Money on the HTTP wire: a JSON number of yuan with at most two decimals (`99.99`), as the
//! original shows it; integer cents everywhere inside. Parsing reads the number's own digits,
//! never a float, so `0.1 + 0.2` problems cannot arise and `99.999` is refused, not rounded.

use letsgo_platform::errors::AppError;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An amount of money: cents inside, yuan on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Yuan(pub i64);

/// Most digits before the decimal point: keeps every amount far from overflow.
const WHOLE_DIGITS_MAX: usize = 12;

/// Parses a JSON number token as cents: plain notation, no sign, at most two decimals.
pub fn parse_cents(token: &str) -> Result<i64, AppError> {
    let invalid = || {
        AppError::invalid(format!(
            "{token} is not an amount: use a non-negative number with at most two decimals"
        ))
    };
    let (whole, fraction) = match token.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (token, ""),
    };
    let digits_only = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > WHOLE_DIGITS_MAX
        || !digits_only(whole)
        || !digits_only(fraction)
        || (token.contains('.') && fraction.is_empty())
    {
        return Err(invalid());
    }
    // Trailing zeros beyond the cents are harmless: 1.500 is 1.50.
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 2 {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let mut cents: i64 = fraction.parse().unwrap_or(0);
    if fraction.len() == 1 {
        cents *= 10;
    }
    Ok(whole * 100 + cents)
}

impl<'de> Deserialize<'de> for Yuan {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: &RawValue = Deserialize::deserialize(deserializer)?;
        parse_cents(raw.get())
            .map(Yuan)
            .map_err(|error| D::Error::custom(error.message))
    }
}

impl Serialize for Yuan {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Exact below 2^53 cents; the shortest float text of n/100 is n/100 in decimal.
        serializer.serialize_f64(self.0 as f64 / 100.0)
    }
}

impl utoipa::PartialSchema for Yuan {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("Yuan, with at most two decimals (99.99)"))
            .minimum(Some(0))
            .into()
    }
}

impl utoipa::ToSchema for Yuan {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly() {
        assert_eq!(parse_cents("99.99").unwrap(), 9999);
        assert_eq!(parse_cents("0.1").unwrap(), 10);
        assert_eq!(parse_cents("100").unwrap(), 10000);
        assert_eq!(parse_cents("1.500").unwrap(), 150);
        assert_eq!(parse_cents("0").unwrap(), 0);
    }

    #[test]
    fn more_decimals_signs_exponents_and_strings_are_refused() {
        for bad in [
            "99.999",
            "-1",
            "1e3",
            "\"9.99\"",
            "1.",
            ".5",
            "NaN",
            "1234567890123",
            "null",
        ] {
            assert!(parse_cents(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_travel_as_yuan_in_json() {
        let parsed: Yuan = serde_json::from_str("19.9").unwrap();
        assert_eq!(parsed, Yuan(1990));
        assert_eq!(serde_json::to_string(&Yuan(1990)).unwrap(), "19.9");
        assert_eq!(serde_json::to_string(&Yuan(7)).unwrap(), "0.07");
        assert_eq!(
            serde_json::to_string(&Yuan(123456789)).unwrap(),
            "1234567.89"
        );
    }
}
