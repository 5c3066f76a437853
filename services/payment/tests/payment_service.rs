//! The payment service over real gRPC, on a PostgreSQL database of its own per test, against a
//! fake order service (our own contract, answered from memory) so each test sets the order it
//! pays for.
//!
//! Needs PostgreSQL (DATABASE_URL_BASE or postgres://postgres@127.0.0.1:5432/postgres) and a
//! Kafka-protocol broker (KAFKA_BROKERS); `make test` starts both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use hmac::{Hmac, Mac};
use letsgo_payment::{Config, run};
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::order::v1::{
    self as order_pb, OrderStatus,
    order_service_server::{OrderService, OrderServiceServer},
};
use letsgo_platform::proto::payment::v1::{
    self as pb, PaymentStatus, payment_service_client::PaymentServiceClient,
};
use letsgo_platform::shutdown::Shutdown;
use letsgo_testkit::start_on_free_ports;
use letsgo_testkit::{ScratchDatabase, TopicPrefix, postgres_url};
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const SIGNING_SECRET: &str = "current-webhook-secret-0001-abcdefgh";
const ROTATED_SECRET: &str = "previous-webhook-secret-0002-abcdefgh";
const ALICE: i64 = 11;
const BOB: i64 = 22;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `X-Signature` as the design spells it, computed here independently of the service's code.
fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The order service as the payment service sees it: `GetOrder` from a map.
#[derive(Clone, Default)]
struct FakeOrders {
    orders: Arc<Mutex<HashMap<i64, order_pb::Order>>>,
}

impl FakeOrders {
    fn put(&self, id: i64, user_id: i64, total_amount_cents: i64, status: OrderStatus) {
        self.orders.lock().unwrap().insert(
            id,
            order_pb::Order {
                id,
                user_id,
                order_no: format!("ORD{id}"),
                total_amount_cents,
                status: status.into(),
                ..Default::default()
            },
        );
    }
}

#[tonic::async_trait]
impl OrderService for FakeOrders {
    async fn create_order(
        &self,
        _: Request<order_pb::CreateOrderRequest>,
    ) -> Result<Response<order_pb::CreateOrderReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_orders(
        &self,
        _: Request<order_pb::ListOrdersRequest>,
    ) -> Result<Response<order_pb::OrderPage>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_order(
        &self,
        request: Request<order_pb::GetOrderRequest>,
    ) -> Result<Response<order_pb::Order>, Status> {
        let request = request.into_inner();
        let orders = self.orders.lock().unwrap();
        match orders.get(&request.order_id) {
            Some(order) if order.user_id == request.user_id => Ok(Response::new(order.clone())),
            // Another user's order is as missing as one that does not exist.
            _ => Err(AppError::of(ErrorCode::OrderNotFound).into()),
        }
    }

    async fn cancel_order(
        &self,
        _: Request<order_pb::CancelOrderRequest>,
    ) -> Result<Response<order_pb::CancelOrderReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_all_orders(
        &self,
        _: Request<order_pb::ListAllOrdersRequest>,
    ) -> Result<Response<order_pb::OrderPage>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn ship_order(
        &self,
        _: Request<order_pb::ShipOrderRequest>,
    ) -> Result<Response<order_pb::ShipOrderReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn confirm_receipt(
        &self,
        _: Request<order_pb::ConfirmReceiptRequest>,
    ) -> Result<Response<order_pb::ConfirmReceiptReply>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

async fn serve_fake_orders(orders: FakeOrders) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OrderServiceServer::new(orders))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

struct Shop {
    payments: PaymentServiceClient<Channel>,
    orders: FakeOrders,
    pool: PgPool,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), letsgo_platform::assembly::ServiceError>>,
    _database: ScratchDatabase,
    /// The service's topics, deleted when the shop goes (kept across a restart).
    topics: TopicPrefix,
}

impl Shop {
    /// A shop whose mock provider stays quiet: tests send the callbacks themselves.
    async fn start() -> Shop {
        // Refund confirmations go to a closed port: nothing listens on the discard port.
        Shop::start_with(&[
            "--mock-provider-autocomplete",
            "false",
            "--payment-callback-url",
            "http://127.0.0.1:9/api/v1/payment/callback",
        ])
        .await
    }

    async fn start_with(extra: &[&str]) -> Shop {
        let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
        let topics = TopicPrefix::exactly(format!("test-{}.", database.name()));
        Shop::start_on(database, topics, FakeOrders::default(), extra).await
    }

