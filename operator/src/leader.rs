//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! The holder renews the Lease every `renew_every`; another replica takes it over only once
//! `renewTime + leaseDurationSeconds` has passed. Every write is a replace carrying the
//! `resourceVersion` it read, so two replicas racing for an expired Lease cannot both win: the
//! API server refuses the second with a conflict. A leader that cannot renew within the lease
//! duration gives up (the caller exits), so it stops before anyone else can start.
//! Assumes clocks roughly in sync across nodes, as client-go's leader election does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
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
        if !ours && !expired(&spec, now) {
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
        next.spec = Some(self.held_spec(acquired, now, transitions));
        // `next` still carries the resourceVersion read above: a concurrent writer wins, we lose.
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await,
        )
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

/// Whether nobody holds the Lease any more: no holder, or a renewal older than its duration.
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
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
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> (LeaseSpec, Timestamp) {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let spec = LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        };
        (spec, now)
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_held() {
        let (spec, now) = spec(Some("operator-a"), 10, 15);
        assert!(!expired(&spec, now));
    }

    #[test]
    fn a_lease_not_renewed_for_longer_than_its_duration_is_free() {
        let (spec, now) = spec(Some("operator-a"), 16, 15);
        assert!(expired(&spec, now));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let (spec, now) = spec(None, 0, 15);
        assert!(expired(&spec, now));
    }
}
