//! Deletes the Kafka topics of finished tests: every prefix listed in the registry
//! (`letsgo_testkit::registry`), on the brokers listed beside it. Prefixes whose deletion
//! failed stay listed for the next sweep; the exit status says whether all went.

use std::collections::BTreeMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let path = letsgo_testkit::registry();
    let listed = match std::fs::read_to_string(&path) {
        Ok(listed) => listed,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("letsgo-sweep-test-topics: {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut by_brokers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for line in listed.lines() {
        if let Some((brokers, prefix)) = line.split_once('\t')
            && !prefix.is_empty()
        {
            by_brokers
                .entry(brokers)
                .or_default()
                .push(prefix.to_owned());
        }
    }
    let mut left = String::new();
    let mut deleted = 0;
    for (brokers, prefixes) in &by_brokers {
        match letsgo_testkit::delete_kafka_topics(brokers, prefixes) {
            Ok(count) => deleted += count,
            Err(error) => {
                eprintln!("letsgo-sweep-test-topics: {brokers}: {error}");
                for prefix in prefixes {
                    left.push_str(&format!("{brokers}\t{prefix}\n"));
                }
            }
        }
    }
    // Prefixes listed meanwhile by tests still running are appended after this read; only
    // what was read is replaced.
    let now = std::fs::read_to_string(&path).unwrap_or_default();
    let appended = now.strip_prefix(listed.as_str()).unwrap_or("");
    if let Err(error) = std::fs::write(&path, format!("{left}{appended}")) {
        eprintln!("letsgo-sweep-test-topics: {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    println!(
        "deleted {deleted} test topics under {} prefixes",
        by_brokers.values().map(Vec::len).sum::<usize>()
    );
    if left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
