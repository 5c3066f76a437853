//! The platform's parts against real middleware: the outbox relay and consumers on Apache
//! Kafka, migrations and scratch databases on PostgreSQL, the cache on Redis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use letsgo_platform::cache::Cache;
use letsgo_platform::config::EventConsumerArgs;
use letsgo_platform::config::KafkaArgs;
use letsgo_platform::db;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::events::{self, DeadLetters, Event, EventConsumer, OutboxRelay};
use letsgo_platform::shutdown::Shutdown;
use letsgo_platform::telemetry::Metrics;
use letsgo_testkit::{ScratchDatabase, TopicPrefix, postgres_url};
use sqlx::PgPool;

fn kafka(prefix: &str) -> KafkaArgs {
    KafkaArgs::new(
        &std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        prefix,
    )
}

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

async fn outbox_database() -> (ScratchDatabase, PgPool) {
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let pool = db::connect(&database.url, 4).await.unwrap();
    db::platform_migrator().run(&pool).await.unwrap();
    (database, pool)
}

async fn write_events(pool: &PgPool, count: usize) -> Vec<Event> {
    let mut written = Vec::new();
    let mut transaction = pool.begin().await.unwrap();
    for n in 0..count {
        let event = Event::new("order.created", serde_json::json!({"orderId": n})).unwrap();
        events::enqueue(&mut transaction, &format!("order-{n}"), &event)
            .await
            .unwrap();
        written.push(event);
    }
    transaction.commit().await.unwrap();
    written
}

fn dead_letters(pool: &PgPool, max_attempts: u32) -> DeadLetters {
    dead_letters_on(pool, max_attempts, &Metrics::new("test"))
}

fn dead_letters_on(pool: &PgPool, max_attempts: u32, metrics: &Metrics) -> DeadLetters {
    let args = EventConsumerArgs {
        event_max_attempts: max_attempts,
        handled_events_retention: Duration::from_secs(86400),
    };
    DeadLetters::new(pool.clone(), &args, metrics)
}

/// Kafka settings with a topic prefix of the test's own (listed for the sweep), its
/// `order.created` topic made, and a relay publishing `pool`'s outbox there.
async fn order_created_topic(label: &str, pool: &PgPool) -> (KafkaArgs, OutboxRelay) {
    let topics = TopicPrefix::new(label);
    let args = kafka(topics.as_str());
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        pool.clone(),
        events::producer(&args).unwrap(),
        &args.kafka_topic_prefix,
    );
    (args, relay)
}

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn wait_until_published(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while unpublished(pool).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay left {} events unpublished for 15 s",
            unpublished(pool).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After a batch that was not full the relay pauses for its gather time, and the events
/// written meanwhile go out after it, together in one batch (one `published_at`); after a
/// full batch it goes on at once, and stopping it does not wait out a pause.
#[tokio::test]
async fn after_a_partial_batch_the_relay_gathers_what_comes_next_into_one_batch() {
    let (_database, pool) = outbox_database().await;
    let (_args, relay) = order_created_topic("platform-gather", &pool).await;
    let gather = Duration::from_secs(5);
    let shutdown = Shutdown::new();
    // Two full batches of 256 and a partial one of 88: no pause until all are out.
    write_events(&pool, 600).await;
    let started = tokio::time::Instant::now();
    let relaying = tokio::spawn(relay.gathering(gather).run(shutdown.clone()));
    wait_until_published(&pool).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "600 events took {:?}: the relay paused after a full batch",
        started.elapsed()
    );
    // The relay published a batch that was not full and now pauses.
    let pause_seen = tokio::time::Instant::now();
    write_events(&pool, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(unpublished(&pool).await, 4, "published during the pause");
    wait_until_published(&pool).await;
    assert!(
        pause_seen.elapsed() >= Duration::from_secs(4),
        "the next batch came {:?} after the partial one",
        pause_seen.elapsed()
    );
    let rounds: i64 = sqlx::query_scalar("SELECT count(DISTINCT published_at) FROM event_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        rounds, 4,
        "three batches of the 600, then the four together"
    );
    // Stopped in the middle of the pause after those four, it stops at once.
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(2), relaying)
        .await
        .expect("the relay waited out its pause before stopping")
        .unwrap();
}

