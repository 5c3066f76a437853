//! [`RpcChannel`]: the transport every gRPC client of ours uses. It follows a service's
//! endpoint set, balances across it (power of two choices on in-flight requests), keeps a
//! [`Breaker`] per endpoint, retries within a budget, and fails fast with UNAVAILABLE when no
//! endpoint can take the call, instead of waiting for a connection timeout.
//!
//! Retries go to another endpoint and happen only when they are safe: always when the request
//! never reached a server (its connection was refused or timed out, or it was shed by the
//! server's load limit), and for any failure when the method is idempotent (reads, and the
//! calls keyed by an order id). A request no server has seen may go back to an endpoint that
//! failed it when no other is left: a lost connection attempt to the only replica is not an
//! outage.
//!
//! A read whose answer has not begun after a while (`RPC_HEDGE_AFTER_MS`, 1 s) is also sent
//! again, to another warm endpoint or on a new stream to the only one, within a budget of its
//! own; the first answer is used and the other attempt cancelled. One read held up on its
//! server is then answered by its twin instead of failing at its deadline. Writes are never
//! sent twice at once, keyed or not.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::ServiceExt;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;

use super::ServiceName;
use super::breaker::{Breaker, Outcome};
use crate::internal_auth::InternalAuth;
use crate::traces;

pub use crate::BoxError;

/// Most attempts one call makes (the first and two retries; a hedged read's twin counts as one).
const ATTEMPTS_MAX: usize = 3;

/// How long a retry that only endpoints which already failed it could take waits before
/// going back to one of them.
const AGAIN_PAUSE: Duration = Duration::from_millis(200);

struct EndpointHandle {
    uri: Uri,
    channel: Channel,
    breaker: Breaker,
    in_flight: AtomicUsize,
    /// Whether the endpoint has answered anything yet. An endpoint that joins a set is sent
    /// callers' calls only once it has (a health check, sent as soon as it joins, asks), unless
    /// no endpoint has: a Pod that has just turned ready may not answer for a moment (on the
    /// real node, calls sent to an autoscaler's new Pods as they joined failed after 3 s), and
    /// a caller's request should not be what finds out.
    warm: AtomicBool,
}

/// How long one warm-up health check may take, the pause between two, and how long a new
/// endpoint is kept out of the rotation at most (past it, its breaker alone judges it).
const WARM_UP_CHECK: Duration = Duration::from_millis(1_000);
const WARM_UP_PAUSE: Duration = Duration::from_millis(100);
const WARM_UP_MAX: Duration = Duration::from_secs(10);

/// Asks a new endpoint's health until it answers (any answer from its server will do: it is
/// there and taking calls), then lets callers' calls reach it.
async fn warm_up(endpoint: Weak<EndpointHandle>) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let started = tokio::time::Instant::now();
    loop {
        let Some(handle) = endpoint.upgrade() else {
            return;
        };
        if handle.warm.load(Ordering::Relaxed) {
            return;
        }
        let mut health = HealthClient::new(handle.channel.clone());
        let check = health.check(HealthCheckRequest {
            service: String::new(),
        });
        let answered = match tokio::time::timeout(WARM_UP_CHECK, check).await {
            Ok(Ok(_)) => true,
            // A status its server sent (not one made up for a transport failure).
            Ok(Err(status)) => !matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
            ),
            Err(_) => false,
        };
        if answered || started.elapsed() >= WARM_UP_MAX {
            handle.warm.store(true, Ordering::Relaxed);
            return;
        }
        drop(handle);
        tokio::time::sleep(WARM_UP_PAUSE).await;
    }
}

struct Shared {
    service: ServiceName,
    /// Stamped on every call: the receiving service checks it.
    auth: InternalAuth,
    endpoints: RwLock<Vec<Arc<EndpointHandle>>>,
    budget: TpsBudget,
    /// Becomes true once the source has answered (etcd and DNS answer after a round trip):
    /// until then an empty set means "not known yet", not "nobody there".
    resolved: watch::Sender<bool>,
    /// When a read still unanswered is sent a second time; `None`: never.
    hedge_after: Option<Duration>,
    /// Twins of slow reads: their own budget, so a slow service spends it and not the one
    /// retries after failures need.
    hedge_budget: TpsBudget,
    /// Each attempt's deadline; a hedged pair ends by its first attempt's.
    call_timeout: Duration,
}

