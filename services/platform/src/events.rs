//! Domain events through Kafka, with nothing lost.
//!
//! A service that changes state writes the change and its [`Event`] in one database transaction
//! ([`enqueue`] into the `event_outbox` table). The [`OutboxRelay`] publishes what is unpublished
//! with an idempotent producer and marks it published, so a broker outage delays events and
//! never loses them. Delivery is at least once: consumers use [`EventConsumer`], which commits
//! offsets only after the handler succeeded, and [`mark_handled`] to ignore redeliveries.
//!
//! An event its handler keeps failing on (a bug, data no retry will fix) is parked in the
//! `dead_letters` table after EVENT_MAX_ATTEMPTS failures, so one bad event never stalls its
//! partition; [`redrive`] sends parked events round again once the cause is fixed. Outages
//! (a database or service away) are waited out instead, however long they last.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::future::join_all;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::config::{EventConsumerArgs, KafkaArgs};
use crate::errors::{AppError, ErrorCode};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;
use crate::traces;
use tracing::Instrument;

/// Every event type of the shop, which is also its topic (before the prefix).
pub use letsgo_facts::topics;

/// The envelope every event travels in. `type` is also the topic name (before the prefix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique, and ordered by creation time (a version 7 UUID): the outbox's unique index and
    /// each consumer's `handled_events` key then take new ids on their newest pages. Random
    /// (version 4) ids put every insert on a random page of an index that holds a day's or two
    /// weeks' events, a page the cache seldom still holds (docs/decisions.md, "Event ids in
    /// time order").
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
            id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            time: chrono::Utc::now().timestamp(),
            version: 1,
            data: serde_json::to_value(data)?,
        })
    }
}

/// Writes `event` into the outbox on `connection`, which should be inside the transaction that
/// makes the change the event tells of. `key` orders events: same key, same partition. The
/// event keeps the trace being run, if any, and its consumers continue it.
pub async fn enqueue(
    connection: &mut PgConnection,
    key: &str,
    event: &Event,
) -> Result<(), sqlx::Error> {
    bind_outbox_row(
        sqlx::query(
            "INSERT INTO event_outbox (event_id, topic, event_key, payload, traceparent) \
             VALUES ($1, $2, $3, $4, $5)",
        ),
        key,
        event,
    )
    .execute(connection)
    .await?;
    Ok(())
}

/// The outbox's table and the columns [`bind_outbox_row`] binds, in its order: for a statement
/// that writes an event in the same statement as the change it tells of (a data-modifying
/// `WITH`), one round trip where [`enqueue`] inside a transaction takes several.
pub const OUTBOX_COLUMNS: &str = "event_outbox (event_id, topic, event_key, payload, traceparent)";

/// Binds an outbox row's five values ([`OUTBOX_COLUMNS`]) as the query's next parameters: the
/// event, keyed by `key`, carrying the trace being run, if any.
pub fn bind_outbox_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    key: &'q str,
    event: &'q Event,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(event.id)
        .bind(&event.event_type)
        .bind(key)
        .bind(sqlx::types::Json(event))
        .bind(traces::current_traceparent())
}

/// An event on its way into the outbox with its key and the trace it was made in, taken when
/// the row is made: a batch written later by another task still carries each event's own trace.
pub struct OutboxRow {
    key: String,
    event: Event,
    traceparent: Option<String>,
}

impl OutboxRow {
    /// `event` keyed by `key` (same key, same partition), in the trace being run, if any.
    pub fn new(key: impl Into<String>, event: Event) -> OutboxRow {
        OutboxRow {
            key: key.into(),
            event,
            traceparent: traces::current_traceparent(),
        }
    }
}

/// Binds `rows` as the query's next five parameters, an array per column of [`OUTBOX_COLUMNS`]
/// in its order (`uuid[]`, `text[]`, `text[]`, `jsonb[]`, `text[]`), for a statement that writes
/// many events at once (`SELECT * FROM UNNEST(...)`).
pub fn bind_outbox_rows<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[&'q OutboxRow],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(rows.iter().map(|row| row.event.id).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|row| row.event.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|row| row.key.as_str()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|row| sqlx::types::Json(&row.event))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|row| row.traceparent.as_deref())
                .collect::<Vec<_>>(),
        )
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