    /// Stops the service and starts a new one on the same database and orders.
    async fn restart(self, extra: &[&str]) -> Shop {
        self.pool.close().await;
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("service stops within 10 s of shutdown")
            .unwrap()
            .unwrap();
        Shop::start_on(self._database, self.topics, self.orders, extra).await
    }

    async fn start_on(
        database: ScratchDatabase,
        topics: TopicPrefix,
        orders: FakeOrders,
        extra: &[&str],
    ) -> Shop {
        let order_addr = serve_fake_orders(orders.clone()).await;
        let topic_prefix = topics.as_str().to_owned();
        let secrets = format!("{SIGNING_SECRET},{ROTATED_SECRET}");
        let order_rpc = order_addr.to_string();
        let mut args = vec![
            "letsgo-payment",
            "--database-url",
            &database.url,
            "--order-rpc",
            &order_rpc,
            "--payment-webhook-secret",
            &secrets,
            "--kafka-topic-prefix",
            &topic_prefix,
            // The shortest session Kafka accepts by default (group.min.session.timeout.ms).
            "--kafka-session-timeout-ms",
            "6000",
            "--log-format",
            "text",
            "--discovery",
            "static",
        ];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).unwrap();
        let shutdown = Shutdown::new();
        let (grpc_addr, task) = start_on_free_ports(
            |listeners, shutdown| run(config, listeners, shutdown),
            &shutdown,
        )
        .await;
        let payments = connect(grpc_addr).await;
        let pool = PgPool::connect(&database.url).await.unwrap();
        Shop {
            payments,
            orders,
            pool,
            shutdown,
            task,
            _database: database,
            topics,
        }
    }

    async fn stop(self) {
        self.pool.close().await;
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("service stops within 10 s of shutdown")
            .unwrap()
            .unwrap();
    }

    async fn create(
        &self,
        user_id: i64,
        order_id: i64,
        payment_type: i32,
        amount_cents: i64,
        idempotency_key: &str,
    ) -> Result<pb::CreatePaymentReply, ErrorCode> {
        self.payments
            .clone()
            .create_payment(pb::CreatePaymentRequest {
                user_id,
                order_id,
                payment_type,
                amount_cents,
                idempotency_key: idempotency_key.to_owned(),
            })
            .await
            .map(Response::into_inner)
            .map_err(|status| AppError::from(status).code)
    }

    async fn query(&self, user_id: i64, order_id: i64) -> Result<pb::Payment, ErrorCode> {
        self.payments
            .clone()
            .query_payment(pb::QueryPaymentRequest { user_id, order_id })
            .await
            .map(Response::into_inner)
            .map_err(|status| AppError::from(status).code)
    }

    async fn callback(
        &self,
        body: &[u8],
        signature: &str,
    ) -> Result<pb::HandleCallbackReply, ErrorCode> {
        self.payments
            .clone()
            .handle_callback(pb::HandleCallbackRequest {
                raw_body: body.to_vec(),
                signature: signature.to_owned(),
            })
            .await
            .map(Response::into_inner)
            .map_err(|status| AppError::from(status).code)
    }

    /// A pending order of Alice's for 199.00 yuan, and a pending payment for it.
    async fn pending_payment(&self, order_id: i64) -> pb::CreatePaymentReply {
        self.orders
            .put(order_id, ALICE, 19900, OrderStatus::Pending);
        self.create(ALICE, order_id, 1, 19900, "").await.unwrap()
    }

    /// The events written to the outbox for an order: (topic, payload).
    async fn events(&self, order_id: i64) -> Vec<(String, serde_json::Value)> {
        sqlx::query_as("SELECT topic, payload FROM event_outbox WHERE event_key = $1 ORDER BY id")
            .bind(order_id.to_string())
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    async fn payment_statuses(&self, order_id: i64) -> Vec<i16> {
        sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1 ORDER BY id")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

async fn connect(addr: SocketAddr) -> PaymentServiceClient<Channel> {
    for _ in 0..100 {
        if let Ok(client) = PaymentServiceClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment service did not come up on {addr}");
}

fn callback_body(payment_no: &str, order_id: i64, status: i32, amount: &str) -> Vec<u8> {
    format!(
        r#"{{"paymentNo":"{payment_no}","orderId":{order_id},"status":{status},"amount":{amount},"tradeNo":"TRADE-{payment_no}"}}"#
    )
    .into_bytes()
}

// ---- creation ----

#[tokio::test]
async fn creating_a_payment_answers_checkout_links_and_leaves_it_pending() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 19900, OrderStatus::Pending);
    let created = shop.create(ALICE, 100, 2, 19900, "").await.unwrap();
    assert!(created.payment_id > 0);
    assert!(
        created.payment_no.starts_with("PAY"),
        "{}",
        created.payment_no
    );
    assert_eq!(created.payment_no.len(), 23);
    assert!(created.pay_url.ends_with(&created.payment_no));
    assert!(created.pay_url.starts_with("https://"));
    assert!(created.qr_code.contains(&created.payment_no));

    let payment = shop.query(ALICE, 100).await.unwrap();
    assert_eq!(payment.payment_id, created.payment_id);
    assert_eq!(payment.payment_no, created.payment_no);
    assert_eq!(payment.order_id, 100);
    assert_eq!(payment.status(), PaymentStatus::Pending);
    assert_eq!(payment.amount_cents, 19900);
    assert_eq!(payment.payment_type, 2);
    assert_eq!(payment.paid_at, 0);
    shop.stop().await;
}

#[tokio::test]
async fn an_amount_other_than_the_order_total_is_a_payment_amount_error() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 19900, OrderStatus::Pending);
    for amount in [19899, 19901, 0] {
        assert_eq!(
            shop.create(ALICE, 100, 1, amount, "").await.unwrap_err(),
            ErrorCode::PaymentAmount
        );
    }
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap_err(),
        ErrorCode::PaymentNotFound
    );
    shop.stop().await;
}

