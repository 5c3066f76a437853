//! Product detail in Redis, cache-aside, never stale after a change.
//!
//! The race cache-aside is known for: a reader misses, reads the old row, a writer commits and
//! deletes the key, then the reader stores the old row it read. Here each product has a
//! version counter beside its entry. A reader notes the version when it misses; every writer,
//! after committing, bumps the version and deletes the entry; the reader stores what it read
//! only if the version is still the one it noted (one atomic script). A read that began before
//! a commit therefore never lands in the cache after it, and a product that changes often is
//! still cached between its changes.
//!
//! Redis being away never fails a read: the catalogue falls back to the database.

use std::time::Duration;

use letsgo_platform::cache::{Cache, PRODUCT_CHANGES};
use redis::Script;

use crate::storage::ProductRecord;

/// Version counters outlive any entry by far; an evicted counter reads as 0, which only costs
/// a miss.
const VERSION_TTL_SECS: u64 = 24 * 3600;

/// What a lookup found: the product, or the version to store a fresh read under.
pub enum Lookup {
    Hit(Box<ProductRecord>),
    Miss { version: String },
}

#[derive(Clone)]
pub struct ProductCache {
    cache: Cache,
    ttl: Duration,
    store_if_unchanged: Script,
    invalidate: Script,
}

impl ProductCache {
    pub fn new(cache: Cache, ttl: Duration) -> Self {
        ProductCache {
            cache,
            ttl,
            store_if_unchanged: Script::new(
                "if (redis.call('GET', KEYS[2]) or '0') == ARGV[3] then \
                   redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 \
                 end return 0",
            ),
            // The announcement rides in the same script: no change is ever invalidated here
            // without being told to the caches outside. KEYS: the channel, then each
            // product's entry and version; ARGV: the versions' TTL, then each product's id.
            invalidate: Script::new(
                "for j = 1, #ARGV - 1 do \
                   redis.call('INCR', KEYS[2 * j + 1]) \
                   redis.call('EXPIRE', KEYS[2 * j + 1], ARGV[1]) \
                   redis.call('DEL', KEYS[2 * j]) \
                   redis.call('PUBLISH', KEYS[1], ARGV[j + 1]) \
                 end return #ARGV - 1",
            ),
        }
    }

    fn keys(&self, id: i64) -> (String, String) {
        (
            self.cache.key(&format!("product:{id}")),
            self.cache.key(&format!("product:{id}:version")),
        )
    }

    /// The cached product, or the version a fresh read should be stored under.
    pub async fn lookup(&self, id: i64) -> Lookup {
        let (entry, version) = self.keys(id);
        let mut connection = self.cache.connection();
        let found: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("MGET")
            .arg(&entry)
            .arg(&version)
            .query_async(&mut connection)
            .await;
        match found {
            Ok((Some(text), _)) => match serde_json::from_str(&text) {
                Ok(product) => Lookup::Hit(Box::new(product)),
                Err(_) => Lookup::Miss {
                    version: "unreadable".to_owned(),
                },
            },
            Ok((None, version)) => Lookup::Miss {
                version: version.unwrap_or_else(|| "0".to_owned()),
            },
            Err(error) => {
                tracing::warn!(%error, "product cache read failed; reading the database");
                // A version no counter has: nothing will be stored.
                Lookup::Miss {
                    version: "unavailable".to_owned(),
                }
            }
        }
    }

    /// Stores a row read from the database after a miss, unless it changed since the miss.
    pub async fn store(&self, product: &ProductRecord, version_at_miss: &str) {
        let (entry, version) = self.keys(product.id);
        let Ok(text) = serde_json::to_string(product) else {
            return;
        };
        let mut connection = self.cache.connection();
        let stored: redis::RedisResult<i32> = self
            .store_if_unchanged
            .key(&entry)
            .key(&version)
            .arg(text)
            .arg(self.ttl.as_secs().max(1))
            .arg(version_at_miss)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = stored {
            tracing::warn!(%error, "product cache write failed");
        }
    }

    /// Call after committing a change to these products: drops their entries and announces
    /// the change on [`PRODUCT_CHANGES`] (before this returns, so before the change's caller
    /// is answered), all in one round trip.
    pub async fn invalidate(&self, ids: &[i64]) {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return;
        }
        let mut invocation = self.invalidate.key(self.cache.key(PRODUCT_CHANGES));
        invocation.arg(VERSION_TTL_SECS);
        for id in &ids {
            let (entry, version) = self.keys(*id);
            invocation.key(entry).key(version).arg(id);
        }
        let mut connection = self.cache.connection();
        let done: redis::RedisResult<i64> = invocation.invoke_async(&mut connection).await;
        if let Err(error) = done {
            // The entries' TTL bounds how long they can be stale.
            tracing::error!(%error, product_ids = ?ids, "product cache invalidation failed");
        }
    }
}
