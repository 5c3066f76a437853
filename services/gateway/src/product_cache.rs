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
//! - The subscription is checked: a PING every few seconds that goes unanswered counts as a
//!   break, so a Redis that vanished without closing the connection stops the serving too.
//! - Entries also expire after a TTL, which bounds how long the gateway can hold an answer
//!   whose announcement went astray (the product service's own Redis entry, which a refill
//!   reads, has its TTL too). The cache is bounded in entries and in bytes.
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

/// How often the subscription is checked with a PING, and how long its answer may take.
const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a connection and subscription may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Entry {
    body: Bytes,
    stored: Instant,
}

#[derive(Default)]
struct Entries {
    map: HashMap<i64, Entry>,
    /// Sum of the stored bodies' lengths.
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, id: i64) {
        if let Some(old) = self.map.remove(&id) {
            self.bytes -= old.body.len();
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    fn drop_expired(&mut self, ttl: Duration) {
        let mut freed = 0;
        self.map.retain(|_, entry| {
            let fresh = entry.stored.elapsed() < ttl;
            if !fresh {
                freed += entry.body.len();
            }
            fresh
        });
        self.bytes -= freed;
    }
}

struct Inner {
    entries: RwLock<Entries>,
    generations: Box<[AtomicU64]>,
    /// Bumped by every full clear; part of every ticket.
    epoch: AtomicU64,
    listening: AtomicBool,
    ttl: Duration,
    capacity: usize,
    max_bytes: usize,
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
    /// A cache of at most `capacity` answers and `max_bytes` of them, each kept at most `ttl`;
    /// a zero for any turns it off. It serves nothing until [`listen`](Self::listen)'s
    /// subscription is confirmed.
    pub fn new(ttl: Duration, capacity: usize, max_bytes: usize, metrics: &Metrics) -> Self {
        let inner = Inner {
            entries: RwLock::new(Entries::default()),
            generations: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            ttl,
            capacity,
            max_bytes,
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
        self.inner.capacity > 0 && self.inner.max_bytes > 0 && !self.inner.ttl.is_zero()
    }

    fn slot(&self, id: i64) -> &AtomicU64 {
        &self.inner.generations[id.rem_euclid(SLOTS as i64) as usize]
    }

    /// The stored answer for product `id`, if there is a fresh one and the cache is live.
    pub fn get(&self, id: i64) -> Option<Bytes> {
        if !self.inner.listening.load(Ordering::Acquire) {
            self.inner.misses.inc();
            return None;
        }
        let found = {
            let entries = self.inner.entries.read().expect("product cache lock");
            entries
                .map
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
        if body.len() > self.inner.max_bytes {
            return;
        }
        entries.remove(id);
        let full = |entries: &Entries| {
            entries.map.len() >= self.inner.capacity
                || entries.bytes + body.len() > self.inner.max_bytes
        };
        if full(&entries) {
            entries.drop_expired(self.inner.ttl);
            if full(&entries) {
                // Still full of fresh answers: start over rather than track recency on reads.
                entries.clear();
            }
        }
        entries.bytes += body.len();
        entries.map.insert(
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
            .remove(id);
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

    /// Follows the product service's change announcements on `redis` (channel
    /// `{key_prefix}product:changed`) for as long as the process lives, resubscribing after
    /// any break. A disabled cache does not listen.
    pub fn listen(&self, redis: redis::Client, key_prefix: &str) {
        if !self.enabled() {
            return;
        }
        let channel = format!("{key_prefix}{PRODUCT_CHANGES}");
        let cache = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            // Said once per outage, not at every attempt.
            let mut outage_told = false;
            loop {
                let ended = cache.follow(&redis, &channel).await;
                let was_live = cache.is_live();
                cache.set_listening(false);
                if was_live {
                    wait = Duration::from_millis(100);
                    outage_told = false;
                }
                if !outage_told {
                    match ended {
                        Ok(()) => {
                            tracing::warn!(%channel, "product change subscription ended; product detail is not cached until it is back")
                        }
                        Err(error) => {
                            tracing::warn!(%error, %channel, "cannot follow product changes; product detail is not cached until it can")
                        }
                    }
                    outage_told = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECONNECT_MAX);
            }
        });
    }

    /// Subscribes, then evicts on every announcement until the subscription breaks, ends or
    /// stops answering its heartbeat.
    async fn follow(&self, client: &redis::Client, channel: &str) -> redis::RedisResult<()> {
        let subscribed = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await
        .map_err(|_| timed_out("subscribing"))??;
        let (mut sink, mut messages) = subscribed.split();
        self.set_listening(true);
        tracing::info!(%channel, "product detail cache live");
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Ok(()) };
                    match message.get_payload::<String>().ok().and_then(|id| id.parse().ok()) {
                        Some(id) => self.evict(id),
                        // Not a product id: whatever changed, forget everything.
                        None => self.clear(),
                    }
                }
                _ = heartbeat.tick() => {
                    tokio::time::timeout(HEARTBEAT_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| timed_out("answering a heartbeat"))??;
                }
            }
        }
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("redis took too long {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_cache(ttl: Duration, capacity: usize) -> ProductDetailCache {
        let cache = ProductDetailCache::new(ttl, capacity, 1 << 20, &Metrics::new("test"));
        cache.set_listening(true);
        cache
    }

    fn body(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn serves_what_it_stored_only_while_listening() {
        let cache =
            ProductDetailCache::new(Duration::from_secs(60), 10, 1 << 20, &Metrics::new("test"));
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
    fn the_bytes_held_are_bounded_too() {
        let cache =
            ProductDetailCache::new(Duration::from_secs(60), 100, 10, &Metrics::new("test"));
        cache.set_listening(true);
        let store = |id: i64, text: &'static str| {
            let ticket = cache.ticket(id);
            cache.store(id, ticket, body(text));
        };
        store(1, "aaaa");
        store(2, "bbbb");
        store(1, "cccc"); // a replacement counts once
        assert_eq!(cache.get(1), Some(body("cccc")));
        assert_eq!(cache.get(2), Some(body("bbbb")));
        store(3, "dddd"); // 12 bytes would not fit: start over
        assert_eq!(cache.get(3), Some(body("dddd")));
        assert_eq!(cache.get(1), None);
        store(4, "an answer longer than the whole budget");
        assert_eq!(cache.get(4), None, "never kept");
        assert_eq!(cache.get(3), Some(body("dddd")), "and pushes nothing out");
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