#[tokio::test]
async fn an_order_that_is_not_pending_cannot_be_paid() {
    let shop = Shop::start().await;
    for (order_id, status) in [
        (101, OrderStatus::Paid),
        (102, OrderStatus::Cancelled),
        (103, OrderStatus::Shipped),
    ] {
        shop.orders.put(order_id, ALICE, 500, status);
        assert_eq!(
            shop.create(ALICE, order_id, 1, 500, "").await.unwrap_err(),
            ErrorCode::BadOrderStatus,
            "{status:?}"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_missing_order_or_another_users_order_is_order_not_found() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    assert_eq!(
        shop.create(ALICE, 999, 1, 500, "").await.unwrap_err(),
        ErrorCode::OrderNotFound
    );
    assert_eq!(
        shop.create(BOB, 100, 1, 500, "").await.unwrap_err(),
        ErrorCode::OrderNotFound
    );
    shop.stop().await;
}

#[tokio::test]
async fn an_unknown_payment_type_is_invalid_params() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    for payment_type in [0, 4, -1] {
        assert_eq!(
            shop.create(ALICE, 100, payment_type, 500, "")
                .await
                .unwrap_err(),
            ErrorCode::InvalidParams
        );
    }
    for payment_type in [1, 2, 3] {
        shop.create(ALICE, 100, payment_type, 500, "")
            .await
            .unwrap();
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_second_payment_cancels_the_first_pending_one() {
    let shop = Shop::start().await;
    let first = shop.pending_payment(100).await;
    let second = shop.create(ALICE, 100, 3, 19900, "").await.unwrap();
    assert_ne!(first.payment_id, second.payment_id);
    assert_ne!(first.payment_no, second.payment_no);
    assert_eq!(shop.payment_statuses(100).await, [4, 1]);
    let latest = shop.query(ALICE, 100).await.unwrap();
    assert_eq!(latest.payment_id, second.payment_id);
    assert_eq!(latest.status(), PaymentStatus::Pending);
    assert_eq!(latest.payment_type, 3);
    shop.stop().await;
}

#[tokio::test]
async fn concurrent_payments_for_one_order_leave_one_pending() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    let creations = (0..8).map(|_| shop.create(ALICE, 100, 1, 500, ""));
    for result in futures_util::future::join_all(creations).await {
        result.unwrap();
    }
    let statuses = shop.payment_statuses(100).await;
    assert_eq!(statuses.len(), 8);
    assert_eq!(statuses.iter().filter(|status| **status == 1).count(), 1);
    assert_eq!(statuses.iter().filter(|status| **status == 4).count(), 7);
    shop.stop().await;
}

#[tokio::test]
async fn no_payment_yet_or_another_users_order_is_payment_not_found() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap_err(),
        ErrorCode::PaymentNotFound
    );
    shop.create(ALICE, 100, 1, 500, "").await.unwrap();
    assert_eq!(
        shop.query(BOB, 100).await.unwrap_err(),
        ErrorCode::PaymentNotFound
    );
    shop.stop().await;
}

