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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::error::OTelSdkError;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Fails the exports it is told to, succeeds the others.
    #[derive(Debug)]
    struct Flaky {
        failures: Vec<bool>,
        call: AtomicUsize,
    }

    impl SpanExporter for Flaky {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            let call = self.call.fetch_add(1, Ordering::Relaxed);
            if self.failures[call] {
                Err(OTelSdkError::InternalFailure("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_outage_is_said_once_with_its_reason_and_its_end_once() {
        let exporter = Reported::new(
            Flaky {
                failures: vec![true, true, true, false, false, true],
                call: AtomicUsize::new(0),
            },
            "http/protobuf http://127.0.0.1:9/v1/traces".to_owned(),
        );
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..6 {
                let _ = run_to_end(exporter.export(Vec::new()));
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let said: Vec<&str> = text.lines().collect();
        assert_eq!(said.len(), 3, "{text}");
        assert!(
            said[0].contains("WARN")
                && said[0].contains("not reaching")
                && said[0].contains("connection refused")
                && said[0].contains("http://127.0.0.1:9/v1/traces"),
            "{}",
            said[0]
        );
        assert!(
            said[1].contains("INFO") && said[1].contains("again"),
            "{}",
            said[1]
        );
        assert!(
            said[2].contains("WARN"),
            "a new outage is said again: {}",
            said[2]
        );
    }

    /// Runs a future that never waits (the fake exporter's) to its end.
    fn run_to_end<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the fake exporter never waits"),
        }
    }
}