#[tokio::test]
async fn outbox_events_reach_a_consumer_group_through_the_broker() {
    let (_database, pool) = outbox_database().await;
    let (args, relay) = order_created_topic("platform-test", &pool).await;
    let written = write_events(&pool, 5).await;

    assert_eq!(relay.relay_batch().await.unwrap(), 5);
    assert_eq!(unpublished(&pool).await, 0);
    assert_eq!(
        relay.relay_batch().await.unwrap(),
        0,
        "published events are not sent again"
    );

    let received = Arc::new(Mutex::new(Vec::new()));
    let consumer = EventConsumer::subscribe(
        &args,
        &unique("group"),
        &["order.created"],
        Duration::from_secs(6),
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let sink = received.clone();
    let task = tokio::spawn(consumer.run(
        shutdown.clone(),
        dead_letters(&pool, 8),
        move |event: Event| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(event);
                Ok::<(), AppError>(())
            }
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < written.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    task.await.unwrap();
    let mut got = received.lock().unwrap().clone();
    got.sort_by_key(|event| event.data["orderId"].as_i64());
    assert_eq!(got, written);
    pool.close().await;
}

/// Events that arrive together go to the batch handler at once; a batch it refuses changed
/// nothing and its events go to the event handler one by one; either way each event is handled
/// once and its offset committed (a second consumer of the group gets nothing).
#[tokio::test]
async fn events_that_arrive_together_are_handled_as_one_batch_or_else_one_by_one() {
    let (_database, pool) = outbox_database().await;
    let (args, relay) = order_created_topic("batched", &pool).await;
    let written = write_events(&pool, 6).await;
    assert_eq!(relay.relay_batch().await.unwrap(), 6);

    let group = unique("group");
    // The sizes of the batches the batch handler accepted.
    let batches = Arc::new(Mutex::new(Vec::<usize>::new()));
    let handled = Arc::new(Mutex::new(Vec::<Event>::new()));
    // The batch handler refuses any batch holding the first event.
    let refused = written[0].id;
    let consumer =
        EventConsumer::subscribe(&args, &group, &["order.created"], Duration::from_secs(6))
            .unwrap();
    let shutdown = Shutdown::new();
    let task = {
        let (batches, handled, one_by_one) = (batches.clone(), handled.clone(), handled.clone());
        tokio::spawn(consumer.run_batched(
            shutdown.clone(),
            dead_letters(&pool, 8),
            move |events: Vec<Event>| {
                let (batches, handled) = (batches.clone(), handled.clone());
                async move {
                    if events.iter().any(|event| event.id == refused) {
                        return Err(AppError::of(ErrorCode::ServiceUnavailable));
                    }
                    batches.lock().unwrap().push(events.len());
                    handled.lock().unwrap().extend(events);
                    Ok(())
                }
            },
            move |event: Event| {
                let handled = one_by_one.clone();
                async move {
                    handled.lock().unwrap().push(event);
                    Ok::<(), AppError>(())
                }
            },
        ))
    };
    let wait_for = |want: usize| {
        let handled = handled.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while handled.lock().unwrap().len() < want && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(written.len()).await;
    // Six more, published together once the first ones are in: one batch, all accepted.
    let more = write_events(&pool, 6).await;
    assert_eq!(relay.relay_batch().await.unwrap(), 6);
    wait_for(written.len() + more.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.trigger();
    task.await.unwrap();

    let mut got: Vec<uuid::Uuid> = handled
        .lock()
        .unwrap()
        .iter()
        .map(|event| event.id)
        .collect();
    got.sort();
    let mut want: Vec<uuid::Uuid> = written.iter().chain(&more).map(|event| event.id).collect();
    want.sort();
    assert_eq!(got, want, "each event handled once");
    let batches = batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|size| *size > 1),
        "events published together were handled together: {batches:?}"
    );

    // Every offset was committed: a new member of the group gets the next event and none of
    // the earlier ones.
    let again = EventConsumer::subscribe(&args, &group, &["order.created"], Duration::from_secs(6))
        .unwrap();
    let redelivered = Arc::new(Mutex::new(Vec::<Event>::new()));
    let shutdown = Shutdown::new();
    let task = {
        let (seen, seen_together) = (redelivered.clone(), redelivered.clone());
        tokio::spawn(again.run_batched(
            shutdown.clone(),
            dead_letters(&pool, 8),
            move |events: Vec<Event>| {
                let seen = seen_together.clone();
                async move {
                    seen.lock().unwrap().extend(events);
                    Ok::<(), AppError>(())
                }
            },
            move |event: Event| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(event);
                    Ok::<(), AppError>(())
                }
            },
        ))
    };
    let last = write_events(&pool, 1).await;
    assert_eq!(relay.relay_batch().await.unwrap(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !redelivered
        .lock()
        .unwrap()
        .iter()
        .any(|event| event.id == last[0].id)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.trigger();
    task.await.unwrap();
    let redelivered: Vec<uuid::Uuid> = redelivered
        .lock()
        .unwrap()
        .iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(redelivered, vec![last[0].id]);
    pool.close().await;
}

/// One event its handler cannot take (a bug, bad data) is parked after EVENT_MAX_ATTEMPTS
/// failures and the partition moves on; an outage, however long, parks nothing; a parked
/// event re-driven once the cause is fixed is handled.
#[tokio::test]
async fn a_poison_event_is_parked_the_rest_flow_and_a_redrive_brings_it_back() {
    let (database, pool) = outbox_database().await;
    let (args, relay) = order_created_topic("poison", &pool).await;
    let written = write_events(&pool, 3).await;
    let (poison, flaky) = (written[0].id, written[1].id);
    assert_eq!(relay.relay_batch().await.unwrap(), 3);

    let metrics = Metrics::new("test");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let outages = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = EventConsumer::subscribe(
        &args,
        &unique("group"),
        &["order.created"],
        Duration::from_secs(6),
    )
    .unwrap();
    let shutdown = Shutdown::new();
    let task = {
        let (handled, outages, fixed) = (handled.clone(), outages.clone(), fixed.clone());
        tokio::spawn(consumer.run(
            shutdown.clone(),
            dead_letters_on(&pool, 3, &metrics),
            move |event: Event| {
                let (handled, outages, fixed) = (handled.clone(), outages.clone(), fixed.clone());
                async move {
                    use std::sync::atomic::Ordering::SeqCst;
                    if event.id == poison && !fixed.load(SeqCst) {
                        return Err(AppError::invalid("no such product (a bug, say)"));
                    }
                    // Five outages in a row: more than the three failures that park.
                    if event.id == flaky && outages.fetch_add(1, SeqCst) < 5 {
                        return Err(AppError::of(ErrorCode::ServiceUnavailable));
                    }
                    handled.lock().unwrap().push(event.id);
                    Ok(())
                }
            },
        ))
    };
    let wait_for = |want: usize| {
        let handled = handled.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while handled.lock().unwrap().len() < want && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            handled.lock().unwrap().clone()
        }
    };
    let first = wait_for(2).await;
    assert!(
        first.contains(&flaky) && first.contains(&written[2].id),
        "{first:?}"
    );
    let parked = events::parked(&pool).await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].event_id, poison);
    assert_eq!(parked[0].attempts, 3);
    assert!(parked[0].error.contains("no such product"), "{parked:?}");
    // Every 10 s the consumer reports the partitions it reads.
    let reads_partitions = |exposition: &str| {
        exposition.lines().any(|line| {
            line.starts_with("letsgo_events_assigned_partitions{") && !line.ends_with(" 0")
        })
    };
    let mut exposition = metrics.encode();
    for _ in 0..150 {
        if reads_partitions(&exposition) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        exposition = metrics.encode();
    }
    assert!(reads_partitions(&exposition), "{exposition}");
    assert!(
        exposition.lines().any(
            |line| line.starts_with("letsgo_events_dead_lettered_total{")
                && line.contains("event_type=\"order.created\"")
                && line.ends_with(" 1")
        ),
        "{exposition}"
    );

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    // As `letsgo-order redrive-events` does, on a pool of its own.
    let command_pool = db::connect(&database.url, 1).await.unwrap();
    let answer = events::run_command(
        command_pool,
        &events::EventCommand::RedriveEvents { event_id: None },
    )
    .await
    .unwrap();
    assert!(answer.starts_with("1 event"), "{answer}");
    assert!(events::parked(&pool).await.unwrap().is_empty());
    assert_eq!(relay.relay_batch().await.unwrap(), 1);
    let all = wait_for(3).await;
    assert!(all.contains(&poison), "{all:?}");
    shutdown.trigger();
    task.await.unwrap();
    pool.close().await;
}

/// Topics are made with the partitions and replicas the settings ask for (a Store's
/// `kafka.partitions` and `kafka.replication`); an existing topic is left as it is; a
/// replication the cluster cannot give is refused with the broker's reason, not made smaller.
#[tokio::test]
async fn topics_are_made_with_the_partitions_and_replication_asked_for() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let topics = TopicPrefix::new("topic-shape");
    let mut args = kafka(topics.as_str());
    args.kafka_topic_partitions = 5;
    args.kafka_topic_replication = 1;
    events::ensure_topics(&args, &["order.created", "order.paid"])
        .await
        .unwrap();
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_brokers)
        .create()
        .unwrap();
    let shape = |name: &str| {
        let metadata = client
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .unwrap();
        let topic = &metadata.topics()[0];
        assert!(topic.error().is_none(), "{name}: {:?}", topic.error());
        (
            topic.partitions().len(),
            topic
                .partitions()
                .iter()
                .map(|partition| partition.replicas().len())
                .max()
                .unwrap_or(0),
        )
    };
    let created = format!("{}order.created", topics.as_str());
    assert_eq!(shape(&created), (5, 1));
    assert_eq!(shape(&format!("{}order.paid", topics.as_str())), (5, 1));

    // Asked again with other numbers: the topic keeps its shape (partitions are never
    // changed behind the consumers' backs).
    args.kafka_topic_partitions = 8;
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    assert_eq!(shape(&created), (5, 1));

    // Three replicas on a one-broker cluster: refused, and nothing made.
    args.kafka_topic_replication = 3;
    let refused = events::ensure_topics(&args, &["order.shipped"])
        .await
        .unwrap_err();
    assert!(
        format!("{refused}").contains("InvalidReplicationFactor"),
        "{refused}"
    );
    let metadata = client
        .fetch_metadata(
            Some(&format!("{}order.shipped", topics.as_str())),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        metadata.topics()[0].partitions().is_empty(),
        "a refused topic is not made"
    );
}

