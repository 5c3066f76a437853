//! Password hashing with argon2id, on a small pool of threads of its own.
//!
//! Parameters: OWASP's argon2id profile of 7 MiB memory, 5 passes, 1 lane — as strong as their
//! 19 MiB / 2 passes profile, with a third of the memory per hash. Hashing runs on a fixed pool
//! (PASSWORD_HASH_THREADS; by default half the cores, and no more than an eighth of the
//! container's memory limit can hold, see [`default_threads`]): each hash holds its memory and a core
//! while it runs, so an unbounded pool (tokio's blocking threads, up to 512) once let a burst of
//! sign-ups grow the service past 600 MiB. A short queue in front of the pool holds the calls
//! waiting for a thread (they hold no thread themselves), and a call that finds it full is
//! refused at once with 1006 (see [`QUEUED_PER_THREAD`] for why), so memory and threads stay
//! bounded however many requests arrive, and cores stay free for the service's other calls.
//!
//! And each hash gives its memory back when it ends: glibc serves allocations this large with
//! `mmap`, but after the first is freed it raises that threshold and serves the next from the
//! thread's heap, where freed blocks stay resident (two idle hashing threads held 70 MiB). The
//! pool pins the threshold, so a hash's 7 MiB is mapped for it and unmapped after it.

use std::sync::OnceLock;

use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use argon2::{Algorithm, Argon2, Params, Version};
use letsgo_platform::errors::{AppError, AppResult};
use tokio::sync::{mpsc, oneshot};

const MEMORY_KIB: u32 = 7 * 1024;
const PASSES: u32 = 5;
const LANES: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

type Job = Box<dyn FnOnce() + Send>;

static THREADS: OnceLock<usize> = OnceLock::new();

/// Sets how many hashing threads the process's pool starts with; only the first call before
/// the first hash counts (the pool is per process).
pub fn set_threads(threads: usize) {
    let _ = THREADS.set(threads.max(1));
}

/// Hashes that may wait for each hashing thread; a call that finds the queue full is refused at
/// once with 1006 (TOO_MANY_REQUESTS: RESOURCE_EXHAUSTED between services, HTTP 429 at the
/// gateway).
///
/// Why a short queue and then a refusal, rather than a long wait or no wait. In a sign-in burst
/// (a sale opening) a shopper would rather wait a moment than see an error, so a call waits while
/// its turn comes soon: a hash takes 20-30 ms (measured in the tests), so the last of 16 waiting
/// per thread waits about half a second. A longer queue only holds shoppers until the gateway's
/// call deadline (3 s) and then fails them anyway; answering at once is kinder, the shopper may
/// retry, and the gateway's channel retries a RESOURCE_EXHAUSTED call on another replica by
/// itself, since the refused one did nothing. Refusing every call the threads cannot take at
/// once would turn the first jitter of a burst into errors.
pub const QUEUED_PER_THREAD: usize = 16;

/// The hashing threads' queue, started on first use. Queued calls wait as tasks for their
/// answer, holding no thread; there are never more than `threads` × [`QUEUED_PER_THREAD`].
fn pool() -> &'static mpsc::Sender<Job> {
    static POOL: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        keep_large_allocations_mapped();
        let threads = *THREADS.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            default_threads(cores, memory_limit())
        });
        let (sender, receiver) = mpsc::channel::<Job>(threads * QUEUED_PER_THREAD);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for n in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = match receiver.lock() {
                            Ok(mut receiver) => receiver.blocking_recv(),
                            Err(_) => return,
                        };
                        match job {
                            Some(job) => job(),
                            None => return,
                        }
                    }
                })
                .expect("spawn a hashing thread");
        }
        sender
    })
}

/// Half the cores, but no more threads than an eighth of `memory_limit` holds hashes. The cores
/// are the node's when the container has no CPU limit (the operator sets none), so a 64-core
/// node would otherwise start 32 threads, 224 MiB of hashes at once, in a 256 MiB container.
pub fn default_threads(cores: usize, memory_limit: Option<u64>) -> usize {
    let by_cores = (cores / 2).max(1);
    let Some(limit) = memory_limit else {
        return by_cores;
    };
    let per_hash = u64::from(MEMORY_KIB) * 1024;
    let by_memory = usize::try_from(limit / 8 / per_hash).unwrap_or(usize::MAX);
    by_cores.min(by_memory).max(1)
}

/// The memory limit of this process's cgroup (v2's memory.max, else v1's
/// memory.limit_in_bytes); None when unlimited or not in a container.
fn memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let value = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?;
    parse_memory_limit(&value)
}

/// `max` (v2) and v1's "no limit" (a page-rounded i64::MAX) are no limit.
fn parse_memory_limit(value: &str) -> Option<u64> {
    let bytes: u64 = value.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

/// Serves allocations of 1 MiB and more with their own mappings, returned to the system when
/// freed: setting the threshold turns glibc's raising of it off. Other allocators need nothing.
fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes an allocator setting; glibc makes it safe at any time.
        let done = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024) };
        if done != 1 {
            tracing::warn!(
                "could not pin the allocator's mmap threshold; hashing memory may stay resident"
            );
        }
    }
}

