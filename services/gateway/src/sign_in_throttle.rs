//! Throttling of password guessing: failed sign-ins are budgeted per account and per client
//! address, and once either budget is spent the next sign-ins for it are answered 429 with
//! `Retry-After`, without asking the user service (so a right password is refused too, until
//! the budget recovers: a guesser learns nothing from a throttled attempt).
//!
//! - A budget of N failures refills evenly over its window: one failure is forgiven every
//!   window/N (GCRA: each key keeps only the instant its debt is paid off).
//! - An attempt reserves a failure from both budgets before it is passed on, and gives them
//!   back unless the user service answers "wrong username or password". So concurrent guesses
//!   cannot overrun a budget, while successes, and attempts that end in another error (the
//!   user service down, a timeout), cost nothing.
//! - Accounts are keyed by the trimmed, lowercased username, hashed with a per-process random
//!   key: a long name costs no memory, and no one can aim collisions at an account.
//! - Memory is bounded: keys whose budget is whole again are pruned every minute, and each
//!   table holds at most a fixed number of keys. When a table is full, the half of it nearest
//!   to recovery is forgotten (one scan per half a table of new keys). Someone cycling through
//!   names or addresses thus forgets their own cheap entries first; to push out an account
//!   under attack they would have to run up deeper debts on as many other keys, which the
//!   address budget stops.
//!
//! Governor does not fit here: its check spends a cell that cannot be given back (a success
//! must not count), it has no way to look without spending, and its keyed store cannot be
//! capped. Sign-ins are slow (a password hash each), so one mutex over two small maps costs
//! nothing that shows.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use letsgo_platform::errors::AppError;
use letsgo_platform::telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;

/// Most keys each table (accounts, addresses) remembers.
pub const TRACKED_KEYS: usize = 100_000;

/// How often keys whose budget is whole again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A budget of failures that refills evenly over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureBudget {
    /// Time to forgive one failure.
    per_failure: Duration,
    /// How far ahead of now a key's debt may run and still allow an attempt.
    tolerance: Duration,
}

impl FailureBudget {
    pub fn new(failures: NonZeroU32, window: Duration) -> Self {
        let per_failure = window / failures.get();
        FailureBudget {
            per_failure,
            tolerance: per_failure * (failures.get() - 1),
        }
    }

    /// How long to wait before the next attempt, for a key whose debt is paid at `paid_at`.
    fn wait(&self, paid_at: Instant, now: Instant) -> Option<Duration> {
        let allowed_from = paid_at.checked_sub(self.tolerance).unwrap_or(now);
        (allowed_from > now).then(|| allowed_from - now)
    }
}

/// One budget per key, with the instant each key's debt is paid off.
struct Table<K> {
    budget: FailureBudget,
    paid_at: HashMap<K, Instant>,
    capacity: usize,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(budget: FailureBudget, capacity: usize) -> Self {
        Table {
            budget,
            paid_at: HashMap::new(),
            capacity: capacity.max(2),
        }
    }

    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        self.paid_at
            .get(key)
            .and_then(|paid_at| self.budget.wait(*paid_at, now))
    }

    fn charge(&mut self, key: K, now: Instant) {
        if !self.paid_at.contains_key(&key) && self.paid_at.len() >= self.capacity {
            self.make_room(now);
        }
        let paid_at = self.paid_at.entry(key).or_insert(now);
        *paid_at = (*paid_at).max(now) + self.budget.per_failure;
    }

    fn refund(&mut self, key: &K, now: Instant) {
        if let Some(paid_at) = self.paid_at.get_mut(key) {
            match paid_at.checked_sub(self.budget.per_failure) {
                Some(earlier) if earlier > now => *paid_at = earlier,
                _ => {
                    self.paid_at.remove(key);
                }
            }
        }
    }

    fn prune(&mut self, now: Instant) {
        self.paid_at.retain(|_, paid_at| *paid_at > now);
    }

    /// Forgets the recovered keys, then, if more than half the table is left, the keys nearest
    /// to recovery down to half: so a full table is scanned once per half a table of new keys,
    /// never once per key.
    fn make_room(&mut self, now: Instant) {
        self.prune(now);
        let keep = self.capacity / 2;
        let Some(forget) = self.paid_at.len().checked_sub(keep).filter(|n| *n > 0) else {
            return;
        };
        let mut debts: Vec<Instant> = self.paid_at.values().copied().collect();
        let threshold = *debts.select_nth_unstable(forget - 1).1;
        // Every key below the threshold goes, and as many at it as make up the number.
        let below = debts.iter().filter(|paid_at| **paid_at < threshold).count();
        let mut ties_left = forget - below;
        self.paid_at.retain(|_, paid_at| {
            if *paid_at < threshold {
                false
            } else if *paid_at == threshold && ties_left > 0 {
                ties_left -= 1;
                false
            } else {
                true
            }
        });
    }
}

