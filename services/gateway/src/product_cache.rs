//! Product detail answers kept in the gateway's memory, dropped as soon as the product changes.
//!
//! Product detail is the shop's hottest read. Served from here, it costs the gateway a map
//! lookup instead of a gRPC call, a Redis round trip and two re-encodings. What keeps it
//! correct is the product service's announcement of every committed change on the Redis
//! channel [`PRODUCT_CHANGES`]: the gateway listens and drops the product's entry.
//!
//! - Only while listening: before the subscription is confirmed, and from the moment it
//!   breaks, nothing is served or stored, and every reconnection starts from an empty cache
//!   (announcements made while away are lost).
//! - A read that began before a change never lands after it: each stored answer carries the
//!   generation of its product's slot taken before the fetch; an announcement bumps the
//!   generation, and a store whose generation moved is dropped.
//! - Entries also expire after a TTL, a bound on staleness should an announcement ever go
//!   astray, and the cache holds a bounded number of entries.
//! - The gateway that carries an admin's change drops the entry itself before answering, so
//!   that admin reads their own write at once. Another gateway instance learns of it when the
//!   announcement arrives, which on a local network is well under a millisecond after the
//!   change was committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::StreamExt;
use letsgo_platform::cache::PRODUCT_CHANGES;
use letsgo_platform::telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;

/// Generation slots: products hash onto them, so a change to one product also refuses a
/// store racing it for a product sharing its slot, which only costs a miss.
const SLOTS: usize = 1024;

/// Longest wait between attempts to (re)subscribe.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

struct Entry {
    body: Bytes,
    stored: Instant,
}

struct Inner {
    entries: RwLock<HashMap<i64, Entry>>,
    generations: Box<[AtomicU64]>,
    /// Bumped by every full clear; part of every ticket.
    epoch: AtomicU64,
    listening: AtomicBool,
    ttl: Duration,
    capacity: usize,
    hits: Counter,
    misses: Counter,
}

/// What a miss hands back to [`ProductDetailCache::store`]: the state it must still find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
}

/// The gateway's product detail cache. Cheap to clone.
#[derive(Clone)]
pub struct ProductDetailCache {
    inner: Arc<Inner>,
}

impl ProductDetailCache {
    /// A cache of at most `capacity` answers, each kept at most `ttl`; a zero for either turns
    /// it off. It serves nothing until [`listen`](Self::listen)'s subscription is confirmed.
    pub fn new(ttl: Duration, capacity: usize, metrics: &Metrics) -> Self {
        let inner = Inner {
            entries: RwLock::new(HashMap::new()),
            generations: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            ttl,
            capacity,
            hits: Counter::default(),
            misses: Counter::default(),
        };
        metrics.register(
            "gateway_product_cache_hits",
            "Product detail answers served from the gateway's cache",
            inner.hits.clone(),
        );
        metrics.register(
            "gateway_product_cache_misses",
            "Product detail answers fetched from the product service",
            inner.misses.clone(),
        );
        ProductDetailCache {
            inner: Arc::new(inner),
        }
    }

    fn enabled(&self) -> bool {
        self.inner.capacity > 0 && !self.inner.ttl.is_zero()
    }

    fn slot(&self, id: i64) -> &AtomicU64 {
        &self.inner.generations[id.rem_euclid(SLOTS as i64) as usize]
    }

    /// The stored answer for product `id`, if there is a fresh one and the cache is live.
    pub fn get(&self, id: i64) -> Option<Bytes> {
        if !self.inner.listening.load(Ordering::Acquire) {
            return None;
        }
        let found = {
            let entries = self.inner.entries.read().expect("product cache lock");
            entries
                .get(&id)
                .filter(|entry| entry.stored.elapsed() < self.inner.ttl)
                .map(|entry| entry.body.clone())
        };
        match &found {
            Some(_) => self.inner.hits.inc(),
            None => self.inner.misses.inc(),
        };
        found
    }

    /// Take before fetching product `id`; hand to [`store`](Self::store) with the answer.
    pub fn ticket(&self, id: i64) -> Ticket {
        Ticket {
            epoch: self.inner.epoch.load(Ordering::Acquire),
            generation: self.slot(id).load(Ordering::Acquire),
        }
    }

    /// Keeps `body` as product `id`'s answer, unless the product (or the whole cache) changed
    /// since `ticket` was taken or the cache is not live.
    pub fn store(&self, id: i64, ticket: Ticket, body: Bytes) {
        if !self.enabled() || !self.inner.listening.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.inner.entries.write().expect("product cache lock");
        // Checked under the lock: `evict` bumps before it takes the lock to remove.
        if self.ticket(id) != ticket {
            return;
        }
        if entries.len() >= self.inner.capacity && !entries.contains_key(&id) {
            let ttl = self.inner.ttl;
            entries.retain(|_, entry| entry.stored.elapsed() < ttl);
            if entries.len() >= self.inner.capacity {
                // Still full of fresh answers: start over rather than track recency on reads.
                entries.clear();
            }
        }
        entries.insert(
            id,
            Entry {
                body,
                stored: Instant::now(),
            },
        );
    }