/// The brokers' connection settings; a contradiction among them is a client-creation error
/// naming the settings.
fn client_config(args: &KafkaArgs) -> Result<ClientConfig, KafkaError> {
    args.client_config().map_err(KafkaError::ClientCreation)
}

/// Creates an idempotent producer: retries never duplicate or reorder messages of a partition.
pub fn producer(args: &KafkaArgs) -> Result<FutureProducer, KafkaError> {
    client_config(args)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "15000")
        .set("linger.ms", "5")
        .create()
}

/// Creates the topics (with the prefix) that are missing. Kafka clusters often refuse
/// auto-creation, so producers and consumers call this at start.
pub async fn ensure_topics(args: &KafkaArgs, topics: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(args)?.create()?;
    let names: Vec<String> = topics
        .iter()
        .map(|topic| format!("{}{topic}", args.kafka_topic_prefix))
        .collect();
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                args.kafka_topic_partitions,
                TopicReplication::Fixed(args.kafka_topic_replication),
            )
        })
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
/// Kafka settings contradict each other (naming them) or the producer cannot be configured.
pub fn spawn_outbox_relay(
    pool: PgPool,
    kafka: &KafkaArgs,
    topics: &'static [&'static str],
    metrics: &Metrics,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let producer = producer(kafka).map_err(|error| format!("Kafka settings: {error}"))?;
    let relay = OutboxRelay::new(pool, producer, &kafka.kafka_topic_prefix)
        .gathering(kafka.outbox_gather)
        .with_metrics(metrics);
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
/// Several replicas may run a relay on one database, and one key's events still reach Kafka in
/// the order they were written: a batch locks the oldest unpublished rows in id order
/// (`FOR UPDATE`, never `SKIP LOCKED`), so a relay that meets rows another relay holds waits
/// for that batch to be published or rolled back instead of publishing the newer rows past
/// it. The relays thus take turns, which costs nothing a single relay would not: one batch's
/// sends are pipelined anyway. A crash between publishing and marking publishes a batch
/// again, which consumers absorb.
///
/// A batch that was not full is followed by a short pause ([`OutboxRelay::gathering`]) so the
/// next one carries what arrived meanwhile: under steady writes each round of statements,
/// commit and produce requests carries more events (a sale of 15,000 orders: about 115 a
/// round instead of 43), and an event still waits less than it does after an idle poll.
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    topic_prefix: String,
    batch_size: i64,
    idle_poll: Duration,
    /// The pause after a batch that was not full.
    gather: Duration,
    /// Published rows are kept this long, for inspection, then deleted.
    retention: Duration,
    backlog: Option<BacklogGauges>,
}

/// Published rows a prune looks at per statement.
const PRUNE_CHUNK: i64 = 1_000;

/// The most chunks one prune deletes (50,000 rows) before the relay goes back to publishing.
const PRUNE_MAX_CHUNKS: usize = 50;

/// Relay rounds between prunes: about 20 s while idle, more often under load.
const PRUNE_EVERY_BATCHES: u64 = 100;

/// How far publishing is behind, for `/metrics` (and the outbox alert).
#[derive(Clone, Default)]
struct BacklogGauges {
    events: Gauge,
    oldest_age: Gauge<f64, AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// The trace an outbox row carries on its way to Kafka: a producer span, child of the span that
/// wrote the event, whose context goes in the message's `traceparent` header. None while traces
/// are off or the event was written outside a trace.
struct PublishTrace(Option<tracing::Span>);

impl PublishTrace {
    fn of(event_type: &str, traceparent: Option<String>) -> PublishTrace {
        let Some(traceparent) = traceparent.filter(|_| traces::is_on()) else {
            return PublishTrace(None);
        };
        let span = tracing::info_span!(
            parent: None,
            "events.publish",
            otel.name = format!("publish {event_type}"),
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = event_type,
        );
        traces::continue_from_traceparent(&span, &traceparent);
        PublishTrace(Some(span))
    }

    fn headers(&self) -> Option<OwnedHeaders> {
        let traceparent = traces::traceparent_of(self.0.as_ref()?)?;
        Some(OwnedHeaders::new().insert(Header {
            key: traces::TRACEPARENT,
            value: Some(&traceparent),
        }))
    }
}

impl OutboxRelay {
    pub fn new(pool: PgPool, producer: FutureProducer, topic_prefix: &str) -> Self {
        OutboxRelay {
            pool,
            producer,
            topic_prefix: topic_prefix.to_owned(),
            batch_size: 256,
            idle_poll: Duration::from_millis(200),
            gather: Duration::from_millis(25),
            retention: Duration::from_secs(24 * 3600),
            backlog: None,
        }
    }

