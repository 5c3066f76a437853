//! The operator's Prometheus metrics: how many reconciles, how many failed and why, how long
//! they took, and whether this replica leads.

use std::sync::atomic::AtomicI64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Error;

pub struct Metrics {
    pub reconcile: ReconcileMetrics,
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
        Metrics {
            reconcile,
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
}
