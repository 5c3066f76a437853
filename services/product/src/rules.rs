//! What makes catalogue data valid. No SQL and no proto here.

use letsgo_platform::errors::{AppError, AppResult};

pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 5000;
pub const CATEGORY_MAX: usize = 50;
pub const IMAGES_MAX: usize = 20;
pub const IMAGE_URL_MAX: usize = 512;
pub const ATTRIBUTES_MAX_BYTES: usize = 16 * 1024;
/// 100 million yuan: far beyond any real price, far below overflow when multiplied by 999.
pub const PRICE_MAX_CENTS: i64 = 10_000_000_000;
pub const STOCK_MAX: i64 = 1_000_000_000;
pub use letsgo_platform::limits::PAGE_SIZE_MAX;
pub const COMMENT_MAX: usize = 1000;
pub const KEYWORD_MAX: usize = 100;
pub const KEYWORD_WORDS_MAX: usize = 8;

pub fn check_name(name: &str) -> AppResult<()> {
    let length = name.chars().count();
    if name.trim().is_empty() || length > NAME_MAX {
        return Err(AppError::invalid(format!(
            "name must be 1 to {NAME_MAX} characters"
        )));
    }
    Ok(())
}

pub fn check_description(description: &str) -> AppResult<()> {
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(AppError::invalid(
            "description must be at most 5000 characters",
        ));
    }
    Ok(())
}

pub fn check_price(cents: i64) -> AppResult<()> {
    if cents <= 0 || cents > PRICE_MAX_CENTS {
        return Err(AppError::invalid(
            "price must be above 0 and at most 100000000",
        ));
    }
    Ok(())
}

pub fn check_stock(stock: i64) -> AppResult<()> {
    if !(0..=STOCK_MAX).contains(&stock) {
        return Err(AppError::invalid(format!("stock must be 0 to {STOCK_MAX}")));
    }
    Ok(())
}

pub fn check_category(category: &str) -> AppResult<()> {
    let length = category.chars().count();
    if category.trim().is_empty() || length > CATEGORY_MAX {
        return Err(AppError::invalid(format!(
            "category must be 1 to {CATEGORY_MAX} characters"
        )));
    }
    Ok(())
}

pub fn check_images(images: &[String]) -> AppResult<()> {
    if images.is_empty() || images.len() > IMAGES_MAX {
        return Err(AppError::invalid(format!(
            "images must hold 1 to {IMAGES_MAX} URLs"
        )));
    }
    for image in images {
        let is_url =
            image.starts_with("https://") || image.starts_with("http://") || image.starts_with('/');
        if !is_url || image.len() > IMAGE_URL_MAX || image.contains(char::is_whitespace) {
            return Err(AppError::invalid(
                "each image must be an http(s) URL or an absolute path of at most 512 characters",
            ));
        }
    }
    Ok(())
}

/// Attributes arrive as text holding a JSON object (the original's wire form); empty means `{}`.
pub fn parse_attributes(text: &str) -> AppResult<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    if text.len() > ATTRIBUTES_MAX_BYTES {
        return Err(AppError::invalid(format!(
            "attributes must be at most {} KiB",
            ATTRIBUTES_MAX_BYTES / 1024
        )));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        _ => Err(AppError::invalid("attributes must be a JSON object")),
    }
}

/// A page request made safe: page ≥ 1 and page size ≥ 1 or it is a 1001; sizes above the
/// maximum are clamped to it. Zero means "not given" and takes the default.
pub fn page(page: i32, page_size: i32, default_size: i32) -> AppResult<(i64, i64)> {
    let page = if page == 0 { 1 } else { page };
    let page_size = if page_size == 0 {
        default_size
    } else {
        page_size
    };
    if page < 1 {
        return Err(AppError::invalid("page must be at least 1"));
    }
    if page_size < 1 {
        return Err(AppError::invalid("pageSize must be at least 1"));
    }
    let size = i64::from(page_size.min(PAGE_SIZE_MAX));
    Ok((size, (i64::from(page) - 1) * size))
}

/// Splits a search keyword into at most eight words; an empty keyword is a 1001.
pub fn keyword_words(keyword: &str) -> AppResult<Vec<String>> {
    if keyword.chars().count() > KEYWORD_MAX {
        return Err(AppError::invalid(format!(
            "keyword must be at most {KEYWORD_MAX} characters"
        )));
    }
    let words: Vec<String> = keyword
        .split_whitespace()
        .take(KEYWORD_WORDS_MAX)
        .map(str::to_owned)
        .collect();
    if words.is_empty() {
        return Err(AppError::invalid("keyword is required"));
    }
    Ok(words)
}

pub fn check_review(rating: i32, comment: &str) -> AppResult<()> {
    if !(1..=5).contains(&rating) {
        return Err(AppError::invalid("rating must be 1 to 5"));
    }
    if comment.chars().count() > COMMENT_MAX {
        return Err(AppError::invalid(format!(
            "comment must be at most {COMMENT_MAX} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_bounded_and_clamped() {
        assert_eq!(page(0, 0, 20).unwrap(), (20, 0));
        assert_eq!(page(3, 10, 20).unwrap(), (10, 20));
        assert_eq!(page(1, 1000, 20).unwrap(), (100, 0));
        assert!(page(-1, 10, 20).is_err());
        assert!(page(1, -5, 20).is_err());
    }

    #[test]
    fn attributes_must_be_an_object() {
        assert!(parse_attributes("").unwrap().is_object());
        assert!(parse_attributes(r#"{"color":"red"}"#).is_ok());
        assert!(parse_attributes("[1,2]").is_err());
        assert!(parse_attributes("\"text\"").is_err());
        assert!(parse_attributes("{not json").is_err());
    }

    #[test]
    fn keywords_split_into_words() {
        assert_eq!(
            keyword_words("  red  shoes ").unwrap(),
            vec!["red", "shoes"]
        );
        assert!(keyword_words("   ").is_err());
    }

    #[test]
    fn images_need_at_least_one_url() {
        assert!(check_images(&[]).is_err());
        assert!(check_images(&["https://img.example.com/a.png".into()]).is_ok());
        assert!(check_images(&["javascript:alert(1)".into()]).is_err());
    }
}
