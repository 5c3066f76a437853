//! What makes account data valid. No SQL and no proto here.

use letsgo_platform::errors::{AppError, AppResult};
pub use letsgo_platform::limits::{
    AVATAR_URL_MAX_CHARS, EMAIL_MAX_CHARS, PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS as PASSWORD_MIN,
    PHONE_DIGITS, USERNAME_MAX_CHARS, USERNAME_MIN_CHARS, USERNAME_STORED_MAX_CHARS,
};

/// A new username: letters, digits, `_` and `-`, 3 to 20 of them. Only registration (and the
/// initial admin's setting) asks this; existing accounts keep the names they have.
pub fn check_username(username: &str) -> AppResult<()> {
    let length = username.chars().count();
    if !(USERNAME_MIN_CHARS..=USERNAME_MAX_CHARS).contains(&length) {
        return Err(AppError::invalid(format!(
            "username must be {USERNAME_MIN_CHARS} to {USERNAME_MAX_CHARS} characters"
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

/// A name to sign in with: no account has a longer one (see [`USERNAME_STORED_MAX_CHARS`]), so
/// a longer one is refused before any lookup or hashing. Nothing else is asked of it: the
/// original's accounts may have names our registration would refuse.
pub fn check_sign_in_name(username: &str) -> AppResult<()> {
    let length = username.chars().count();
    if length == 0 || length > USERNAME_STORED_MAX_CHARS {
        return Err(AppError::invalid(format!(
            "username must be 1 to {USERNAME_STORED_MAX_CHARS} characters"
        )));
    }
    Ok(())
}

pub fn check_password(password: &str) -> AppResult<()> {
    let length = password.chars().count();
    if length < PASSWORD_MIN {
        return Err(AppError::invalid(format!(
            "password must be at least {PASSWORD_MIN} characters"
        )));
    }
    if length > PASSWORD_MAX_CHARS {
        return Err(AppError::invalid(format!(
            "password must be at most {PASSWORD_MAX_CHARS} characters"
        )));
    }
    Ok(())
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn check_email(email: &str) -> AppResult<()> {
    let invalid = || AppError::invalid("email is not a valid address");
    if email.chars().count() > EMAIL_MAX_CHARS
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
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
    if phone.is_empty()
        || (phone.len() == PHONE_DIGITS && phone.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(AppError::invalid(format!(
            "phone must be {PHONE_DIGITS} digits"
        )))
    }
}

/// Empty, or an http(s) URL of reasonable length without white space.
pub fn check_avatar(avatar: &str) -> AppResult<()> {
    let is_url = avatar.starts_with("https://") || avatar.starts_with("http://");
    if avatar.is_empty()
        || (is_url
            && avatar.chars().count() <= AVATAR_URL_MAX_CHARS
            && !avatar.contains(char::is_whitespace))
    {
        Ok(())
    } else {
        Err(AppError::invalid(format!(
            "avatar must be an http(s) URL of at most {AVATAR_URL_MAX_CHARS} characters"
        )))
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
    fn sign_in_takes_the_longer_names_the_original_stored() {
        assert!(check_sign_in_name("paymenttest_1733300000").is_ok());
        assert!(check_sign_in_name(&"x".repeat(USERNAME_STORED_MAX_CHARS)).is_ok());
        assert!(check_sign_in_name(&"x".repeat(USERNAME_STORED_MAX_CHARS + 1)).is_err());
        assert!(check_sign_in_name("").is_err());
    }

    #[test]
    fn passwords_are_counted_in_characters() {
        assert!(check_password("secret").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password(&"é".repeat(PASSWORD_MAX_CHARS)).is_ok());
        assert!(check_password(&"x".repeat(PASSWORD_MAX_CHARS + 1)).is_err());
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
