//! A Store's status, worked out from what the last apply returned: pure, so each rule about
//! phases and conditions is a unit test.

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::manifests::{Child, ServiceKind};
use crate::reachability::Reachability;
use crate::store::{
    ComponentStatus, GatewayServiceType, Store, StoreCondition, StorePhase, StoreStatus,
};

/// What one reconcile saw.
#[derive(Debug, Default)]
pub struct Observation {
    /// The objects as the API server returned them from the apply (status included).
    pub applied: Vec<Child>,
    /// Managed middleware the services wait for, and whether each is ready.
    pub middleware_ready: bool,
    /// The services were applied: their middleware is ready, or the shop has run before (a
    /// middleware restart must not hold back a rollback of the services).
    pub services_applied: bool,
    /// External Secrets or keys the services need and cannot find.
    pub missing_secrets: Vec<String>,
    /// The Store's Pods that cannot start, as [`pod_failures`] words them.
    pub failing_pods: Vec<String>,
    /// A restore the services wait for (`spec.restoreFrom`): under way, or failed.
    pub restore: Option<Restore>,
    /// The newest backup a finished backup Pod reported: its name and size in bytes.
    pub last_backup_report: Option<(String, i64)>,
    /// Whether each external middleware answered the operator.
    pub reachability: Vec<Reachability>,
}

/// Where a `spec.restoreFrom` stands while the services wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    Running(String),
    Failed(String),
}

/// The workload's controller has seen its current spec and no replica of an older one is left
/// (whether the replicas are ready is another question): its rollout is over.
pub fn rolled_out(child: &Child) -> bool {
    match child {
        Child::Deployment(o) => {
            let desired = o.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = o.status.clone().unwrap_or_default();
            let updated = status.updated_replicas.unwrap_or(0);
            status.observed_generation >= o.metadata.generation
                && updated >= desired
                && status.replicas.unwrap_or(0) <= updated
        }
        Child::StatefulSet(o) => {
            let desired = o.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = o.status.clone().unwrap_or_default();
            let same_revision = match (&status.current_revision, &status.update_revision) {
                (Some(current), Some(update)) => current == update,
                _ => true,
            };
            status.observed_generation >= o.metadata.generation
                && same_revision
                && status.updated_replicas.unwrap_or(0) >= desired
        }
        _ => true,
    }
}

/// Every applied workload is ready (the services among them).
pub fn all_ready(seen: &Observation) -> bool {
    let deployments = seen
        .applied
        .iter()
        .filter(|c| matches!(c, Child::Deployment(_)))
        .count();
    seen.services_applied
        && deployments == ServiceKind::ALL.len()
        && seen
            .applied
            .iter()
            .filter_map(component)
            .all(|c| c.is_ready())
}

/// Container states a person has to act on (a wrong image or tag, an image the node lacks
/// with pulls off, a missing pull Secret, a crashing binary, a missing config key); waiting
/// longer does not fix them. A first pull's ErrImagePull is not one: a registry's hiccup clears
/// on the retry, and a pull that keeps failing turns to ImagePullBackOff.
const FAILING_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How long a Pod may stay unschedulable before the Store says so: volumes being provisioned
/// and nodes being added leave Pods pending for a while on their own.
const UNSCHEDULABLE_GRACE: SignedDuration = SignedDuration::from_secs(60);

