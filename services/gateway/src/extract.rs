//! Request extractors whose rejections are our envelope with 400 and code 1001, never axum's
//! plain-text 400/415/422.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use letsgo_platform::errors::AppError;
use serde::de::DeserializeOwned;

/// A JSON body: malformed JSON, wrong types, missing fields or a missing content type are 1001.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(AppError::invalid(
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| AppError::invalid(rejection.body_text()))?;
        // Every body of the API is a JSON object: serde would fill a struct from an array
        // positionally (and `[]` would be an empty update), so anything else is refused.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(AppError::invalid("the body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&without_zero_fractions(&bytes)) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

/// The body with every zero fraction dropped from its numbers (`410.0` → `410`; `12.50` and
/// strings are untouched). JSON Schema, and so our OpenAPI document, counts `410.0` as the
/// integer 410, and clients that keep every number as a float send it so; serde refuses it for
/// an integer field. No value changes, amounts included. Borrows when there is nothing to drop.
fn without_zero_fractions(body: &[u8]) -> Cow<'_, [u8]> {
    let mut kept: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'.' && i > 0 && body[i - 1].is_ascii_digit() {
            // Outside strings a '.' is a number's; it goes, with its zeros, if only zeros
            // follow up to the number's end (no more digits, no exponent).
            let zeros = body[i + 1..].iter().take_while(|&&b| b == b'0').count();
            let end = i + 1 + zeros;
            let number_ends = !matches!(body.get(end), Some(b'0'..=b'9' | b'e' | b'E'));
            if zeros > 0 && number_ends {
                kept.get_or_insert_with(|| body[..i].to_vec());
                i = end;
                continue;
            }
        }
        if let Some(kept) = &mut kept {
            kept.push(byte);
        }
        i += 1;
    }
    match kept {
        Some(kept) => Cow::Owned(kept),
        None => Cow::Borrowed(body),
    }
}

/// `application/json`, or a `+json` type, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // Compared without allocating: this runs for every request with a body.
    let essence = value.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/').unwrap_or_default();
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype
                .get(subtype.len().saturating_sub(5)..)
                .is_some_and(|end| end.eq_ignore_ascii_case("+json")))
}

fn json_error(rejection: JsonRejection) -> AppError {
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with Content-Type: application/json".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => "malformed JSON".to_owned(),
        other => other.body_text(),
    };
    AppError::invalid(message)
}

/// Path parameters: a non-numeric id is 1001.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| AppError::invalid(rejection.body_text()))
    }
}

/// Query parameters: wrong types are 1001.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection: QueryRejection| AppError::invalid(rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use axum::http::header::CONTENT_TYPE;

    use super::{is_json, without_zero_fractions};

    #[test]
    fn zero_fractions_leave_numbers_and_nothing_else() {
        let of = |body: &str| {
            String::from_utf8(without_zero_fractions(body.as_bytes()).into_owned()).unwrap()
        };
        assert_eq!(
            of(r#"{"productId": 410.0, "quantity": 2.00}"#),
            r#"{"productId": 410, "quantity": 2}"#
        );
        assert_eq!(of(r#"{"a": -7.0,"b":[1.0]}"#), r#"{"a": -7,"b":[1]}"#);
        for unchanged in [
            r#"{"price": 12.50, "b": 1.05, "c": 1.0e3, "d": 0.001}"#,
            r#"{"name": "v1.0 \" 2.0", "n": 3}"#,
            r#"{"attributes": "{\"size\": 1.0}"}"#,
        ] {
            assert_eq!(of(unchanged), unchanged);
        }
        assert!(matches!(
            without_zero_fractions(b"{\"a\": 1}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_content_types_are_recognised_with_any_case_and_parameters() {
        let of = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(of(yes), "{yes}");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "json",
        ] {
            assert!(!of(no), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