// ---- idempotency keys ----

#[tokio::test]
async fn the_same_key_and_request_replay_the_first_reply_even_after_the_order_is_paid() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    let first = shop.create(ALICE, 100, 1, 500, "key-1").await.unwrap();
    let again = shop.create(ALICE, 100, 1, 500, "key-1").await.unwrap();
    assert_eq!(again, first);

    shop.orders.put(100, ALICE, 500, OrderStatus::Paid);
    let after_paid = shop.create(ALICE, 100, 1, 500, "key-1").await.unwrap();
    assert_eq!(after_paid, first);
    assert_eq!(shop.payment_statuses(100).await, [1], "one payment only");

    // Keys are per user: Bob's key of the same name is his own.
    shop.orders.put(200, BOB, 700, OrderStatus::Pending);
    let bobs = shop.create(BOB, 200, 1, 700, "key-1").await.unwrap();
    assert_ne!(bobs.payment_id, first.payment_id);
    shop.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_request_is_an_idempotency_conflict() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    shop.orders.put(101, ALICE, 500, OrderStatus::Pending);
    shop.create(ALICE, 100, 1, 500, "key-1").await.unwrap();
    for (order_id, payment_type) in [(100, 2), (101, 1)] {
        let conflict = shop
            .payments
            .clone()
            .create_payment(pb::CreatePaymentRequest {
                user_id: ALICE,
                order_id,
                payment_type,
                amount_cents: 500,
                idempotency_key: "key-1".into(),
            })
            .await
            .unwrap_err();
        let error = AppError::from(conflict);
        assert_eq!(error.code, ErrorCode::IdempotencyConflict);
        assert_eq!(error.code.http_status(), 409);
        assert_eq!(error.code.wire_code(), 1001);
    }
    assert_eq!(shop.payment_statuses(100).await, [1]);
    assert!(shop.payment_statuses(101).await.is_empty());
    shop.stop().await;
}

#[tokio::test]
async fn concurrent_creations_with_one_key_make_one_payment() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    let creations = (0..8).map(|_| shop.create(ALICE, 100, 1, 500, "double-click"));
    let replies: Vec<_> = futures_util::future::join_all(creations)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(replies.iter().all(|reply| *reply == replies[0]));
    assert_eq!(shop.payment_statuses(100).await, [1]);
    shop.stop().await;
}

#[tokio::test]
async fn a_failed_creation_does_not_use_up_its_key() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    assert_eq!(
        shop.create(ALICE, 100, 1, 400, "key-1").await.unwrap_err(),
        ErrorCode::PaymentAmount
    );
    shop.create(ALICE, 100, 1, 500, "key-1").await.unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn idempotency_keys_are_pruned_only_after_their_retention() {
    let shop = Shop::start().await;
    shop.orders.put(100, ALICE, 500, OrderStatus::Pending);
    shop.orders.put(101, ALICE, 500, OrderStatus::Pending);
    shop.create(ALICE, 100, 1, 500, "old-key").await.unwrap();
    shop.create(ALICE, 101, 1, 500, "day-old-key")
        .await
        .unwrap();
    for (key, hours) in [("old-key", 49), ("day-old-key", 25)] {
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2) \
             WHERE idempotency_key = $1",
        )
        .bind(key)
        .bind(hours)
        .execute(&shop.pool)
        .await
        .unwrap();
    }
    let store = letsgo_payment::storage::PaymentStore::new(shop.pool.clone());
    assert_eq!(store.prune_idempotency_keys().await.unwrap(), 1);
    let kept: Vec<String> = sqlx::query_scalar("SELECT idempotency_key FROM idempotency_keys")
        .fetch_all(&shop.pool)
        .await
        .unwrap();
    assert_eq!(kept, ["day-old-key"]);
    shop.stop().await;
}

// ---- callbacks ----

