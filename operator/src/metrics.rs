//! The operator's Prometheus metrics: how many reconciles, how many failed and why, how long
//! they took, and whether this replica leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Error;
use crate::store::{StoreCondition, StorePhase};

pub struct Metrics {
    pub reconcile: ReconcileMetrics,
    /// Each Store's state, so alerts can name the Store.
    pub stores: StoreMetrics,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge<i64, AtomicI64>,
    registry: Registry,
}

#[derive(Clone)]
pub struct ReconcileMetrics {
    runs: Counter,
    failures: Family<ErrorLabels, Counter>,
    duration: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    namespace: String,
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreConditionLabels {
    namespace: String,
    store: String,
    condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorePhaseLabels {
    namespace: String,
    store: String,
    phase: String,
}

/// Per Store: whether it is Ready, its phase, when a reconcile last succeeded, how many failed.
/// A deleted Store is not reconciled again: the controller calls [`StoreMetrics::keep_only`]
/// with the Stores that exist, and the others' series go.
#[derive(Clone, Default)]
pub struct StoreMetrics {
    ready: Family<StoreLabels, Gauge>,
    phase: Family<StorePhaseLabels, Gauge>,
    last_success: Family<StoreLabels, Gauge<f64, AtomicU64>>,
    failures: Family<StoreLabels, Counter>,
    conditions: Family<StoreConditionLabels, Gauge>,
    /// The Stores with series, and the condition types each has: the families cannot be
    /// listed, so what to remove is kept here.
    known: std::sync::Arc<std::sync::Mutex<KnownStores>>,
}

/// Each Store with series, (namespace, name), and the condition types it has reported.
type KnownStores = BTreeMap<(String, String), BTreeSet<String>>;

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_ready",
            "1 while the Store is Ready, by namespace and store",
            self.ready.clone(),
        );
        registry.register(
            "store_phase",
            "1 for the Store's current phase, 0 for the others",
            self.phase.clone(),
        );
        registry.register(
            "store_last_success_timestamp_seconds",
            "When a reconcile of the Store last succeeded (unix seconds)",
            self.last_success.clone(),
        );
        registry.register(
            "store_reconcile_failures",
            "Reconciles of the Store that failed",
            self.failures.clone(),
        );
        registry.register(
            "store_condition",
            "1 while the Store's status condition (BackupsHealthy, KafkaReachable, ...) is True, 0 while False",
            self.conditions.clone(),
        );
    }

    fn note(
        &self,
        namespace: &str,
        store: &str,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), BTreeSet<String>>> {
        let mut known = self.known.lock().expect("known stores lock");
        known
            .entry((namespace.to_owned(), store.to_owned()))
            .or_default();
        known
    }

    /// Removes the series of every Store not in `existing` (namespace, name): Stores deleted
    /// since they were last reconciled. Answers the Stores whose series went.
    pub fn keep_only(&self, existing: &BTreeSet<(String, String)>) -> Vec<(String, String)> {
        let mut known = self.known.lock().expect("known stores lock");
        let gone: Vec<(String, String)> = known
            .keys()
            .filter(|key| !existing.contains(*key))
            .cloned()
            .collect();
        for key in gone.iter().cloned() {
            let conditions = known.remove(&key).unwrap_or_default();
            let (namespace, store) = key;
            let labels = StoreLabels {
                namespace: namespace.clone(),
                store: store.clone(),
            };
            self.ready.remove(&labels);
            self.last_success.remove(&labels);
            self.failures.remove(&labels);
            for phase in StorePhase::ALL {
                self.phase.remove(&StorePhaseLabels {
                    namespace: namespace.clone(),
                    store: store.clone(),
                    phase: phase.as_str().to_owned(),
                });
            }
            for condition in conditions {
                self.conditions.remove(&StoreConditionLabels {
                    namespace: namespace.clone(),
                    store: store.clone(),
                    condition,
                });
            }
        }
        gone
    }

    /// Records the Store's conditions as its status has them.
    pub fn conditions(&self, namespace: &str, store: &str, conditions: &[StoreCondition]) {
        let mut known = self.note(namespace, store);
        if let Some(types) = known.get_mut(&(namespace.to_owned(), store.to_owned())) {
            types.extend(conditions.iter().map(|condition| condition.type_.clone()));
        }
        drop(known);
        for condition in conditions {
            self.conditions
                .get_or_create(&StoreConditionLabels {
                    namespace: namespace.to_owned(),
                    store: store.to_owned(),
                    condition: condition.type_.clone(),
                })
                .set(i64::from(condition.status == "True"));
        }
    }

    /// Records a successful reconcile that left the Store in `phase`.
    pub fn reconciled(&self, namespace: &str, store: &str, phase: StorePhase) {
        drop(self.note(namespace, store));
        let labels = StoreLabels {
            namespace: namespace.to_owned(),
            store: store.to_owned(),
        };
        self.ready
            .get_or_create(&labels)
            .set(i64::from(phase == StorePhase::Ready));
        for each in StorePhase::ALL {
            self.phase
                .get_or_create(&StorePhaseLabels {
                    namespace: namespace.to_owned(),
                    store: store.to_owned(),
                    phase: each.as_str().to_owned(),
                })
                .set(i64::from(each == phase));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        self.last_success.get_or_create(&labels).set(now);
    }

    pub fn failed(&self, namespace: &str, store: &str) {
        drop(self.note(namespace, store));
        self.failures
            .get_or_create(&StoreLabels {
                namespace: namespace.to_owned(),
                store: store.to_owned(),
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("letsgo_operator");
        let reconcile = ReconcileMetrics {
            runs: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        };
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciles started",
            reconcile.runs.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error",
            reconcile.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            reconcile.duration.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        let stores = StoreMetrics::default();
        stores.register(&mut registry);
        Metrics {
            reconcile,
            stores,
            leader,
            registry,
        }
    }
}

impl Metrics {
    /// The text exposition format, for `/metrics`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl ReconcileMetrics {
    /// Counts a reconcile; its duration is recorded when the guard drops.
    pub fn count_and_measure(&self) -> ReconcileMeasurer {
        self.runs.inc();
        ReconcileMeasurer {
            start: Instant::now(),
            duration: self.duration.clone(),
        }
    }

    pub fn set_failure(&self, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label(),
            })
            .inc();
    }
}

