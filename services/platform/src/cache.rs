//! Redis: one multiplexed, self-reconnecting connection per process, and the key prefix that
//! keeps shops and test runs sharing a Redis apart.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Arg, Cmd, Pipeline, RedisFuture, Value};
use tracing::Instrument;

use crate::config::RedisArgs;
use crate::traces;

/// The pub/sub channel (after the key prefix) on which the product service announces every
/// committed product change: the message is the product id. Caches of product data outside the
/// product service (the gateway's) listen to it.
pub const PRODUCT_CHANGES: &str = "product:changed";

/// How many times a process tries to reach Redis as it starts (pausing 0.1 s, then twice as
/// long each time: about 6 s in all).
const START_TRIES: u32 = 7;

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
        // While Redis is gone, a command fails at once instead of waiting out the manager's
        // reconnection backoff (by default six tries over 6 s, during which every command
        // waited: 9 s measured), so callers that can do without the cache (product reads go
        // to the database) do, within their deadline; each failed command makes the next
        // try, so the connection is back as soon as Redis is.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        // At start-up, Redis gets a few seconds to be there (as the manager's default gave it).
        let mut pause = Duration::from_millis(100);
        let mut tries = 1;
        let connection = loop {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(connection) => break connection,
                Err(error) if error.is_io_error() && tries < START_TRIES => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                Err(error) => return Err(error),
            }
        };
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
    pub fn connection(&self) -> Connection {
        Connection(self.connection.clone())
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

/// A handle on the process's Redis connection. While traces are exported, each command is a
/// client span named by the command alone (`MGET`, `EVALSHA`), never its keys or values.
#[derive(Clone)]
pub struct Connection(ConnectionManager);

/// The command's name: its first argument, when it looks like one.
fn command_name(cmd: &Cmd) -> &str {
    match cmd.args_iter().next() {
        Some(Arg::Simple(name))
            if !name.is_empty()
                && name.len() <= 32
                && name.iter().all(|byte| byte.is_ascii_alphabetic()) =>
        {
            std::str::from_utf8(name).unwrap_or("unknown")
        }
        _ => "unknown",
    }
}

fn command_span(operation: &str) -> tracing::Span {
    tracing::info_span!(
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = "redis",
        db.operation.name = operation,
    )
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if !traces::is_on() {
            return self.0.req_packed_command(cmd);
        }
        let span = command_span(command_name(cmd));
        Box::pin(self.0.req_packed_command(cmd).instrument(span))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if !traces::is_on() {
            return self.0.req_packed_commands(pipeline, offset, count);
        }
        let span = command_span("PIPELINE");
        Box::pin(
            self.0
                .req_packed_commands(pipeline, offset, count)
                .instrument(span),
        )
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::command_name;

    #[test]
    fn spans_name_the_command_and_never_its_arguments() {
        assert_eq!(command_name(redis::cmd("MGET").arg("secret-key")), "MGET");
        assert_eq!(command_name(&redis::Cmd::new()), "unknown");
        assert_eq!(command_name(&redis::cmd("user:42:token")), "unknown");
    }
}