/// A failure no retry fixes while the test wants it to: the consumer backs off and retries.
#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the downstream is away")
    }
}

impl events::HandlerError for Unavailable {
    fn is_transient(&self) -> bool {
        true
    }
}

/// A group member's offsets are committed only for what its handler finished, and its
/// successor starts exactly there: across restarts of the group's member (a new consumer each
/// time, as each `make up` or rollout makes), every event is handled, none is skipped, the one
/// whose handling was cut short by the stop comes again, and the ones handled before the stop
/// do not.
#[tokio::test]
async fn a_restarted_group_member_resumes_where_its_handler_stopped() {
    let (_database, pool) = outbox_database().await;
    let (args, relay) = order_created_topic("resume-test", &pool).await;
    let group = unique("resuming");
    // Every handled event, in the order of handling, with the round that handled it.
    let handled: Arc<Mutex<Vec<(usize, uuid::Uuid)>>> = Arc::default();
    let mut written: Vec<uuid::Uuid> = Vec::new();
    for round in 0..4 {
        let batch = write_events(&pool, 12).await;
        written.extend(batch.iter().map(|event| event.id));
        assert_eq!(relay.relay_batch().await.unwrap(), 12);
        // In every round but the last, the 8th event this member sees never gets through: the
        // member is stopped while its handler still fails, so that event is not committed.
        let stuck: Arc<Mutex<Option<uuid::Uuid>>> = Arc::default();
        let seen_this_round = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let consumer =
            EventConsumer::subscribe(&args, &group, &["order.created"], Duration::from_secs(6))
                .unwrap();
        let shutdown = Shutdown::new();
        let (sink, stuck_sink, seen) = (handled.clone(), stuck.clone(), seen_this_round.clone());
        let last = round == 3;
        let task = tokio::spawn(consumer.run(
            shutdown.clone(),
            dead_letters(&pool, 3),
            move |event: Event| {
                let (sink, stuck, seen) = (sink.clone(), stuck_sink.clone(), seen.clone());
                async move {
                    let mut stuck = stuck.lock().unwrap();
                    if *stuck == Some(event.id) {
                        return Err(Unavailable);
                    }
                    if !last
                        && stuck.is_none()
                        && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 7
                    {
                        *stuck = Some(event.id);
                        return Err(Unavailable);
                    }
                    sink.lock().unwrap().push((round, event.id));
                    Ok(())
                }
            },
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let done = if last {
                let handled = handled.lock().unwrap();
                written
                    .iter()
                    .all(|id| handled.iter().any(|(_, seen)| seen == id))
            } else {
                stuck.lock().unwrap().is_some()
            };
            if done {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the member got no events within 60 s (handled so far: {})",
                handled.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The commits of what was handled reach the broker before the member goes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.trigger();
        task.await.unwrap();
    }
    let handled = handled.lock().unwrap().clone();
    let mut once: Vec<uuid::Uuid> = handled.iter().map(|(_, id)| *id).collect();
    once.sort();
    let handled_count = once.len();
    once.dedup();
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(once, expected, "every event handled, none skipped");
    assert_eq!(
        handled_count,
        written.len(),
        "no event handled and committed before a stop came again after it"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_broker_outage_delays_events_and_loses_none() {
    let (_database, pool) = outbox_database().await;
    write_events(&pool, 3).await;

    // Nothing listens on port 1: every send fails, and the events stay in the outbox.
    let down = KafkaArgs::new("127.0.0.1:1", "");
    let mut producer_config = rdkafka::ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &down.kafka_brokers)
        .set("message.timeout.ms", "1500");
    let dead_producer: rdkafka::producer::FutureProducer = producer_config.create().unwrap();
    let relay = OutboxRelay::new(pool.clone(), dead_producer.clone(), "");
    assert!(relay.relay_batch().await.is_err());
    assert_eq!(unpublished(&pool).await, 3);

    // Meanwhile /metrics says how far behind publishing is.
    let metrics = Metrics::new("test");
    let shutdown = Shutdown::new();
    let measuring = tokio::spawn(
        OutboxRelay::new(pool.clone(), dead_producer, "")
            .with_metrics(&metrics)
            .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.trigger();
    measuring.await.unwrap();
    let exposition = metrics.encode();
    assert!(
        exposition.contains(r#"letsgo_outbox_backlog{component="test"} 3"#),
        "{exposition}"
    );
    let age: f64 = exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"letsgo_outbox_oldest_unpublished_age_seconds{component="test"} "#)
        })
        .expect("the age gauge")
        .parse()
        .unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");

    // The broker is back: the same events go out.
    let topics = TopicPrefix::new("outage-test");
    let args = kafka(topics.as_str());
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    let relay = OutboxRelay::new(
        pool.clone(),
        events::producer(&args).unwrap(),
        &args.kafka_topic_prefix,
    );
    assert_eq!(relay.relay_batch().await.unwrap(), 3);
    assert_eq!(unpublished(&pool).await, 0);
    pool.close().await;
}

#[tokio::test]
async fn a_redelivered_event_is_handled_once() {
    let (_database, pool) = outbox_database().await;
    let event = Event::new("payment.succeeded", serde_json::json!({"orderId": 7})).unwrap();
    let mut first = pool.begin().await.unwrap();
    assert!(
        events::mark_handled(&mut first, "order-service", event.id)
            .await
            .unwrap()
    );
    first.commit().await.unwrap();
    let mut again = pool.begin().await.unwrap();
    assert!(
        !events::mark_handled(&mut again, "order-service", event.id)
            .await
            .unwrap()
    );
    // Another group handles the same event independently.
    assert!(
        events::mark_handled(&mut again, "analytics", event.id)
            .await
            .unwrap()
    );
    again.commit().await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn two_relays_on_one_outbox_publish_each_event_once() {
    let (_database, pool) = outbox_database().await;
    write_events(&pool, 40).await;
    let topics = TopicPrefix::new("relay-race");
    let args = kafka(topics.as_str());
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    let relays = [
        OutboxRelay::new(
            pool.clone(),
            events::producer(&args).unwrap(),
            &args.kafka_topic_prefix,
        ),
        OutboxRelay::new(
            pool.clone(),
            events::producer(&args).unwrap(),
            &args.kafka_topic_prefix,
        ),
    ];
    let mut sent = 0;
    loop {
        let (a, b) = tokio::join!(relays[0].relay_batch(), relays[1].relay_batch());
        let batch = a.unwrap() + b.unwrap();
        if batch == 0 {
            break;
        }
        sent += batch;
    }
    assert_eq!(sent, 40, "each row is published by one relay");
    pool.close().await;
}

/// Several replicas' relays share one outbox. One key's events must reach Kafka in the order
/// they were written, so a relay never publishes past an older event another relay holds (a
/// slow send, or a batch about to fail and roll back): it waits for that batch.
#[tokio::test]
async fn a_relay_never_publishes_past_an_event_another_relay_holds() {
    let (_database, pool) = outbox_database().await;
    write_events(&pool, 10).await;
    let topics = TopicPrefix::new("relay-order");
    let args = kafka(topics.as_str());
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    // Another relay, mid-batch on the oldest event.
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT id FROM event_outbox WHERE published_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE",
    )
    .fetch_one(&mut *other)
    .await
    .unwrap();
    let relay = OutboxRelay::new(
        pool.clone(),
        events::producer(&args).unwrap(),
        &args.kafka_topic_prefix,
    );
    let publishing = tokio::spawn(async move { relay.relay_batch().await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !publishing.is_finished(),
        "published the newer events past the held one"
    );
    assert_eq!(
        published_count(&pool).await,
        0,
        "nothing is published while the oldest event is held"
    );
    // The other relay's send failed: its batch rolls back, and this relay publishes all ten.
    other.rollback().await.unwrap();
    assert_eq!(publishing.await.unwrap().unwrap(), 10);
    assert_eq!(published_count(&pool).await, 10);
    pool.close().await;
}

/// Pruning deletes the published events older than the retention (a day), in as many chunks
/// as they take, past an old event still unpublished and past one published again lately (a
/// re-driven event keeps its id), and keeps the young ones and any event not yet published.
#[tokio::test]
async fn pruning_deletes_old_published_events_and_nothing_else() {
    let (_database, pool) = outbox_database().await;
    write_events(&pool, 2_600).await;
    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM event_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The oldest 2,500 were published two days ago, but for one never published and one
    // published again a minute ago; of the newest 100, half were published a minute ago.
    sqlx::query(
        "UPDATE event_outbox SET created_at = now() - interval '2 days', \
         published_at = CASE WHEN id = $1 + 10 THEN NULL \
                             WHEN id = $1 + 5 THEN now() - interval '1 minute' \
                             ELSE now() - interval '2 days' END \
         WHERE id < $1 + 2500",
    )
    .bind(first)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE event_outbox SET published_at = now() - interval '1 minute' \
         WHERE id >= $1 + 2500 AND id < $1 + 2550",
    )
    .bind(first)
    .execute(&pool)
    .await
    .unwrap();
    // Pruning needs no broker.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .create()
        .unwrap();
    let relay = OutboxRelay::new(pool.clone(), producer, "");

    assert_eq!(relay.prune().await.unwrap(), 2_498);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id - $1 FROM event_outbox ORDER BY id")
        .bind(first)
        .fetch_all(&pool)
        .await
        .unwrap();
    let expected: Vec<i64> = [5, 10].into_iter().chain(2_500..2_600).collect();
    assert_eq!(left, expected);
    assert_eq!(unpublished(&pool).await, 51);
    assert_eq!(
        relay.prune().await.unwrap(),
        0,
        "a second prune finds nothing"
    );
    pool.close().await;
}

async fn published_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE published_at IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_database_is_created_when_missing_and_reused_when_present() {
    let scratch = ScratchDatabase::create(&postgres_url()).await.unwrap();
    // A name that does not exist yet, on the same server.
    let url = scratch
        .url
        .replace(scratch.name(), &format!("{}_svc", scratch.name()));
    for _ in 0..2 {
        let pool = db::connect(&url, 1).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(one, 1);
        pool.close().await;
    }
    // Clean up the database connect() made.
    let admin = PgPool::connect(&postgres_url()).await.unwrap();
    sqlx::query(&format!(
        "DROP DATABASE {} WITH (FORCE)",
        db::quote_identifier(&format!("{}_svc", scratch.name()))
    ))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

#[tokio::test]
async fn cache_keys_carry_the_process_prefix() {
    let url =
        std::env::var("REDIS_URL_BASE").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let prefix = format!("{}:", unique("letsgo-test"));
    let cache = Cache::connect_url(&url, &prefix).await.unwrap();
    cache.ping().await.unwrap();
    let key = cache.key("probe");
    assert!(key.starts_with(&prefix));
    let mut connection = cache.connection();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .arg("EX")
        .arg(60)
        .query_async(&mut connection)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, "1");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
}

// ---------------------------------------------------------------- discovery and resilience

mod discovery_support {
    use std::future::Future;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tonic::codegen::http;

    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{Name, RData, Record, rdata::A};
    use tokio::net::{TcpListener, UdpSocket};

    /// A real DNS server on a UDP port of its own, answering A records for one name from a set
    /// the test changes, NXDOMAIN for anything else.
    pub struct TestDns {
        pub address: SocketAddr,
        records: Arc<Mutex<Vec<Ipv4Addr>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestDns {
        pub async fn start(name: &str, ips: &[Ipv4Addr]) -> TestDns {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let address = socket.local_addr().unwrap();
            let records = Arc::new(Mutex::new(ips.to_vec()));
            let served = Name::from_ascii(format!("{name}.")).unwrap();
            let answers = records.clone();
            let task = tokio::spawn(async move {
                let mut buffer = [0u8; 512];
                loop {
                    let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
                        return;
                    };
                    let Ok(query) = Message::from_vec(&buffer[..length]) else {
                        continue;
                    };
                    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                    reply.metadata.message_type = MessageType::Response;
                    reply.metadata.recursion_desired = query.metadata.recursion_desired;
                    reply.metadata.recursion_available = true;
                    reply.metadata.authoritative = true;
                    reply.queries = query.queries.clone();
                    let asked = query.queries.first().map(|q| q.name().clone());
                    if asked.as_ref().is_some_and(|asked| *asked == served) {
                        let ips = answers.lock().unwrap().clone();
                        if ips.is_empty() {
                            reply.metadata.response_code = ResponseCode::NXDomain;
                        }
                        for ip in ips {
                            reply.answers.push(Record::from_rdata(
                                served.clone(),
                                1,
                                RData::A(A(ip)),
                            ));
                        }
                    } else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    }
                    if let Ok(bytes) = reply.to_vec() {
                        let _ = socket.send_to(&bytes, peer).await;
                    }
                }
            });
            TestDns {
                address,
                records,
                task,
            }
        }

        pub fn set(&self, ips: &[Ipv4Addr]) {
            *self.records.lock().unwrap() = ips.to_vec();
        }
    }

    impl Drop for TestDns {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A gRPC server with only grpc.health.v1, standing in for an instance of a service.
    pub struct Instance {
        pub address: SocketAddr,
        /// How many requests it has received.
        pub seen: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
        stop: tokio::sync::oneshot::Sender<()>,
    }

    impl Instance {
        pub async fn start() -> Instance {
            Instance::start_on("127.0.0.1:0".parse().unwrap()).await
        }

        pub async fn start_on(address: SocketAddr) -> Instance {
            Instance::serve(TcpListener::bind(address).await.unwrap()).await
        }

        /// Serves on a listener the test made.
        pub async fn serve(listener: TcpListener) -> Instance {
            Instance::serve_holding(listener, Arc::new(AtomicBool::new(false))).await
        }

        /// Serves on a listener the test made; the first request that arrives while `hold` is
        /// set (which clears it) is served only ten seconds later: a call stuck on its server.
        pub async fn serve_holding(listener: TcpListener, hold: Arc<AtomicBool>) -> Instance {
            let address = listener.local_addr().unwrap();
            let seen = Arc::new(AtomicUsize::new(0));
            let counted = seen.clone();
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _keep = reporter;
                let _ = tonic::transport::Server::builder()
                    .layer(tower::layer::layer_fn(move |inner| Holding {
                        inner,
                        hold: hold.clone(),
                        seen: counted.clone(),
                    }))
                    .add_service(health)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await;
            });
            Instance {
                address,
                seen,
                task,
                stop,
            }
        }

        /// Stops as a process on SIGTERM does: its connections are closed once idle.
        pub async fn stop(self) {
            let _ = self.stop.send(());
            let _ = self.task.await;
        }

        /// Dies at once, as a crashed process would: connections close, new ones are refused.
        pub fn kill(self) {
            self.task.abort();
        }
    }

    #[derive(Clone)]
    struct Holding<S> {
        inner: S,
        hold: Arc<AtomicBool>,
        seen: Arc<AtomicUsize>,
    }

    impl<S, B> tower::Service<http::Request<B>> for Holding<S>
    where
        S: tower::Service<http::Request<B>> + Send + 'static,
        S::Future: Send + 'static,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            self.seen.fetch_add(1, Ordering::SeqCst);
            let held = self.hold.swap(false, Ordering::SeqCst);
            let answer = self.inner.call(request);
            Box::pin(async move {
                if held {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                answer.await
            })
        }
    }
}

use discovery_support::{Instance, TestDns};
use letsgo_platform::discovery::{Discovery, EndpointSource, Mode, RpcChannel, ServiceName, etcd};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn etcd_endpoints() -> Vec<String> {
    std::env::var("ETCD_HOSTS")
        .unwrap_or_else(|_| "127.0.0.1:2379".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect()
}

async fn etcd_client() -> etcd_client::Client {
    etcd_client::Client::connect(etcd_endpoints(), None)
        .await
        .expect("etcd answers (make test starts it)")
}

async fn wait_for_set(
    receiver: &mut tokio::sync::watch::Receiver<Vec<tonic::transport::Uri>>,
    want: &[String],
    within: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut now: Vec<String> = receiver
            .borrow_and_update()
            .iter()
            .map(|uri| uri.authority().unwrap().to_string())
            .collect();
        now.sort();
        if now == want || tokio::time::Instant::now() > deadline {
            return now;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), receiver.changed()).await;
    }
}

