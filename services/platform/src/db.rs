//! PostgreSQL: connection pools, the service's database created when missing, and migrations
//! that are safe when several replicas start at once (sqlx takes a PostgreSQL advisory lock
//! around each migration run, so one replica migrates while the others wait).

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::assembly::ServiceError;

/// The outbox and handled-events tables every event-producing or -consuming service needs.
pub fn platform_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    // The service's own migrations live in the same history table.
    migrator.set_ignore_missing(true);
    migrator
}

/// A service's database, ready to use: connected with the service's settings (the database
/// the shop's facts give the service, unless DATABASE_URL names one), created when missing,
/// its schema brought up to date. Errors name the setting or step that failed.
pub async fn open(
    args: &crate::config::DatabaseArgs,
    service: crate::discovery::ServiceName,
    service_migrator: Migrator,
) -> Result<PgPool, ServiceError> {
    let name = service.component().database().ok_or_else(|| {
        ServiceError::setting(
            "DATABASE_URL",
            format!("the {} service owns no database", service.as_str()),
        )
    })?;
    let pool = connect(&args.url(name), args.db_max_connections)
        .await
        .map_err(|error| ServiceError::dependency("PostgreSQL", "DATABASE_URL / DB_HOST", error))?;
    migrate(&pool, service_migrator)
        .await
        .map_err(|error| ServiceError::Migrations(error.to_string()))?;
    Ok(pool)
}

/// Connects a pool to `url`, creating the database first when it does not exist.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = connect_options(url)?;
    ensure_database(&options).await?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before each use: it is a round trip per query or transaction (a dozen per
        // checkout). Connections idle for a minute are closed instead, before a load balancer
        // or firewall drops them silently (commonly after 4–6 idle minutes); one that died
        // anyway (a database restart) fails its next statement, and the pool drops it.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
}

/// The options a URL gives, with an IPv6 host unbracketed: sqlx keeps the URL's brackets in the
/// host, and TLS then refuses `[::1]` as a server name.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let host = options.get_host();
    if host.starts_with('[') && host.ends_with(']') {
        let bare = host[1..host.len() - 1].to_owned();
        return Ok(options.host(&bare));
    }
    Ok(options)
}

/// Creates the database `options` names if it is missing. Several replicas may race here:
/// losing the race is fine.
pub async fn ensure_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let created = sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut admin)
            .await;
        match created {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // duplicate_database, or the unique index on pg_database when two creates race
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(error) => return Err(error),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Runs the platform's migrations, then the service's own.
/// `service_migrator` is the service's `sqlx::migrate!()`.
pub async fn migrate(pool: &PgPool, mut service_migrator: Migrator) -> Result<(), MigrateError> {
    platform_migrator().run(pool).await?;
    service_migrator.set_ignore_missing(true);
    service_migrator.run(pool).await
}

/// Quotes a PostgreSQL identifier (database names such as `user` and `order` are reserved words).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_quoted() {
        assert_eq!(quote_identifier("order"), "\"order\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
    }
}
