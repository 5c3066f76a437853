//! Says when spans stop reaching the collector, and when they reach it again: once each, with
//! the reason, instead of the silence of a batch dropped at every export.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// A span exporter that logs its first failed export (and the first success after failures).
#[derive(Debug)]
pub(crate) struct Reported<E> {
    inner: E,
    /// `grpc http://collector:4317`, as the log lines name it.
    destination: String,
    failing: AtomicBool,
}

impl<E> Reported<E> {
    pub(crate) fn new(inner: E, destination: String) -> Reported<E> {
        Reported {
            inner,
            destination,
            failing: AtomicBool::new(false),
        }
    }

    fn note(&self, result: &OTelSdkResult, spans: usize) {
        match result {
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "letsgo_traces::delivery",
                        destination = %self.destination,
                        %error,
                        dropped_spans = spans,
                        "spans are not reaching the OTLP collector; this is said once until they do again"
                    );
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        target: "letsgo_traces::delivery",
                        destination = %self.destination,
                        "spans reach the OTLP collector again"
                    );
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.note(&result, spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