#[tokio::test]
async fn etcd_instances_join_leave_on_shutdown_and_expire_when_they_die() {
    let prefix = format!("/letsgo-test/{}/", unique("etcd"));
    let source = etcd::EtcdSource::new(etcd_client().await, &prefix);
    let mut set = source.watch(ServiceName::Product);

    let first = Shutdown::new();
    let a = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::Product,
        "127.0.0.1:7001".into(),
        Duration::from_secs(2),
        first.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_for_set(&mut set, &["127.0.0.1:7001".into()], Duration::from_secs(5)).await,
        ["127.0.0.1:7001"]
    );

    let second = Shutdown::new();
    let b = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::Product,
        "127.0.0.1:7002".into(),
        Duration::from_secs(2),
        second.clone(),
    )
    .await
    .unwrap();
    let both = ["127.0.0.1:7001".to_owned(), "127.0.0.1:7002".to_owned()];
    assert_eq!(
        wait_for_set(&mut set, &both, Duration::from_secs(5)).await,
        both,
        "a new instance joins without restarts"
    );

    // Graceful stop: deregistered at once.
    first.trigger();
    a.await.unwrap();
    assert_eq!(
        wait_for_set(&mut set, &["127.0.0.1:7002".into()], Duration::from_secs(5)).await,
        ["127.0.0.1:7002"]
    );

    // A crash: nothing deregisters, the lease runs out.
    b.abort();
    assert_eq!(
        wait_for_set(&mut set, &[], Duration::from_secs(10)).await,
        Vec::<String>::new(),
        "a dead instance leaves within its TTL"
    );
    drop(second);
}

