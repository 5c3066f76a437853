//! What makes an order valid, and the order's states. No SQL and no proto here.

use letsgo_platform::errors::{AppError, AppResult};

pub const LINES_MAX: usize = 50;
pub const QUANTITY_MAX: i64 = 999;
pub const ADDRESS_MIN: usize = 10;
pub const ADDRESS_MAX: usize = 200;
pub const REMARK_MAX: usize = 500;
pub const PAGE_SIZE_MAX: i32 = 100;

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
        return Err(AppError::invalid("an order holds at most 50 items"));
    }
    if lines
        .iter()
        .any(|(_, quantity)| !(1..=QUANTITY_MAX).contains(quantity))
    {
        return Err(AppError::invalid("each quantity must be 1 to 999"));
    }
    Ok(())
}

pub fn check_address(address: &str) -> AppResult<()> {
    let length = address.trim().chars().count();
    if !(ADDRESS_MIN..=ADDRESS_MAX).contains(&length) {
        return Err(AppError::invalid("address must be 10 to 200 characters"));
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
        return Err(AppError::invalid("remark must be at most 500 characters"));
    }
    Ok(())
}

/// Page ≥ 1, size ≥ 1 (clamped to 100); zero means "not given".
pub fn page(page: i32, page_size: i32) -> AppResult<(i64, i64)> {
    let page = if page == 0 { 1 } else { page };
    let page_size = if page_size == 0 { 10 } else { page_size };
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
}