#[tokio::test]
async fn a_signed_success_callback_marks_the_payment_paid_and_writes_one_event() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let body = callback_body(&created.payment_no, 100, 2, "199.00");
    let reply = shop
        .callback(&body, &sign(SIGNING_SECRET, now(), &body))
        .await
        .unwrap();
    assert!(reply.success);
    assert_eq!(reply.message, "success");

    let payment = shop.query(ALICE, 100).await.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Success);
    assert!((now() - payment.paid_at).abs() < 60, "{}", payment.paid_at);

    let events = shop.events(100).await;
    assert_eq!(events.len(), 1);
    let (topic, event) = &events[0];
    assert_eq!(topic, "payment.succeeded");
    assert_eq!(event["type"], "payment.succeeded");
    let data = &event["data"];
    assert_eq!(data["paymentId"], created.payment_id);
    assert_eq!(data["paymentNo"], created.payment_no.as_str());
    assert_eq!(data["orderId"], 100);
    assert_eq!(data["userId"], ALICE);
    assert_eq!(data["amountCents"], 19900);
    assert_eq!(
        data["tradeNo"],
        format!("TRADE-{}", created.payment_no).as_str()
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_repeated_callback_changes_nothing_and_writes_no_second_event() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let body = callback_body(&created.payment_no, 100, 2, "199");
    shop.callback(&body, &sign(SIGNING_SECRET, now(), &body))
        .await
        .unwrap();
    let paid = shop.query(ALICE, 100).await.unwrap();

    // The same callback again, and a contradicting one: neither changes the payment.
    let failure = callback_body(&created.payment_no, 100, 3, "199.00");
    for body in [body, failure] {
        let reply = shop
            .callback(&body, &sign(SIGNING_SECRET, now(), &body))
            .await
            .unwrap();
        assert!(reply.success);
        assert_eq!(reply.message, "already processed");
    }
    assert_eq!(shop.query(ALICE, 100).await.unwrap(), paid);
    assert_eq!(shop.events(100).await.len(), 1);
    shop.stop().await;
}

#[tokio::test]
async fn a_failure_callback_marks_the_payment_failed_with_a_payment_failed_event() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let body = callback_body(&created.payment_no, 100, 3, "199.00");
    let reply = shop
        .callback(&body, &sign(SIGNING_SECRET, now(), &body))
        .await
        .unwrap();
    assert!(reply.success);
    let payment = shop.query(ALICE, 100).await.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Failed);
    assert_eq!(payment.paid_at, 0);
    let events = shop.events(100).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "payment.failed");
    assert_eq!(
        events[0].1["data"]["paymentNo"],
        created.payment_no.as_str()
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_callback_for_a_superseded_payment_still_settles_it() {
    let shop = Shop::start().await;
    let first = shop.pending_payment(100).await;
    shop.create(ALICE, 100, 1, 19900, "").await.unwrap();
    let body = callback_body(&first.payment_no, 100, 2, "199.00");
    shop.callback(&body, &sign(SIGNING_SECRET, now(), &body))
        .await
        .unwrap();
    assert_eq!(shop.payment_statuses(100).await, [2, 1]);
    assert_eq!(shop.events(100).await[0].0, "payment.succeeded");
    shop.stop().await;
}

#[tokio::test]
async fn callbacks_with_a_bad_or_stale_signature_are_refused_and_change_nothing() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let body = callback_body(&created.payment_no, 100, 2, "199.00");
    let tampered = callback_body(&created.payment_no, 100, 2, "199.01");
    let signature = sign(SIGNING_SECRET, now(), &body);
    let refused = [
        (body.clone(), sign("some-other-secret-000000", now(), &body)),
        (tampered, signature.clone()),
        // Well past the 300 s tolerance either way: a second ticking between signing and
        // checking must not bring a timestamp back inside it.
        (body.clone(), sign(SIGNING_SECRET, now() - 310, &body)),
        (body.clone(), sign(SIGNING_SECRET, now() + 310, &body)),
        (body.clone(), String::new()),
        (body.clone(), "v1=abc".to_owned()),
        (body.clone(), format!("t={}", now())),
        (body.clone(), format!("t=soon,v1={}", "00".repeat(32))),
    ];
    for (body, signature) in refused {
        assert_eq!(
            shop.callback(&body, &signature).await.unwrap_err(),
            ErrorCode::InvalidToken,
            "{signature}"
        );
    }
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Pending
    );
    assert!(shop.events(100).await.is_empty());
    // Within the tolerance, a little clock skew is fine.
    shop.callback(&body, &sign(SIGNING_SECRET, now() - 250, &body))
        .await
        .unwrap();
    shop.stop().await;
}

