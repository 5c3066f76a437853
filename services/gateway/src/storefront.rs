//! The web storefront at `/`: plain HTML, CSS and ES modules from `storefront/`, compiled into
//! the binary with `include_str!`, so there is no build step and nothing to deploy beside the
//! gateway. The pages call the same `/api/v1` routes as any other client.
//!
//! Every file is answered with `Cache-Control: no-cache` and an `ETag` (a browser revalidates
//! and gets a 304 until the binary changes), a strict `Content-Security-Policy` (our own scripts
//! and styles only, no inline code; images may come from https or be data URIs, for product
//! pictures and placeholders) and `X-Content-Type-Options: nosniff`.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use letsgo_platform::errors::{AppError, ErrorCode};

use crate::app::AppState;

/// What the pages may load: only this origin, except images (https and data URIs).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' https: data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../storefront/index.html"),
};

/// The files under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../storefront/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../storefront/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../storefront/dom.js"),
    },
    Asset {
        name: "styles.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../storefront/styles.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../storefront/favicon.svg"),
    },
];

/// `GET /` and `GET /assets/{file}`. Stateless; merged into the gateway's router so the same
/// middleware (request ids, metrics, rate limits) covers it.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|headers: HeaderMap| async move { serve(&INDEX, &headers) }),
        )
        .route("/assets/{file}", get(asset))
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == file) {
        Some(asset) => serve(asset, &headers),
        None => AppError::of(ErrorCode::NotFound).into_response(),
    }
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = etag(asset.body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("an etag is visible ASCII"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.body).into_response()
    }
}

/// A strong validator for an embedded file: FNV-1a over its bytes, which only changes with
/// the binary (and is the same on every replica of one build).
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        let embedded: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        for asset in ASSETS.iter().chain([&INDEX]) {
            for (index, _) in asset.body.match_indices("/assets/") {
                let rest = &asset.body[index + "/assets/".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                    .collect();
                assert!(
                    embedded.contains(&name.as_str()),
                    "{} refers to /assets/{name}, which is not embedded",
                    asset.name
                );
            }
            for line in asset.body.lines() {
                let line = line.trim_start();
                if let Some(from) = line
                    .strip_prefix("import ")
                    .and_then(|rest| rest.split(" from ").nth(1))
                {
                    let name = from.trim_matches(|c| matches!(c, '\'' | '"' | ';' | ' '));
                    let name = name.trim_start_matches("./");
                    assert!(
                        embedded.contains(&name),
                        "{} imports {name}, which is not embedded",
                        asset.name
                    );
                }
            }
        }
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
    }
}
