//! Where the test middleware is: the variables `make test` exports, or the local ports
//! `make up` uses.

/// Any database URL of the PostgreSQL server tests use (DATABASE_URL_BASE).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The Redis tests use (REDIS_URL_BASE).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL_BASE").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The Kafka-protocol brokers tests use (KAFKA_BROKERS).
pub use letsgo_test_topics::kafka_brokers;