#[tokio::test]
async fn a_callback_signed_with_the_rotated_second_secret_is_accepted() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let body = callback_body(&created.payment_no, 100, 2, "199.00");
    shop.callback(&body, &sign(ROTATED_SECRET, now(), &body))
        .await
        .unwrap();
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Success
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_callback_that_does_not_describe_the_payment_is_refused() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    let signed = |body: &[u8]| sign(SIGNING_SECRET, now(), body);
    let refused = [
        (
            callback_body(&created.payment_no, 100, 2, "199.01"),
            ErrorCode::PaymentAmount,
        ),
        (
            callback_body(&created.payment_no, 100, 2, "1990.0"),
            ErrorCode::PaymentAmount,
        ),
        (
            callback_body(&created.payment_no, 101, 2, "199.00"),
            ErrorCode::InvalidParams,
        ),
        (
            callback_body("PAY00000000000000000000", 100, 2, "199.00"),
            ErrorCode::PaymentNotFound,
        ),
        (
            callback_body(&created.payment_no, 100, 2, "199.001"),
            ErrorCode::InvalidParams,
        ),
        (
            callback_body(&created.payment_no, 100, 7, "199.00"),
            ErrorCode::InvalidParams,
        ),
        (b"{\"paymentNo\":".to_vec(), ErrorCode::InvalidParams),
    ];
    for (body, code) in refused {
        assert_eq!(
            shop.callback(&body, &signed(&body)).await.unwrap_err(),
            code,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Pending
    );
    assert!(shop.events(100).await.is_empty());
    shop.stop().await;
}

// ---- the mock provider ----

/// What the provider posted: the X-Signature header and the raw body.
type Posted = (String, Vec<u8>);

/// A stand-in for the gateway's callback route: records each post, answers the first with a
/// 503 (so the provider must retry) and the rest with 200.
async fn serve_callback_recorder() -> (SocketAddr, mpsc::UnboundedReceiver<Posted>) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    #[derive(Clone)]
    struct Recorder {
        posted: mpsc::UnboundedSender<Posted>,
        calls: Arc<AtomicUsize>,
    }

    async fn record(
        State(recorder): State<Recorder>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let signature = headers
            .get("x-signature")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        recorder.posted.send((signature, body.to_vec())).unwrap();
        // A rate-limited first attempt, a failing second, then success.
        match recorder.calls.fetch_add(1, Ordering::SeqCst) {
            0 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
            1 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => StatusCode::OK.into_response(),
        }
    }

    let (posted, received) = mpsc::unbounded_channel();
    let recorder = Recorder {
        posted,
        calls: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .route("/api/v1/payment/callback", axum::routing::post(record))
        .with_state(recorder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

async fn next_post(received: &mut mpsc::UnboundedReceiver<Posted>) -> Posted {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the mock provider posts within 10 s")
        .unwrap()
}

fn verifies(signature: &str, body: &[u8]) -> bool {
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=<unix>,v1=<hex>");
    let timestamp: i64 = t.parse().unwrap();
    (now() - timestamp).abs() < 60 && sign(SIGNING_SECRET, timestamp, body).ends_with(v1)
}

#[tokio::test]
async fn the_mock_provider_posts_a_signed_callback_and_retries_a_429_and_a_server_error() {
    let (addr, mut received) = serve_callback_recorder().await;
    let url = format!("http://{addr}/api/v1/payment/callback");
    let shop = Shop::start_with(&[
        "--mock-provider-autocomplete",
        "true",
        "--payment-callback-url",
        &url,
        "--mock-provider-delay-ms",
        "20",
    ])
    .await;
    let created = shop.pending_payment(100).await;

    let (first_signature, first_body) = next_post(&mut received).await;
    let (second_signature, second_body) = next_post(&mut received).await;
    let (signature, body) = next_post(&mut received).await;
    assert_eq!(second_body, first_body, "a retry sends the same body");
    assert_eq!(body, first_body, "a retry sends the same body");
    assert!(verifies(&first_signature, &first_body));
    assert!(verifies(&second_signature, &second_body));
    assert!(verifies(&signature, &body), "{signature}");

    let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["paymentNo"], created.payment_no.as_str());
    assert_eq!(posted["orderId"], 100);
    assert_eq!(posted["status"], 2);
    assert!(posted["tradeNo"].as_str().is_some_and(|no| !no.is_empty()));
    assert!(
        String::from_utf8_lossy(&body).contains(r#""amount":199.00"#),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // What the provider posted is what the service accepts, as the gateway would forward it.
    let reply = shop.callback(&body, &signature).await.unwrap();
    assert_eq!(reply.message, "success");
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Success
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "a delivered callback is not posted again"
    );
    shop.stop().await;
}

#[tokio::test]
async fn the_mock_provider_reports_failure_when_told_to() {
    let (addr, mut received) = serve_callback_recorder().await;
    let url = format!("http://{addr}/api/v1/payment/callback");
    let shop = Shop::start_with(&[
        "--mock-provider-autocomplete",
        "true",
        "--payment-callback-url",
        &url,
        "--mock-provider-delay-ms",
        "0",
        "--mock-provider-outcome",
        "fail",
    ])
    .await;
    shop.pending_payment(100).await;
    let (signature, body) = next_post(&mut received).await;
    let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["status"], 3);
    shop.callback(&body, &signature).await.unwrap();
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Failed
    );
    shop.stop().await;
}