    /// Pauses `gather` after a batch that was not full (0: never pauses while events wait).
    pub fn gathering(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    /// Registers `letsgo_outbox_backlog` (events not yet published) and
    /// `letsgo_outbox_oldest_unpublished_age_seconds` on `metrics`, refreshed every 10 s.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        let gauges = BacklogGauges::default();
        metrics.register(
            "outbox_backlog",
            "Events written to the outbox and not yet published",
            gauges.events.clone(),
        );
        metrics.register(
            "outbox_oldest_unpublished_age_seconds",
            "Age of the oldest event not yet published (0 when none waits)",
            gauges.oldest_age.clone(),
        );
        self.backlog = Some(gauges);
        self
    }

    async fn measure_backlog(&self, gauges: &BacklogGauges) -> Result<(), sqlx::Error> {
        let (count, age): (i64, f64) = sqlx::query_as(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) \
             FROM event_outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        gauges.events.set(count);
        gauges.oldest_age.set(age);
        Ok(())
    }

    /// Publishes one batch; answers how many events went out.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let mut transaction = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, topic, event_key, payload::text AS payload, traceparent FROM event_outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE",
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
            let event_type: &str = row.try_get("topic")?;
            let topic = format!("{}{event_type}", self.topic_prefix);
            let key: String = row.try_get("event_key")?;
            let payload: String = row.try_get("payload")?;
            let publish = PublishTrace::of(event_type, row.try_get("traceparent")?);
            records.push((topic, key, payload, publish));
        }
        // All sends are in flight at once; the idempotent producer keeps per-partition order.
        let deliveries = join_all(records.iter().map(|(topic, key, payload, publish)| {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(headers) = publish.headers() {
                record = record.headers(headers);
            }
            self.producer
                .send(record, Timeout::After(Duration::from_secs(15)))
        }))
        .await;
        // The publish spans end here, with the sends.
        drop(records);
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

