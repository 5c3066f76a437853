//! Kafka topics of a test's own: a unique prefix, and every topic and consumer group under it
//! deleted once the test has ended, so the shared broker (the one `make up` uses too) does not
//! grow with the topics, logs and committed offsets of past runs.
//!
//! A prefix is listed in a registry file ([`registry`]: LETSGO_TEST_TOPICS, else a file in the
//! temporary directory) when it is made, with the test process's id; [`sweep`] deletes the
//! topics of every listed prefix whose process has ended, so a test killed by a timeout is
//! cleaned up too. Topics are never deleted while their test runs: deleting them under
//! consumers being torn down with the test's runtime crashed librdkafka (SIGSEGV).
//! `make test` sweeps before the tests (runs killed, or run by hand) and after them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// The Kafka-protocol brokers tests use (KAFKA_BROKERS).
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// A topic prefix of a test's own (`<label>-<random>.`) on the test broker, listed for the
/// sweep as soon as it is made.
pub struct TopicPrefix {
    prefix: String,
}

impl TopicPrefix {
    /// A new prefix, `label` then a random part.
    pub fn new(label: &str) -> TopicPrefix {
        TopicPrefix::exactly(format!("{label}-{}.", uuid::Uuid::new_v4().simple()))
    }

    /// This very prefix (made unique by the caller).
    pub fn exactly(prefix: impl Into<String>) -> TopicPrefix {
        let prefix = prefix.into();
        let entry = Entry {
            brokers: kafka_brokers(),
            prefix: prefix.clone(),
            pid: std::process::id(),
        };
        if let Err(error) = append(&registry(), std::slice::from_ref(&entry)) {
            eprintln!(
                "could not list topic prefix {prefix} for deletion in {}: {error}",
                registry().display()
            );
        }
        TopicPrefix { prefix }
    }

    pub fn as_str(&self) -> &str {
        &self.prefix
    }
}

/// The file listing the topic prefixes tests made: LETSGO_TEST_TOPICS, else
/// `letsgo-test-topics` in the temporary directory.
pub fn registry() -> PathBuf {
    std::env::var_os("LETSGO_TEST_TOPICS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("letsgo-test-topics"))
}

/// One line of the registry: `brokers<TAB>prefix<TAB>pid`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    brokers: String,
    prefix: String,
    pid: u32,
}

impl Entry {
    fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.split('\t');
        let entry = Entry {
            brokers: fields.next()?.to_owned(),
            prefix: fields.next()?.to_owned(),
            pid: fields.next()?.parse().ok()?,
        };
        (!entry.brokers.is_empty() && !entry.prefix.is_empty()).then_some(entry)
    }

    fn line(&self) -> String {
        format!("{}\t{}\t{}\n", self.brokers, self.prefix, self.pid)
    }

    /// Whether the test process that made the prefix still runs.
    fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// Appends `entries`, one short write per line: whole lines, even from tests in parallel.
fn append(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for entry in entries {
        file.write_all(entry.line().as_bytes())?;
    }
    Ok(())
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    pub topics_deleted: usize,
    pub prefixes_done: usize,
    /// Prefixes of tests still running, listed again for a later sweep.
    pub prefixes_kept: usize,
    /// Brokers that could not be cleaned, with why; their prefixes stay listed.
    pub failures: Vec<String>,
}

/// Deletes the topics of every listed prefix whose test has ended. The registry is taken
/// whole (renamed) first, so prefixes listed meanwhile go to a new file and are not lost; what
/// is not done is appended back.
pub fn sweep(registry: &Path) -> std::io::Result<Swept> {
    let taken = registry.with_extension(format!("sweeping-{}", std::process::id()));
    match std::fs::rename(registry, &taken) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Swept::default());
        }
        Err(error) => return Err(error),
    }
    let listed = std::fs::read_to_string(&taken)?;
    let entries: Vec<Entry> = listed.lines().filter_map(Entry::parse).collect();
    let (running, ended): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(Entry::running);
    let mut swept = Swept {
        prefixes_kept: running.len(),
        ..Swept::default()
    };
    let mut keep = running;
    let mut by_brokers: Vec<(String, Vec<Entry>)> = Vec::new();
    for entry in ended {
        match by_brokers
            .iter_mut()
            .find(|(brokers, _)| *brokers == entry.brokers)
        {
            Some((_, group)) => group.push(entry),
            None => by_brokers.push((entry.brokers.clone(), vec![entry])),
        }
    }
    for (brokers, group) in by_brokers {
        let prefixes: Vec<String> = group.iter().map(|entry| entry.prefix.clone()).collect();
        match delete_kafka_topics(&brokers, &prefixes) {
            Ok(count) => {
                swept.topics_deleted += count;
                swept.prefixes_done += group.len();
            }
            Err(error) => {
                swept.failures.push(format!("{brokers}: {error}"));
                keep.extend(group);
            }
        }
    }
    append(registry, &keep)?;
    std::fs::remove_file(&taken)?;
    Ok(swept)
}