/// Longest a call waits for a source's first answer before failing as if the set were empty.
const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A balanced, self-healing channel to one service. Cheap to clone.
#[derive(Clone)]
pub struct RpcChannel {
    shared: Arc<Shared>,
}

/// Methods that only read: they may run twice at once.
pub fn is_read(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    [
        "Get", "List", "Search", "BatchGet", "Query", "Check", "Watch",
    ]
    .iter()
    .any(|prefix| method.starts_with(prefix))
}

/// Methods safe to repeat: reads, and the calls that are idempotent by their key.
pub fn is_idempotent(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    is_read(path)
        || matches!(
            method,
            "ReserveStock"
                | "ReleaseStock"
                | "RecordSales"
                | "CommitReservations"
                | "RecordSalesOfOrders"
                | "ReleaseReservations"
                | "RemoveProducts"
                | "RemoveProductsOfCarts"
                | "ClearCart"
        )
}

impl RpcChannel {
    /// Follows `addresses` for `service`; connections are made lazily, per endpoint.
    pub fn follow(
        service: ServiceName,
        mut addresses: watch::Receiver<Vec<Uri>>,
        connect_timeout: Duration,
        call_timeout: Duration,
        hedge_after: Option<Duration>,
        auth: InternalAuth,
    ) -> RpcChannel {
        let shared = Arc::new(Shared {
            service,
            auth,
            endpoints: RwLock::new(Vec::new()),
            // Retries may add at most 20% to the traffic, with a floor of 10 a second.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            resolved: watch::Sender::new(false),
            hedge_after,
            // At most 10% of the reads, with a floor of one a second.
            hedge_budget: TpsBudget::new(Duration::from_secs(10), 1, 0.1),
            call_timeout,
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let wanted = addresses.borrow_and_update().clone();
                let Some(shared) = weak.upgrade() else { return };
                shared.replace_endpoints(&wanted, connect_timeout, call_timeout);
                // A source that starts empty has not answered yet; any later update is an answer.
                if !first || !wanted.is_empty() {
                    shared.resolved.send_replace(true);
                }
                first = false;
                drop(shared);
                if addresses.changed().await.is_err() {
                    return;
                }
            }
        });
        RpcChannel { shared }
    }

    /// The addresses currently in use.
    pub fn endpoints(&self) -> Vec<Uri> {
        self.shared
            .endpoints
            .read()
            .expect("endpoints lock")
            .iter()
            .map(|endpoint| endpoint.uri.clone())
            .collect()
    }
}

