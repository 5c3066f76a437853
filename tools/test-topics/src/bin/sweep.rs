//! Deletes the Kafka topics of tests that have ended: every prefix listed in the registry
//! (`letsgo_test_topics::registry`) whose test process is gone. Prefixes of running tests, and
//! those a broker could not delete, stay listed; the exit status says whether all else went.

use std::process::ExitCode;

fn main() -> ExitCode {
    let registry = letsgo_test_topics::registry();
    match letsgo_test_topics::sweep(&registry) {
        Ok(swept) => {
            println!(
                "deleted {} test topics under {} prefixes ({} kept: their tests still run)",
                swept.topics_deleted, swept.prefixes_done, swept.prefixes_kept
            );
            for failure in &swept.failures {
                eprintln!("letsgo-sweep-test-topics: {failure}");
            }
            if swept.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("letsgo-sweep-test-topics: {}: {error}", registry.display());
            ExitCode::FAILURE
        }
    }
}
