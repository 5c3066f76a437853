//! Middleware Pods a StatefulSet rollout would wait on for ever, which the operator replaces.
//!
//! A StatefulSet rolls one Pod at a time and, before it replaces a Pod, waits for it to be
//! Running and Ready. A Pod made from a template that can never turn ready (an image that
//! cannot be pulled, a setting that crashes the server) therefore holds the rollout for good:
//! fixing the template changes nothing until someone deletes that Pod by hand (the
//! StatefulSet documentation's "forced rollback"). And while a middleware StatefulSet rolls,
//! the operator holds the services' changes back. So the operator does the deleting: a Pod
//! of one of the Store's StatefulSets that is not ready and was made from a revision other
//! than the one the StatefulSet now rolls to is deleted, and the StatefulSet controller makes
//! it again from the current template.
//!
//! A ready Pod is never touched (the StatefulSet replaces it in order, as it should), nor is
//! one already on its way out, nor any Pod while the StatefulSet controller has not yet seen
//! the latest template (its `updateRevision` would be stale).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

use crate::manifests::Child;

/// The label the StatefulSet controller puts on each Pod: the revision it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// The names of the Pods among `pods` that the StatefulSets among `applied` would wait on
/// for ever: not ready, not being deleted, and made from a revision the set no longer rolls to.
pub fn stuck_pods(applied: &[Child], pods: &[Pod]) -> Vec<String> {
    applied
        .iter()
        .filter_map(|child| match child {
            Child::StatefulSet(set) => Some(set),
            _ => None,
        })
        .filter_map(|set| Some((set.metadata.name.as_deref()?, rolling_to(set)?)))
        .flat_map(|(set, revision)| {
            pods.iter()
                .filter(move |pod| owned_by(pod, set) && is_stuck(pod, revision))
                .filter_map(|pod| pod.metadata.name.clone())
        })
        .collect()
}

/// The revision the StatefulSet rolls its Pods to, once its controller has seen its latest
/// template.
fn rolling_to(set: &StatefulSet) -> Option<&str> {
    let status = set.status.as_ref()?;
    let seen = status.observed_generation.is_some()
        && status.observed_generation >= set.metadata.generation;
    seen.then_some(status.update_revision.as_deref()?)
}

fn owned_by(pod: &Pod, set: &str) -> bool {
    pod.metadata.owner_references.iter().flatten().any(|owner| {
        owner.kind == "StatefulSet" && owner.name == set && owner.controller == Some(true)
    })
}

fn is_stuck(pod: &Pod, revision: &str) -> bool {
    let made_from = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(REVISION_LABEL));
    let ready = pod
        .status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    pod.metadata.deletion_timestamp.is_none()
        && !ready
        && made_from.is_some_and(|made_from| made_from != revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(generation: i64, observed: i64, update_revision: &str) -> Child {
        Child::StatefulSet(
            serde_json::from_value(json!({
                "metadata": {"name": "shop-redis", "generation": generation},
                "status": {
                    "replicas": 1,
                    "observedGeneration": observed,
                    "currentRevision": "shop-redis-a",
                    "updateRevision": update_revision,
                }
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, owner: &str, revision: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {REVISION_LABEL: revision},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner,
                    "uid": "1", "controller": true,
                }],
            },
            "status": {"conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }},
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_that_never_turned_ready_on_a_revision_left_behind_is_replaced() {
        // The bad template was revision b; the fixed one is c.
        let pods = [pod("shop-redis-0", "shop-redis", "shop-redis-b", false)];
        assert_eq!(
            stuck_pods(&[set(3, 3, "shop-redis-c")], &pods),
            ["shop-redis-0"]
        );
    }

    #[test]
    fn ready_pods_current_pods_others_pods_and_stale_statuses_are_left_alone() {
        // Ready on the old revision: the StatefulSet replaces it itself, in order.
        let ready = [pod("shop-redis-0", "shop-redis", "shop-redis-a", true)];
        assert!(stuck_pods(&[set(3, 3, "shop-redis-c")], &ready).is_empty());
        // Not ready but on the revision being rolled to: deleting it would change nothing.
        let starting = [pod("shop-redis-0", "shop-redis", "shop-redis-c", false)];
        assert!(stuck_pods(&[set(3, 3, "shop-redis-c")], &starting).is_empty());
        // Another StatefulSet's Pod.
        let other = [pod("shop-kafka-0", "shop-kafka", "shop-kafka-a", false)];
        assert!(stuck_pods(&[set(3, 3, "shop-redis-c")], &other).is_empty());
        // The controller has not seen generation 4 yet: its update revision is stale.
        let stuck = [pod("shop-redis-0", "shop-redis", "shop-redis-b", false)];
        assert!(stuck_pods(&[set(4, 3, "shop-redis-c")], &stuck).is_empty());
        // Already being deleted.
        let mut leaving = pod("shop-redis-0", "shop-redis", "shop-redis-b", false);
        leaving.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-12-05T00:00:00Z")).unwrap());
        assert!(stuck_pods(&[set(3, 3, "shop-redis-c")], &[leaving]).is_empty());
    }
}