/// `cart: ImagePullBackOff (Back-off pulling image "...")` for each Pod whose containers wait for
/// one of [`FAILING_REASONS`], and `postgres: Unschedulable (...)` for each Pod the scheduler has
/// found no node for since [`UNSCHEDULABLE_GRACE`] (no volume, no room, a taint). The Pods of
/// Jobs (backups, restores) are not components: their own reports cover them.
pub fn pod_failures(pods: &[Pod], now: Timestamp) -> Vec<String> {
    let mut failures = Vec::new();
    let mut add = |failure: String| {
        if !failures.contains(&failure) {
            failures.push(failure);
        }
    };
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        if labels.is_some_and(|l| {
            l.contains_key("batch.kubernetes.io/job-name") || l.contains_key("job-name")
        }) {
            continue;
        }
        let component = labels
            .and_then(|l| l.get("app.kubernetes.io/component"))
            .map_or("?", String::as_str);
        let described = |reason: &str, detail: &str| {
            if detail.is_empty() {
                format!("{component}: {reason}")
            } else {
                format!("{component}: {reason} ({detail})")
            }
        };
        let unschedulable = pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                    && c.last_transition_time
                        .as_ref()
                        .is_some_and(|since| now.duration_since(since.0) >= UNSCHEDULABLE_GRACE)
            });
        if let Some(condition) = unschedulable {
            add(described(
                "Unschedulable",
                condition.message.as_deref().unwrap_or_default(),
            ));
        }
        let statuses = pod.status.iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        for container in statuses {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if FAILING_REASONS.contains(&reason) {
                add(described(
                    reason,
                    waiting.message.as_deref().unwrap_or_default(),
                ));
            }
        }
    }
    failures
}

/// `cart: ProgressDeadlineExceeded (...)` for each Deployment whose controller gave up waiting.
fn stalled_rollouts(applied: &[Child]) -> Vec<String> {
    deployment_conditions(applied, |c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    })
}

/// `cart: ReplicaFailure (...)` for each Deployment whose Pods cannot be created now (a quota,
/// Pod Security admission): no Pod exists to show why. The rollout still waits (a quota may
/// be raised), so this says why in the status' message; past its progress deadline the
/// rollout is stalled, and the Store Degraded.
fn held_rollouts(applied: &[Child]) -> Vec<String> {
    deployment_conditions(applied, |c| {
        c.type_ == "ReplicaFailure" && c.status == "True"
    })
}

/// `<component>: <reason or type> (<message>)` for each Deployment with a condition `matching`.
fn deployment_conditions(
    applied: &[Child],
    matching: impl Fn(&k8s_openapi::api::apps::v1::DeploymentCondition) -> bool,
) -> Vec<String> {
    applied
        .iter()
        .filter_map(|child| match child {
            Child::Deployment(d) => {
                let condition = d
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| matching(c))?;
                let name = d
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/component").cloned())
                    .unwrap_or_else(|| child.name());
                let reason = if condition.type_ == "Progressing" {
                    condition.reason.as_deref().unwrap_or("Progressing")
                } else {
                    condition.type_.as_str()
                };
                Some(format!(
                    "{name}: {reason} ({})",
                    condition.message.as_deref().unwrap_or_default()
                ))
            }
            _ => None,
        })
        .collect()
}