    /// Drops product `id`'s answer and refuses any store racing this change.
    pub fn evict(&self, id: i64) {
        self.slot(id).fetch_add(1, Ordering::AcqRel);
        self.inner
            .entries
            .write()
            .expect("product cache lock")
            .remove(&id);
    }

    /// Drops every answer and refuses every store in flight.
    pub fn clear(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner
            .entries
            .write()
            .expect("product cache lock")
            .clear();
    }

    /// Whether the cache is serving (its subscription is live).
    pub fn is_live(&self) -> bool {
        self.inner.listening.load(Ordering::Acquire)
    }

    fn set_listening(&self, listening: bool) {
        if listening {
            // Changes announced while nobody listened are unknown: start from nothing.
            self.clear();
            self.inner.listening.store(true, Ordering::Release);
        } else {
            self.inner.listening.store(false, Ordering::Release);
            self.clear();
        }
    }

    /// Follows the product service's change announcements on `redis_url` (channel
    /// `{key_prefix}product:changed`) for as long as the process lives, resubscribing after
    /// any break. A disabled cache does not listen.
    pub fn listen(&self, redis_url: String, key_prefix: &str) {
        if !self.enabled() {
            return;
        }
        let channel = format!("{key_prefix}{PRODUCT_CHANGES}");
        let cache = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match cache.follow(&redis_url, &channel).await {
                    Ok(()) => {
                        tracing::warn!(%channel, "product change subscription ended; product detail is not cached until it is back");
                        wait = Duration::from_millis(100);
                    }
                    Err(error) => {
                        tracing::warn!(%error, %channel, "cannot follow product changes; product detail is not cached until it can");
                    }
                }
                cache.set_listening(false);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        });
    }

    async fn follow(&self, redis_url: &str, channel: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        self.set_listening(true);
        tracing::info!(%channel, "product detail cache live");
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            match message
                .get_payload::<String>()
                .ok()
                .and_then(|id| id.parse().ok())
            {
                Some(id) => self.evict(id),
                // Not a product id: whatever changed, forget everything.
                None => self.clear(),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_cache(ttl: Duration, capacity: usize) -> ProductDetailCache {
        let cache = ProductDetailCache::new(ttl, capacity, &Metrics::new("test"));
        cache.set_listening(true);
        cache
    }

    fn body(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn serves_what_it_stored_only_while_listening() {
        let cache = ProductDetailCache::new(Duration::from_secs(60), 10, &Metrics::new("test"));
        let ticket = cache.ticket(1);
        cache.store(1, ticket, body("a"));
        assert_eq!(cache.get(1), None, "not live: nothing stored");

        cache.set_listening(true);
        let ticket = cache.ticket(1);
        cache.store(1, ticket, body("a"));
        assert_eq!(cache.get(1), Some(body("a")));

        cache.set_listening(false);
        assert_eq!(cache.get(1), None, "subscription lost: nothing served");
        cache.set_listening(true);
        assert_eq!(cache.get(1), None, "a new subscription starts empty");
    }

    #[test]
    fn a_change_during_a_fetch_refuses_its_store() {
        let cache = live_cache(Duration::from_secs(60), 10);
        let ticket = cache.ticket(7);
        cache.evict(7); // announced while the old answer was on its way
        cache.store(7, ticket, body("old"));
        assert_eq!(cache.get(7), None);

        let ticket = cache.ticket(7);
        cache.clear();
        cache.store(7, ticket, body("old"));
        assert_eq!(
            cache.get(7),
            None,
            "a full clear also refuses stores in flight"
        );

        let ticket = cache.ticket(7);
        cache.evict(8); // another product: no effect on 7
        cache.store(7, ticket, body("new"));
        assert_eq!(cache.get(7), Some(body("new")));
        cache.evict(7);
        assert_eq!(cache.get(7), None);
    }

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let cache = live_cache(Duration::from_millis(30), 2);
        for id in 1..=2 {
            let ticket = cache.ticket(id);
            cache.store(id, ticket, body("x"));
        }
        let ticket = cache.ticket(3);
        cache.store(3, ticket, body("y"));
        let kept = (1..=3).filter(|id| cache.get(*id).is_some()).count();
        assert!(kept <= 2, "at most two entries, found {kept}");
        assert_eq!(cache.get(3), Some(body("y")), "the newest is kept");

        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(3), None, "expired");
    }

    #[test]
    fn zero_capacity_or_ttl_turns_it_off() {
        for cache in [
            live_cache(Duration::ZERO, 10),
            live_cache(Duration::from_secs(1), 0),
        ] {
            let ticket = cache.ticket(1);
            cache.store(1, ticket, body("a"));
            assert_eq!(cache.get(1), None);
        }
    }
}
