//! Redis: one multiplexed, self-reconnecting connection per process, and the key prefix that
//! keeps shops and test runs sharing a Redis apart.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisArgs;

/// The pub/sub channel (after the key prefix) on which the product service announces every
/// committed product change: the message is the product id. Caches of product data outside the
/// product service (the gateway's) listen to it.
pub const PRODUCT_CHANGES: &str = "product:changed";

/// A Redis connection with the process's key prefix. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    prefix: String,
}

impl Cache {
    /// Connects to the Redis `args` name (over TLS for a `rediss://` URL).
    pub async fn connect(args: &RedisArgs) -> redis::RedisResult<Cache> {
        let client = args.client().map_err(|message| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "Redis settings",
                message,
            ))
        })?;
        Cache::connect_client(client, &args.redis_key_prefix).await
    }

    pub async fn connect_url(url: &str, prefix: &str) -> redis::RedisResult<Cache> {
        Cache::connect_client(redis::Client::open(url)?, prefix).await
    }

    async fn connect_client(client: redis::Client, prefix: &str) -> redis::RedisResult<Cache> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)));
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Cache {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// The full key for `name`, prefixed.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A connection handle; clones share one multiplexed connection.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Answers whether Redis answers PING.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(())
    }
}