    /// Deletes the published rows older than the retention and answers how many went. It walks
    /// the outbox by its primary key from the oldest row, [`PRUNE_CHUNK`] published rows a
    /// statement, each chunk starting after the last one's highest id, and stops at a chunk
    /// whose newest row stays (too young: the rows after it are younger still), at the end of
    /// the published rows, or after [`PRUNE_MAX_CHUNKS`] chunks (the next prune goes on). A row
    /// kept at an old id (an event re-driven and published again) is stepped over. (No index has
    /// `published_at`: filtering the table on it read all of it each time, 800 MB after a day
    /// of sales here, from the disk once the kernel had reclaimed it, and every commit on the
    /// machine waited behind those reads.)
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        // The limit is in the text, not a parameter: a generic plan would guess the size of a
        // parameter's chunk and might scan the table instead of walking its key.
        let chunk = format!(
            "WITH chunk AS MATERIALIZED ( \
               SELECT id FROM event_outbox WHERE id > $2 AND published_at IS NOT NULL \
               ORDER BY id LIMIT {PRUNE_CHUNK}), \
             gone AS ( \
               DELETE FROM event_outbox o USING chunk c \
               WHERE o.id = c.id AND o.published_at < now() - make_interval(secs => $1) \
               RETURNING o.id) \
             SELECT (SELECT count(*) FROM chunk), (SELECT max(id) FROM chunk), \
               (SELECT count(*) FROM gone), \
               EXISTS (SELECT 1 FROM gone WHERE id = (SELECT max(id) FROM chunk))"
        );
        let (mut pruned, mut after) = (0_u64, 0_i64);
        for _ in 0..PRUNE_MAX_CHUNKS {
            let (seen, newest, deleted, newest_gone): (i64, Option<i64>, i64, bool) =
                sqlx::query_as(&chunk)
                    .bind(self.retention.as_secs_f64())
                    .bind(after)
                    .fetch_one(&self.pool)
                    .await?;
            pruned += deleted as u64;
            match newest {
                Some(newest) if seen == PRUNE_CHUNK && newest_gone => after = newest,
                _ => break,
            }
        }
        Ok(pruned)
    }

    /// Relays until shutdown, backing off while the broker or database is away.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(200);
        let mut batches: u64 = 0;
        let mut measured = tokio::time::Instant::now() - Duration::from_secs(60);
        while !shutdown.is_triggered() {
            if let Some(gauges) = &self.backlog
                && measured.elapsed() >= Duration::from_secs(10)
            {
                measured = tokio::time::Instant::now();
                if let Err(error) = self.measure_backlog(gauges).await {
                    tracing::debug!(%error, "could not measure the outbox backlog");
                }
            }
            let pause = match self.relay_batch().await {
                Ok(0) => self.idle_poll,
                Ok(count) => {
                    tracing::debug!(count, "published outbox events");
                    backoff = Duration::from_millis(200);
                    if (count as i64) < self.batch_size {
                        self.gather
                    } else {
                        Duration::ZERO
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; events wait in the outbox");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    pause
                }
            };
            batches += 1;
            if batches.is_multiple_of(PRUNE_EVERY_BATCHES)
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

/// Starts consuming `topics` as `group`: creates the topics first (a consumer subscribed to a
/// topic that does not exist yet may not see it for minutes), then hands every event to
/// `handler` until `shutdown`. A broker that is away only delays.
/// With a `batch` handler, events that arrive together are offered to it first (see
/// [`EventConsumer::run_batched`]).
#[allow(clippy::too_many_arguments)]
pub fn spawn_consumer<B, BFut, F, Fut, E>(
    kafka: &KafkaArgs,
    group: &'static str,
    topics: &'static [&'static str],
    session_timeout: Duration,
    dead_letters: DeadLetters,
    shutdown: Shutdown,
    batch: Option<B>,
    handler: F,
) -> tokio::task::JoinHandle<()>
where
    B: Fn(Vec<Event>) -> BFut + Send + Sync + 'static,
    BFut: Future<Output = Result<(), E>> + Send,
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: HandlerError + Send,
{
    let kafka = kafka.clone();
    tokio::spawn(async move {
        if let Err(error) = ensure_topics(&kafka, topics).await {
            tracing::warn!(%error, "could not create topics; relying on broker auto-creation");
        }
        match EventConsumer::subscribe(&kafka, group, topics, session_timeout) {
            Ok(consumer) => {
                consumer
                    .consume(shutdown, dead_letters, batch.as_ref(), handler)
                    .await
            }
            Err(error) => tracing::error!(%error, group, "cannot consume events"),
        }
    })
}

/// Most events handed to a batch handler at once.
pub const BATCH_MAX: usize = 100;

/// How long a batch gathers after its first event: the events a relay published together
/// arrive within it.
pub const BATCH_LINGER: Duration = Duration::from_millis(10);

/// How often a consumer commits the offsets of the events it handled (librdkafka's default).
const AUTO_COMMIT_INTERVAL_MS: &str = "5000";

/// The batch handler of a consumer that has none.
type NoBatch<E> = fn(Vec<Event>) -> std::future::Ready<Result<(), E>>;

/// A consumer-group member that hands each event to a handler and commits its offset only
/// after the handler succeeded.
pub struct EventConsumer {
    consumer: StreamConsumer,
    group: String,
    session_timeout: Duration,
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
        let consumer: StreamConsumer = client_config(args)?
            .set("group.id", &group)
            // Offsets are stored once their event is handled (`commit`) and committed with
            // the stored offsets of every partition once per interval, at a rebalance and at
            // shutdown: one request per interval, not one per event. A crash redelivers at
            // most an interval's events, which the handled-ids table absorbs.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
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
        Ok(EventConsumer {
            consumer,
            group,
            session_timeout,
        })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Hands every event to `handler` until shutdown. A failed event is retried with backoff:
    /// without end while the failures are outages ([`HandlerError::is_transient`]), and
    /// otherwise until `dead_letters` parks it, after which the consumer moves on. A message
    /// that is not an event is logged and skipped, since no retry could ever read it.
    pub async fn run<F, Fut, E>(self, shutdown: Shutdown, dead_letters: DeadLetters, handler: F)
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        self.consume(shutdown, dead_letters, None::<&NoBatch<E>>, handler)
            .await
    }

    /// Like [`run`](Self::run), but events that arrive together (up to [`BATCH_MAX`], gathered
    /// for [`BATCH_LINGER`] after the first) go to `batch` at once, to be handled in one
    /// transaction. A batch that fails, for whatever reason, changed nothing; its events then go
    /// to `handler` one by one, with the usual retries and dead letters. So a batch handler
    /// takes only the common case and refuses any batch it cannot settle whole.
    pub async fn run_batched<B, BFut, F, Fut, E>(
        self,
        shutdown: Shutdown,
        dead_letters: DeadLetters,
        batch: B,
        handler: F,
    ) where
        B: Fn(Vec<Event>) -> BFut,
        BFut: Future<Output = Result<(), E>>,
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        self.consume(shutdown, dead_letters, Some(&batch), handler)
            .await
    }

    async fn consume<B, BFut, F, Fut, E>(
        self,
        shutdown: Shutdown,
        dead_letters: DeadLetters,
        batch: Option<&B>,
        handler: F,
    ) where
        B: Fn(Vec<Event>) -> BFut,
        BFut: Future<Output = Result<(), E>>,
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        self.consume_until_stopped(shutdown, dead_letters, batch, handler)
            .await;
        // What was handled since the last interval's commit is committed before the member
        // leaves, so the next owner of its partitions starts after it.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
            Err(error) => {
                tracing::warn!(%error, group = %self.group, "offsets not committed at shutdown; the events handled since the last commit will be redelivered and skipped as handled");
            }
        }
    }

    async fn consume_until_stopped<B, BFut, F, Fut, E>(
        &self,
        shutdown: Shutdown,
        dead_letters: DeadLetters,
        batch: Option<&B>,
        handler: F,
    ) where
        B: Fn(Vec<Event>) -> BFut,
        BFut: Future<Output = Result<(), E>>,
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        // A member with no partitions for long gets no events at all: say so, since the cause
        // (more replicas than partitions, or a broker that cannot form the group) is otherwise
        // invisible.
        let mut assignment_check = tokio::time::interval(Duration::from_secs(10));
        assignment_check.tick().await;
        let started = tokio::time::Instant::now();
        // Handled ids are forgotten once no redelivery can bring them back.
        let mut pruning = tokio::time::interval(Duration::from_secs(3600));
        let mut received_any = false;
        loop {
            let message = tokio::select! {
                _ = shutdown.wait() => return,
                _ = assignment_check.tick() => {
                    let assigned = self.consumer.assignment().map(|list| list.count()).unwrap_or(0);
                    dead_letters.record_assignment(&self.group, assigned);
                    if assigned == 0 && !received_any && started.elapsed() >= Duration::from_secs(30) {
                        tracing::warn!(group = %self.group, "no partitions assigned to this consumer after 30 s; events wait in the broker (more replicas than the topics' partitions leave some idle; otherwise the broker's log says why the group does not form)");
                    }
                    continue;
                }
                _ = pruning.tick() => {
                    if let Err(error) = dead_letters.prune_handled(&self.group).await {
                        tracing::warn!(%error, "could not prune handled event ids");
                    }
                    continue;
                }
                message = self.consumer.recv() => message,
            };
            received_any = true;
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    self.receive_failed(&error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut messages = vec![message];
            if batch.is_some() {
                let gathered = tokio::time::Instant::now() + BATCH_LINGER;
                while messages.len() < BATCH_MAX {
                    match tokio::time::timeout_at(gathered, self.consumer.recv()).await {
                        Ok(Ok(message)) => messages.push(message),
                        Ok(Err(error)) => {
                            self.receive_failed(&error);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            let events: Vec<Option<(Event, String)>> = messages
                .iter()
                .map(|message| self.event_of(message))
                .collect();
            let readable = events.iter().flatten().count();
            if let Some(batch) = batch
                && readable > 1
                && self
                    .handle_batch(batch, &dead_letters, &messages, &events)
                    .await
            {
                self.commit(&messages);
                continue;
            }
            for (message, event) in messages.iter().zip(&events) {
                if let Some((event, key)) = event {
                    let handling = self.handle(&shutdown, &dead_letters, event, key, &handler);
                    let settled = match self.consume_span(message, event) {
                        Some(span) => handling.instrument(span).await,
                        None => handling.await,
                    };
                    if !settled {
                        return;
                    }
                }
                self.commit(std::slice::from_ref(message));
            }
        }
    }

    /// Logs a failed receive. A session timeout the broker refuses keeps the member out of its
    /// group for good (Kafka accepts 6 s to 30 min by default): that one names the setting.
    fn receive_failed(&self, error: &KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidSessionTimeout) {
            tracing::error!(%error, group = %self.group, session_timeout_ms = self.session_timeout.as_millis() as u64, "the broker refuses this consumer's session timeout, so it never joins its group and no event is consumed: set KAFKA_SESSION_TIMEOUT_MS within the broker's group.min.session.timeout.ms and group.max.session.timeout.ms (6000 to 1800000 by default)");
        } else {
            tracing::warn!(%error, group = %self.group, "kafka receive failed");
        }
    }

    /// The event a message carries, with its key; none (logged) for a message that is not an
    /// event, which no retry could ever read.
    fn event_of(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Option<(Event, String)> {
        match message.payload().map(serde_json::from_slice::<Event>) {
            Some(Ok(event)) => {
                let key = message
                    .key()
                    .map(|key| String::from_utf8_lossy(key).into_owned())
                    .unwrap_or_default();
                Some((event, key))
            }
            None | Some(Err(_)) => {
                tracing::error!(
                    topic = message.topic(),
                    offset = message.offset(),
                    "skipping a message that is not an event"
                );
                None
            }
        }
    }

    /// Offers the readable events of `messages` to the batch handler; answers whether it
    /// handled them all. One span covers the batch (see [`batch_span`](Self::batch_span)).
    async fn handle_batch<B, BFut, E>(
        &self,
        batch: &B,
        dead_letters: &DeadLetters,
        messages: &[rdkafka::message::BorrowedMessage<'_>],
        events: &[Option<(Event, String)>],
    ) -> bool
    where
        B: Fn(Vec<Event>) -> BFut,
        BFut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        let handled: Vec<Event> = events
            .iter()
            .flatten()
            .map(|(event, _)| event.clone())
            .collect();
        let count = handled.len();
        let handling = batch(handled);
        let settled = match self.batch_span(messages, events) {
            Some(span) => handling.instrument(span).await,
            None => handling.await,
        };
        match settled {
            Ok(()) => {
                dead_letters.record_batch(&self.group, "handled", count);
                true
            }
            Err(error) => {
                dead_letters.record_batch(&self.group, "refused", count);
                tracing::debug!(%error, group = %self.group, count, "batch not handled whole; handling its events one by one");
                false
            }
        }
    }

    /// Marks handled (or skipped) messages for the next commit (see `enable.auto.offset.store`
    /// in [`subscribe`](Self::subscribe)).
    fn commit(&self, messages: &[rdkafka::message::BorrowedMessage<'_>]) {
        for message in messages {
            if let Err(error) = self.consumer.store_offset_from_message(message) {
                tracing::warn!(%error, "offset not stored; the event may be redelivered");
            }
        }
    }

    /// The span of handling a batch of events: a child of the first event's trace, linked to
    /// the traces of the others, so whatever the batch writes (an `order.paid`, say) carries
    /// on the first one's trace. None while traces are off.
    fn batch_span(
        &self,
        messages: &[rdkafka::message::BorrowedMessage<'_>],
        events: &[Option<(Event, String)>],
    ) -> Option<tracing::Span> {
        if !traces::is_on() {
            return None;
        }
        let mut readable = messages
            .iter()
            .zip(events)
            .filter_map(|(message, event)| Some((message, &event.as_ref()?.0)));
        let (first_message, first) = readable.next()?;
        let span = tracing::info_span!(
            parent: None,
            "events.consume_batch",
            otel.name = format!("process {} batch", first.event_type),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %first.event_type,
            messaging.consumer.group.name = %self.group,
            messaging.batch.message_count = events.iter().flatten().count(),
        );
        if let Some(traceparent) = traceparent_header(first_message) {
            traces::continue_from_traceparent(&span, traceparent);
        }
        for (message, _) in readable {
            if let Some(traceparent) = traceparent_header(message) {
                traces::link_traceparent(&span, traceparent);
            }
        }
        Some(span)
    }

    /// The span of handling one event, child of the trace its `traceparent` header names; none
    /// while traces are off.
    fn consume_span(
        &self,
        message: &rdkafka::message::BorrowedMessage<'_>,
        event: &Event,
    ) -> Option<tracing::Span> {
        if !traces::is_on() {
            return None;
        }
        let span = tracing::info_span!(
            parent: None,
            "events.consume",
            otel.name = format!("process {}", event.event_type),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %event.event_type,
            messaging.consumer.group.name = %self.group,
            messaging.message.id = %event.id,
        );
        if let Some(traceparent) = traceparent_header(message) {
            traces::continue_from_traceparent(&span, traceparent);
        }
        Some(span)
    }

    /// Runs the handler on one event until it succeeds or the event is parked; answers false
    /// when shutdown came first (the event is then neither handled nor committed).
    async fn handle<F, Fut, E>(
        &self,
        shutdown: &Shutdown,
        dead_letters: &DeadLetters,
        event: &Event,
        key: &str,
        handler: &F,
    ) -> bool
    where
        F: Fn(Event) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: HandlerError,
    {
        let mut backoff = Duration::from_millis(100);
        let mut failures: u32 = 0;
        loop {
            let error = match handler(event.clone()).await {
                Ok(()) => return true,
                Err(error) => error,
            };
            if !error.is_transient() {
                failures += 1;
            }
            if failures >= dead_letters.max_attempts {
                match dead_letters
                    .park(&self.group, event, key, &error.to_string(), failures)
                    .await
                {
                    Ok(()) => {
                        tracing::error!(%error, event_id = %event.id, event_type = %event.event_type, group = %self.group, attempts = failures, "event parked in dead_letters after repeated failures; redrive it once the cause is fixed");
                        return true;
                    }
                    Err(park_error) => {
                        tracing::warn!(error = %park_error, event_id = %event.id, "could not park the event; retrying it");
                    }
                }
            } else {
                tracing::warn!(%error, event_id = %event.id, event_type = %event.event_type, failures, transient = error.is_transient(), "event handler failed; retrying");
            }
            tokio::select! {
                _ = shutdown.wait() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

/// What a handler's failure says about retrying it.
pub trait HandlerError: std::fmt::Display {
    /// An outage that waiting fixes (a database or service away): retried without counting
    /// toward parking, so an outage never fills the dead letters.
    fn is_transient(&self) -> bool;
}

impl HandlerError for AppError {
    fn is_transient(&self) -> bool {
        self.code == ErrorCode::ServiceUnavailable
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    group: String,
    /// `handled` (whole), or `refused` (its events then went one by one).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ParkedLabels {
    group: String,
    event_type: String,
}

/// The consumer's side of its database: where events it gives up on are parked
/// (`dead_letters`), and the handled ids it prunes. One per service.
#[derive(Clone)]
pub struct DeadLetters {
    pool: PgPool,
    max_attempts: u32,
    handled_retention: Duration,
    parked: Family<ParkedLabels, Counter>,
    assigned: Family<GroupLabels, Gauge>,
    batched: Family<BatchLabels, Counter>,
}

impl DeadLetters {
    /// Registers `letsgo_events_dead_lettered_total`, `letsgo_events_assigned_partitions` and
    /// `letsgo_events_batched_total` on `metrics`.
    pub fn new(pool: PgPool, args: &EventConsumerArgs, metrics: &Metrics) -> Self {
        let parked = Family::<ParkedLabels, Counter>::default();
        metrics.register(
            "events_dead_lettered",
            "Events parked in dead_letters after repeated handler failures, by consumer group and type",
            parked.clone(),
        );
        let assigned = Family::<GroupLabels, Gauge>::default();
        metrics.register(
            "events_assigned_partitions",
            "Partitions this consumer reads, by consumer group (0 in every replica: nobody consumes)",
            assigned.clone(),
        );
        let batched = Family::<BatchLabels, Counter>::default();
        metrics.register(
            "events_batched",
            "Events offered to a batch handler, by consumer group and whether the batch was handled whole or refused (its events then handled one by one)",
            batched.clone(),
        );
        DeadLetters {
            pool,
            max_attempts: args.event_max_attempts.max(1),
            handled_retention: args.handled_events_retention,
            parked,
            assigned,
            batched,
        }
    }

    fn record_batch(&self, group: &str, outcome: &'static str, events: usize) {
        self.batched
            .get_or_create(&BatchLabels {
                group: group.to_owned(),
                outcome,
            })
            .inc_by(events as u64);
    }

    fn record_assignment(&self, group: &str, partitions: usize) {
        self.assigned
            .get_or_create(&GroupLabels {
                group: group.to_owned(),
            })
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }

    async fn park(
        &self,
        group: &str,
        event: &Event,
        key: &str,
        error: &str,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dead_letters (consumer_group, event_id, event_type, event_key, payload, error, attempts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (consumer_group, event_id) DO UPDATE \
             SET error = EXCLUDED.error, attempts = dead_letters.attempts + EXCLUDED.attempts, parked_at = now()",
        )
        .bind(group)
        .bind(event.id)
        .bind(&event.event_type)
        .bind(key)
        .bind(sqlx::types::Json(event))
        .bind(error)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        self.parked
            .get_or_create(&ParkedLabels {
                group: group.to_owned(),
                event_type: event.event_type.clone(),
            })
            .inc();
        Ok(())
    }

    async fn prune_handled(&self, group: &str) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(
            "DELETE FROM handled_events WHERE consumer_group = $1 \
             AND handled_at < now() - make_interval(secs => $2)",
        )
        .bind(group)
        .bind(self.handled_retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}

/// The `traceparent` header of a message, when it has one.
fn traceparent_header<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>) -> Option<&'a str> {
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|header| header.key == traces::TRACEPARENT)
            .and_then(|header| header.value)
            .and_then(|value| std::str::from_utf8(value).ok())
    })
}

/// A parked event, as `dead-letters` lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParkedEvent {
    pub consumer_group: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub error: String,
    pub attempts: i32,
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The events parked in `pool`'s dead letters, oldest first.
pub async fn parked(pool: &PgPool) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT consumer_group, event_id, event_type, error, attempts, parked_at \
         FROM dead_letters ORDER BY parked_at, event_id",
    )
    .fetch_all(pool)
    .await
}

/// Sends parked events round again: each goes back into this database's outbox, so the relay
/// publishes it to its topic once more, and leaves the dead letters in the same transaction.
/// Other consumer groups of the topic have handled it already and skip it by its id. Only
/// `event_id` when given; answers how many were re-driven.
pub async fn redrive(pool: &PgPool, event_id: Option<Uuid>) -> Result<u64, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    let rows = sqlx::query(
        "DELETE FROM dead_letters WHERE $1::uuid IS NULL OR event_id = $1 \
         RETURNING event_id, event_type, event_key, payload",
    )
    .bind(event_id)
    .fetch_all(&mut *transaction)
    .await?;
    for row in &rows {
        // An event this service wrote itself is in its outbox already: publish it anew.
        sqlx::query(
            "INSERT INTO event_outbox (event_id, topic, event_key, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (event_id) DO UPDATE SET published_at = NULL",
        )
        .bind(row.try_get::<Uuid, _>("event_id")?)
        .bind(row.try_get::<String, _>("event_type")?)
        .bind(row.try_get::<String, _>("event_key")?)
        .bind(row.try_get::<serde_json::Value, _>("payload")?)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(rows.len() as u64)
}

/// The dead-letter commands every consuming service's binary offers, e.g. through
/// `kubectl exec`: they use the service's own database settings and exit.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventCommand {
    /// Lists the events parked after repeated handler failures, with their last error.
    DeadLetters,
    /// Sends parked events round again (all of them, or one by its id) once the cause is
    /// fixed: each is published to its topic anew, and handled like any event.
    RedriveEvents {
        /// Only this event.
        #[arg(long = "event-id", value_name = "UUID")]
        event_id: Option<Uuid>,
    },
}

/// Runs `command` on `pool`, closes the pool, and answers what to print.
pub async fn run_command(pool: PgPool, command: &EventCommand) -> Result<String, sqlx::Error> {
    let answer = run_command_on(&pool, command).await;
    pool.close().await;
    answer
}

async fn run_command_on(pool: &PgPool, command: &EventCommand) -> Result<String, sqlx::Error> {
    match command {
        EventCommand::DeadLetters => {
            let parked = parked(pool).await?;
            if parked.is_empty() {
                return Ok("no parked events".to_owned());
            }
            Ok(parked
                .iter()
                .map(|event| {
                    format!(
                        "{} {} {} group={} attempts={} error={}",
                        event.parked_at.to_rfc3339(),
                        event.event_id,
                        event.event_type,
                        event.consumer_group,
                        event.attempts,
                        event.error
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        EventCommand::RedriveEvents { event_id } => {
            let count = redrive(pool, *event_id).await?;
            Ok(format!(
                "{count} event(s) back in the outbox; the relay publishes them within a second"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_made_one_after_another_have_ids_in_that_order() {
        let ids: Vec<Uuid> = (0..1000)
            .map(|n| Event::new(topics::ORDER_CREATED, n).unwrap().id)
            .collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids out of creation order"
        );
    }
}
