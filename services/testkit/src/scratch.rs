//! Scratch data: a PostgreSQL database per test, and Redis keys under a test's prefix, both
//! removed when the test is done with them.

use std::str::FromStr;

use letsgo_platform::db::quote_identifier;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// A database of its own for one test: created empty, dropped when the value goes.
///
/// Tests run in parallel beside a running shop; each gets a database named
/// `letsgo_test_<random>` so none sees another's rows.
pub struct ScratchDatabase {
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

impl ScratchDatabase {
    /// `server_url` points at any database of the server to use (the name is replaced).
    pub async fn create(server_url: &str) -> Result<ScratchDatabase, sqlx::Error> {
        let admin = PgConnectOptions::from_str(server_url)?.database("postgres");
        let name = format!("letsgo_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = admin.connect().await?;
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut connection)
            .await?;
        // Its rows are thrown away with it, so its commits need not wait for the disk. While
        // the cluster tests load the machine's disk, a one-row commit waited up to 13 s for
        // its WAL flush, past the 3 s deadline of the call that made it.
        sqlx::query(&format!(
            "ALTER DATABASE {} SET synchronous_commit = off",
            quote_identifier(&name)
        ))
        .execute(&mut connection)
        .await?;
        connection.close().await?;
        let url = admin_url_with_database(server_url, &name);
        Ok(ScratchDatabase { url, name, admin })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn admin_url_with_database(server_url: &str, name: &str) -> String {
    // Replace the path of the URL (the database) and keep any query string.
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| scheme + 3)
        .and_then(|start| base[start..].find('/').map(|slash| start + slash))
        .unwrap_or(base.len());
    let mut url = format!("{}/{}", &base[..authority_end], name);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop cannot await; a short-lived runtime on its own thread does the cleanup, and
        // FORCE ends connections the test's pool still holds.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut connection = admin.connect().await.map_err(std::io::Error::other)?;
                sqlx::query(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_identifier(&name)
                ))
                .execute(&mut connection)
                .await
                .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
        if let Ok(Err(error)) | Err(error) = dropped.map_err(|_| std::io::Error::other("panicked"))
        {
            eprintln!("could not drop scratch database {}: {error}", self.name);
        }
    }
}

/// Deletes every key under `prefix` in the Redis at `url` (from a thread of its own, so it can
/// run in `Drop`); a failure is reported on stderr, not raised.
pub fn delete_redis_keys(url: String, prefix: String) {
    let deleted = std::thread::spawn(move || {
        let mut connection = redis::Client::open(url)?.get_connection()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut connection)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query::<()>(&mut connection)?;
        }
        Ok::<(), redis::RedisError>(())
    })
    .join();
    match deleted {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("could not delete test keys: {error}"),
        Err(_) => eprintln!("deleting test keys panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_url_replaces_only_the_database() {
        assert_eq!(
            admin_url_with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            admin_url_with_database("postgres://h", "x"),
            "postgres://h/x"
        );
    }
}