#[tokio::test]
async fn kubernetes_dns_discovery_follows_the_headless_record_set() {
    let dns = TestDns::start(
        "letsgo-cart.shop.svc.cluster.local",
        &["10.1.0.5".parse().unwrap(), "10.1.0.6".parse().unwrap()],
    )
    .await;
    let source = letsgo_platform::discovery::dns::DnsSource::new(
        "letsgo-{service}.shop.svc.cluster.local",
        Some(dns.address),
        Duration::from_millis(200),
    )
    .unwrap();
    let mut set = source.watch(ServiceName::Cart);
    let both = ["10.1.0.5:9003".to_owned(), "10.1.0.6:9003".to_owned()];
    assert_eq!(
        wait_for_set(&mut set, &both, Duration::from_secs(10)).await,
        both
    );

    dns.set(&[
        "10.1.0.6".parse().unwrap(),
        "10.1.0.7".parse().unwrap(),
        "10.1.0.8".parse().unwrap(),
    ]);
    let scaled = [
        "10.1.0.6:9003".to_owned(),
        "10.1.0.7:9003".to_owned(),
        "10.1.0.8:9003".to_owned(),
    ];
    assert_eq!(
        wait_for_set(&mut set, &scaled, Duration::from_secs(10)).await,
        scaled,
        "scale-up and a replaced pod"
    );

    dns.set(&[]);
    assert_eq!(
        wait_for_set(&mut set, &[], Duration::from_secs(10)).await,
        Vec::<String>::new(),
        "no ready pod: an empty set"
    );
}

/// A service watched, left by every watcher (its poller ends), and watched again: the new
/// watcher gets a live set that follows the records, not the ended poller's last answer.
#[tokio::test]
async fn a_dns_set_watched_again_after_its_watchers_left_is_live() {
    let dns = TestDns::start(
        "letsgo-order.shop.svc.cluster.local",
        &["10.1.0.5".parse().unwrap()],
    )
    .await;
    let source = letsgo_platform::discovery::dns::DnsSource::new(
        "letsgo-{service}.shop.svc.cluster.local",
        Some(dns.address),
        Duration::from_millis(100),
    )
    .unwrap();
    let one = ["10.1.0.5:9004".to_owned()];
    let mut first = source.watch(ServiceName::Order);
    assert_eq!(
        wait_for_set(&mut first, &one, Duration::from_secs(10)).await,
        one
    );
    drop(first);
    // Several refreshes: the poller sees nobody watching and ends.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut again = source.watch(ServiceName::Order);
    dns.set(&["10.1.0.9".parse().unwrap()]);
    let moved = ["10.1.0.9:9004".to_owned()];
    assert_eq!(
        wait_for_set(&mut again, &moved, Duration::from_secs(10)).await,
        moved,
        "the set follows the records again"
    );
}