struct Tables {
    accounts: Table<u64>,
    /// `None` for requests whose peer is unknown (never over a real socket).
    addresses: Table<Option<IpAddr>>,
}

struct Inner {
    tables: Mutex<Tables>,
    names: RandomState,
    throttled: Counter,
}

/// The throttle shared by every sign-in of the process. Cheap to clone.
#[derive(Clone)]
pub struct SignInThrottle {
    inner: Arc<Inner>,
}

impl SignInThrottle {
    /// Budgets per account and per address, each table holding at most `capacity` keys.
    pub fn new(
        per_account: FailureBudget,
        per_address: FailureBudget,
        capacity: usize,
        metrics: &Metrics,
    ) -> Self {
        let throttled = Counter::default();
        metrics.register(
            "gateway_sign_ins_throttled",
            "Sign-ins refused 429 because the account or address had failed too often",
            throttled.clone(),
        );
        SignInThrottle {
            inner: Arc::new(Inner {
                tables: Mutex::new(Tables {
                    accounts: Table::new(per_account, capacity),
                    addresses: Table::new(per_address, capacity),
                }),
                names: RandomState::new(),
                throttled,
            }),
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // The tables hold plain numbers: whatever a panicking holder left is still usable.
        self.inner
            .tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves a failure from the account's and the address's budgets, or refuses the
    /// sign-in with 429 if either is spent. The reservation is given back when the returned
    /// [`Attempt`] is dropped, unless [`Attempt::failed`] was called.
    pub fn begin(&self, username: &str, address: Option<IpAddr>) -> Result<Attempt, AppError> {
        let account = self
            .inner
            .names
            .hash_one(username.trim().to_lowercase().as_str());
        let now = Instant::now();
        let mut tables = self.tables();
        let wait = [
            tables.accounts.wait(&account, now),
            tables.addresses.wait(&address, now),
        ]
        .into_iter()
        .flatten()
        .max();
        if let Some(wait) = wait {
            drop(tables);
            self.inner.throttled.inc();
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(AppError::too_many_requests(seconds));
        }
        tables.accounts.charge(account, now);
        tables.addresses.charge(address, now);
        Ok(Attempt {
            throttle: self.clone(),
            account,
            address,
            failed: false,
        })
    }

    /// Forgets keys whose budgets are whole again, every minute, for as long as the throttle
    /// is in use.
    pub fn spawn_pruning(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                SignInThrottle { inner }.prune(Instant::now());
            }
        });
    }

    fn prune(&self, now: Instant) {
        let mut tables = self.tables();
        tables.accounts.prune(now);
        tables.addresses.prune(now);
        tables.accounts.paid_at.shrink_to_fit();
        tables.addresses.paid_at.shrink_to_fit();
    }
}

/// A sign-in under way, holding one failure of each budget.
pub struct Attempt {
    throttle: SignInThrottle,
    account: u64,
    address: Option<IpAddr>,
    failed: bool,
}