#[tokio::test]
async fn a_callback_scheduled_before_a_restart_is_posted_after_it() {
    let (addr, mut received) = serve_callback_recorder().await;
    let url = format!("http://{addr}/api/v1/payment/callback");
    let provider = |delay_ms: &'static str| {
        [
            "--mock-provider-autocomplete",
            "true",
            "--payment-callback-url",
            &url,
            "--mock-provider-delay-ms",
            delay_ms,
        ]
        .map(str::to_owned)
    };
    let slow = provider("1500");
    let shop = Shop::start_with(&slow.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let created = shop.pending_payment(100).await;
    // Stopped before the callback was due: nothing was posted.
    let shop = shop
        .restart(&provider("0").iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let (signature, body) = next_post(&mut received).await;
    let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["paymentNo"], created.payment_no.as_str());
    // The recorder refuses the first two posts; the third is delivered and then it stops.
    next_post(&mut received).await;
    let (signature_3, body_3) = next_post(&mut received).await;
    assert_eq!(body_3, body, "every attempt reports the same trade");
    assert!(verifies(&signature, &body) && verifies(&signature_3, &body_3));
    shop.callback(&body_3, &signature_3).await.unwrap();
    assert_eq!(
        shop.query(ALICE, 100).await.unwrap().status(),
        PaymentStatus::Success
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM mock_callbacks WHERE payment_no = $1")
            .bind(&created.payment_no)
            .fetch_one(&shop.pool)
            .await
            .unwrap();
    assert_eq!(state, "delivered");
    shop.stop().await;
}

// ---- one charge per order, and refunds ----

impl Shop {
    /// Tells the service its order was cancelled, as the order service's event does.
    async fn order_cancelled(&self, order_id: i64) {
        use letsgo_platform::events::{self, Event};
        let topic_prefix = self.topics.as_str();
        let args =
            letsgo_platform::config::KafkaArgs::new(&letsgo_testkit::kafka_brokers(), topic_prefix);
        let event = Event::new(
            events::topics::ORDER_CANCELLED,
            serde_json::json!({"orderId": order_id, "userId": ALICE, "reason": "user"}),
        )
        .unwrap();
        let payload = serde_json::to_string(&event).unwrap();
        let topic = format!("{topic_prefix}{}", events::topics::ORDER_CANCELLED);
        let key = order_id.to_string();
        events::producer(&args)
            .unwrap()
            .send(
                rdkafka::producer::FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    /// The order's payment statuses, once they read `want` (the consumer runs a moment later).
    async fn wait_for_statuses(&self, order_id: i64, want: &[i16]) {
        let mut seen = Vec::new();
        // A consumer group's first join can take a while on a busy machine.
        for _ in 0..600 {
            seen = self.payment_statuses(order_id).await;
            if seen == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order {order_id}: payment statuses {seen:?}, expected {want:?}");
    }

    async fn succeed(&self, payment_no: &str, order_id: i64) -> pb::HandleCallbackReply {
        let body = callback_body(payment_no, order_id, 2, "199.00");
        self.callback(&body, &sign(SIGNING_SECRET, now(), &body))
            .await
            .unwrap()
    }

    async fn topics(&self, order_id: i64) -> Vec<String> {
        self.events(order_id)
            .await
            .into_iter()
            .map(|(topic, _)| topic)
            .collect()
    }
}

/// Starts a shop whose mock provider posts (refund confirmations) to a recorder.
async fn shop_with_recorder() -> (Shop, mpsc::UnboundedReceiver<Posted>) {
    let (addr, received) = serve_callback_recorder().await;
    let url = format!("http://{addr}/api/v1/payment/callback");
    let shop = Shop::start_with(&[
        "--mock-provider-autocomplete",
        "false",
        "--payment-callback-url",
        &url,
    ])
    .await;
    (shop, received)
}

/// The provider's refund confirmation, as the gateway forwards it: the service marks the
/// payment refunded and writes `payment.refunded`.
async fn confirm_refund(
    shop: &Shop,
    received: &mut mpsc::UnboundedReceiver<Posted>,
    order_id: i64,
) {
    let (signature, body) = next_post(received).await;
    let posted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["status"], 6, "a refund confirmation");
    assert_eq!(posted["orderId"], order_id);
    shop.callback(&body, &signature).await.unwrap();
    // The same confirmation again changes nothing.
    shop.callback(&body, &sign(SIGNING_SECRET, now(), &body))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_second_payment_after_a_success_is_refused() {
    let shop = Shop::start().await;
    let created = shop.pending_payment(100).await;
    // The order service has not heard of the success yet: the order still reads pending.
    shop.succeed(&created.payment_no, 100).await;
    assert_eq!(
        shop.create(ALICE, 100, 1, 19900, "").await.unwrap_err(),
        ErrorCode::BadOrderStatus
    );
    assert_eq!(shop.payment_statuses(100).await, [2]);
    shop.stop().await;
}

/// Cancel first, then the provider's success arrives: the payment is called off, and the
/// success that comes anyway is refunded, never kept.
#[tokio::test]
async fn a_success_after_the_order_was_cancelled_is_refunded() {
    let (shop, mut received) = shop_with_recorder().await;
    let created = shop.pending_payment(200).await;
    shop.order_cancelled(200).await;
    shop.wait_for_statuses(200, &[4]).await;
    assert_eq!(
        shop.create(ALICE, 200, 1, 19900, "").await.unwrap_err(),
        ErrorCode::BadOrderStatus,
        "a cancelled order takes no new payment"
    );
    let reply = shop.succeed(&created.payment_no, 200).await;
    assert!(reply.success);
    assert_eq!(shop.payment_statuses(200).await, [5]);
    assert!(
        shop.topics(200).await.is_empty(),
        "no payment.succeeded for a charge that does not stand"
    );
    confirm_refund(&shop, &mut received, 200).await;
    assert_eq!(shop.payment_statuses(200).await, [6]);
    assert_eq!(shop.topics(200).await, ["payment.refunded"]);
    shop.stop().await;
}

/// The success is in (its event still on its way to the order service) when the order is
/// cancelled: the cancellation refunds it.
#[tokio::test]
async fn a_cancellation_after_the_success_refunds_the_payment() {
    let (shop, mut received) = shop_with_recorder().await;
    let created = shop.pending_payment(300).await;
    shop.succeed(&created.payment_no, 300).await;
    shop.order_cancelled(300).await;
    shop.wait_for_statuses(300, &[5]).await;
    confirm_refund(&shop, &mut received, 300).await;
    assert_eq!(shop.payment_statuses(300).await, [6]);
    assert_eq!(
        shop.topics(300).await,
        ["payment.succeeded", "payment.refunded"]
    );
    shop.stop().await;
}

/// Two payments of one order both succeed on the provider (the first was superseded, but the
/// buyer had paid it): one charge stands, the other is refunded.
#[tokio::test]
async fn of_two_payments_that_both_succeed_one_is_refunded() {
    let (shop, mut received) = shop_with_recorder().await;
    let first = shop.pending_payment(400).await;
    let second = shop.create(ALICE, 400, 2, 19900, "").await.unwrap();
    assert_eq!(shop.payment_statuses(400).await, [4, 1]);
    let (a, b) = tokio::join!(
        shop.succeed(&first.payment_no, 400),
        shop.succeed(&second.payment_no, 400)
    );
    assert!(a.success && b.success);
    let mut statuses = shop.payment_statuses(400).await;
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [2, 5],
        "one charge stands, the other is being refunded"
    );
    assert_eq!(shop.topics(400).await, ["payment.succeeded"]);
    confirm_refund(&shop, &mut received, 400).await;
    let mut statuses = shop.payment_statuses(400).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [2, 6]);
    shop.stop().await;
}