/// Runs `work` on the hashing pool and awaits its answer, or answers 1006 at once when the
/// queue is full ([`QUEUED_PER_THREAD`]).
async fn on_pool<T: Send + 'static>(
    work: impl FnOnce() -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        // The caller has gone (its request timed out or its client hung up): nobody would
        // read the answer, so the core and the 7 MiB go to the next caller instead.
        if answer.is_closed() {
            return;
        }
        let _ = answer.send(work());
    });
    match pool().try_send(job) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("password hashing queue full: call refused");
            return Err(AppError::too_many_requests(1));
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return Err(AppError::system("password hashing threads have stopped"));
        }
    }
    answered.await.map_err(AppError::system)?
}

/// A hash of a password nobody has, verified against when the username is unknown so that a
/// wrong username costs as much time as a wrong password.
static DECOY: OnceLock<String> = OnceLock::new();

pub async fn hash(password: String) -> AppResult<String> {
    on_pool(move || hash_now(&password)).await
}

fn hash_now(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(AppError::system)
}

/// Answers whether `password` matches `stored` (a PHC string, whatever parameters it was made
/// with). With no stored hash it checks against a decoy and answers false.
pub async fn verify(password: String, stored: Option<String>) -> AppResult<bool> {
    on_pool(move || {
        let known = stored.is_some();
        let stored = match stored {
            Some(hash) => hash,
            None => match DECOY.get() {
                Some(decoy) => decoy.clone(),
                None => {
                    let decoy = hash_now("decoy password that matches nothing")?;
                    DECOY.get_or_init(|| decoy).clone()
                }
            },
        };
        let parsed = PasswordHash::new(&stored).map_err(AppError::system)?;
        let matches = hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use letsgo_platform::errors::ErrorCode;

    #[test]
    fn the_pool_fits_the_containers_memory_whatever_the_nodes_cores() {
        let mib = 1024 * 1024;
        // 64 cores, 256 MiB: 4 threads (28 MiB of hashes), not 32 (224 MiB).
        assert_eq!(default_threads(64, Some(256 * mib)), 4);
        assert_eq!(default_threads(64, None), 32);
        // The cores still bound it, and one thread always runs.
        assert_eq!(default_threads(2, Some(4096 * mib)), 1);
        assert_eq!(default_threads(8, Some(16 * mib)), 1);
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit("268435456\n"), Some(268_435_456));
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash("correct horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(
            verify("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse".to_owned(), Some(hash)).await.unwrap());
        assert!(!verify("anything".to_owned(), None).await.unwrap());
    }

    #[tokio::test]
    async fn many_hashes_at_once_all_complete() {
        let hashes = (0..16).map(|n| hash(format!("password-{n}")));
        for result in futures_util::future::join_all(hashes).await {
            result.unwrap();
        }
    }

    /// Sizes the pool to one thread and occupies it until the answer's sender is used (or
    /// dropped); the handle is the occupying job's.
    async fn hold_the_only_thread() -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<AppResult<()>>,
    ) {
        set_threads(1);
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered, started) = oneshot::channel();
        let gate = tokio::spawn(on_pool(move || {
            let _ = entered.send(());
            let _ = held.recv();
            Ok(())
        }));
        started.await.unwrap();
        (release, gate)
    }

    /// Nextest runs each test in a process of its own, so this one sizes the pool.
    #[tokio::test]
    async fn a_job_whose_caller_has_gone_is_not_run() {
        let (release, gate) = hold_the_only_thread().await;
        // Queued behind the gate; its caller gives up before the pool reaches it.
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            on_pool(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(abandoned.is_err(), "the gate holds the only hashing thread");
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        // A job queued after the abandoned one runs, so the pool has passed it.
        on_pool(|| Ok(())).await.unwrap();
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
    /// A burst of sign-ins far beyond the queue: the callers that fit wait without a thread each
    /// and are all answered; the rest are refused at once with 1006, and no thread is started.
    /// Nextest runs each test in a process of its own, so this one sizes the pool.
    #[tokio::test]
    async fn a_burst_beyond_the_queue_is_refused_at_once_without_growing_threads() {
        fn threads() -> usize {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        }
        let (release, gate) = hold_the_only_thread().await;
        let before = threads();
        let places = QUEUED_PER_THREAD;
        let burst = 2048;
        let calls: Vec<_> = (0..burst)
            .map(|_| tokio::spawn(on_pool(|| Ok(()))))
            .collect();
        // Every call beyond the queue's places is answered while the only thread is still
        // held: wait for them (a busy machine may keep this process off a core for a while;
        // a fixed sleep once saw 1 271 calls not yet polled), then a moment more, in which no
        // queued call may finish.
        let answered = || calls.iter().filter(|call| call.is_finished()).count();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while answered() < burst - places && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            threads(),
            before,
            "{burst} callers beyond a pool of one thread started threads"
        );
        let (refused, waiting): (Vec<_>, Vec<_>) =
            calls.into_iter().partition(|call| call.is_finished());
        assert_eq!(
            waiting.len(),
            places,
            "the queue's places wait, the rest are answered at once"
        );
        for call in refused {
            let error = call.await.unwrap().unwrap_err();
            assert_eq!(error.code, ErrorCode::TooManyRequests);
        }
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        for call in waiting {
            call.await.unwrap().unwrap();
        }
    }
}
