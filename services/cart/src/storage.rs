//! Carts in Redis: a hash per user, product id → quantity. Every change that reads before it
//! writes is one Lua script, so concurrent requests on one cart never lose an update.

use std::time::Duration;

use letsgo_platform::cache::Cache;
use letsgo_platform::errors::{AppError, ErrorCode};
use redis::Script;

/// Redis out of reach (refused, timed out, its connection lost) is passing, like any service
/// being away: 1004 at 503, which a client may retry. Anything else Redis says is a fault: 1003.
fn redis_error(error: redis::RedisError) -> AppError {
    tracing::error!(%error, "cart storage failed");
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        AppError::of(ErrorCode::ServiceUnavailable)
    } else {
        AppError::of(ErrorCode::Cache)
    }
}

/// What adding to a line came to.
#[derive(Debug, PartialEq, Eq)]
pub enum AddOutcome {
    Added { quantity: i64 },
    OverLineLimit,
    TooManyLines,
}

#[derive(Clone)]
pub struct CartStore {
    cache: Cache,
    ttl: Duration,
    add: Script,
    set_existing: Script,
}

impl CartStore {
    pub fn new(cache: Cache, ttl: Duration) -> Self {
        CartStore {
            cache,
            ttl,
            add: Script::new(
                r"
                local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
                if current == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
                local total = current + tonumber(ARGV[2])
                if total > tonumber(ARGV[3]) then return -1 end
                redis.call('HSET', KEYS[1], ARGV[1], total)
                redis.call('EXPIRE', KEYS[1], ARGV[5])
                return total
                ",
            ),
            set_existing: Script::new(
                r"
                if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
                redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
                redis.call('EXPIRE', KEYS[1], ARGV[3])
                return 1
                ",
            ),
        }
    }

    fn key(&self, user_id: i64) -> String {
        self.cache.key(&format!("cart:{user_id}"))
    }

    /// Adds `quantity` to the line, creating it; refuses to pass `max_quantity` per line or
    /// `max_lines` lines.
    pub async fn add(
        &self,
        user_id: i64,
        product_id: i64,
        quantity: i64,
        max_quantity: i64,
        max_lines: u32,
    ) -> Result<AddOutcome, AppError> {
        let mut connection = self.cache.connection();
        let result: i64 = self
            .add
            .key(self.key(user_id))
            .arg(product_id)
            .arg(quantity)
            .arg(max_quantity)
            .arg(max_lines)
            .arg(self.ttl.as_secs())
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(match result {
            -1 => AddOutcome::OverLineLimit,
            -2 => AddOutcome::TooManyLines,
            quantity => AddOutcome::Added { quantity },
        })
    }

    /// Sets an existing line's quantity; answers false when the line is not there.
    pub async fn set_existing(
        &self,
        user_id: i64,
        product_id: i64,
        quantity: i64,
    ) -> Result<bool, AppError> {
        let mut connection = self.cache.connection();
        let set: i64 = self
            .set_existing
            .key(self.key(user_id))
            .arg(product_id)
            .arg(quantity)
            .arg(self.ttl.as_secs())
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(set == 1)
    }

    /// Removes lines; answers how many were there.
    pub async fn remove(&self, user_id: i64, product_ids: &[i64]) -> Result<i64, AppError> {
        if product_ids.is_empty() {
            return Ok(0);
        }
        let mut connection = self.cache.connection();
        redis::cmd("HDEL")
            .arg(self.key(user_id))
            .arg(product_ids)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)
    }

    /// Removes products from several carts in one round trip: one `HDEL` per cart, pipelined.
    pub async fn remove_from_each(&self, carts: &[(i64, Vec<i64>)]) -> Result<(), AppError> {
        let mut pipeline = redis::pipe();
        for (user_id, product_ids) in carts.iter().filter(|(_, ids)| !ids.is_empty()) {
            pipeline
                .cmd("HDEL")
                .arg(self.key(*user_id))
                .arg(product_ids)
                .ignore();
        }
        if pipeline.is_empty() {
            return Ok(());
        }
        let mut connection = self.cache.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(redis_error)
    }

    pub async fn clear(&self, user_id: i64) -> Result<(), AppError> {
        let mut connection = self.cache.connection();
        redis::cmd("DEL")
            .arg(self.key(user_id))
            .query_async::<i64>(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Every line, as (product id, quantity), ordered by product id.
    pub async fn lines(&self, user_id: i64) -> Result<Vec<(i64, i64)>, AppError> {
        let mut connection = self.cache.connection();
        let raw: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key(user_id))
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        let mut lines: Vec<(i64, i64)> = raw
            .into_iter()
            .filter_map(|(product, quantity)| Some((product.parse().ok()?, quantity.parse().ok()?)))
            .collect();
        lines.sort_unstable();
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_out_of_reach_is_unavailable_and_other_failures_are_cache_errors() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            redis_error(redis::RedisError::from(refused)).code,
            ErrorCode::ServiceUnavailable
        );
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(
            redis_error(redis::RedisError::from(timed_out)).code,
            ErrorCode::ServiceUnavailable
        );
        let script_failed =
            redis::RedisError::from((redis::ErrorKind::Client, "the script returned nonsense"));
        assert_eq!(redis_error(script_failed).code, ErrorCode::Cache);
    }
}
