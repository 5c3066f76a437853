//! How the process asks for memory, and what it hands back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The most malloc arenas glibc keeps. By default it makes up to eight per core as threads
/// contend, and each one keeps the memory it touched: with librdkafka's threads beside the
/// runtime's, an idle order service held 9 MiB of heap, 7 MiB with two arenas (measured with
/// `/proc/<pid>/smaps_rollup`). Two keep the runtime's workers from queueing on one lock.
const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas (see [`ARENAS`]); `MALLOC_ARENA_MAX` in the environment wins.
/// Call first thing in `main`, before the threads that allocate start.
pub fn cap_allocator_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes an allocator setting; glibc makes it safe at any time.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
}

/// Whether this process hands back its start-up code once it serves: asked for by the service
/// binaries, not by a test process (which runs many services, and its own code, in one).
static RELEASE_START_UP_CODE: AtomicBool = AtomicBool::new(false);

/// How long after turning ready the code pages are handed back: start-up is over by then
/// (a service turns ready when it can answer; what it ran to get there is not needed again).
const AFTER_READY: Duration = Duration::from_secs(1);

/// Asks that the process hand back its code pages once it serves (see [`on_serving`]). Call
/// from a binary's `main`.
pub fn release_start_up_code_when_serving() {
    RELEASE_START_UP_CODE.store(true, Ordering::Relaxed);
}

/// Called when the service turns ready. If the binary asked for it, once per process and a
/// moment later, the pages of the binary's own code and read-only data that are resident are
/// handed back to the kernel: start-up (settings, TLS, migrations, connecting) touched most of
/// them, and an idle service needs a small part, which the kernel reads back from the binary as
/// it is used. The binary's code is about two thirds of an idle service's resident memory
/// otherwise (docs/performance.md). Reading back is without read-ahead, so only what runs comes
/// back.
pub fn on_serving() {
    if !RELEASE_START_UP_CODE.swap(false, Ordering::Relaxed) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(AFTER_READY).await;
        match tokio::task::spawn_blocking(page_out_own_code).await {
            Ok(Ok((before_kb, after_kb))) => {
                tracing::debug!(
                    before_kb,
                    after_kb,
                    "handed the start-up code pages back to the kernel"
                )
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "could not hand the start-up code pages back")
            }
            Err(_) => {}
        }
    });
}

/// A read-only mapping of the process's own executable, as `/proc/self/smaps` shows it.
struct CodeMapping {
    start: usize,
    length: usize,
    resident_kb: u64,
    /// Pages copied on write (relocated data made read-only after start): anonymous memory,
    /// which paging out would send to swap, not back to the file.
    anonymous_kb: u64,
}

/// The read-only mappings of the process's own executable.
fn code_mappings() -> std::io::Result<Vec<CodeMapping>> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut mappings = Vec::new();
    let mut ours = false;
    for line in smaps.lines() {
        if let Some(mapping) = mapping_of(line) {
            // "start-end perms offset dev inode path": the path is the rest from its first '/'.
            let (start, end, perms) = mapping;
            ours = line.find('/').is_some_and(|at| line[at..] == exe) && !perms.contains('w');
            if ours {
                mappings.push(CodeMapping {
                    start,
                    length: end - start,
                    resident_kb: 0,
                    anonymous_kb: 0,
                });
            }
        } else if ours && let Some(current) = mappings.last_mut() {
            if let Some(kb) = field_kb(line, "Rss:") {
                current.resident_kb = kb;
            } else if let Some(kb) = field_kb(line, "Anonymous:") {
                current.anonymous_kb = kb;
            }
        }
    }
    Ok(mappings)
}

/// The range and permissions of an smaps line that starts a mapping; none for its fields.
fn mapping_of(line: &str) -> Option<(usize, usize, &str)> {
    let mut fields = line.split_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end, fields.next()?))
}

/// The kilobytes of an smaps field line such as `Rss:   1234 kB`.
fn field_kb(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Kilobytes of the process's own executable that are resident now as pages of the file
/// (the copied-on-write ones are anonymous memory, which no page-out here touches).
fn resident_code_kb() -> std::io::Result<u64> {
    Ok(file_kb(&code_mappings()?))
}

fn file_kb(mappings: &[CodeMapping]) -> u64 {
    mappings
        .iter()
        .map(|m| m.resident_kb.saturating_sub(m.anonymous_kb))
        .sum()
}

/// Pages out the resident pages of the read-only, file-backed mappings of the process's own
/// executable; answers the kilobytes of its file pages resident before and after. The kernel pages
/// out only what this process may (a file it owns or may write: the images give each service
/// its binary) and only pages no other process maps.
fn page_out_own_code() -> std::io::Result<(u64, u64)> {
    let mappings = code_mappings()?;
    let before = file_kb(&mappings);
    for mapping in mappings.iter().filter(|m| m.anonymous_kb == 0) {
        let address = mapping.start as *mut libc::c_void;
        // Without read-ahead, a page that runs again comes back alone: with it, each fault
        // read its neighbours in too, and an idle order service was back at 15 of its 19 MiB
        // within seconds (9.7 without). What starts under load comes back as fast either way.
        // SAFETY: the range is a whole mapping of our own binary that is read-only and holds
        // no anonymous (copied) page, so every page is a clean page of the file: MADV_RANDOM
        // only turns off read-ahead for it, and MADV_PAGEOUT drops pages the kernel reads back
        // from the same file on the next access. Nothing the program sees changes.
        unsafe {
            libc::madvise(address, mapping.length, libc::MADV_RANDOM);
            if libc::madvise(address, mapping.length, libc::MADV_PAGEOUT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok((before, resident_code_kb()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages out this process's own code and prints what it measured. Run on its own, it
    /// checks that the executable's code is found and the advice is accepted; the next test
    /// runs it in a private copy of the binary and reads the figures.
    #[test]
    fn paging_out_answers_what_was_resident_before_and_after() {
        let (before, after) = page_out_own_code().unwrap();
        assert!(before > 0, "no resident code of the executable was found");
        println!("paged-out {before} {after}");
    }

    /// Pages of a binary that another process maps too are never paged out, and nextest runs
    /// this binary's tests in many processes at once: so the test runs a private copy of the
    /// binary, which pages itself out and prints what it measured.
    #[test]
    fn the_binarys_resident_code_is_handed_back() {
        let copy = std::env::temp_dir().join(format!("letsgo-page-out-{}", std::process::id()));
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let output = std::process::Command::new(&copy)
            .args([
                "--exact",
                "memory::tests::paging_out_answers_what_was_resident_before_and_after",
                "--nocapture",
                "--test-threads=1",
            ])
            .output();
        let _ = std::fs::remove_file(&copy);
        let output = output.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|line| Some(line.split_once("paged-out ")?.1))
            .unwrap_or_else(|| {
                panic!(
                    "the copy printed no figures: {stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        let mut figures = line.split_whitespace().map(|kb| kb.parse::<u64>().unwrap());
        let (before, after) = (figures.next().unwrap(), figures.next().unwrap());
        println!("the copy's code resident as file pages: {before} kB before, {after} kB after");
        assert!(
            after < before / 2,
            "resident code {before} kB before paging out, {after} kB after"
        );
    }
}
