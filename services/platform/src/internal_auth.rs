//! Who may call a service: every internal gRPC call carries the shop's internal token (one per
//! Store, from its Secret), and a service answers UNAUTHENTICATED to a call without it, so a Pod
//! that is not part of the shop cannot read orders or change prices even where no
//! NetworkPolicy is enforced. Health checks stay open; they tell nothing.
//!
//! Without `INTERNAL_TOKEN` (a developer's machine, the tests' in-process shops) calls are not
//! checked; the operator always sets one.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};
use clap::Args;
use subtle::ConstantTimeEq;
use tonic::body::Body;

use crate::config::{HMAC_KEY_MIN_BYTES, Secret, SecretParser};

/// The metadata key the token travels in.
pub const TOKEN_HEADER: &str = "letsgo-internal-token";

/// Calls that need no token: the standard health service.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

#[derive(Debug, Clone, Args)]
pub struct InternalAuthArgs {
    /// Shared secret of the shop's internal gRPC calls (at least 32 bytes): sent with every
    /// call and required of every caller. Unset: calls are not checked.
    #[arg(
        long = "internal-token",
        env = "INTERNAL_TOKEN",
        value_name = "INTERNAL_TOKEN",
        hide_env_values = true,
        value_parser = SecretParser(check_token)
    )]
    pub internal_token: Option<Secret>,
}

fn check_token(text: &str) -> Result<(), String> {
    if text.len() < HMAC_KEY_MIN_BYTES || HeaderValue::from_str(text).is_err() {
        return Err(format!(
            "must be at least {HMAC_KEY_MIN_BYTES} visible ASCII characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// The token, when the shop has one: what clients send and servers require.
#[derive(Clone, Default)]
pub struct InternalAuth(Option<Arc<HeaderValue>>);

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "InternalAuth(<redacted>)"
        } else {
            "InternalAuth(off)"
        })
    }
}

impl InternalAuth {
    pub fn from_args(args: &InternalAuthArgs) -> Self {
        InternalAuth(args.internal_token.as_ref().map(|token| {
            let mut value = HeaderValue::from_str(token.expose()).expect("checked when parsed");
            value.set_sensitive(true);
            Arc::new(value)
        }))
    }

    /// Adds the token to an outgoing call's headers.
    pub fn stamp(&self, headers: &mut axum::http::HeaderMap) {
        if let Some(token) = &self.0 {
            headers.insert(TOKEN_HEADER, (**token).clone());
        }
    }

    /// A layer that refuses calls without the token (none when there is no token).
    pub fn require(&self) -> RequireTokenLayer {
        RequireTokenLayer(self.0.clone())
    }
}

/// Compares in constant time (`subtle`, whose optimisation barrier keeps the compiler from
/// turning the comparison back into one that stops at the first difference), so timing does
/// not tell how much of a guess was right. Only the length may show, and it is no secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[derive(Clone)]
pub struct RequireTokenLayer(Option<Arc<HeaderValue>>);

impl<S> tower::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireToken<S> {
    inner: S,
    token: Option<Arc<HeaderValue>>,
}

impl<S, ReqBody> tower::Service<Request<ReqBody>> for RequireToken<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let allowed = match &self.token {
            None => true,
            Some(token) => {
                request.uri().path().starts_with(OPEN_PREFIX)
                    || request
                        .headers()
                        .get(TOKEN_HEADER)
                        .is_some_and(|sent| same(sent.as_bytes(), token.as_bytes()))
            }
        };
        if allowed {
            let future = self.inner.call(request);
            Box::pin(future)
        } else {
            Box::pin(async {
                Ok(tonic::Status::unauthenticated(
                    "this call needs the shop's internal token (INTERNAL_TOKEN)",
                )
                .into_http())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_print_redacted() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        let args = InternalAuthArgs {
            internal_token: Some(Secret::new("0123456789abcdef0123456789abcdef")),
        };
        assert!(!format!("{args:?}").contains("0123456789"));
        assert!(!format!("{:?}", InternalAuth::from_args(&args)).contains("0123456789"));
        assert!(check_token("short").is_err());
        assert!(check_token("with a\nnewline 0123456789abcdef0123456789").is_err());
        assert!(check_token("0123456789abcdef0123456789abcdef").is_ok());
    }
}