async fn check(client: &mut HealthClient<RpcChannel>) -> Result<(), tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// The call let through to probe an ejected endpoint is cancelled by its caller (a client that
/// hung up, a timeout above it): the endpoint is not shut out for good. Once it answers again,
/// calls reach it; with the probe left marked as in flight, none ever would.
#[tokio::test]
async fn a_cancelled_probe_does_not_shut_an_endpoint_out() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let discovery = Discovery::fixed(vec![(
        ServiceName::User,
        vec![format!("http://{address}").parse().unwrap()],
    )]);
    let channel = discovery.channel(ServiceName::User);
    let mut client = HealthClient::new(channel.clone());
    // Nothing listens: refused, and the endpoint is ejected.
    assert_eq!(
        check(&mut client).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
    // A listener that takes connections and never answers, then the ejection ends.
    let silent = tokio::net::TcpListener::bind(address).await.unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The probe goes to the silent listener; its caller gives up on it.
    let given_up = tokio::time::timeout(Duration::from_millis(300), check(&mut client)).await;
    assert!(
        given_up.is_err(),
        "the probe hangs until its caller gives up"
    );
    holding.abort();
    let _ = holding.await;

    // The real instance is back on the same address.
    let back = Instance::start_on(address).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while tokio::time::Instant::now() < deadline && answered < 5 {
        if check(&mut client).await.is_ok() {
            answered += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        answered, 5,
        "calls reach the endpoint once it answers again"
    );
    back.kill();
}

/// The only endpoint there is loses a call's connection attempts for a while (its accept queue
/// is full, so the kernel drops the SYNs, as a lost packet or a Pod restarting behind the
/// address do): the call is made again on it once that attempt timed out, and is answered,
/// instead of failing because no other endpoint is left to try.
#[tokio::test]
async fn a_call_whose_connection_attempt_was_lost_is_made_again_on_the_only_endpoint() {
    let first = Instance::start().await;
    let address = first.address;
    let discovery = Discovery::fixed(vec![(
        ServiceName::User,
        vec![format!("http://{address}").parse().unwrap()],
    )]);
    let mut client = HealthClient::new(discovery.channel(ServiceName::User));
    check(&mut client).await.expect("the endpoint answers");
    // It goes away with its connections; a listener with no room in its accept queue takes
    // its address: one connection fills a queue of length 0, and the SYNs after it are dropped.
    first.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(address).unwrap();
    let listener = socket.listen(0).unwrap();
    let _filler = std::net::TcpStream::connect(address).unwrap();
    let blocked = tokio::task::spawn_blocking(move || {
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_err()
    });
    assert!(blocked.await.unwrap(), "a connection attempt is lost");
    // Half a second past the first attempt's 1 s connect timeout, the address serves again.
    let serving = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        Instance::serve(listener).await
    });

    let started = std::time::Instant::now();
    let answer = check(&mut client).await;
    let took = started.elapsed();
    assert!(
        answer.is_ok(),
        "the call is answered after {took:?}: {answer:?}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "the first connection attempt timed out ({took:?})"
    );
    serving.await.unwrap().kill();
}

/// A read stuck on the only endpoint there is (its server never answers that one call) is sent
/// again on a new stream after a second and answered, instead of failing at its 3 s deadline.
#[tokio::test]
async fn a_read_stuck_on_the_only_endpoint_is_answered_by_its_twin() {
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let instance = Instance::serve_holding(listener, hold.clone()).await;
    let discovery = Discovery::fixed(vec![(
        ServiceName::User,
        vec![format!("http://{}", instance.address).parse().unwrap()],
    )]);
    let mut client = HealthClient::new(discovery.channel(ServiceName::User));
    check(&mut client).await.expect("the endpoint answers");

    let seen = || instance.seen.load(std::sync::atomic::Ordering::SeqCst);
    let before = seen();
    hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let answer = check(&mut client).await;
    let took = started.elapsed();
    assert!(
        !hold.load(std::sync::atomic::Ordering::SeqCst),
        "the server held the call"
    );
    assert_eq!(
        seen() - before,
        2,
        "the call and its twin, and nothing else"
    );
    assert!(
        answer.is_ok(),
        "the stuck read is answered by its twin, after {took:?}: {answer:?}"
    );
    instance.kill();
}

