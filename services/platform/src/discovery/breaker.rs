//! Per-endpoint failure tracking: adaptive client-side throttling in the style of Google's SRE
//! book, plus a short ejection after connection failures.
//!
//! Throttling rejects a request locally with probability
//! `max(0, (requests - K * accepts) / (requests + 1))` over a sliding window, so an endpoint that
//! fails most requests gets few, and recovers on its own as successes return. A window with
//! fewer than [`THROTTLE_MIN_REQUESTS`] requests is never throttled: on a quiet channel one
//! failed call (a write that timed out) would otherwise turn away half of the calls after it
//! for ten seconds, with nothing to show the endpoint was unwell but that one call. Only transport
//! failures, timeouts and UNAVAILABLE / INTERNAL / RESOURCE_EXHAUSTED answers count as
//! failures: a business error such as out of stock is a healthy answer.
//!
//! A refused connection means the endpoint is gone right now: it is skipped for a short,
//! growing while (one probe request is let through when the while ends).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many requests per accepted one the throttle tolerates before rejecting (the SRE book's K).
const K: f64 = 2.0;
/// Fewest requests in the window before the throttle judges an endpoint.
const THROTTLE_MIN_REQUESTS: f64 = 5.0;
const WINDOW: Duration = Duration::from_secs(10);
const BUCKETS: usize = 10;
const EJECTION_MIN: Duration = Duration::from_millis(500);
const EJECTION_MAX: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, Default)]
struct Bucket {
    started: Option<Instant>,
    requests: u32,
    accepts: u32,
}

struct State {
    buckets: [Bucket; BUCKETS],
    ejected_until: Option<Instant>,
    ejection: Duration,
    probing: bool,
}

/// The health of one endpoint, as its callers saw it.
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State {
                buckets: [Bucket::default(); BUCKETS],
                ejected_until: None,
                ejection: EJECTION_MIN,
                probing: false,
            }),
        }
    }
}

/// How a call to an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer the service meant to give, errors of the business included.
    Answered,
    /// A timeout, a broken connection, or an UNAVAILABLE / INTERNAL / RESOURCE_EXHAUSTED answer.
    Failed,
    /// The connection was refused: nothing listens there now.
    Refused,
}

impl State {
    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        let span = WINDOW / BUCKETS as u32;
        // Buckets rotate with time: find the current one, recycling a stale one.
        let slot = (instant_millis(now) / span.as_millis() as u64) as usize % BUCKETS;
        let bucket = &mut self.buckets[slot];
        let fresh = bucket
            .started
            .is_some_and(|started| now.duration_since(started) < span);
        if !fresh {
            *bucket = Bucket {
                started: Some(now),
                requests: 0,
                accepts: 0,
            };
        }
        bucket
    }

    fn totals(&self, now: Instant) -> (f64, f64) {
        self.buckets
            .iter()
            .filter(|bucket| {
                bucket
                    .started
                    .is_some_and(|started| now.duration_since(started) < WINDOW)
            })
            .fold((0.0, 0.0), |(requests, accepts), bucket| {
                (
                    requests + f64::from(bucket.requests),
                    accepts + f64::from(bucket.accepts),
                )
            })
    }
}

/// Milliseconds since a fixed origin, for bucket slots.
fn instant_millis(now: Instant) -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    now.saturating_duration_since(origin).as_millis() as u64
}

impl Breaker {
    /// Whether to send a request to this endpoint now. `random` is uniform in [0, 1).
    pub fn allows(&self, random: f64) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock().expect("breaker lock");
        if let Some(until) = state.ejected_until {
            if now < until || state.probing {
                return false;
            }
            // The ejection is over: let one probe through.
            state.probing = true;
            return true;
        }
        let (requests, accepts) = state.totals(now);
        if requests < THROTTLE_MIN_REQUESTS {
            return true;
        }
        let reject = ((requests - K * accepts) / (requests + 1.0)).max(0.0);
        if random < reject {
            // A local rejection counts as a request, as in the SRE book.
            state.bucket(now).requests += 1;
            return false;
        }
        true
    }

    /// Whether the endpoint is ejected right now (skipped by the balancer).
    pub fn is_ejected(&self) -> bool {
        let state = self.state.lock().expect("breaker lock");
        state
            .ejected_until
            .is_some_and(|until| Instant::now() < until || state.probing)
    }

    /// A call let through was given up by its caller before it ended: it tells nothing of the
    /// endpoint, but if it was the probe after an ejection, the next call may probe instead.
    /// (Any call given up frees the probe: at worst two probes are in flight at once.)
    pub fn abandon(&self) {
        self.state.lock().expect("breaker lock").probing = false;
    }

    pub fn record(&self, outcome: Outcome) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("breaker lock");
        let bucket = state.bucket(now);
        bucket.requests += 1;
        match outcome {
            Outcome::Answered => {
                bucket.accepts += 1;
                state.ejected_until = None;
                state.ejection = EJECTION_MIN;
                state.probing = false;
            }
            Outcome::Failed => {
                state.probing = false;
            }
            Outcome::Refused => {
                let ejection = state.ejection;
                state.ejected_until = Some(now + ejection);
                state.ejection = (ejection * 2).min(EJECTION_MAX);
                state.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_endpoint_is_never_throttled() {
        let breaker = Breaker::default();
        for _ in 0..100 {
            breaker.record(Outcome::Answered);
        }
        assert!((0..100).all(|n| breaker.allows(f64::from(n) / 100.0)));
    }

    #[test]
    fn a_failing_endpoint_is_mostly_rejected_locally() {
        let breaker = Breaker::default();
        for _ in 0..100 {
            breaker.record(Outcome::Failed);
        }
        let allowed = (0..100)
            .filter(|n| breaker.allows(f64::from(*n) / 100.0))
            .count();
        assert!(allowed < 5, "{allowed} of 100 allowed");
    }

    /// One call that failed on a quiet channel (the only one in ten seconds) turns no call
    /// after it away; a run of failures still does.
    #[test]
    fn a_lone_failure_on_a_quiet_channel_is_not_throttled() {
        let breaker = Breaker::default();
        breaker.record(Outcome::Failed);
        let allowed = (0..100)
            .filter(|n| breaker.allows(f64::from(*n) / 100.0))
            .count();
        assert_eq!(allowed, 100);
        for _ in 0..20 {
            breaker.record(Outcome::Failed);
        }
        let allowed = (0..100)
            .filter(|n| breaker.allows(f64::from(*n) / 100.0))
            .count();
        assert!(allowed < 10, "{allowed} of 100 allowed");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let breaker = Breaker::default();
        breaker.record(Outcome::Refused);
        std::thread::sleep(EJECTION_MIN + Duration::from_millis(50));
        assert!(breaker.allows(0.99), "the probe");
        assert!(!breaker.allows(0.99), "one probe at a time");
        breaker.abandon();
        assert!(
            breaker.allows(0.99),
            "a new probe once the first was given up"
        );
        breaker.record(Outcome::Answered);
        assert!(!breaker.is_ejected());
    }

    #[test]
    fn a_refused_endpoint_is_skipped_then_probed_once() {
        let breaker = Breaker::default();
        breaker.record(Outcome::Refused);
        assert!(breaker.is_ejected());
        assert!(!breaker.allows(0.99));
        std::thread::sleep(EJECTION_MIN + Duration::from_millis(50));
        assert!(breaker.allows(0.99), "one probe after the ejection");
        assert!(!breaker.allows(0.99), "only one probe at a time");
        breaker.record(Outcome::Answered);
        assert!(!breaker.is_ejected());
        assert!(breaker.allows(0.99));
    }
}