impl Attempt {
    /// The password was wrong: the reserved failures stay spent.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.failed {
            let now = Instant::now();
            let mut tables = self.throttle.tables();
            tables.accounts.refund(&self.account, now);
            tables.addresses.refund(&self.address, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use letsgo_platform::errors::ErrorCode;

    use super::*;

    fn budget(failures: u32, window_secs: u64) -> FailureBudget {
        FailureBudget::new(
            NonZeroU32::new(failures).unwrap(),
            Duration::from_secs(window_secs),
        )
    }

    fn throttle(per_account: u32, per_address: u32) -> SignInThrottle {
        SignInThrottle::new(
            budget(per_account, 60),
            budget(per_address, 60),
            TRACKED_KEYS,
            &Metrics::new("test"),
        )
    }

    fn address(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn fail(throttle: &SignInThrottle, username: &str, from: Option<IpAddr>) {
        throttle.begin(username, from).unwrap().failed();
    }

    fn refused_for(result: Result<Attempt, AppError>) -> u64 {
        match result {
            Ok(_) => panic!("the attempt was let through"),
            Err(error) => {
                assert_eq!(error.code, ErrorCode::TooManyRequests);
                error.retry_after.unwrap()
            }
        }
    }

    #[test]
    fn a_budget_of_n_allows_n_failures_then_waits_one_share_of_the_window() {
        let budget = budget(5, 60);
        let mut table = Table::new(budget, 10);
        let now = Instant::now();
        for _ in 0..5 {
            assert_eq!(table.wait(&1, now), None);
            table.charge(1, now);
        }
        assert_eq!(table.wait(&1, now), Some(Duration::from_secs(12)));
        assert_eq!(
            table.wait(&1, now + Duration::from_secs(11)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(table.wait(&1, now + Duration::from_secs(12)), None);
        // One failure more after the wait spends the share again.
        table.charge(1, now + Duration::from_secs(12));
        assert_eq!(
            table.wait(&1, now + Duration::from_secs(12)),
            Some(Duration::from_secs(12))
        );
        assert_eq!(table.wait(&2, now), None, "other keys are untouched");
    }

    #[test]
    fn an_account_is_throttled_from_any_address_and_by_any_spelling() {
        let throttle = throttle(3, 100);
        fail(&throttle, "Alice", address("192.0.2.1"));
        fail(&throttle, " alice ", address("192.0.2.2"));
        fail(&throttle, "ALICE", address("192.0.2.3"));
        let seconds = refused_for(throttle.begin("alice", address("192.0.2.4")));
        assert!((1..=20).contains(&seconds), "{seconds}");
        assert!(throttle.begin("bob", address("192.0.2.4")).is_ok());
    }

    #[test]
    fn an_address_is_throttled_across_usernames() {
        let throttle = throttle(100, 3);
        for name in ["a", "b", "c"] {
            fail(&throttle, name, address("192.0.2.1"));
        }
        refused_for(throttle.begin("d", address("192.0.2.1")));
        assert!(throttle.begin("d", address("192.0.2.2")).is_ok());
    }

    #[test]
    fn successes_and_abandoned_attempts_cost_nothing() {
        let throttle = throttle(2, 2);
        for _ in 0..10 {
            // Dropped without a verdict: signed in, or ended in another error.
            let attempt = throttle.begin("carol", address("192.0.2.1")).unwrap();
            drop(attempt);
        }
        fail(&throttle, "carol", address("192.0.2.1"));
        fail(&throttle, "carol", address("192.0.2.1"));
        refused_for(throttle.begin("carol", address("192.0.2.1")));
    }

    #[test]
    fn concurrent_attempts_cannot_overrun_a_budget() {
        let throttle = throttle(3, 100);
        let held: Vec<_> = (0..3)
            .map(|_| throttle.begin("dave", address("192.0.2.1")).unwrap())
            .collect();
        refused_for(throttle.begin("dave", address("192.0.2.1")));
        // Those three turn out to be successes: the budget is whole again.
        drop(held);
        assert!(throttle.begin("dave", address("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_full_table_forgets_the_keys_nearest_to_recovery_first() {
        let budget = budget(5, 60);
        let mut table = Table::new(budget, 1000);
        let now = Instant::now();
        // The account under attack carries the deepest debt.
        for _ in 0..5 {
            table.charge(0, now);
        }
        // Then a hundred thousand names, one failure each.
        for key in 1..100_000 {
            table.charge(key, now);
            assert!(table.paid_at.len() <= 1000);
        }
        assert!(
            table.wait(&0, now).is_some(),
            "the attacked account is kept"
        );
    }

    #[test]
    fn a_full_table_is_halved_so_it_is_not_scanned_for_every_new_key() {
        let mut table = Table::new(budget(5, 60), 1000);
        let now = Instant::now();
        for key in 0..1000 {
            table.charge(key, now);
        }
        assert_eq!(table.paid_at.len(), 1000);
        table.charge(1000, now);
        assert_eq!(table.paid_at.len(), 501);
        assert!(table.wait(&1000, now).is_none() && table.paid_at.contains_key(&1000));
    }

    #[test]
    fn a_refund_that_clears_the_debt_forgets_the_key() {
        let throttle = throttle(5, 5);
        drop(throttle.begin("frank", address("192.0.2.1")).unwrap());
        let tables = throttle.tables();
        assert!(tables.accounts.paid_at.is_empty());
        assert!(tables.addresses.paid_at.is_empty());
    }

    #[test]
    fn recovered_keys_are_pruned() {
        let throttle = throttle(5, 5);
        fail(&throttle, "erin", address("192.0.2.1"));
        throttle.prune(Instant::now());
        assert_eq!(throttle.tables().accounts.paid_at.len(), 1);
        throttle.prune(Instant::now() + Duration::from_secs(13));
        let tables = throttle.tables();
        assert!(tables.accounts.paid_at.is_empty());
        assert!(tables.addresses.paid_at.is_empty());
    }
}