/// The status of a Store whose children were applied (or, for services waiting on their
/// middleware, not yet). `now` is an RFC 3339 time for conditions that change.
pub fn summarise(store: &Store, seen: &Observation, now: &str) -> StoreStatus {
    let mut components: Vec<ComponentStatus> = seen.applied.iter().filter_map(component).collect();
    // Services not applied yet (waiting for their middleware), or held back (the gateway, until
    // the others have rolled out), count as not ready.
    for kind in ServiceKind::ALL {
        if !components.iter().any(|c| c.name == kind.as_str()) {
            components.push(ComponentStatus {
                name: kind.as_str().to_owned(),
                ready_replicas: 0,
                desired_replicas: replicas_of(store, kind),
                up_to_date: false,
            });
        }
    }
    let ready = components.iter().filter(|c| c.is_ready()).count();
    let not_ready: Vec<&str> = components
        .iter()
        .filter(|c| !c.is_ready())
        .map(|c| c.name.as_str())
        .collect();

    let previous = store.status.as_ref();
    let generation = store.metadata.generation;
    let spec_changed = previous.and_then(|s| s.observed_generation) != generation;
    let was_ready = previous
        .and_then(|s| s.phase)
        .is_some_and(|p| matches!(p, StorePhase::Ready | StorePhase::Degraded));

    let mut failures = stalled_rollouts(&seen.applied);
    failures.extend(seen.failing_pods.iter().cloned());
    let held = held_rollouts(&seen.applied);
    let held_back = if held.is_empty() {
        String::new()
    } else {
        format!("; held back: {}", held.join("; "))
    };

    let (phase, reason, message) = if let Some(restore) = &seen.restore {
        match restore {
            Restore::Running(message) => (StorePhase::Pending, "Restoring", message.clone()),
            Restore::Failed(message) => (StorePhase::Degraded, "RestoreFailed", message.clone()),
        }
    } else if !seen.missing_secrets.is_empty() {
        (
            if was_ready {
                StorePhase::Degraded
            } else {
                StorePhase::Pending
            },
            "ExternalSecretMissing",
            format!(
                "the services wait for their external Secrets: {}",
                seen.missing_secrets.join("; ")
            ),
        )
    } else if !failures.is_empty() {
        (
            StorePhase::Degraded,
            "ComponentsFailing",
            format!("failing: {}", failures.join("; ")),
        )
    } else if !seen.services_applied {
        // Before the first run the shop is not up yet; after it, the services keep running while
        // a middleware rollout holds their changes back.
        (
            if was_ready {
                StorePhase::Progressing
            } else {
                StorePhase::Pending
            },
            "WaitingForMiddleware",
            format!(
                "the services' changes wait for the middleware: {}",
                not_ready.join(", ")
            ),
        )
    } else if not_ready.is_empty() {
        (
            StorePhase::Ready,
            "AllComponentsReady",
            "every component is ready".to_owned(),
        )
    } else if was_ready && !spec_changed {
        (
            StorePhase::Degraded,
            "ComponentsUnavailable",
            format!("not ready: {}{held_back}", not_ready.join(", ")),
        )
    } else {
        (
            StorePhase::Progressing,
            "RollingOut",
            format!("waiting for: {}{held_back}", not_ready.join(", ")),
        )
    };

    let ready_condition = ("Ready", phase == StorePhase::Ready, reason, message.clone());
    let progressing = matches!(phase, StorePhase::Pending | StorePhase::Progressing);
    let progressing_condition = (
        "Progressing",
        progressing,
        if progressing { reason } else { "Complete" },
        if progressing {
            message.clone()
        } else {
            String::new()
        },
    );
    let degraded = phase == StorePhase::Degraded;
    let degraded_condition = (
        "Degraded",
        degraded,
        if degraded { reason } else { "AsExpected" },
        if degraded { message } else { String::new() },
    );
    let mut conditions: Vec<StoreCondition> =
        [ready_condition, progressing_condition, degraded_condition]
            .into_iter()
            .map(|(type_, status, reason, message)| {
                condition(store, type_, status, reason, message, now)
            })
            .collect();
    let now_timestamp = now
        .parse::<Timestamp>()
        .unwrap_or_else(|_| Timestamp::now());
    if let Some((healthy, reason, message)) = backup_health(&seen.applied, now_timestamp) {
        conditions.push(condition(
            store,
            "BackupsHealthy",
            healthy,
            reason,
            message,
            now,
        ));
    }

    for dependency in &seen.reachability {
        conditions.push(condition(
            store,
            dependency.condition,
            dependency.reachable,
            dependency.reason,
            dependency.message.clone(),
            now,
        ));
    }

    StoreStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        ready_components: Some(format!("{ready}/{}", components.len())),
        components,
        gateway_endpoint: gateway_endpoint(store, &seen.applied),
        last_backup: last_backup(&seen.applied)
            .or_else(|| previous.and_then(|s| s.last_backup.clone())),
        last_backup_name: seen
            .last_backup_report
            .as_ref()
            .map(|(name, _)| name.clone())
            .or_else(|| previous.and_then(|s| s.last_backup_name.clone())),
        last_backup_bytes: seen
            .last_backup_report
            .as_ref()
            .map(|(_, bytes)| *bytes)
            .or_else(|| previous.and_then(|s| s.last_backup_bytes)),
        version: if phase == StorePhase::Ready {
            Some(store.spec.image.tag().to_owned())
        } else {
            previous.and_then(|s| s.version.clone())
        },
    }
}

