//! Domain events through Kafka, with nothing lost.
//!
//! A service that changes state writes the change and its [`Event`] in one database transaction
//! ([`enqueue`] into the `event_outbox` table). The [`OutboxRelay`] publishes what is unpublished
//! with an idempotent producer and marks it published, so a broker outage delays events and
//! never loses them. Delivery is at least once: consumers use [`EventConsumer`], which commits
//! offsets only after the handler succeeded, and [`mark_handled`] to ignore redeliveries.

use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::config::KafkaArgs;
use crate::shutdown::Shutdown;

/// The envelope every event travels in. `type` is also the topic name (before the prefix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    pub time: i64,
    /// Version of the `data` schema of this type.
    pub version: u32,
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(event_type: &str, data: impl Serialize) -> Result<Event, serde_json::Error> {
        Ok(Event {
            id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            time: chrono::Utc::now().timestamp(),
            version: 1,
            data: serde_json::to_value(data)?,
        })
    }
}

/// Writes `event` into the outbox on `connection`, which should be inside the transaction that
/// makes the change the event tells of. `key` orders events: same key, same partition.
pub async fn enqueue(
    connection: &mut PgConnection,
    key: &str,
    event: &Event,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_outbox (event_id, topic, event_key, payload) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.id)
    .bind(&event.event_type)
    .bind(key)
    .bind(sqlx::types::Json(event))
    .execute(connection)
    .await?;
    Ok(())
}

/// Records that `group` handled `event_id`; answers false when it already had, in which case
/// the caller should change nothing. Call inside the handler's transaction.
pub async fn mark_handled(
    connection: &mut PgConnection,
    group: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO handled_events (consumer_group, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(group)
    .bind(event_id)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Creates an idempotent producer: retries never duplicate or reorder messages of a partition.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .set("linger.ms", "5")
        .create()
}

/// Creates the topics (with the prefix) that are missing. Kafka clusters often refuse
/// auto-creation, so producers and consumers call this at start.
pub async fn ensure_topics(args: &KafkaArgs, topics: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .create()?;
    let names: Vec<String> = topics
        .iter()
        .map(|topic| format!("{}{topic}", args.kafka_topic_prefix))
        .collect();
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, 3, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(%topic, ?code, "could not create topic");
                });
            }
        }
    }
    Ok(())
}

/// Starts publishing `pool`'s outbox: creates `topics` (a broker away at start only delays
/// events, it never stops the service), then relays until `shutdown`. Errors only when the
/// producer cannot be configured, naming KAFKA_BROKERS.
pub fn spawn_outbox_relay(
    pool: PgPool,
    kafka: &KafkaArgs,
    topics: &'static [&'static str],
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let producer = producer(kafka).map_err(|error| format!("KAFKA_BROKERS: {error}"))?;
    let relay = OutboxRelay::new(pool, producer, &kafka.kafka_topic_prefix);
    let kafka = kafka.clone();
    Ok(tokio::spawn(async move {
        if let Err(error) = ensure_topics(&kafka, topics).await {
            tracing::warn!(%error, "could not create topics; relying on broker auto-creation");
        }
        relay.run(shutdown).await;
    }))
}

/// Publishes the outbox to Kafka.
///
/// Several replicas may run a relay on one database: each batch is claimed with
/// `FOR UPDATE SKIP LOCKED`, so no two relays publish the same rows at once. A crash between
/// publishing and marking publishes a batch again, which consumers absorb.
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    topic_prefix: String,
    batch_size: i64,
    idle_poll: Duration,
    /// Published rows are kept this long, for inspection, then deleted.
    retention: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

impl OutboxRelay {
    pub fn new(pool: PgPool, producer: FutureProducer, topic_prefix: &str) -> Self {
        OutboxRelay {
            pool,
            producer,
            topic_prefix: topic_prefix.to_owned(),
            batch_size: 256,
            idle_poll: Duration::from_millis(200),
            retention: Duration::from_secs(24 * 3600),
        }
    }