/// Of two endpoints, the one a read went to holds it: the read's twin goes to the other, which
/// answers it (each endpoint sees one of the two).
#[tokio::test]
async fn a_read_stuck_on_one_endpoint_is_answered_by_another() {
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut instances = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        instances.push(Instance::serve_holding(listener, hold.clone()).await);
    }
    let discovery = Discovery::fixed(vec![(
        ServiceName::User,
        instances
            .iter()
            .map(|instance| format!("http://{}", instance.address).parse().unwrap())
            .collect(),
    )]);
    let mut client = HealthClient::new(discovery.channel(ServiceName::User));
    for _ in 0..4 {
        check(&mut client).await.expect("the endpoints answer");
    }

    let seen = || {
        instances
            .iter()
            .map(|instance| instance.seen.load(std::sync::atomic::Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    for round in 0..3 {
        let before = seen();
        hold.store(true, std::sync::atomic::Ordering::SeqCst);
        // A caller that waits less than the held attempt's own 3 s deadline: a retry after that
        // deadline would come too late for it.
        let answer = tokio::time::timeout(Duration::from_millis(2_500), check(&mut client)).await;
        assert!(
            !hold.load(std::sync::atomic::Ordering::SeqCst),
            "round {round}: a server held the call"
        );
        assert!(
            matches!(answer, Ok(Ok(()))),
            "round {round}: the stuck read is answered elsewhere: {answer:?}"
        );
        let after = seen();
        assert_eq!(
            (after[0] - before[0], after[1] - before[1]),
            (1, 1),
            "round {round}: the twin went to the other endpoint"
        );
    }
    for instance in instances {
        instance.kill();
    }
}

/// A set whose addresses the test changes.
struct MovingSet(tokio::sync::watch::Sender<Vec<tonic::transport::Uri>>);

impl EndpointSource for MovingSet {
    fn watch(&self, _: ServiceName) -> tokio::sync::watch::Receiver<Vec<tonic::transport::Uri>> {
        self.0.subscribe()
    }
}

/// An endpoint that joins the set is sent callers' calls only once it has answered: one that
/// takes connections and never answers (a Pod just turned ready that cannot serve yet) gets
/// none of them, while one that answers is used as soon as it has.
#[tokio::test]
async fn a_joining_endpoint_gets_calls_only_once_it_has_answered() {
    let uri = |address: std::net::SocketAddr| format!("http://{address}").parse().unwrap();
    let serving = Instance::start().await;
    let set = tokio::sync::watch::Sender::new(vec![uri(serving.address)]);
    let discovery = Discovery::from_source(Arc::new(MovingSet(set.clone())), Mode::Kubernetes);
    let channel = discovery.channel(ServiceName::User);
    let mut client = HealthClient::new(channel.clone());
    check(&mut client)
        .await
        .expect("the first endpoint answers");

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    set.send_replace(vec![uri(serving.address), uri(silent_address)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for call in 0..40 {
        let answer = tokio::time::timeout(Duration::from_millis(500), check(&mut client)).await;
        assert!(
            matches!(answer, Ok(Ok(()))),
            "call {call} went to the endpoint that never answered: {answer:?}"
        );
    }

    // One that answers joins; once it has answered its warm-up, the first leaves: calls go
    // on, to the new one, and still none to the silent one.
    let joining = Instance::start().await;
    set.send_replace(vec![
        uri(serving.address),
        uri(silent_address),
        uri(joining.address),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    set.send_replace(vec![uri(silent_address), uri(joining.address)]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut answered = 0;
    while answered < 20 && tokio::time::Instant::now() < deadline {
        let answer = tokio::time::timeout(Duration::from_millis(500), check(&mut client)).await;
        assert!(
            matches!(answer, Ok(Ok(()))),
            "a call went to the endpoint that never answered: {answer:?}"
        );
        answered += 1;
    }
    assert_eq!(answered, 20);
    holding.abort();
    serving.kill();
    joining.kill();
}

#[tokio::test]
async fn calls_survive_an_instance_dying_fail_fast_when_all_are_gone_and_recover() {
    let prefix = format!("/letsgo-test/{}/", unique("resilience"));
    let a = Instance::start().await;
    let b = Instance::start().await;
    let stop_a = Shutdown::new();
    let stop_b = Shutdown::new();
    let reg_a = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::User,
        a.address.to_string(),
        Duration::from_secs(2),
        stop_a.clone(),
    )
    .await
    .unwrap();
    let reg_b = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::User,
        b.address.to_string(),
        Duration::from_secs(2),
        stop_b.clone(),
    )
    .await
    .unwrap();

    let discovery = Discovery::from_source(
        std::sync::Arc::new(etcd::EtcdSource::new(etcd_client().await, &prefix)),
        Mode::Etcd,
    );
    let channel = discovery.channel(ServiceName::User);
    let mut client = HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel.endpoints().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(channel.endpoints().len(), 2);
    for _ in 0..20 {
        check(&mut client).await.unwrap();
    }

    // One instance dies mid-run, still registered: calls keep succeeding.
    a.kill();
    reg_a.abort();
    for n in 0..40 {
        check(&mut client)
            .await
            .unwrap_or_else(|status| panic!("call {n} after a crash: {status}"));
    }

    // Every instance gone: the call fails at once with UNAVAILABLE, not after a timeout.
    let b_address = b.address;
    b.kill();
    stop_b.trigger();
    reg_b.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !channel.endpoints().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    let status = check(&mut client).await.unwrap_err();
    eprintln!("failing with no instance took {:?}", started.elapsed());
    assert_eq!(status.code(), tonic::Code::Unavailable);

    // One comes back and registers: calls succeed again without a restart.
    let back = Instance::start_on(b_address).await;
    let stop_back = Shutdown::new();
    let reg_back = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::User,
        back.address.to_string(),
        Duration::from_secs(2),
        stop_back.clone(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut recovered = false;
    while tokio::time::Instant::now() < deadline {
        if check(&mut client).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "calls recover when an instance comes back");
    stop_back.trigger();
    reg_back.await.unwrap();
    back.kill();
    drop(stop_a);
}

#[tokio::test]
async fn auto_discovery_picks_etcd_when_etcd_hosts_is_set_and_static_otherwise() {
    use clap::Parser;
    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        discovery: letsgo_platform::discovery::DiscoveryArgs,
    }
    let with_etcd = Probe::try_parse_from([
        "probe",
        "--discovery",
        "auto",
        "--etcd-hosts",
        "127.0.0.1:2379",
    ])
    .unwrap();
    let without = Probe::try_parse_from(["probe", "--discovery", "static"]).unwrap();
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        assert_eq!(with_etcd.discovery.mode(), Mode::Etcd);
    }
    assert_eq!(without.discovery.mode(), Mode::Static);
    let bad = Probe::try_parse_from([
        "probe",
        "--discovery",
        "static",
        "--user-rpc",
        "no-port-here",
    ])
    .unwrap();
    let error = bad
        .discovery
        .build()
        .await
        .err()
        .expect("a malformed address is refused");
    assert!(error.to_string().contains("USER_RPC"), "{error}");
}

#[tokio::test]
async fn a_call_made_just_after_start_waits_for_discovery_to_answer() {
    let prefix = format!("/letsgo-test/{}/", unique("startup"));
    let instance = Instance::start().await;
    let stop = Shutdown::new();
    let registration = etcd::register(
        etcd_client().await,
        &prefix,
        ServiceName::Cart,
        instance.address.to_string(),
        Duration::from_secs(2),
        stop.clone(),
    )
    .await
    .unwrap();
    // The channel is made and used at once, before etcd has answered its first read.
    let discovery = Discovery::from_source(
        std::sync::Arc::new(etcd::EtcdSource::new(etcd_client().await, &prefix)),
        Mode::Etcd,
    );
    let mut client = HealthClient::new(discovery.channel(ServiceName::Cart));
    check(&mut client)
        .await
        .expect("the first call finds the registered instance");
    stop.trigger();
    registration.await.unwrap();
    instance.kill();
}

// ---------------------------------------------------------------- middleware over TLS

/// A CA and a certificate it signs for `localhost` and 127.0.0.1, made by the openssl CLI in a
/// directory of their own (removed on drop).
struct Certificates {
    dir: std::path::PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = std::env::temp_dir().join(unique("letsgo-tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl is needed for the TLS tests: apt-get install openssl");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=letsgo test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ]);
        Certificates { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on at the moment of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_port(port: u16, what: &str) {
    let mut tries = 0;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tries += 1;
        assert!(tries < 100, "{what} did not listen on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn redis_args(url: &str, ca_file: Option<String>) -> letsgo_platform::config::RedisArgs {
    letsgo_platform::config::RedisArgs {
        redis_url: Some(letsgo_platform::config::SecretUrl::new(url)),
        redis_host: String::new(),
        redis_port: 0,
        redis_password: None,
        redis_key_prefix: format!("{}:", unique("tls-test")),
        redis_ca_file: ca_file,
    }
}

/// A Redis killed and started again (its Pod made again): the shop's connection is back within
/// a few seconds of Redis answering, though every command failed while it was gone.
#[tokio::test]
async fn the_cache_is_back_soon_after_a_killed_redis_returns() {
    let port = free_port();
    let start = || {
        Child(
            std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is needed for this test: apt-get install redis-server"),
        )
    };
    let redis = start();
    wait_for_port(port, "redis-server").await;
    let cache = Cache::connect(&redis_args(&format!("redis://127.0.0.1:{port}/"), None))
        .await
        .unwrap();
    cache.ping().await.unwrap();
    drop(redis);
    // Gone for a while, as a Pod is while it is made again; callers keep asking.
    let gone = tokio::time::Instant::now();
    let mut slowest = Duration::ZERO;
    while gone.elapsed() < Duration::from_secs(7) {
        let asked = tokio::time::Instant::now();
        assert!(cache.ping().await.is_err(), "no Redis, no answer");
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("the slowest refusal while Redis was gone took {slowest:?}");
    // Quick enough for a caller that can do without the cache to do so within its deadline.
    assert!(
        slowest < Duration::from_millis(1_500),
        "a command waited {slowest:?} while Redis was gone"
    );
    let _redis = start();
    wait_for_port(port, "redis-server").await;
    let back = tokio::time::Instant::now();
    while cache.ping().await.is_err() {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "the cache never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("answered {:?} after Redis was back", back.elapsed());
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "the cache took {:?} to use the Redis that was back",
        back.elapsed()
    );
}

#[tokio::test]
async fn redis_over_tls_is_checked_against_the_ca_the_settings_name() {
    let certificates = Certificates::make();
    let port = free_port();
    let _redis = Child(
        std::process::Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &certificates.path("server.crt")])
            .args(["--tls-key-file", &certificates.path("server.key")])
            .args(["--tls-ca-cert-file", &certificates.path("ca.crt")])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--requirepass", "tls-test-password"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is needed for the TLS test: apt-get install redis-server"),
    );
    wait_for_port(port, "redis-server").await;
    let url = format!("rediss://:tls-test-password@localhost:{port}/");

    let cache = Cache::connect(&redis_args(&url, Some(certificates.path("ca.crt"))))
        .await
        .unwrap();
    cache.ping().await.unwrap();
    let mut connection = cache.connection();
    let key = cache.key("greeting");
    redis::cmd("SET")
        .arg(&key)
        .arg("over tls")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let read: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(read, "over tls");

    // The system's roots do not vouch for the private CA: no connection without it.
    let refused = Cache::connect(&redis_args(&url, None)).await;
    assert!(refused.is_err(), "a certificate no root signs was accepted");

    // A CA with a plain URL is a mistake the settings name.
    let plain = format!("redis://localhost:{port}/");
    let error = redis_args(&plain, Some(certificates.path("ca.crt")))
        .client()
        .unwrap_err();
    assert!(
        error.contains("REDIS_CA_FILE") && error.contains("rediss://"),
        "{error}"
    );
    let error = redis_args(&url, Some(certificates.path("missing.crt")))
        .client()
        .unwrap_err();
    assert!(error.starts_with("REDIS_CA_FILE"), "{error}");
    assert!(!error.contains("tls-test-password"), "{error}");
}

#[tokio::test]
async fn events_flow_to_a_broker_reached_over_tls() {
    let certificates = Certificates::make();
    // Apache Kafka's own TLS listener; it tells clients to come back by the certificate's name.
    let broker = letsgo_testkit::KafkaBroker::start_tls(letsgo_testkit::KafkaTls {
        certificate_chain: certificates.path("server.crt").into(),
        private_key: certificates.path("server.key").into(),
        ca_certificate: certificates.path("ca.crt").into(),
        advertised_host: "localhost".to_owned(),
    });

    let mut args = KafkaArgs::new(broker.address(), &format!("{}.", unique("tls-test")));
    args.kafka_topic_partitions = 1;
    args.kafka_security_protocol = letsgo_platform::config::KafkaSecurityProtocol::Ssl;
    args.kafka_ca_file = Some(certificates.path("ca.crt"));
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    let (_database, pool) = outbox_database().await;
    let written = write_events(&pool, 2).await;
    let relay = OutboxRelay::new(
        pool.clone(),
        events::producer(&args).unwrap(),
        &args.kafka_topic_prefix,
    );
    assert_eq!(relay.relay_batch().await.unwrap(), 2);

    let consumer = EventConsumer::subscribe(
        &args,
        "tls-readers",
        &["order.created"],
        Duration::from_secs(6),
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let sink = seen.clone();
    let task = tokio::spawn(consumer.run(
        shutdown.clone(),
        dead_letters(&pool, 3),
        move |event: Event| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(event.id);
                Ok::<(), AppError>(())
            }
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < written.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    task.await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut expected: Vec<_> = written.iter().map(|event| event.id).collect();
    expected.sort();
    assert_eq!(seen, expected);
    pool.close().await;
}

#[test]
fn kafka_security_settings_that_contradict_each_other_are_named() {
    use letsgo_platform::config::KafkaSecurityProtocol;

    let mut args = KafkaArgs::new("localhost:9093", "");
    args.kafka_security_protocol = KafkaSecurityProtocol::SaslSsl;
    let error = args.client_config().unwrap_err();
    assert!(error.contains("KAFKA_SASL_USERNAME"), "{error}");
    args.kafka_sasl_username = Some("shop".into());
    let error = args.client_config().unwrap_err();
    assert!(error.contains("KAFKA_SASL_PASSWORD"), "{error}");
    args.kafka_sasl_password = Some(letsgo_platform::config::Secret::new(
        "a long enough password",
    ));
    // librdkafka was built with what SCRAM over TLS needs: the client is made (it connects
    // lazily).
    let _producer =
        events::producer(&args).expect("SASL_SSL with SCRAM-SHA-512 is supported by this build");
    assert!(!format!("{args:?}").contains("a long enough password"));

    let mut plain = KafkaArgs::new("localhost:9092", "");
    plain.kafka_ca_file = Some("/etc/ca.crt".into());
    let error = plain.client_config().unwrap_err();
    assert!(error.contains("KAFKA_CA_FILE"), "{error}");
    // Empty variables (a template that leaves them blank) are as good as unset.
    let mut blank = KafkaArgs::new("localhost:9092", "");
    blank.kafka_sasl_username = Some(String::new());
    blank.kafka_ca_file = Some(String::new());
    blank.client_config().expect("blank settings are unset");
    let mut plain = KafkaArgs::new("localhost:9092", "");
    plain.kafka_sasl_password = Some(letsgo_platform::config::Secret::new("x"));
    let error = plain.client_config().unwrap_err();
    assert!(
        error.contains("KAFKA_SASL_PASSWORD") && error.contains("plaintext"),
        "{error}"
    );
}

/// Answers the status code of `GET path` on `addr`, or None when nothing accepts there.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok()?;
    let status_line = String::from_utf8_lossy(&answer);
    status_line.split(' ').nth(1)?.parse().ok()
}

/// The assembly every service starts through: its admin listener answers from the first
/// moment (alive, not ready), its background jobs run, a dependency that cannot be reached is
/// an error naming the setting, and a start-up abandoned half-way stops what it had started.
#[tokio::test]
async fn an_assembly_that_fails_half_way_names_the_setting_and_stops_what_it_started() {
    use clap::Parser;
    use letsgo_platform::assembly::{Assembly, ServiceError};
    use letsgo_platform::discovery::ServiceName;
    use letsgo_platform::grpc::Listeners;
    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        discovery: letsgo_platform::discovery::DiscoveryArgs,
        #[command(flatten)]
        database: letsgo_platform::config::DatabaseArgs,
    }
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = format!(
        "postgres://postgres@{}/nowhere",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let probe = Probe::try_parse_from([
        "probe",
        "--discovery",
        "static",
        "--database-url",
        nowhere.as_str(),
    ])
    .unwrap();
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let admin = listeners.admin.local_addr().unwrap();
    let mut service = Assembly::start(
        ServiceName::Order,
        &probe.discovery,
        listeners,
        Shutdown::new(),
    )
    .await
    .unwrap();
    assert_eq!(http_status(admin, "/healthz").await, Some(200));
    assert_eq!(http_status(admin, "/readyz").await, Some(503));

    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    service.every("probe job", Duration::from_millis(50), move || {
        let runs = counted.clone();
        async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        }
    });
    let error = service
        .postgres(&probe.database, sqlx::migrate!("./migrations"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ServiceError::Dependency {
                setting: "DATABASE_URL / DB_HOST",
                ..
            }
        ),
        "{error}"
    );
    assert!(runs.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // What run() does with the error: returns it, dropping the assembly.
    drop(service);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_drop = runs.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        after_drop,
        "the background job stopped"
    );
    assert_eq!(
        http_status(admin, "/healthz").await,
        None,
        "the admin listener closed"
    );
}

/// A service with no ready Pod is asked after again within a second, not after a whole refresh:
/// the first callers after its Pod turns ready find it (a Store just Ready answered 503 for up
/// to five seconds when the empty set waited out the refresh). With a known set, the refresh.
#[tokio::test]
async fn a_service_without_ready_pods_is_asked_after_again_soon() {
    let dns = TestDns::start("letsgo-user.shop.svc.cluster.local", &[]).await;
    let source = letsgo_platform::discovery::dns::DnsSource::new(
        "letsgo-{service}.shop.svc.cluster.local.",
        Some(dns.address),
        Duration::from_secs(30),
    )
    .unwrap();
    let mut set = source.watch(ServiceName::User);
    assert_eq!(
        wait_for_set(&mut set, &[], Duration::from_secs(5)).await,
        Vec::<String>::new()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    dns.set(&["10.1.0.5".parse().unwrap()]);
    let started = std::time::Instant::now();
    let one = ["10.1.0.5:9001".to_owned()];
    assert_eq!(
        wait_for_set(&mut set, &one, Duration::from_secs(5)).await,
        one,
        "the Pod that turned ready is found well before the 30 s refresh"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