/// The status of a Store whose reconcile failed (an API error, a refused object): what was
/// known stays, and the conditions say what failed. The top-level observedGeneration stays the
/// last one fully applied; each condition names the generation that failed.
pub fn failed(store: &Store, message: &str, now: &str) -> StoreStatus {
    let previous = store.status.clone().unwrap_or_default();
    let message = message.to_owned();
    StoreStatus {
        phase: Some(StorePhase::Degraded),
        conditions: vec![
            condition(
                store,
                "Ready",
                false,
                "ReconcileFailed",
                message.clone(),
                now,
            ),
            condition(
                store,
                "Progressing",
                false,
                "ReconcileFailed",
                message.clone(),
                now,
            ),
            condition(store, "Degraded", true, "ReconcileFailed", message, now),
        ],
        ..previous
    }
}

/// The status of a Store whose spec breaks a rule: nothing was applied.
pub fn invalid(store: &Store, problems: &[String], now: &str) -> StoreStatus {
    let message = problems.join("; ");
    let previous = store.status.clone().unwrap_or_default();
    StoreStatus {
        observed_generation: store.metadata.generation,
        phase: Some(StorePhase::Invalid),
        conditions: vec![
            condition(store, "Ready", false, "InvalidSpec", message.clone(), now),
            condition(
                store,
                "Progressing",
                false,
                "InvalidSpec",
                message.clone(),
                now,
            ),
            condition(store, "Degraded", true, "InvalidSpec", message, now),
        ],
        // What runs keeps running; its last known readiness stays visible.
        components: previous.components,
        ready_components: previous.ready_components,
        gateway_endpoint: previous.gateway_endpoint,
        version: previous.version,
        last_backup: previous.last_backup,
        last_backup_name: previous.last_backup_name,
        last_backup_bytes: previous.last_backup_bytes,
    }
}

/// A workload's readiness as its own controller reports it. Up to date: the controller has
/// observed the current generation and every replica runs the current template, no old ones
/// left, and is ready. A Deployment's rollout removes old replicas only once new ones are
/// available (`minReadySeconds`), so "no old ones left" already means that; a new Deployment,
/// with none to replace, is up to date once ready instead of `minReadySeconds` later.
fn component(child: &Child) -> Option<ComponentStatus> {
    let (labels, desired, ready, up_to_date) = match child {
        Child::Deployment(o) => {
            let desired = o.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = o.status.clone().unwrap_or_default();
            let observed = status.observed_generation >= o.metadata.generation;
            let updated = status.updated_replicas.unwrap_or(0);
            let ready = status.ready_replicas.unwrap_or(0);
            let up_to_date = observed
                && updated >= desired
                && status.replicas.unwrap_or(0) <= updated
                && ready >= desired;
            (&o.metadata.labels, desired, ready, up_to_date)
        }
        Child::StatefulSet(o) => {
            let desired = o.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let status = o.status.clone().unwrap_or_default();
            let observed = status.observed_generation >= o.metadata.generation;
            let same_revision = match (&status.current_revision, &status.update_revision) {
                (Some(current), Some(update)) => current == update,
                _ => true,
            };
            let up_to_date = observed
                && same_revision
                && status.updated_replicas.unwrap_or(0) >= desired
                && status.replicas <= desired;
            (
                &o.metadata.labels,
                desired,
                status.ready_replicas.unwrap_or(0),
                up_to_date,
            )
        }
        _ => return None,
    };
    let name = labels
        .as_ref()
        .and_then(|labels| labels.get("app.kubernetes.io/component").cloned())
        .unwrap_or_else(|| child.name());
    Some(ComponentStatus {
        name,
        ready_replicas: ready,
        desired_replicas: desired,
        up_to_date,
    })
}

