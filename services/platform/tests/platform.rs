//! The platform's parts against real middleware: the outbox relay and consumers on a real
//! Kafka-protocol broker, migrations and scratch databases on PostgreSQL, the cache on Redis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use letsgo_platform::cache::Cache;
use letsgo_platform::config::KafkaArgs;
use letsgo_platform::db::{self, ScratchDatabase};
use letsgo_platform::events::{self, Event, EventConsumer, OutboxRelay};
use letsgo_platform::shutdown::Shutdown;
use sqlx::PgPool;

fn server_url() -> String {
    std::env::var("DATABASE_URL_BASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn kafka(prefix: &str) -> KafkaArgs {
    KafkaArgs {
        kafka_brokers: std::env::var("KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        kafka_topic_prefix: prefix.to_owned(),
    }
}

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

async fn outbox_database() -> (ScratchDatabase, PgPool) {
    let database = ScratchDatabase::create(&server_url()).await.unwrap();
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

async fn unpublished(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn outbox_events_reach_a_consumer_group_through_the_broker() {
    let (_database, pool) = outbox_database().await;
    let args = kafka(&format!("{}.", unique("platform-test")));
    events::ensure_topics(&args, &["order.created"])
        .await
        .unwrap();
    let written = write_events(&pool, 5).await;

    let relay = OutboxRelay::new(
        pool.clone(),
        events::producer(&args).unwrap(),
        &args.kafka_topic_prefix,
    );
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
    let task = tokio::spawn(consumer.run(shutdown.clone(), move |event: Event| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(event);
            Ok::<(), String>(())
        }
    }));
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

#[tokio::test]
async fn a_broker_outage_delays_events_and_loses_none() {
    let (_database, pool) = outbox_database().await;
    write_events(&pool, 3).await;

    // Nothing listens on port 1: every send fails, and the events stay in the outbox.
    let down = KafkaArgs {
        kafka_brokers: "127.0.0.1:1".to_owned(),
        kafka_topic_prefix: String::new(),
    };
    let mut producer_config = rdkafka::ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &down.kafka_brokers)
        .set("message.timeout.ms", "1500");
    let dead_producer = producer_config.create().unwrap();
    let relay = OutboxRelay::new(pool.clone(), dead_producer, "");
    assert!(relay.relay_batch().await.is_err());
    assert_eq!(unpublished(&pool).await, 3);

    // The broker is back: the same events go out.
    let args = kafka(&format!("{}.", unique("outage-test")));
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
    let args = kafka(&format!("{}.", unique("relay-race")));
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
    assert_eq!(sent, 40, "SKIP LOCKED hands each row to one relay");
    pool.close().await;
}

#[tokio::test]
async fn the_database_is_created_when_missing_and_reused_when_present() {
    let scratch = ScratchDatabase::create(&server_url()).await.unwrap();
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
    let admin = PgPool::connect(&server_url()).await.unwrap();
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
