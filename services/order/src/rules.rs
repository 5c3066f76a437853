//! What makes an order valid, and the order's states. No SQL and no proto here.

use letsgo_platform::errors::{AppError, AppResult};

pub const LINES_MAX: usize = 50;
pub use letsgo_platform::limits::{ORDER_PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, QUANTITY_MAX};
pub const ADDRESS_MIN: usize = 10;
pub const ADDRESS_MAX: usize = 200;
pub const REMARK_MAX: usize = 500;
pub const CARRIER_MAX: usize = 50;
pub const TRACKING_NO_MAX: usize = 64;
pub const KEYWORD_MAX: usize = 100;

/// The original's order states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending = 1,
    Paid = 2,
    Shipped = 3,
    Completed = 4,
    Cancelled = 5,
}

impl OrderStatus {
    pub fn from_i16(value: i16) -> Option<OrderStatus> {
        match value {
            1 => Some(OrderStatus::Pending),
            2 => Some(OrderStatus::Paid),
            3 => Some(OrderStatus::Shipped),
            4 => Some(OrderStatus::Completed),
            5 => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }
}

pub fn check_lines(lines: &[(i64, i64)]) -> AppResult<()> {
    if lines.is_empty() {
        return Err(AppError::invalid("an order needs at least one item"));
    }
    if lines.len() > LINES_MAX {
        return Err(AppError::invalid(format!(
            "an order holds at most {LINES_MAX} items"
        )));
    }
    if lines
        .iter()
        .any(|(_, quantity)| !(1..=QUANTITY_MAX).contains(quantity))
    {
        return Err(AppError::invalid(format!(
            "each quantity must be 1 to {QUANTITY_MAX}"
        )));
    }
    Ok(())
}

pub fn check_address(address: &str) -> AppResult<()> {
    let length = address.trim().chars().count();
    if !(ADDRESS_MIN..=ADDRESS_MAX).contains(&length) {
        return Err(AppError::invalid(format!(
            "address must be {ADDRESS_MIN} to {ADDRESS_MAX} characters"
        )));
    }
    Ok(())
}

pub fn check_phone(phone: &str) -> AppResult<()> {
    if phone.len() == 11 && phone.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(AppError::invalid("phone must be 11 digits"))
    }
}

pub fn check_remark(remark: &str) -> AppResult<()> {
    if remark.chars().count() > REMARK_MAX {
        return Err(AppError::invalid(format!(
            "remark must be at most {REMARK_MAX} characters"
        )));
    }
    Ok(())
}

/// Characters a shipment's text may not hold: control characters (a NUL, a newline, an
/// escape), and the invisible ones that reorder or hide text on screen (bidirectional
/// overrides and isolates, zero-width characters, line and paragraph separators), which would
/// let one tracking number pass for another in the admin's list or on the buyer's page.
fn is_hidden_or_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

fn check_shipment_text(value: &str, what: &str, max: usize) -> AppResult<String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(AppError::invalid(format!(
            "{what} must be 1 to {max} characters"
        )));
    }
    if value.chars().any(is_hidden_or_control) {
        return Err(AppError::invalid(format!(
            "{what} must not hold control or invisible characters"
        )));
    }
    Ok(value.to_owned())
}

/// Who carries the order and its tracking number, trimmed; 1001 when either is empty, too long
/// or holds control or invisible characters.
pub fn shipment(carrier: &str, tracking_no: &str) -> AppResult<(String, String)> {
    Ok((
        check_shipment_text(carrier, "carrier", CARRIER_MAX)?,
        check_shipment_text(tracking_no, "trackingNo", TRACKING_NO_MAX)?,
    ))
}

/// The admins' search keyword, trimmed; empty means every order.
pub fn keyword(keyword: &str) -> AppResult<String> {
    let keyword = keyword.trim();
    if keyword.chars().count() > KEYWORD_MAX {
        return Err(AppError::invalid(format!(
            "keyword must be at most {KEYWORD_MAX} characters"
        )));
    }
    if keyword.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "keyword must not hold control characters",
        ));
    }
    Ok(keyword.to_owned())
}

/// A status filter: 0 for all, else one of the five.
pub fn status_filter(status: i32) -> AppResult<Option<i16>> {
    match status {
        0 => Ok(None),
        1..=5 => Ok(Some(status as i16)),
        _ => Err(AppError::invalid("status must be 0 (all) or 1 to 5")),
    }
}

/// Page ≥ 1, size ≥ 1 (clamped to PAGE_SIZE_MAX); zero means "not given".
pub fn page(page: i32, page_size: i32) -> AppResult<(i64, i64)> {
    let page = if page == 0 { 1 } else { page };
    let page_size = if page_size == 0 {
        ORDER_PAGE_SIZE_DEFAULT
    } else {
        page_size
    };
    if page < 1 || page_size < 1 {
        return Err(AppError::invalid("page and pageSize must be at least 1"));
    }
    let size = i64::from(page_size.min(PAGE_SIZE_MAX));
    Ok((size, (i64::from(page) - 1) * size))
}

/// A unique, human-readable order number: the date and time, then the order id.
pub fn order_no(order_id: i64, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("LG{}{:08}", now.format("%Y%m%d%H%M%S"), order_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_unique_per_id_and_readable() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(order_no(42, now), "LG2026112510300000000042");
        assert_ne!(order_no(1, now), order_no(2, now));
    }

    #[test]
    fn items_addresses_and_phones_follow_the_rules() {
        assert!(check_lines(&[]).is_err());
        assert!(check_lines(&[(1, 0)]).is_err());
        assert!(check_lines(&[(1, 1000)]).is_err());
        assert!(check_lines(&[(1, 2), (2, 999)]).is_ok());
        assert!(check_address("short").is_err());
        assert!(check_address("1 Long Street, Springfield").is_ok());
        assert!(check_phone("13800138000").is_ok());
        assert!(check_phone("138001380").is_err());
    }

    #[test]
    fn shipments_are_trimmed_bounded_and_free_of_hidden_characters() {
        assert_eq!(
            shipment("  SF Express ", " SF1234567890 ").unwrap(),
            ("SF Express".to_owned(), "SF1234567890".to_owned())
        );
        assert_eq!(
            shipment("顺丰速运", "SF 1234 5678").unwrap().0,
            "顺丰速运",
            "any script, and spaces inside"
        );
        assert!(shipment(&"快".repeat(50), &"9".repeat(64)).is_ok());
        for (carrier, tracking_no) in [
            ("", "SF1"),
            ("SF", "   "),
            (&*"x".repeat(51), "SF1"),
            ("SF", &*"9".repeat(65)),
            ("SF\u{0}", "SF1"),
            ("SF", "SF1\nSF2"),
            ("SF", "SF1\u{1b}[2J"),
            ("SF", "SF\u{202E}1"),
            ("S\u{200B}F", "SF1"),
            ("SF", "SF\u{85}1"),
        ] {
            let error = shipment(carrier, tracking_no).unwrap_err();
            assert_eq!(
                error.code,
                letsgo_platform::errors::ErrorCode::InvalidParams,
                "{carrier:?} {tracking_no:?}"
            );
        }
    }

    #[test]
    fn keywords_and_status_filters_follow_the_rules() {
        assert_eq!(keyword("  LG2026 ").unwrap(), "LG2026");
        assert!(keyword(&"x".repeat(101)).is_err());
        assert!(keyword("a\u{0}b").is_err());
        assert_eq!(status_filter(0).unwrap(), None);
        assert_eq!(status_filter(3).unwrap(), Some(3));
        assert!(status_filter(6).is_err());
        assert!(status_filter(-1).is_err());
    }
}