fn replicas_of(store: &Store, kind: ServiceKind) -> i32 {
    let services = &store.spec.services;
    match kind {
        ServiceKind::User => services.user.replicas,
        ServiceKind::Product => services.product.replicas,
        ServiceKind::Cart => services.cart.replicas,
        ServiceKind::Order => services.order.replicas,
        ServiceKind::Payment => services.payment.replicas,
        ServiceKind::Gateway => services.gateway.replicas,
    }
}

/// A condition whose transition time moves only when its status does.
fn condition(
    store: &Store,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &str,
) -> StoreCondition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = store
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    StoreCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: store.metadata.generation,
    }
}

/// The Ingress URL when there is one, else the LoadBalancer's address once it has one, else
/// the in-cluster URL.
fn gateway_endpoint(store: &Store, applied: &[Child]) -> Option<String> {
    let namespace = store.metadata.namespace.as_deref().unwrap_or("default");
    let name = store.metadata.name.as_deref()?;
    let port = ServiceKind::Gateway.serving_port();
    let ingress: Option<&Ingress> = applied.iter().find_map(|c| match c {
        Child::Ingress(i) => Some(i),
        _ => None,
    });
    if let Some(spec) = &store.spec.gateway.ingress
        && ingress.is_some()
    {
        let scheme = if spec.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}", spec.host));
    }
    if store.spec.gateway.service_type == GatewayServiceType::LoadBalancer {
        let service: Option<&Service> = applied.iter().find_map(|c| match c {
            Child::Service(s) if s.metadata.name.as_deref() == Some(&format!("{name}-gateway")) => {
                Some(s)
            }
            _ => None,
        });
        let address = service
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|ingress| ingress.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
        return address.map(|address| format!("http://{address}:{port}"));
    }
    Some(format!("http://{name}-gateway.{namespace}.svc:{port}"))
}

/// Whether the backups are healthy, from the CronJob's status: late when the schedule has
/// come round twice since the last success (or since the CronJob was made, when none has
/// succeeded yet), failed when its last run was scheduled after its last success and nothing
/// of it is running any more.
fn backup_health(applied: &[Child], now: Timestamp) -> Option<(bool, &'static str, String)> {
    let job = applied.iter().find_map(|child| match child {
        Child::CronJob(job) => Some(job),
        _ => None,
    })?;
    let status = job.status.clone().unwrap_or_default();
    let scheduled = status.last_schedule_time.map(|t| t.0);
    let succeeded = status.last_successful_time.map(|t| t.0);
    let running = status.active.is_some_and(|active| !active.is_empty());
    let since = succeeded.or(job.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let schedule = job.spec.as_ref().map(|spec| spec.schedule.as_str());
    if let (Some(since), Some(schedule)) = (since, schedule)
        && let Some(due) = second_run_due(schedule, since)
        && now > due
    {
        let last = match succeeded {
            Some(succeeded) => format!("the last backup succeeded at {succeeded}"),
            None => "no backup has succeeded".to_owned(),
        };
        return Some((
            false,
            "BackupsLate",
            format!(
                "{last}, and the schedule {schedule:?} has come round twice since: is the \
                 CronJob suspended, or do its Pods not start?"
            ),
        ));
    }
    Some(match (scheduled, succeeded) {
        (None, _) => (
            true,
            "NoneYet",
            "no backup has been scheduled yet".to_owned(),
        ),
        (Some(scheduled), Some(succeeded)) if succeeded >= scheduled => (
            true,
            "LastBackupSucceeded",
            format!("the last backup succeeded at {succeeded}"),
        ),
        _ if running => (true, "BackupRunning", "a backup is running".to_owned()),
        (Some(scheduled), _) => (
            false,
            "LastBackupFailed",
            format!(
                "the backup scheduled at {scheduled} did not succeed: `kubectl logs job/<the \
                 CronJob's last Job>` says why"
            ),
        ),
    })
}

/// When a backup is overdue: the schedule's second run after `since`, plus the time a run may
/// take (one period, at most an hour). `None` for a schedule that does not parse.
fn second_run_due(schedule: &str, since: Timestamp) -> Option<Timestamp> {
    let cron: croner::Cron = schedule.parse().ok()?;
    let first = cron
        .find_next_occurrence(&since.to_zoned(TimeZone::UTC), false)
        .ok()?;
    let second = cron.find_next_occurrence(&first, false).ok()?;
    let period = second.timestamp().duration_since(first.timestamp());
    let grace = period.min(SignedDuration::from_hours(1));
    second.timestamp().checked_add(grace).ok()
}

/// The newest backup a succeeded backup Pod reported in its termination message
/// (`backup <name>: <bytes> bytes, ...`, what `scripts/backup.sh` writes).
pub fn last_backup_report(pods: &[Pod]) -> Option<(String, i64)> {
    pods.iter()
        .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .filter_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            let message = statuses
                .first()?
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .clone()?;
            let rest = message.trim().strip_prefix("backup ")?;
            let (name, rest) = rest.split_once(": ")?;
            let bytes = rest.split_whitespace().next()?.parse::<i64>().ok()?;
            Some((name.to_owned(), bytes))
        })
        // Backups are named by their UTC time: the greatest name is the newest.
        .max_by(|a, b| a.0.cmp(&b.0))
}

