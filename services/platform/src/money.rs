//! Money as the HTTP API writes it: yuan as a JSON number with at most two decimals (`99.99`).
//! Inside, every amount is integer cents. Parsing reads the number's own digits, never a float,
//! so `99.999` is refused rather than rounded and `0.1 + 0.2` problems cannot arise.

use crate::errors::AppError;

/// Most digits before the decimal point: keeps every amount far from overflow.
const WHOLE_DIGITS_MAX: usize = 12;

/// Parses a JSON number token as cents: plain notation, no sign, at most two decimals
/// (trailing zeros beyond them are fine: `1.500` is 150 cents).
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

/// Cents as the JSON number of yuan. Exact below 2^53 cents: the shortest text of the float
/// nearest n/100 is n/100 written in decimal.
pub fn yuan(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// Cents as the text of a JSON number of yuan with two decimals (`19.90`), for bodies that are
/// signed and so must be written exactly, such as the payment provider's callbacks.
pub fn yuan_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

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
    fn yuan_text_has_two_decimals_and_parses_back() {
        assert_eq!(yuan_text(1990), "19.90");
        assert_eq!(yuan_text(7), "0.07");
        assert_eq!(parse_cents(&yuan_text(123456789)).unwrap(), 123456789);
    }

    #[test]
    fn cents_print_as_yuan() {
        assert_eq!(serde_json::to_string(&yuan(1990)).unwrap(), "19.9");
        assert_eq!(serde_json::to_string(&yuan(7)).unwrap(), "0.07");
        assert_eq!(
            serde_json::to_string(&yuan(123456789)).unwrap(),
            "1234567.89"
        );
    }
}
