//! Kafka topics of a test's own: a unique prefix, and every topic under it deleted after the
//! run, so the shared test broker does not fill with the topics of past runs (each Kafka client
//! caches the metadata of every topic it is told about: 2,400 leftover topics cost each service
//! 3–6 MiB of heap).
//!
//! A prefix is not deleted while its test runs: deleting topics under a consumer that is being
//! torn down with the test's runtime crashed librdkafka (SIGSEGV). A dropped prefix is written
//! to a registry file instead ([`registry`]: LETSGO_TEST_TOPICS, else a file in the temporary
//! directory), and `letsgo-sweep-test-topics` (run by `make test` after the tests, and again
//! before them for a run that was killed) deletes what it lists.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::kafka_brokers;

/// A topic prefix of a test's own (`<label>-<random>.`); dropped, it deletes every topic whose
/// name starts with it from the test broker.
pub struct TopicPrefix {
    prefix: String,
    brokers: String,
}

impl TopicPrefix {
    /// A new prefix, `label` then a random part, on the test broker (KAFKA_BROKERS).
    pub fn new(label: &str) -> TopicPrefix {
        TopicPrefix::exactly(format!("{label}-{}.", uuid::Uuid::new_v4().simple()))
    }

    /// This very prefix (made unique by the caller) on the test broker.
    pub fn exactly(prefix: impl Into<String>) -> TopicPrefix {
        TopicPrefix {
            prefix: prefix.into(),
            brokers: kafka_brokers(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.prefix
    }
}

impl Drop for TopicPrefix {
    fn drop(&mut self) {
        use std::io::Write;
        let path = registry();
        // One short append per prefix: whole lines, even from tests running in parallel.
        let line = format!("{}\t{}\n", self.brokers, self.prefix);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = written {
            eprintln!(
                "could not list topic prefix {} for deletion in {}: {error}",
                self.prefix,
                path.display()
            );
        }
    }
}

/// The file listing the topic prefixes of finished tests, to be deleted by
/// `letsgo-sweep-test-topics`: LETSGO_TEST_TOPICS, else `letsgo-test-topics` in the temporary
/// directory.
pub fn registry() -> std::path::PathBuf {
    std::env::var_os("LETSGO_TEST_TOPICS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("letsgo-test-topics"))
}

/// Deletes every topic on `brokers` whose name starts with one of `prefixes`; answers how many
/// went.
pub fn delete_kafka_topics(brokers: &str, prefixes: &[String]) -> Result<usize, String> {
    let brokers = brokers.to_owned();
    let prefixes = prefixes.to_vec();
    let deleted = std::thread::spawn(move || -> Result<usize, String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .map_err(|error| error.to_string())?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .map_err(|error| error.to_string())?;
        let names: Vec<String> = metadata
            .topics()
            .iter()
            .map(|topic| topic.name().to_owned())
            .filter(|name| {
                prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
            })
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| error.to_string())?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = runtime
            .block_on(admin.delete_topics(&names, &options))
            .map_err(|error| error.to_string())?;
        for result in &results {
            if let Err((topic, code)) = result {
                return Err(format!("{topic}: {code:?}"));
            }
        }
        Ok(results.len())
    })
    .join();
    deleted.map_err(|_| "deleting topics panicked".to_owned())?
}