/// When the backup CronJob last ran to success, as the API server reports it.
fn last_backup(applied: &[Child]) -> Option<String> {
    applied.iter().find_map(|child| match child {
        Child::CronJob(job) => job
            .status
            .as_ref()?
            .last_successful_time
            .as_ref()
            .map(|time| time.0.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use serde_json::json;

    use super::component;
    use crate::manifests::Child;

    fn deployment(generation: i64, status: serde_json::Value) -> Child {
        Child::Deployment(
            serde_json::from_value::<Deployment>(json!({
                "metadata": {"name": "shop-cart", "generation": generation,
                    "labels": {"app.kubernetes.io/component": "cart"}},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": status,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_deployment_is_ready_only_once_its_rollout_is_complete() {
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 2});
        let ready = component(&deployment(3, done.clone())).unwrap();
        assert_eq!(ready.name, "cart");
        assert!(ready.is_ready(), "{ready:?}");

        // The controller has not seen the new template yet: the old Pods' readiness says nothing.
        assert!(!component(&deployment(4, done)).unwrap().is_ready());
        // A new Pod made, an old one still running.
        let surging = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2,
            "readyReplicas": 3, "availableReplicas": 3});
        assert!(!component(&deployment(3, surging)).unwrap().is_ready());
        // Every Pod new, one not ready.
        let starting = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 1, "availableReplicas": 1});
        let starting = component(&deployment(3, starting)).unwrap();
        assert!(!starting.up_to_date && !starting.is_ready(), "{starting:?}");
    }

    #[test]
    fn failures_a_person_must_act_on_are_named_and_others_are_not() {
        let pod = |reason: &str| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
                "metadata": {"name": "p", "labels": {"app.kubernetes.io/component": "order"}},
                "status": {"containerStatuses": [{"name": "order", "image": "x", "imageID": "",
                    "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": reason, "message": "why"}}}]}
            }))
            .unwrap()
        };
        let now: k8s_openapi::jiff::Timestamp = "2026-12-04T12:00:00Z".parse().unwrap();
        assert_eq!(
            super::pod_failures(&[pod("CrashLoopBackOff"), pod("CrashLoopBackOff")], now),
            ["order: CrashLoopBackOff (why)"]
        );
        // Starting up is not a failure, nor a first pull that failed once.
        assert!(super::pod_failures(&[pod("ContainerCreating")], now).is_empty());
        assert!(super::pod_failures(&[pod("ErrImagePull")], now).is_empty());
        // An image the node lacks, with pulls off: no retry brings it.
        assert_eq!(
            super::pod_failures(&[pod("ErrImageNeverPull")], now),
            ["order: ErrImageNeverPull (why)"]
        );
        // A backup Job's Pod is not a component.
        let mut backup = pod("CrashLoopBackOff");
        backup.metadata.labels.as_mut().unwrap().extend([
            (
                "app.kubernetes.io/component".to_owned(),
                "backup".to_owned(),
            ),
            (
                "batch.kubernetes.io/job-name".to_owned(),
                "shop-backup-1".to_owned(),
            ),
        ]);
        assert!(super::pod_failures(&[backup], now).is_empty());
        // Unschedulable for a minute: said, with the scheduler's reason; for less: not yet.
        let pending = |since: &str| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
                "metadata": {"name": "p", "labels": {"app.kubernetes.io/component": "postgres"}},
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                    "status": "False", "reason": "Unschedulable", "lastTransitionTime": since,
                    "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]}
            }))
            .unwrap()
        };
        assert_eq!(
            super::pod_failures(&[pending("2026-12-04T11:58:30Z")], now),
            [
                "postgres: Unschedulable (0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.)"
            ]
        );
        assert!(super::pod_failures(&[pending("2026-12-04T11:59:30Z")], now).is_empty());

        let stalled = deployment(
            3,
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1,
                "conditions": [{"type": "Progressing", "status": "False",
                    "reason": "ProgressDeadlineExceeded", "message": "timed out"}]}),
        );
        let refused = deployment(
            3,
            json!({"observedGeneration": 3, "replicas": 0, "conditions": [{"type": "ReplicaFailure",
                "status": "True", "reason": "FailedCreate",
                "message": "pods \"shop-cart-1\" is forbidden: violates PodSecurity \"restricted:latest\""}]}),
        );
        assert_eq!(
            super::stalled_rollouts(&[stalled.clone(), refused.clone()]),
            ["cart: ProgressDeadlineExceeded (timed out)"]
        );
        // Pods that cannot be made hold the rollout back: said, not yet a failure.
        assert_eq!(
            super::held_rollouts(&[stalled, refused]),
            [
                "cart: ReplicaFailure (pods \"shop-cart-1\" is forbidden: violates PodSecurity \"restricted:latest\")"
            ]
        );
    }

    #[test]
    fn a_stateful_set_is_ready_once_every_replica_runs_the_update_revision() {
        let set = |status: serde_json::Value| {
            Child::StatefulSet(
                serde_json::from_value::<StatefulSet>(json!({
                    "metadata": {"name": "shop-postgres", "generation": 2},
                    "spec": {"replicas": 1, "selector": {}, "serviceName": "x", "template": {}},
                    "status": status,
                }))
                .unwrap(),
            )
        };
        let done = json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 1,
            "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"});
        assert!(component(&set(done)).unwrap().is_ready());
        let rolling = json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 1,
            "updatedReplicas": 0, "currentRevision": "a", "updateRevision": "b"});
        assert!(!component(&set(rolling)).unwrap().is_ready());
    }

    #[test]
    fn the_newest_finished_backup_pod_tells_the_name_and_size() {
        use super::last_backup_report;
        let pod = |phase: &str, message: &str| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(serde_json::json!({
                "status": {"phase": phase, "containerStatuses": [{
                    "name": "backup", "image": "postgres", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "message": message}}}]}
            }))
            .unwrap()
        };
        let pods = [
            pod(
                "Succeeded",
                "backup 20261129T030000Z: 1200 bytes, databases: user",
            ),
            pod(
                "Succeeded",
                "backup 20261130T030000Z: 1337 bytes, databases: user",
            ),
            pod("Failed", "backup 20261201T030000Z: 1 bytes"),
            pod("Succeeded", "something else"),
        ];
        assert_eq!(
            last_backup_report(&pods),
            Some(("20261130T030000Z".to_owned(), 1337))
        );
        assert_eq!(last_backup_report(&[]), None);
    }

    #[test]
    fn a_backup_scheduled_after_the_last_success_and_not_running_has_failed() {
        use super::backup_health;
        use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |text: &str| Time(text.parse().unwrap());
        let cron = |scheduled: Option<&str>, succeeded: Option<&str>| {
            vec![Child::CronJob(Box::new(CronJob {
                status: Some(CronJobStatus {
                    last_schedule_time: scheduled.map(at),
                    last_successful_time: succeeded.map(at),
                    active: None,
                }),
                ..CronJob::default()
            }))]
        };
        let now = "2026-12-01T03:10:00Z".parse().unwrap();
        assert!(
            backup_health(&[], now).is_none(),
            "no backups, no condition"
        );
        assert!(backup_health(&cron(None, None), now).unwrap().0);
        let ok = cron(Some("2026-11-30T03:00:00Z"), Some("2026-11-30T03:00:41Z"));
        assert_eq!(backup_health(&ok, now).unwrap().1, "LastBackupSucceeded");
        let failed = cron(Some("2026-12-01T03:00:00Z"), Some("2026-11-30T03:00:41Z"));
        let (healthy, reason, _) = backup_health(&failed, now).unwrap();
        assert!(!healthy);
        assert_eq!(reason, "LastBackupFailed");
    }

    #[test]
    fn backups_are_late_once_the_schedule_came_round_twice_without_a_success() {
        use super::backup_health;
        use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let at = |text: &str| Time(text.parse().unwrap());
        // Nightly at three; made on the 28th at noon.
        let cron = |succeeded: Option<&str>| {
            vec![Child::CronJob(Box::new(CronJob {
                metadata: ObjectMeta {
                    creation_timestamp: Some(at("2026-11-28T12:00:00Z")),
                    ..ObjectMeta::default()
                },
                spec: Some(CronJobSpec {
                    schedule: "0 3 * * *".into(),
                    ..CronJobSpec::default()
                }),
                status: Some(CronJobStatus {
                    last_schedule_time: succeeded.map(at),
                    last_successful_time: succeeded.map(at),
                    active: None,
                }),
            }))]
        };
        let reason = |children: &[Child], now: &str| {
            backup_health(children, now.parse().unwrap()).unwrap().1
        };
        let succeeded = cron(Some("2026-11-29T03:01:00Z"));
        // Runs due on the 30th and the 1st at three; an hour's grace for the second.
        assert_eq!(
            reason(&succeeded, "2026-12-01T03:30:00Z"),
            "LastBackupSucceeded"
        );
        assert_eq!(reason(&succeeded, "2026-12-01T04:00:01Z"), "BackupsLate");
        // Never a success: counted from the CronJob's making (runs on the 29th and 30th).
        let never = cron(None);
        assert_eq!(reason(&never, "2026-11-29T10:00:00Z"), "NoneYet");
        assert_eq!(reason(&never, "2026-11-30T04:00:01Z"), "BackupsLate");
        let (healthy, _, message) =
            backup_health(&never, "2026-11-30T05:00:00Z".parse().unwrap()).unwrap();
        assert!(
            !healthy && message.contains("no backup has succeeded"),
            "{message}"
        );
        // Every minute: late three minutes (two runs and a minute's grace) after the success.
        let mut minutely = cron(Some("2026-11-30T10:00:05Z"));
        if let Child::CronJob(job) = &mut minutely[0] {
            job.spec.as_mut().unwrap().schedule = "* * * * *".into();
        }
        assert_eq!(
            reason(&minutely, "2026-11-30T10:02:30Z"),
            "LastBackupSucceeded"
        );
        assert_eq!(reason(&minutely, "2026-11-30T10:03:01Z"), "BackupsLate");
    }
}