pub struct ReconcileMeasurer {
    start: Instant,
    duration: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.duration.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_exposed() {
        let metrics = Metrics::default();
        drop(metrics.reconcile.count_and_measure());
        metrics
            .reconcile
            .set_failure(&Error::MissingObjectKey("metadata.uid"));
        let text = metrics.encode();
        assert!(
            text.contains("letsgo_operator_reconciliations_total 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"letsgo_operator_reconcile_failures_total{error="missing_object_key"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("letsgo_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("letsgo_operator_leader 0"), "{text}");
    }

    #[test]
    fn each_store_is_named_in_its_series() {
        let metrics = Metrics::default();
        metrics
            .stores
            .reconciled("shops", "north", StorePhase::Degraded);
        metrics.stores.failed("shops", "north");
        let text = metrics.encode();
        for line in [
            r#"letsgo_operator_store_ready{namespace="shops",store="north"} 0"#,
            r#"letsgo_operator_store_phase{namespace="shops",store="north",phase="Degraded"} 1"#,
            r#"letsgo_operator_store_phase{namespace="shops",store="north",phase="Ready"} 0"#,
            r#"letsgo_operator_store_reconcile_failures_total{namespace="shops",store="north"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains(r#"letsgo_operator_store_last_success_timestamp_seconds{namespace="shops",store="north"}"#),
            "{text}"
        );
    }

    #[test]
    fn a_deleted_stores_series_go_and_the_others_stay() {
        let metrics = Metrics::default();
        for store in ["north", "south"] {
            metrics.stores.reconciled("shops", store, StorePhase::Ready);
            metrics.stores.failed("shops", store);
            metrics.stores.conditions(
                "shops",
                store,
                &[serde_json::from_value(serde_json::json!({
                    "type": "KafkaReachable", "status": "True", "reason": "Reachable",
                    "lastTransitionTime": "2026-12-04T00:00:00Z"
                }))
                .unwrap()],
            );
        }
        let existing = BTreeSet::from([("shops".to_owned(), "south".to_owned())]);
        metrics.stores.keep_only(&existing);
        let text = metrics.encode();
        assert!(!text.contains(r#"store="north""#), "{text}");
        for line in [
            r#"letsgo_operator_store_ready{namespace="shops",store="south"} 1"#,
            r#"letsgo_operator_store_condition{namespace="shops",store="south",condition="KafkaReachable"} 1"#,
            r#"letsgo_operator_store_reconcile_failures_total{namespace="shops",store="south"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