impl Shared {
    fn replace_endpoints(&self, wanted: &[Uri], connect_timeout: Duration, call_timeout: Duration) {
        let mut endpoints = self.endpoints.write().expect("endpoints lock");
        let mut kept: HashMap<Uri, Arc<EndpointHandle>> = endpoints
            .drain(..)
            .map(|endpoint| (endpoint.uri.clone(), endpoint))
            .collect();
        for uri in wanted {
            let endpoint = kept.remove(uri).unwrap_or_else(|| {
                let channel = Endpoint::from(uri.clone())
                    .connect_timeout(connect_timeout)
                    .timeout(call_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy();
                let endpoint = Arc::new(EndpointHandle {
                    uri: uri.clone(),
                    channel,
                    breaker: Breaker::default(),
                    in_flight: AtomicUsize::new(0),
                    warm: AtomicBool::new(false),
                });
                tokio::spawn(warm_up(Arc::downgrade(&endpoint)));
                endpoint
            });
            endpoints.push(endpoint);
        }
        tracing::debug!(
            service = self.service.as_str(),
            endpoints = endpoints.len(),
            "endpoint set changed"
        );
    }

    /// Power of two choices among endpoints not yet tried and not ejected, on in-flight count;
    /// among the warm ones when there are any. When the breaker of the endpoint chosen turns
    /// the call away, the other of the two is asked, then the rest: a throttled endpoint
    /// sends the call elsewhere, and fails it only when no endpoint will take it.
    fn pick(&self, tried: &[Uri]) -> Option<Arc<EndpointHandle>> {
        let endpoints = self.endpoints.read().expect("endpoints lock");
        let mut candidates: Vec<&Arc<EndpointHandle>> = endpoints
            .iter()
            .filter(|endpoint| !tried.contains(&endpoint.uri) && !endpoint.breaker.is_ejected())
            .collect();
        if candidates
            .iter()
            .any(|endpoint| endpoint.warm.load(Ordering::Relaxed))
        {
            candidates.retain(|endpoint| endpoint.warm.load(Ordering::Relaxed));
        }
        if candidates.is_empty() {
            // Everything is ejected: probe whichever ejection ends first, if any has.
            return endpoints
                .iter()
                .filter(|endpoint| !tried.contains(&endpoint.uri))
                .find(|endpoint| endpoint.breaker.allows(fastrand::f64()))
                .cloned();
        }
        // The first two of a shuffle are the two random choices; the less busy goes first.
        fastrand::shuffle(&mut candidates);
        if candidates.len() >= 2
            && candidates[1].in_flight.load(Ordering::Relaxed)
                < candidates[0].in_flight.load(Ordering::Relaxed)
        {
            candidates.swap(0, 1);
        }
        candidates
            .into_iter()
            .find(|endpoint| endpoint.breaker.allows(fastrand::f64()))
            .cloned()
    }

    /// For a retry [`pick`](Shared::pick) found no endpoint for: one not tried yet whatever its
    /// breaker says (the call fails otherwise, and a probe costs one attempt), the least busy
    /// first. With `again`, one already tried qualifies too unless it is ejected: a call no
    /// server has seen (its connection attempt timed out) may go back to the only endpoint
    /// there is, as a lost SYN leaves it. One that refused the connection is not asked again
    /// so soon (nothing listens there; each refusal would lengthen its ejection).
    fn last_resort(&self, tried: &[Uri], again: bool) -> Option<Arc<EndpointHandle>> {
        let endpoints = self.endpoints.read().expect("endpoints lock");
        let least_busy = |endpoints: &mut dyn Iterator<Item = &Arc<EndpointHandle>>| {
            endpoints
                .min_by_key(|endpoint| endpoint.in_flight.load(Ordering::Relaxed))
                .cloned()
        };
        least_busy(
            &mut endpoints
                .iter()
                .filter(|endpoint| !tried.contains(&endpoint.uri)),
        )
        .or_else(|| {
            if again {
                least_busy(
                    &mut endpoints
                        .iter()
                        .filter(|endpoint| !endpoint.breaker.is_ejected()),
                )
            } else {
                None
            }
        })
    }

    /// Why a call found no endpoint, for the log: each endpoint and what its breaker says.
    fn describe_endpoints(&self) -> String {
        let endpoints = self.endpoints.read().expect("endpoints lock");
        if endpoints.is_empty() {
            return "none known".to_owned();
        }
        endpoints
            .iter()
            .map(|endpoint| {
                format!(
                    "{} ({}{}, {} in flight)",
                    endpoint.uri,
                    if endpoint.breaker.is_ejected() {
                        "ejected"
                    } else {
                        "in rotation"
                    },
                    if endpoint.warm.load(Ordering::Relaxed) {
                        ""
                    } else {
                        ", warming up"
                    },
                    endpoint.in_flight.load(Ordering::Relaxed)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn dispatch(self: Arc<Self>, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let idempotent = is_idempotent(request.uri().path());
        let hedge_after = self.hedge_after.filter(|_| is_read(request.uri().path()));
        let (mut parts, body) = request.into_parts();
        self.auth.stamp(&mut parts.headers);
        // Unary request bodies are small; keeping them makes a retry possible.
        let bytes: Bytes = body.collect().await?.to_bytes();
        self.budget.deposit();
        if hedge_after.is_some() {
            self.hedge_budget.deposit();
        }
        let mut tried: Vec<Uri> = Vec::new();
        let mut attempts = 0;
        // The last attempt's result, and whether no server saw it.
        let mut last: Option<(Result<Response<Body>, tonic::transport::Error>, bool)> = None;
        loop {
            let mut picked = self.pick(&tried);
            if picked.is_none() && tried.is_empty() && !*self.resolved.borrow() {
                // Just started: give the source a moment to answer before failing.
                let mut resolved = self.resolved.subscribe();
                let _ =
                    tokio::time::timeout(FIRST_ANSWER_WAIT, resolved.wait_for(|done| *done)).await;
                picked = self.pick(&tried);
            }
            if picked.is_none()
                && let Some((_, never_processed)) = &last
            {
                let never_processed = *never_processed;
                picked = self.last_resort(&tried, false);
                if picked.is_none() && never_processed {
                    // Only endpoints that already failed it: a moment for the set to change
                    // (a replaced Pod's successor joining), then the best there is.
                    tokio::time::sleep(AGAIN_PAUSE).await;
                    picked = self.pick(&tried).or_else(|| self.last_resort(&tried, true));
                }
            }
            let Some(endpoint) = picked else {
                tracing::warn!(
                    service = self.service.as_str(),
                    path = parts.uri.path(),
                    attempts,
                    endpoints = self.describe_endpoints(),
                    "no endpoint can take the call"
                );
                return match last {
                    Some((result, _)) => result.map_err(Into::into),
                    None => Err(Box::new(tonic::Status::unavailable(format!(
                        "no {} endpoint can take the call",
                        self.service.as_str()
                    )))),
                };
            };
            let request = || {
                let mut attempt = Request::new(Body::new(Full::new(bytes.clone())));
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                attempt
            };
            let (
                Attempt {
                    result,
                    outcome,
                    never_processed,
                },
                used,
                made,
            ) = match hedge_after {
                // Only a first attempt is hedged: a retry already went elsewhere.
                Some(after) if attempts == 0 => self.hedged(endpoint, after, request).await,
                _ => (
                    Attempt::make(&endpoint, request()).await,
                    vec![endpoint.uri.clone()],
                    1,
                ),
            };
            for uri in used {
                if !tried.contains(&uri) {
                    tried.push(uri);
                }
            }
            attempts += made;
            let retry = outcome != Outcome::Answered
                && (never_processed || idempotent)
                && attempts < ATTEMPTS_MAX
                && self.budget.withdraw();
            if !retry {
                return result.map_err(Into::into);
            }
            tracing::debug!(
                service = self.service.as_str(),
                after = ?tried.last(),
                "retrying"
            );
            last = Some((result, never_processed));
        }
    }
}

/// One attempt's result, how it went, and whether the server surely never processed it.
struct Attempt {
    result: Result<Response<Body>, tonic::transport::Error>,
    outcome: Outcome,
    never_processed: bool,
}

impl Attempt {
    /// Sends `request` to `endpoint`: counted in flight from now on (not from the first poll:
    /// a twin dropped before it was polled still gives back the probe its breaker let through),
    /// and settled even when the future is dropped mid-call.
    fn make(
        endpoint: &EndpointHandle,
        request: Request<Body>,
    ) -> impl std::future::Future<Output = Attempt> + '_ {
        let call = InFlight::start(endpoint);
        let channel = endpoint.channel.clone();
        async move {
            let result = channel.oneshot(request).await;
            let (outcome, never_processed) = classify(&result);
            call.settle(outcome);
            Attempt {
                result,
                outcome,
                never_processed,
            }
        }
    }
}

impl Shared {
    /// A read's first attempt on `endpoint`; past `after` without a response, its twin too, on
    /// another endpoint or on a new stream to the same one, if the hedge budget allows. The
    /// first answer wins and the other attempt is dropped (cancelled on its server); a failure
    /// waits for the other's result, until the first attempt's deadline. Also says which
    /// endpoints were used and how many attempts were made.
    async fn hedged(
        &self,
        endpoint: Arc<EndpointHandle>,
        after: Duration,
        request: impl Fn() -> Request<Body>,
    ) -> (Attempt, Vec<Uri>, usize) {
        let mut used = vec![endpoint.uri.clone()];
        let deadline = tokio::time::Instant::now() + self.call_timeout;
        let first = Attempt::make(&endpoint, request());
        tokio::pin!(first);
        tokio::select! {
            done = &mut first => return (done, used, 1),
            () = tokio::time::sleep(after) => {}
        }
        // The budget before the endpoint: one picked and then not used would keep the probe
        // its breaker let through.
        if !self.hedge_budget.withdraw() {
            return (first.await, used, 1);
        }
        // Another endpoint only if it has answered before: a caller's read should not be what
        // finds out whether a new one works (the probe a cold one took is given back).
        let other = self.pick(&used).filter(|other| {
            let warm = other.warm.load(Ordering::Relaxed);
            if !warm {
                other.breaker.abandon();
            }
            warm
        });
        let twin_endpoint = other.or_else(|| {
            // The only endpoint: a new stream to it, if it has answered before (one still
            // connecting would only queue the twin behind the same connection) and its breaker
            // lets the call through.
            (endpoint.warm.load(Ordering::Relaxed)
                && !endpoint.breaker.is_ejected()
                && endpoint.breaker.allows(fastrand::f64()))
            .then(|| endpoint.clone())
        });
        let Some(twin_endpoint) = twin_endpoint else {
            return (first.await, used, 1);
        };
        tracing::debug!(
            service = self.service.as_str(),
            endpoint = %twin_endpoint.uri,
            "a read unanswered for {after:?} is sent again"
        );
        if twin_endpoint.uri != endpoint.uri {
            used.push(twin_endpoint.uri.clone());
        }
        let twin = Attempt::make(&twin_endpoint, request());
        tokio::pin!(twin);
        let done = tokio::select! {
            done = &mut first => match done.outcome {
                Outcome::Answered => done,
                _ => tokio::time::timeout_at(deadline, &mut twin).await.unwrap_or(done),
            },
            done = &mut twin => match done.outcome {
                Outcome::Answered => done,
                _ => first.await,
            },
        };
        (done, used, 2)
    }
}

/// One call on an endpoint: counted in its in-flight number while it lives, its outcome told to
/// the endpoint's breaker by [`settle`](InFlight::settle). A call dropped before it settled
/// (its caller went away: a client hung up, a timeout or `select!` above it) still leaves the
/// count, and gives back the breaker's probe if it was the probe, so a cancelled call can
/// neither skew the balancing for good nor shut the endpoint out after an ejection. It says
/// nothing of the endpoint's health, so it counts neither as an answer nor as a failure.
struct InFlight<'a> {
    endpoint: &'a EndpointHandle,
    settled: bool,
}

impl<'a> InFlight<'a> {
    fn start(endpoint: &'a EndpointHandle) -> InFlight<'a> {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint,
            settled: false,
        }
    }

    fn settle(mut self, outcome: Outcome) {
        self.settled = true;
        if outcome == Outcome::Answered {
            self.endpoint.warm.store(true, Ordering::Relaxed);
        }
        self.endpoint.breaker.record(outcome);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled {
            self.endpoint.breaker.abandon();
        }
    }
}

/// How a call went, and whether the server surely never processed it.
fn classify(result: &Result<Response<Body>, tonic::transport::Error>) -> (Outcome, bool) {
    match result {
        Ok(response) => {
            if response.headers().contains_key(crate::grpc::SHED_HEADER) {
                // Refused by the server's load limit before it did anything.
                return (Outcome::Failed, true);
            }
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map(tonic::Code::from);
            match code {
                // Shed by the server's load limit before it did anything.
                Some(tonic::Code::ResourceExhausted) => (Outcome::Failed, true),
                // INTERNAL is an answer: the server is up, and one bad request (a bug its
                // input found) must not open the breaker for everyone's calls.
                Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
                    (Outcome::Failed, false)
                }
                _ => (Outcome::Answered, false),
            }
        }
        Err(error) if connection_refused(error) => (Outcome::Refused, true),
        // No connection was made (it timed out, or the host could not be reached): the
        // request went nowhere.
        Err(error) if never_connected(error) => (Outcome::Failed, true),
        Err(_) => (Outcome::Failed, false),
    }
}

fn connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// Whether the error is a failure to connect, which tonic marks as such.
fn never_connected(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        current = error.source();
    }
    false
}

impl tower::Service<Request<Body>> for RpcChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is settled per endpoint, inside each call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        if !traces::is_on() {
            return Box::pin(shared.dispatch(request));
        }
        // A client span, child of the caller's span; the server continues its trace.
        let (name, service, method) = traces::grpc_method_parts(request.uri().path());
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = name,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        traces::inject_into_headers(&span, request.headers_mut());
        let recorded = span.clone();
        Box::pin(
            async move {
                let answer = shared.dispatch(request).await;
                match &answer {
                    Ok(response) => traces::record_grpc_status(&recorded, response.headers()),
                    Err(_) => {
                        recorded.record("otel.status_code", "ERROR");
                    }
                }
                answer
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<&str>, shed: bool) -> Result<Response<Body>, tonic::transport::Error> {
        let mut response = Response::new(Body::default());
        if let Some(status) = status {
            response
                .headers_mut()
                .insert("grpc-status", status.parse().unwrap());
        }
        if shed {
            response
                .headers_mut()
                .insert(crate::grpc::SHED_HEADER, "1".parse().unwrap());
        }
        Ok(response)
    }

    #[test]
    fn business_errors_are_healthy_answers_and_outages_are_failures() {
        assert_eq!(classify(&answer(None, false)), (Outcome::Answered, false));
        // FAILED_PRECONDITION (out of stock) and NOT_FOUND never open a breaker.
        assert_eq!(
            classify(&answer(Some("9"), false)),
            (Outcome::Answered, false)
        );
        assert_eq!(
            classify(&answer(Some("5"), false)),
            (Outcome::Answered, false)
        );
        assert_eq!(
            classify(&answer(Some("14"), false)),
            (Outcome::Failed, false)
        );
        assert_eq!(
            classify(&answer(Some("13"), false)),
            (Outcome::Answered, false),
            "INTERNAL: the server answered"
        );
        assert_eq!(
            classify(&answer(Some("4"), false)),
            (Outcome::Failed, false)
        );
        assert_eq!(
            classify(&answer(Some("14"), true)),
            (Outcome::Failed, true),
            "shed: never processed"
        );
    }

    /// An endpoint whose breaker throttles it (most of its recent calls failed) beside a
    /// healthy one: every call goes to the healthy one, none is failed for want of an endpoint.
    #[tokio::test]
    async fn a_throttled_endpoint_sends_its_calls_to_the_healthy_one() {
        let uris: Vec<Uri> = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
            .iter()
            .map(|uri| uri.parse().unwrap())
            .collect();
        let (_set, addresses) = watch::channel(uris.clone());
        let channel = RpcChannel::follow(
            ServiceName::Product,
            addresses,
            Duration::from_secs(1),
            Duration::from_secs(1),
            None,
            InternalAuth::default(),
        );
        while channel.endpoints().len() < 2 {
            tokio::task::yield_now().await;
        }
        let shared = &channel.shared;
        for endpoint in shared.endpoints.read().unwrap().iter() {
            endpoint.warm.store(true, Ordering::Relaxed);
            if endpoint.uri == uris[0] {
                for _ in 0..100 {
                    endpoint.breaker.record(Outcome::Failed);
                }
            }
        }
        let mut to_throttled = 0;
        for call in 0..200 {
            let picked = shared.pick(&[]).map(|endpoint| endpoint.uri.clone());
            assert!(picked.is_some(), "call {call} found no endpoint");
            if picked.as_ref() == Some(&uris[0]) {
                to_throttled += 1;
            }
        }
        // The throttle lets the odd call through to the failing endpoint: how it learns that
        // the endpoint has recovered.
        assert!(
            to_throttled < 10,
            "{to_throttled} of 200 calls to the throttled endpoint"
        );
        // Once the healthy one has been tried, a retry may still go to the throttled one.
        assert_eq!(
            shared
                .last_resort(std::slice::from_ref(&uris[1]), false)
                .map(|endpoint| endpoint.uri.clone()),
            Some(uris[0].clone())
        );
        assert!(
            shared.last_resort(&uris, false).is_none(),
            "both tried: none"
        );
        assert!(
            shared.last_resort(&uris, true).is_some(),
            "both tried, and no server saw the call: one again"
        );
    }

    #[test]
    fn reads_and_keyed_calls_are_idempotent_and_creations_are_not() {
        assert!(is_idempotent(
            "/letsgo.product.v1.ProductService/GetProduct"
        ));
        assert!(is_idempotent(
            "/letsgo.product.v1.ProductService/ReserveStock"
        ));
        assert!(is_idempotent(
            "/letsgo.cart.v1.CartService/RemoveProductsOfCarts"
        ));
        assert!(is_idempotent("/letsgo.order.v1.OrderService/ListOrders"));
        assert!(!is_idempotent("/letsgo.order.v1.OrderService/CreateOrder"));
        assert!(!is_idempotent("/letsgo.user.v1.UserService/Register"));
        assert!(!is_idempotent("/letsgo.cart.v1.CartService/AddItem"));
    }

    /// Only reads are sent twice at once: a keyed write may be repeated after a failure, never
    /// raced against itself.
    #[test]
    fn only_reads_are_hedged() {
        assert!(is_read("/letsgo.product.v1.ProductService/ListProducts"));
        assert!(is_read(
            "/letsgo.product.v1.ProductService/BatchGetProducts"
        ));
        assert!(is_read("/grpc.health.v1.Health/Check"));
        assert!(!is_read("/letsgo.product.v1.ProductService/ReserveStock"));
        assert!(!is_read(
            "/letsgo.cart.v1.CartService/RemoveProductsOfCarts"
        ));
        assert!(!is_read("/letsgo.order.v1.OrderService/CreateOrder"));
    }
}
