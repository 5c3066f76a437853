//! What every letsgo service stands on, one module per purpose:
//!
//! - [`assembly`]: one way to put a service together, start to drain;
//! - [`config`]: settings from the environment, shared by the binaries;
//! - [`errors`]: the original's error codes and how they travel over gRPC and HTTP;
//! - [`auth`]: sign-in tokens (JWT, HS256);
//! - [`money`]: yuan on the HTTP wire, cents inside;
//! - [`discovery`]: service addresses and balanced gRPC channels;
//! - [`db`]: PostgreSQL pools and migrations;
//! - [`cache`]: the Redis connection;
//! - [`events`]: Kafka, the transactional outbox and its relay, idempotent consumers;
//! - [`telemetry`]: logs, metrics, health;
//! - [`traces`]: OpenTelemetry traces, exported by OTLP, and the trace context across calls;
//! - [`grpc`]: the gRPC server with health, reflection and limits;
//! - [`internal_auth`]: the token every internal gRPC call carries;
//! - [`shutdown`]: graceful shutdown;
//! - [`proto`]: the compiled gRPC contracts;

/// Any error, for start-up and task results.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub mod assembly;
pub mod auth;
pub mod batches;
#[cfg(feature = "redis")]
pub mod cache;
pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod discovery;
pub mod errors;
#[cfg(feature = "kafka")]
pub mod events;
pub mod grpc;
pub mod internal_auth;
pub mod listen;
pub mod memory;
pub mod money;
pub mod proto;
pub mod shutdown;
pub mod telemetry;
pub use letsgo_facts::limits;
pub use letsgo_traces as traces;
