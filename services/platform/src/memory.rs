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
            Ok(Ok(bytes)) => {
                tracing::debug!(bytes, "handed the start-up code pages back to the kernel")
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "could not hand the start-up code pages back")
            }
            Err(_) => {}
        }
    });
}

/// Pages out the resident pages of the read-only mappings of the process's own executable;
/// answers how many bytes those mappings span.
fn page_out_own_code() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut spanned = 0;
    for line in maps.lines() {
        // "start-end perms offset dev inode path": the path is the rest from its first '/'.
        let Some(path) = line.find('/').map(|at| &line[at..]) else {
            continue;
        };
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if path != exe || perms.contains('w') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let (address, length) = (start as *mut libc::c_void, end - start);
        // Without read-ahead, a page that runs again comes back alone: with it, each fault
        // read its neighbours in too, and an idle order service was back at 15 of its 19 MiB
        // within seconds (9.7 without). What starts under load comes back as fast either way.
        // SAFETY: both advices apply to a read-only, file-backed mapping of our own binary:
        // MADV_RANDOM only turns off read-ahead for it, and MADV_PAGEOUT drops clean pages that
        // the kernel reads back from the same file on the next access. Nothing the program
        // sees changes.
        unsafe {
            libc::madvise(address, length, libc::MADV_RANDOM);
            if libc::madvise(address, length, libc::MADV_PAGEOUT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        spanned += length;
    }
    Ok(spanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kilobytes of the process's own executable that are resident now.
    fn resident_code_kb() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy().into_owned();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut resident = 0;
        for line in smaps.lines() {
            if let Some(rss) = line.strip_prefix("Rss:") {
                if ours {
                    resident += rss
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .unwrap();
                }
            } else if is_mapping(line) {
                // A mapping's first line; the fields that follow are its own.
                ours = line.find('/').is_some_and(|at| line[at..] == exe)
                    && !line.split_whitespace().nth(1).unwrap_or("").contains('w');
            }
        }
        resident
    }

    /// Whether an smaps line starts a mapping ("start-end perms ..."), not one of its fields.
    fn is_mapping(line: &str) -> bool {
        line.split_whitespace()
            .next()
            .and_then(|range| range.split_once('-'))
            .is_some_and(|(start, _)| u64::from_str_radix(start, 16).is_ok())
    }

    #[test]
    fn the_binarys_resident_code_is_handed_back() {
        let before = resident_code_kb();
        let spanned = page_out_own_code().unwrap();
        let after = resident_code_kb();
        assert!(spanned > 0, "no mapping of the executable found");
        assert!(
            after < before / 2,
            "resident code {before} kB before paging out, {after} kB after"
        );
    }
}
