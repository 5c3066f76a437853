//! What makes account data valid. No SQL and no proto here.

use letsgo_platform::errors::{AppError, AppResult};

pub const USERNAME_LENGTH: std::ops::RangeInclusive<usize> = 3..=20;
pub const PASSWORD_MIN: usize = 6;
/// Bounds the hashing work one request can ask for.
pub const PASSWORD_MAX: usize = 128;
pub const AVATAR_MAX: usize = 512;
const EMAIL_MAX: usize = 254;

/// Letters, digits, `_` and `-`, 3 to 20 of them.
pub fn check_username(username: &str) -> AppResult<()> {
    let length = username.chars().count();
    if !USERNAME_LENGTH.contains(&length) {
        return Err(AppError::invalid(format!(
            "username must be {} to {} characters",
            USERNAME_LENGTH.start(),
            USERNAME_LENGTH.end()
        )));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(AppError::invalid(
            "username may hold only letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

pub fn check_password(password: &str) -> AppResult<()> {
    let length = password.chars().count();
    if length < PASSWORD_MIN {
        return Err(AppError::invalid("password must be at least 6 characters"));
    }
    if password.len() > PASSWORD_MAX {
        return Err(AppError::invalid(format!(
            "password must be at most {PASSWORD_MAX} bytes"
        )));
    }
    Ok(())
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn check_email(email: &str) -> AppResult<()> {
    let invalid = || AppError::invalid("email is not a valid address");
    if email.len() > EMAIL_MAX || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    if local.is_empty() || domain.contains('@') {
        return Err(invalid());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|label| label.is_empty()) {
        return Err(invalid());
    }
    Ok(())
}

/// Empty (not given) or exactly 11 digits, as the original asks.
pub fn check_phone(phone: &str) -> AppResult<()> {
    if phone.is_empty() || (phone.len() == 11 && phone.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(AppError::invalid("phone must be 11 digits"))
    }
}

/// Empty, or an http(s) URL of reasonable length.
pub fn check_avatar(avatar: &str) -> AppResult<()> {
    let is_url = avatar.starts_with("https://") || avatar.starts_with("http://");
    if avatar.is_empty()
        || (is_url && avatar.len() <= AVATAR_MAX && !avatar.contains(char::is_whitespace))
    {
        Ok(())
    } else {
        Err(AppError::invalid(
            "avatar must be an http(s) URL of at most 512 characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_original_rules() {
        assert!(check_username("john").is_ok());
        assert!(check_username("a_b-c9").is_ok());
        assert!(check_username("ab").is_err());
        assert!(check_username(&"x".repeat(21)).is_err());
        assert!(check_username("john doe").is_err());
        assert!(check_username("robert'); drop").is_err());
    }

    #[test]
    fn emails_need_a_dotted_domain() {
        assert!(check_email("john@example.com").is_ok());
        assert!(check_email("john@localhost").is_err());
        assert!(check_email("@example.com").is_err());
        assert!(check_email("john@@example.com").is_err());
        assert!(check_email("jo hn@example.com").is_err());
    }

    #[test]
    fn phones_are_eleven_digits_or_absent() {
        assert!(check_phone("").is_ok());
        assert!(check_phone("13800138000").is_ok());
        assert!(check_phone("1380013800").is_err());
        assert!(check_phone("1380013800x").is_err());
    }
}
