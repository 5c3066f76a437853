//! Per-client rate limiting with governor's keyed GCRA limiter: a signed-in user is limited as
//! themselves wherever they connect from; anyone else by their address (see
//! [`client_address`](crate::client_address): behind trusted proxies, the forwarded one; an
//! IPv6 client by its /64).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use letsgo_platform::errors::AppError;

use crate::auth::Authentication;
use crate::client_address::ClientAddress;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    User(i64),
    Address(IpAddr),
    Unknown,
}

/// The limiter shared by every request of the process.
#[derive(Clone)]
pub struct ClientRateLimit {
    limiter: Arc<DefaultKeyedRateLimiter<ClientKey>>,
}

impl ClientRateLimit {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        ClientRateLimit {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// Forgets clients that have been quiet long enough to be back at a full burst, so the
    /// table does not grow with every address ever seen.
    pub fn spawn_pruning(&self, every: Duration) {
        let limiter = Arc::downgrade(&self.limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(limiter) = limiter.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// The payment provider's webhook, which the limiter lets through.
pub const CALLBACK_PATH: &str = "/api/v1/payment/callback";

/// Middleware: answers 429 with code 1006 and `Retry-After` when the client is over its quota.
pub async fn limit(State(limit): State<ClientRateLimit>, request: Request, next: Next) -> Response {
    // The payment provider's callbacks are not a client's traffic: they all come from the
    // provider's few addresses, and refusing one leaves a paid order pending. The route costs
    // microseconds however it is abused (a 4 KiB body, a bounded signature check).
    if request.uri().path() == CALLBACK_PATH {
        return next.run(request).await;
    }
    let key = match request
        .extensions()
        .get::<Authentication>()
        .and_then(Authentication::caller)
    {
        Some(caller) => ClientKey::User(caller.user_id),
        None => match request.extensions().get::<ClientAddress>() {
            Some(address) => ClientKey::Address(address.limit_key()),
            None => ClientKey::Unknown,
        },
    };
    match limit.limiter.check_key(&key) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            AppError::too_many_requests(seconds).into_response()
        }
    }
}