    /// Publishes one batch; answers how many events went out.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, topic, event_key, payload::text AS payload FROM event_outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            ids.push(row.try_get::<i64, _>("id")?);
            let topic = format!("{}{}", self.topic_prefix, row.try_get::<&str, _>("topic")?);
            let key: String = row.try_get("event_key")?;
            let payload: String = row.try_get("payload")?;
            records.push((topic, key, payload));
        }
        // All sends are in flight at once; the idempotent producer keeps per-partition order.
        let deliveries = join_all(records.iter().map(|(topic, key, payload)| {
            self.producer.send(
                FutureRecord::to(topic).key(key).payload(payload),
                Timeout::After(Duration::from_secs(15)),
            )
        }))
        .await;
        for delivery in deliveries {
            if let Err((error, _)) = delivery {
                // Rolling back leaves the whole batch for the next attempt.
                return Err(error.into());
            }
        }
        sqlx::query("UPDATE event_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(ids.len())
    }

    /// Events written but not yet published.
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM event_outbox WHERE published_at < now() - make_interval(secs => $1)",
        )
        .bind(self.retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Relays until shutdown, backing off while the broker or database is away.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(200);
        let mut batches: u64 = 0;
        while !shutdown.is_triggered() {
            let pause = match self.relay_batch().await {
                Ok(0) => self.idle_poll,
                Ok(count) => {
                    tracing::debug!(count, "published outbox events");
                    backoff = Duration::from_millis(200);
                    Duration::ZERO
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; events wait in the outbox");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    pause
                }
            };
            batches += 1;
            if batches.is_multiple_of(1000)
                && let Err(error) = self.prune().await
            {
                tracing::warn!(%error, "could not prune the outbox");
            }
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.wait() => {}
                }
            }
        }
    }
}

/// A consumer-group member that hands each event to a handler and commits its offset only
/// after the handler succeeded.
pub struct EventConsumer {
    consumer: StreamConsumer,
    group: String,
}

impl EventConsumer {
    /// Joins `group` and subscribes to `topics` (both named without the prefix).
    pub fn subscribe(
        args: &KafkaArgs,
        group: &str,
        topics: &[&str],
        session_timeout: Duration,
    ) -> Result<EventConsumer, KafkaError> {
        // Groups carry the topic prefix too, so shops sharing a cluster never share a group.
        let group = format!("{}{group}", args.kafka_topic_prefix);
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &args.kafka_brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 3).max(100).to_string(),
            )
            .create()?;
        let names: Vec<String> = topics
            .iter()
            .map(|topic| format!("{}{topic}", args.kafka_topic_prefix))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(EventConsumer { consumer, group })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Hands every event to `handler` until shutdown. A handler error retries the same event
    /// (with backoff) rather than skipping it; a message that is not an event is logged and
    /// skipped, since no retry could ever read it.
    pub async fn run<F, Fut, E>(self, shutdown: Shutdown, handler: F)
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        // A member with no partitions for long gets no events at all: say so, since the cause
        // (a broker whose group coordinator is stuck) is otherwise invisible.
        let mut assignment_check = tokio::time::interval(Duration::from_secs(30));
        assignment_check.tick().await;
        let mut received_any = false;
        loop {
            let message = tokio::select! {
                _ = shutdown.wait() => return,
                _ = assignment_check.tick() => {
                    let assigned = self.consumer.assignment().map(|list| list.count()).unwrap_or(0);
                    if assigned == 0 && !received_any {
                        tracing::warn!(group = %self.group, "no partitions assigned to this consumer after 30 s; events wait in the broker (is its group coordinator stuck? restarting the broker helps)");
                    }
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            received_any = true;
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, group = %self.group, "kafka receive failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let parsed = message
                .payload()
                .map(serde_json::from_slice::<Event>)
                .transpose();
            match parsed {
                Ok(Some(event)) => {
                    let mut backoff = Duration::from_millis(100);
                    loop {
                        match handler(event.clone()).await {
                            Ok(()) => break,
                            Err(error) => {
                                tracing::warn!(%error, event_id = %event.id, event_type = %event.event_type, "event handler failed; retrying");
                                tokio::select! {
                                    _ = shutdown.wait() => return,
                                    _ = tokio::time::sleep(backoff) => {}
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::error!(
                        topic = message.topic(),
                        offset = message.offset(),
                        "skipping a message that is not an event"
                    );
                }
            }
            if let Err(error) = self.consumer.commit_message(&message, CommitMode::Async) {
                tracing::warn!(%error, "offset commit failed; the event may be redelivered");
            }
        }
    }
}