/// Deletes every topic on `brokers` whose name starts with one of `prefixes`, and every
/// consumer group so named (groups carry the topic prefix; Kafka would keep their committed
/// offsets for a week); answers how many topics went. A topic or group already gone counts as
/// deleted.
pub fn delete_kafka_topics(brokers: &str, prefixes: &[String]) -> Result<usize, String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|error| error.to_string())?;
    let ours = |name: &str| {
        prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
    };
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|error| error.to_string())?;
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|topic| topic.name().to_owned())
        .filter(|name| ours(name))
        .collect();
    let groups: Vec<String> = admin
        .inner()
        .fetch_group_list(None, Duration::from_secs(10))
        .map_err(|error| error.to_string())?
        .groups()
        .iter()
        .map(|group| group.name().to_owned())
        .filter(|name| ours(name))
        .collect();
    if topics.is_empty() && groups.is_empty() {
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if !groups.is_empty() {
        let names: Vec<&str> = groups.iter().map(String::as_str).collect();
        let results = runtime
            .block_on(admin.delete_groups(&names, &options))
            .map_err(|error| error.to_string())?;
        for result in &results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::GroupIdNotFound)) => {}
                Err((group, code)) => return Err(format!("consumer group {group}: {code:?}")),
            }
        }
    }
    if topics.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let results = runtime
        .block_on(admin.delete_topics(&names, &options))
        .map_err(|error| error.to_string())?;
    for result in &results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(format!("{topic}: {code:?}")),
        }
    }
    Ok(results.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lines_round_trip_and_bad_lines_are_skipped() {
        let entry = Entry {
            brokers: "127.0.0.1:9092".to_owned(),
            prefix: "test-ab12.".to_owned(),
            pid: 42,
        };
        assert_eq!(Entry::parse(entry.line().trim_end()), Some(entry));
        assert_eq!(Entry::parse("127.0.0.1:9092\ttest-ab12."), None);
        assert_eq!(Entry::parse("\t\t1"), None);
    }

    #[test]
    fn a_sweep_keeps_the_prefixes_of_running_tests_and_what_is_listed_meanwhile() {
        let dir = std::env::temp_dir().join(format!("test-topics-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let registry = dir.join("registry");
        // This process runs: its prefix is kept, and nothing is asked of a broker.
        let mine = Entry {
            brokers: "127.0.0.1:1".to_owned(),
            prefix: "kept-1.".to_owned(),
            pid: std::process::id(),
        };
        append(&registry, std::slice::from_ref(&mine)).unwrap();
        let swept = sweep(&registry).unwrap();
        assert_eq!((swept.prefixes_kept, swept.prefixes_done), (1, 0));
        assert!(swept.failures.is_empty(), "{:?}", swept.failures);
        assert_eq!(std::fs::read_to_string(&registry).unwrap(), mine.line());
        // No registry: nothing to do.
        std::fs::remove_file(&registry).unwrap();
        assert_eq!(sweep(&registry).unwrap().prefixes_done, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    /// On the real broker: a listed prefix whose process has ended loses its topics and its
    /// consumer groups (with their committed offsets); another prefix's stay.
    #[test]
    fn a_sweep_deletes_an_ended_tests_topics_and_groups_on_the_broker() {
        use rdkafka::TopicPartitionList;
        use rdkafka::admin::{NewTopic, TopicReplication};
        use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

        let brokers = kafka_brokers();
        let ended = format!("sweep-ended-{}.", uuid::Uuid::new_v4().simple());
        let running = TopicPrefix::new("sweep-running");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (gone, kept) = (
            format!("{ended}events"),
            format!("{}events", running.as_str()),
        );
        let new_topics =
            [&gone, &kept].map(|name| NewTopic::new(name, 1, TopicReplication::Fixed(1)));
        for result in runtime
            .block_on(admin.create_topics(&new_topics, &AdminOptions::new()))
            .unwrap()
        {
            result.unwrap();
        }
        // A group of the ended test with an offset committed, as its consumers leave it.
        let group = format!("{ended}readers");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&gone, 0, rdkafka::Offset::Offset(0))
            .unwrap();
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
        drop(consumer);

        let dir = std::env::temp_dir().join(format!("test-topics-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let registry = dir.join("registry");
        let mut finished = std::process::Command::new("true").spawn().unwrap();
        finished.wait().unwrap();
        let entry = |prefix: &str, pid: u32| Entry {
            brokers: brokers.clone(),
            prefix: prefix.to_owned(),
            pid,
        };
        append(
            &registry,
            &[
                entry(&ended, finished.id()),
                entry(running.as_str(), std::process::id()),
            ],
        )
        .unwrap();
        let swept = sweep(&registry).unwrap();
        assert!(swept.failures.is_empty(), "{:?}", swept.failures);
        assert_eq!(
            (
                swept.topics_deleted,
                swept.prefixes_done,
                swept.prefixes_kept
            ),
            (1, 1, 1)
        );

        let listed = |name: &str| {
            admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .unwrap()
                .topics()
                .iter()
                .any(|topic| topic.name() == name)
        };
        assert!(!listed(&gone), "the ended test's topic is deleted");
        assert!(listed(&kept), "a running test's topic stays");
        let groups = admin
            .inner()
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .unwrap();
        assert!(
            groups
                .groups()
                .iter()
                .all(|info| info.name() != group || info.state() == "Dead"),
            "the ended test's group is deleted"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
