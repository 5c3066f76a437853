//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! The holder renews the Lease every `renew_every`; another replica takes it over only once the
//! Lease's record has not changed for `leaseDurationSeconds` by that replica's own monotonic
//! clock, counted from when it first saw the record as it is (client-go's way). The holder's
//! `renewTime` is never compared with the local clock, so a holder whose clock runs minutes
//! ahead or behind neither keeps a dead lease nor loses a live one. Every write is a replace
//! carrying the `resourceVersion` it read, so two replicas racing for an expired Lease cannot
//! both win: the API server refuses the second with a conflict. A leader that cannot renew
//! within the lease duration gives up (the caller exits), so it stops before anyone else can
//! start.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Result;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Who holds the Lease: the pod name.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: std::sync::Mutex<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: std::sync::Mutex::new(Observed::default()),
        }
    }

    /// One attempt: takes the Lease if it is free or expired, renews it if it is ours.
    /// `Ok(true)` when this replica holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let free = self
            .observed
            .lock()
            .expect("observed lease lock")
            .is_free(&spec, std::time::Instant::now());
        if !ours && !free {
            return Ok(false);
        }
        let (acquired, transitions) = if ours {
            (
                spec.acquire_time.map_or(now, |t| t.0),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (now, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut next = lease;
        let written = self.held_spec(acquired, now, transitions);
        next.spec = Some(written.clone());
        // `next` still carries the resourceVersion read above: a concurrent writer wins, we lose.
        let held = conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await,
        )?;
        if held {
            self.observed
                .lock()
                .expect("observed lease lock")
                .is_free(&written, std::time::Instant::now());
        }
        Ok(held)
    }

    /// Gives the Lease up at shutdown, so a successor need not wait for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(error) = self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &lease)
            .await
        {
            warn!(%error, "could not release the leader lease; it will expire");
        }
    }

    fn held_spec(&self, acquired: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The Lease's record as this replica last saw it, and when by its own monotonic clock.
#[derive(Default)]
struct Observed {
    record: Option<LeaseSpec>,
    since: Option<std::time::Instant>,
}

impl Observed {
    /// Notes `spec` as seen at `now` and answers whether nobody holds the Lease any more: no
    /// holder, or the same record seen unchanged for longer than its duration. A record seen
    /// for the first time (a renewal, a new holder, this replica's first look) starts the
    /// count afresh, whatever times it carries.
    fn is_free(&mut self, spec: &LeaseSpec, now: std::time::Instant) -> bool {
        if self.record.as_ref() != Some(spec) {
            self.record = Some(spec.clone());
            self.since = Some(now);
        }
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(0),
        );
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) > duration)
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Held leadership: `leading` turns `false`, for good, once it is lost or could not be renewed
/// in time.
pub struct Leadership {
    pub leading: watch::Receiver<bool>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Stops renewing and gives the Lease up, so a successor takes over at once instead of
    /// waiting for it to expire. Call it on the way out: the process must not end before.
    pub async fn release(self) {
        drop(self.leading);
        if tokio::time::timeout(Duration::from_secs(5), self.renewal)
            .await
            .is_err()
        {
            warn!("leader election: the Lease was not released in time; it will expire");
        }
    }
}

/// Waits until this replica holds the Lease, then keeps renewing it in the background.
pub async fn lead(elector: LeaderElector) -> Leadership {
    let renew_every = elector.config.renew_every;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => warn!(%error, "leader election: cannot reach the Lease"),
        }
        tokio::time::sleep(renew_every).await;
    }
    info!(identity = %elector.config.identity, lease = %elector.config.name, "leading");
    let (sender, receiver) = watch::channel(true);
    let renewal = tokio::spawn(async move {
        let mut last_renewed = tokio::time::Instant::now();
        // Stop a little before the Lease can expire in others' eyes.
        let give_up_after = elector
            .config
            .lease_duration
            .saturating_sub(renew_every / 2);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                _ = sender.closed() => {
                    elector.release().await;
                    return;
                }
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!("leader election: another replica holds the Lease");
                    let _ = sender.send(false);
                    return;
                }
                Err(error) => {
                    warn!(%error, "leader election: renewal failed");
                    if last_renewed.elapsed() >= give_up_after {
                        let _ = sender.send(false);
                        return;
                    }
                }
            }
        }
    });
    Leadership {
        leading: receiver,
        renewal,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use k8s_openapi::jiff::SignedDuration;

    use super::*;

    /// A Lease as its holder writes it, with the holder's own clock `skew_secs` off ours.
    fn spec(holder: Option<&str>, renewal: i64, skew_secs: i64) -> LeaseSpec {
        let ours = Timestamp::from_second(1_700_000_000).unwrap();
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(
                ours + SignedDuration::from_secs(skew_secs + 2 * renewal),
            )),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_first_seen_is_held_for_its_whole_duration_whatever_its_times() {
        // Renewed "an hour ago" by our clock: still, this replica has not yet seen it stand
        // still for 15 s.
        let start = Instant::now();
        let mut observed = Observed::default();
        let stale = spec(Some("operator-a"), 0, -3600);
        assert!(!observed.is_free(&stale, start));
        assert!(!observed.is_free(&stale, start + Duration::from_secs(15)));
        assert!(observed.is_free(&stale, start + Duration::from_secs(16)));
    }

    #[test]
    fn a_holder_whose_clock_is_minutes_behind_keeps_its_lease_while_it_renews() {
        let start = Instant::now();
        let mut observed = Observed::default();
        for renewal in 0..60 {
            // Renewed every 2 s, each renewTime five minutes in our past.
            let now = start + Duration::from_secs(2 * renewal as u64);
            assert!(
                !observed.is_free(&spec(Some("operator-a"), renewal, -300), now),
                "renewal {renewal}: a live holder keeps its lease"
            );
        }
    }

    #[test]
    fn a_holder_whose_clock_is_minutes_ahead_loses_its_lease_once_it_stops_renewing() {
        let start = Instant::now();
        let mut observed = Observed::default();
        for renewal in 0..5 {
            let now = start + Duration::from_secs(2 * renewal as u64);
            assert!(!observed.is_free(&spec(Some("operator-a"), renewal, 300), now));
        }
        // It died after its fifth renewal (at 8 s), its renewTime five minutes in our future.
        let last = spec(Some("operator-a"), 4, 300);
        assert!(!observed.is_free(&last, start + Duration::from_secs(20)));
        assert!(observed.is_free(&last, start + Duration::from_secs(24)));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let mut observed = Observed::default();
        assert!(observed.is_free(&spec(None, 0, 0), Instant::now()));
        let mut empty = spec(Some(""), 0, 0);
        empty.renew_time = None;
        assert!(observed.is_free(&empty, Instant::now()));
    }
}
