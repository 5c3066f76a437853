//! How the process asks for memory.

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
