//! The order service over real gRPC with a real product service, cart service, PostgreSQL,
//! Redis and Kafka-protocol broker; each test has its own databases, key and topic prefixes.

use std::time::Duration;

use letsgo_platform::config::KafkaArgs;
use letsgo_platform::discovery::ServiceName;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::events::{self, Event};
use letsgo_platform::proto::cart::v1::{self as cart_pb, cart_service_client::CartServiceClient};
use letsgo_platform::proto::order::v1::{self as pb, order_service_client::OrderServiceClient};
use letsgo_platform::proto::product::v1::{
    self as product_pb, product_service_client::ProductServiceClient,
};
use letsgo_testkit::kafka_brokers;
use rdkafka::producer::FutureRecord;
use tonic::transport::Channel;

/// How long the product service holds a reservation for its order in these tests: long enough
/// that a busy machine (the whole suite beside them) commits a batch of orders within it (with
/// 1 s, 11 of 12 orders' holds once ran out first), short enough to wait past.
const HOLD: Duration = Duration::from_secs(3);

/// A product, cart and order service, with clients to each.
struct Shop {
    orders: OrderServiceClient<Channel>,
    products: ProductServiceClient<Channel>,
    carts: CartServiceClient<Channel>,
    shop: letsgo_testkit::Shop,
}

impl Shop {
    async fn start() -> Shop {
        Shop::start_with(|_| {}).await
    }

    /// A shop whose order service's settings are adjusted by `tweak` (the settings under test).
    async fn start_with(tweak: impl FnOnce(&mut letsgo_order::Config) + Send + 'static) -> Shop {
        // Every order here must commit its reservation, or lose it within HOLD.
        Shop::start_holding(HOLD, tweak).await
    }

    /// A shop whose product service holds a reservation `hold` long until its order commits it.
    async fn start_holding(
        hold: Duration,
        tweak: impl FnOnce(&mut letsgo_order::Config) + Send + 'static,
    ) -> Shop {
        let shop = letsgo_testkit::Shop::builder()
            .product(move |config| {
                config.reservation_hold = hold;
                config.reservation_sweep_interval = Duration::from_millis(100);
            })
            .cart(|_| {})
            .order(|config| {
                config.sweep_interval = Duration::from_millis(200);
                tweak(config);
            })
            .start()
            .await;
        Shop {
            orders: OrderServiceClient::new(shop.channel(ServiceName::Order).await),
            products: ProductServiceClient::new(shop.channel(ServiceName::Product).await),
            carts: CartServiceClient::new(shop.channel(ServiceName::Cart).await),
            shop,
        }
    }

    async fn product(&self, name: &str, price_cents: i64, stock: i64) -> i64 {
        self.products
            .clone()
            .add_product(product_pb::AddProductRequest {
                name: name.into(),
                description: String::new(),
                price_cents,
                stock,
                category: "test".into(),
                images: vec![format!("https://img.example.com/{name}.jpg")],
                attributes: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .product_id
    }

    async fn stock(&self, id: i64) -> (i64, i64) {
        let product = self
            .products
            .clone()
            .get_product(product_pb::GetProductRequest { id })
            .await
            .unwrap()
            .into_inner();
        (product.stock, product.sales)
    }

    async fn order(
        &self,
        user_id: i64,
        lines: &[(i64, i64)],
    ) -> Result<pb::CreateOrderReply, ErrorCode> {
        self.orders
            .clone()
            .create_order(pb::CreateOrderRequest {
                user_id,
                items: lines
                    .iter()
                    .map(|(product_id, quantity)| pb::OrderLine {
                        product_id: *product_id,
                        quantity: *quantity,
                    })
                    .collect(),
                address: "12 Harbour Road, Shanghai".into(),
                phone: "13800138000".into(),
                remark: "ring twice".into(),
            })
            .await
            .map(|reply| reply.into_inner())
            .map_err(|status| AppError::from(status).code)
    }

    async fn get(&self, user_id: i64, order_id: i64) -> Result<pb::Order, ErrorCode> {
        self.orders
            .clone()
            .get_order(pb::GetOrderRequest { user_id, order_id })
            .await
            .map(|reply| reply.into_inner())
            .map_err(|status| AppError::from(status).code)
    }

    async fn publish(&self, event: &Event, key: &str) {
        let topic_prefix = self.shop.topic_prefix();
        let args = KafkaArgs::new(&kafka_brokers(), &topic_prefix);
        events::ensure_topics(&args, &["payment.succeeded", "payment.refunded"])
            .await
            .unwrap();
        let producer = events::producer(&args).unwrap();
        let topic = format!("{topic_prefix}{}", event.event_type);
        let payload = serde_json::to_string(event).unwrap();
        producer
            .send(
                FutureRecord::to(&topic).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(error, _)| error)
            .unwrap();
    }

    async fn wait_for_status(
        &self,
        user_id: i64,
        order_id: i64,
        status: pb::OrderStatus,
        within: Duration,
    ) -> pb::Order {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order = self.get(user_id, order_id).await.unwrap();
            if order.status == status as i32 || tokio::time::Instant::now() > deadline {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn buyers_ordering_at_once_each_find_their_ordered_product_gone_from_their_own_cart() {
    let shop = Shop::start().await;
    let tea = shop.product("tea", 1990, 100).await;
    let cup = shop.product("cup", 500, 100).await;
    let buyers: Vec<i64> = (1..=40).collect();
    for user_id in &buyers {
        for product_id in [tea, cup] {
            shop.carts
                .clone()
                .add_item(cart_pb::AddItemRequest {
                    user_id: *user_id,
                    product_id,
                    quantity: 1,
                })
                .await
                .unwrap();
        }
    }
    // Their carts are changed together, in batches; each buyer, once answered, sees their own
    // cart without the tea (and still with the cup).
    let orders = buyers.iter().map(|user_id| {
        let shop = &shop;
        async move {
            shop.order(*user_id, &[(tea, 1)]).await.unwrap();
            let cart = shop
                .carts
                .clone()
                .get_cart(cart_pb::GetCartRequest { user_id: *user_id })
                .await
                .unwrap()
                .into_inner();
            let products: Vec<i64> = cart.items.iter().map(|item| item.product_id).collect();
            (*user_id, products)
        }
    });
    for (user_id, products) in futures_util::future::join_all(orders).await {
        assert_eq!(products, [cup], "buyer {user_id}'s cart after their order");
    }
    assert_eq!(shop.stock(tea).await, (60, 0));
}

/// The cart service hangs (it takes connections and answers nothing): a buyer's order is still
/// created and answered after waiting at most a second for the cart, not the cart call's 3 s
/// deadline and its retries.
#[tokio::test]
async fn an_order_is_answered_while_the_cart_service_hangs() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap();
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.push(connection);
        }
    });
    let shop = Shop::start_with(move |config| {
        config.discovery.cart_rpc = silent_address.to_string();
    })
    .await;
    let tea = shop.product("tea", 1990, 5).await;
    for user_id in 1..=3 {
        let created = tokio::time::timeout(
            Duration::from_millis(2_500),
            shop.order(user_id, &[(tea, 1)]),
        )
        .await
        .unwrap_or_else(|_| panic!("buyer {user_id}'s order waited on the hung cart"))
        .expect("the order is created");
        let order = shop.get(user_id, created.order_id).await.unwrap();
        assert_eq!(order.total_amount_cents, 1990);
    }
    assert_eq!(shop.stock(tea).await, (2, 0));
    holding.abort();
}

#[tokio::test]
async fn an_order_snapshots_prices_reserves_stock_and_leaves_the_cart() {
    let shop = Shop::start().await;
    let tea = shop.product("tea", 1990, 5).await;
    let cup = shop.product("cup", 500, 5).await;
    for product_id in [tea, cup] {
        shop.carts
            .clone()
            .add_item(cart_pb::AddItemRequest {
                user_id: 1,
                product_id,
                quantity: 1,
            })
            .await
            .unwrap();
    }
    let created = shop.order(1, &[(tea, 2)]).await.unwrap();
    assert_eq!(created.total_amount_cents, 3980);
    assert!(created.order_no.starts_with("LG"));
    assert_eq!(shop.stock(tea).await, (3, 0));

    let cart = shop
        .carts
        .clone()
        .get_cart(cart_pb::GetCartRequest { user_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cart.items
            .iter()
            .map(|item| item.product_id)
            .collect::<Vec<_>>(),
        [cup],
        "only the ordered product left the cart"
    );

    shop.products
        .clone()
        .update_product(product_pb::UpdateProductRequest {
            id: tea,
            price_cents: Some(9999),
            name: Some("renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let order = shop.get(1, created.order_id).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Pending as i32);
    assert_eq!(order.total_amount_cents, 3980);
    assert_eq!(order.items.len(), 1);
    assert_eq!(
        (
            order.items[0].name.as_str(),
            order.items[0].price_cents,
            order.items[0].quantity
        ),
        ("tea", 1990, 2)
    );
    assert_eq!(order.address, "12 Harbour Road, Shanghai");
    assert_eq!(order.paid_at, 0, "a time not reached yet is 0");
}

#[tokio::test]
async fn a_failed_order_creates_nothing_and_leaks_no_stock() {
    let shop = Shop::start().await;
    let plenty = shop.product("plenty", 100, 10).await;
    let scarce = shop.product("scarce", 100, 1).await;
    assert_eq!(
        shop.order(1, &[(plenty, 3), (scarce, 2)])
            .await
            .unwrap_err(),
        ErrorCode::OutOfStock
    );
    assert_eq!(
        shop.order(1, &[(plenty, 3), (424242, 1)])
            .await
            .unwrap_err(),
        ErrorCode::ProductNotFound
    );
    assert_eq!(shop.stock(plenty).await.0, 10);
    assert_eq!(shop.stock(scarce).await.0, 1);
    let list = shop
        .orders
        .clone()
        .list_orders(pb::ListOrdersRequest {
            user_id: 1,
            page: 1,
            page_size: 10,
            status: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 0);
}

/// A saved order commits its reservation and keeps its stock past the product service's hold;
/// a reservation whose order was never saved (its order service died in between) gives its
/// stock back by itself.
#[tokio::test]
async fn saved_orders_keep_their_stock_and_abandoned_reservations_give_it_back() {
    let shop = Shop::start().await;
    let lamp = shop.product("lamp", 100, 10).await;
    shop.order(1, &[(lamp, 3)]).await.unwrap();
    // What an order service that died after reserving leaves behind.
    shop.products
        .clone()
        .reserve_stock(product_pb::ReserveStockRequest {
            order_id: 987_654_321,
            lines: vec![product_pb::StockLine {
                product_id: lamp,
                quantity: 4,
            }],
        })
        .await
        .unwrap();
    assert_eq!(shop.stock(lamp).await.0, 3);
    let mut stock = 0;
    for _ in 0..100 {
        stock = shop.stock(lamp).await.0;
        if stock == 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stock, 7,
        "the abandoned four came back; the order's three stay held"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(shop.stock(lamp).await.0, 7);
}

/// Orders saved together commit their reservations together (the settlement queue's batches)
/// and keep their stock past the hold; each order records its commit.
#[tokio::test]
async fn orders_saved_together_commit_together_and_keep_their_stock() {
    let shop = Shop::start().await;
    let lamp = shop.product("lamp", 100, 12).await;
    let created = futures_util::future::join_all((1..=12).map(|user_id| {
        let shop = &shop;
        async move { shop.order(user_id, &[(lamp, 1)]).await.unwrap().order_id }
    }))
    .await;
    assert_eq!(shop.stock(lamp).await.0, 0);
    tokio::time::sleep(HOLD + Duration::from_millis(600)).await;
    assert_eq!(shop.stock(lamp).await.0, 0, "held past the hold");
    let pool = shop.order_database().await;
    let committed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE id = ANY($1) AND stock_committed AND status = 1",
    )
    .bind(&created)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(committed, 12);
}

/// Orders created at once are written in shared statements: each keeps its own items, total
/// and exactly one `order.created` event telling of it, and the stock matches what was sold.
#[tokio::test]
async fn orders_created_together_keep_each_its_own_items_and_event() {
    let shop = Shop::start().await;
    let tea = shop.product("tea", 1990, 1000).await;
    let cup = shop.product("cup", 500, 1000).await;
    let pot = shop.product("pot", 7250, 1000).await;
    // Forty buyers, each a basket of its own: one to three lines, quantities by buyer.
    let baskets: Vec<(i64, Vec<(i64, i64)>)> = (1..=40)
        .map(|user_id: i64| {
            let lines = [
                (tea, 1 + user_id % 3),
                (cup, user_id % 4),
                (pot, user_id % 2),
            ]
            .into_iter()
            .filter(|(_, quantity)| *quantity > 0)
            .collect();
            (user_id, lines)
        })
        .collect();
    let created = futures_util::future::join_all(baskets.iter().map(|(user_id, lines)| {
        let shop = &shop;
        async move { shop.order(*user_id, lines).await.unwrap() }
    }))
    .await;
    let price = |product_id: i64| match product_id {
        id if id == tea => 1990,
        id if id == cup => 500,
        _ => 7250,
    };
    let pool = shop.order_database().await;
    for ((user_id, lines), reply) in baskets.iter().zip(&created) {
        let expected_total: i64 = lines.iter().map(|(id, q)| price(*id) * q).sum();
        assert_eq!(reply.total_amount_cents, expected_total);
        let order = shop.get(*user_id, reply.order_id).await.unwrap();
        assert_eq!(order.total_amount_cents, expected_total);
        assert_eq!(order.order_no, reply.order_no);
        let mut items: Vec<(i64, i64, i64)> = order
            .items
            .iter()
            .map(|item| (item.product_id, item.quantity, item.price_cents))
            .collect();
        items.sort();
        let mut wanted: Vec<(i64, i64, i64)> =
            lines.iter().map(|(id, q)| (*id, *q, price(*id))).collect();
        wanted.sort();
        assert_eq!(items, wanted, "order {} has its own items", reply.order_id);
        let events = shop.events_of(reply.order_id, "order.created").await;
        assert_eq!(
            events.len(),
            1,
            "one order.created for order {}",
            reply.order_id
        );
        assert_eq!(events[0]["orderId"], reply.order_id);
        assert_eq!(events[0]["userId"], *user_id);
        assert_eq!(events[0]["totalAmountCents"], expected_total);
        assert_eq!(events[0]["orderNo"], reply.order_no.as_str());
        let mut told: Vec<(i64, i64, i64)> = events[0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                (
                    item["productId"].as_i64().unwrap(),
                    item["quantity"].as_i64().unwrap(),
                    item["priceCents"].as_i64().unwrap(),
                )
            })
            .collect();
        told.sort();
        assert_eq!(
            told, wanted,
            "the event tells of order {}'s items",
            reply.order_id
        );
    }
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE topic = 'order.created'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(events, 40, "no event written twice or for nothing");
    // Written in one statement, orders share its transaction.
    let ids: Vec<i64> = created.iter().map(|reply| reply.order_id).collect();
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM orders WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap();
    println!("40 orders written in {transactions} transactions");
    pool.close().await;
    for product_id in [tea, cup, pot] {
        let sold: i64 = baskets
            .iter()
            .flat_map(|(_, lines)| lines)
            .filter(|(id, _)| *id == product_id)
            .map(|(_, q)| q)
            .sum();
        assert_eq!(shop.stock(product_id).await.0, 1000 - sold);
    }
}

/// A batch of orders is all or nothing in the database; one that fails for one order's sake
/// (here an id already taken) is written again order by order, so only that order fails.
#[tokio::test]
async fn one_bad_order_in_a_batch_fails_alone() {
    use letsgo_order::storage::{NewItem, NewOrder, OrderStore, OrderToWrite};
    let shop = Shop::start().await;
    let order = |id: i64| {
        OrderToWrite::new(NewOrder {
            id,
            order_no: letsgo_order::rules::order_no(id, chrono::Utc::now()),
            user_id: 5,
            total_amount_cents: 300,
            address: "12 Harbour Road, Shanghai".into(),
            phone: "13800138000".into(),
            remark: String::new(),
            items: vec![NewItem {
                product_id: 9,
                name: "mug".into(),
                price_cents: 100,
                quantity: 3,
                image: String::new(),
            }],
        })
        .unwrap()
    };
    // An order through the service (its schema is there once it answers): its id is taken.
    let mug = shop.product("mug", 100, 10).await;
    let taken = shop.order(5, &[(mug, 3)]).await.unwrap().order_id;
    let pool = shop.order_database().await;
    let store = OrderStore::new(pool.clone());
    let first = store.next_id().await.unwrap();
    let second = store.next_id().await.unwrap();
    store
        .insert(&[order(first), order(taken), order(second)])
        .await
        .expect_err("the statement is all or nothing");
    let outcomes =
        letsgo_order::saving::write_batch(&store, vec![order(first), order(taken), order(second)])
            .await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(outcomes[1].is_err(), "the taken id fails alone");
    let saved: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT o.id, (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) \
         FROM orders o WHERE o.id = ANY($1) ORDER BY o.id",
    )
    .bind([taken, first, second])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(saved, [(taken, 1), (first, 1), (second, 1)]);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_outbox WHERE topic = 'order.created' AND event_key = ANY($1)",
    )
    .bind([taken.to_string(), first.to_string(), second.to_string()])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        events, 3,
        "one event per order written, none for the refused copy"
    );
    pool.close().await;
}

/// An order whose stock's hold ran out before its commit (here the hold is shorter than the
/// settlement queue's gathering) is cancelled once the commit finds the stock gone, and the
/// stock is back for others.
#[tokio::test]
async fn an_order_whose_stock_hold_ran_out_before_its_commit_is_cancelled() {
    let shop = Shop::start_holding(Duration::from_millis(1), |_| {}).await;
    let lamp = shop.product("lamp", 100, 10).await;
    let created = shop.order(3, &[(lamp, 4)]).await.unwrap();
    let order = shop
        .wait_for_status(
            3,
            created.order_id,
            pb::OrderStatus::Cancelled,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(order.status, pb::OrderStatus::Cancelled as i32);
    let mut stock = 0;
    for _ in 0..50 {
        stock = shop.stock(lamp).await.0;
        if stock == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stock, 10);
    let cancelled = shop.events_of(created.order_id, "order.cancelled").await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["reason"], "stock hold expired");
}

/// What a [`ProductProxy`] answers itself for a call's path instead of passing it on.
type Refusal = std::sync::Arc<dyn Fn(&str) -> Option<tonic::Status> + Send + Sync>;

/// The real product service behind a proxy that passes every call through except those
/// `refuse` answers for: an older version without some calls, or one that is away for some.
#[derive(Clone)]
struct ProductProxy {
    channel: Channel,
    refuse: Refusal,
}

impl ProductProxy {
    /// Puts the proxy in front of the product service `config` names; `config` then names the
    /// proxy.
    fn in_front_of(config: &mut letsgo_order::Config, refuse: Refusal) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let product = std::mem::replace(
            &mut config.discovery.product_rpc,
            listener.local_addr().unwrap().to_string(),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{product}"))
            .unwrap()
            .connect_lazy();
        tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = futures_util::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(stream, _)| stream);
                Some((accepted, listener))
            });
            tonic::transport::Server::builder()
                .serve_with_incoming(ProductProxy { channel, refuse }, incoming)
                .await
                .unwrap();
        });
    }

    /// A product service released before the batch calls: it answers `CommitReservations`,
    /// `RecordSalesOfOrders` and `ReleaseReservations` as unimplemented, as an older version
    /// does.
    fn older(config: &mut letsgo_order::Config) {
        ProductProxy::in_front_of(
            config,
            std::sync::Arc::new(|path: &str| {
                [
                    "/CommitReservations",
                    "/RecordSalesOfOrders",
                    "/ReleaseReservations",
                ]
                .iter()
                .any(|call| path.ends_with(call))
                .then(|| tonic::Status::unimplemented("not in this version"))
            }),
        );
    }
}

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for ProductProxy {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let mut channel = self.channel.clone();
        let refused = (self.refuse)(request.uri().path());
        Box::pin(async move {
            if let Some(status) = refused {
                return Ok(status.into_http());
            }
            let answer = async {
                futures_util::future::poll_fn(|cx| {
                    tonic::codegen::Service::poll_ready(&mut channel, cx)
                })
                .await?;
                tonic::codegen::Service::call(&mut channel, request).await
            };
            Ok(answer
                .await
                .unwrap_or_else(|error| tonic::Status::unavailable(error.to_string()).into_http()))
        })
    }
}

/// Upgraded before its product service (a rolling upgrade in the wrong order), the order
/// service settles one order at a time: its orders keep their stock past the hold, and their
/// sales are counted once each.
#[tokio::test]
async fn an_order_service_ahead_of_its_product_service_settles_one_order_at_a_time() {
    let shop = Shop::start_with(ProductProxy::older).await;
    let lamp = shop.product("lamp", 100, 5).await;
    let mut created = Vec::new();
    for user_id in 1..=3 {
        created.push((user_id, shop.order(user_id, &[(lamp, 1)]).await.unwrap()));
    }
    tokio::time::sleep(HOLD + Duration::from_millis(600)).await;
    assert_eq!(shop.stock(lamp).await, (2, 0), "held past the hold");
    for (user_id, order) in &created {
        assert_eq!(
            shop.get(*user_id, order.order_id).await.unwrap().status,
            pb::OrderStatus::Pending as i32
        );
        let event = Event::new(
            "payment.succeeded",
            serde_json::json!({"paymentId": order.order_id, "paymentNo": format!("PAY{}", order.order_id),
                               "orderId": order.order_id, "userId": user_id, "amountCents": 100, "tradeNo": "T"}),
        )
        .unwrap();
        shop.publish(&event, &order.order_id.to_string()).await;
    }
    for (user_id, order) in &created {
        let paid = shop
            .wait_for_status(
                *user_id,
                order.order_id,
                pb::OrderStatus::Paid,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(paid.status, pb::OrderStatus::Paid as i32);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shop.stock(lamp).await.1 < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.stock(lamp).await, (2, 3), "each sold once");

    let cancelled = shop.order(4, &[(lamp, 2)]).await.unwrap().order_id;
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 4,
            order_id: cancelled,
        })
        .await
        .unwrap();
    assert_eq!(
        shop.stock(lamp).await,
        (2, 3),
        "a cancelled order's stock is back, released one order at a time"
    );
}

#[tokio::test]
async fn bad_order_input_is_1001() {
    let shop = Shop::start().await;
    let id = shop.product("x", 100, 10).await;
    let mut client = shop.orders.clone();
    let base = pb::CreateOrderRequest {
        user_id: 1,
        items: vec![pb::OrderLine {
            product_id: id,
            quantity: 1,
        }],
        address: "12 Harbour Road, Shanghai".into(),
        phone: "13800138000".into(),
        remark: String::new(),
    };
    let cases = [
        pb::CreateOrderRequest {
            items: vec![],
            ..base.clone()
        },
        pb::CreateOrderRequest {
            items: vec![pb::OrderLine {
                product_id: id,
                quantity: 0,
            }],
            ..base.clone()
        },
        pb::CreateOrderRequest {
            items: vec![
                pb::OrderLine {
                    product_id: id,
                    quantity: 600,
                },
                pb::OrderLine {
                    product_id: id,
                    quantity: 600,
                },
            ],
            ..base.clone()
        },
        pb::CreateOrderRequest {
            address: "too short".into(),
            ..base.clone()
        },
        pb::CreateOrderRequest {
            phone: "1234".into(),
            ..base.clone()
        },
        pb::CreateOrderRequest {
            remark: "x".repeat(501),
            ..base.clone()
        },
    ];
    for case in cases {
        let error = client.create_order(case).await.unwrap_err();
        assert_eq!(AppError::from(error).code, ErrorCode::InvalidParams);
    }
    assert_eq!(shop.stock(id).await.0, 10);
}

#[tokio::test]
async fn another_users_order_is_not_found() {
    let shop = Shop::start().await;
    let id = shop.product("x", 100, 10).await;
    let created = shop.order(1, &[(id, 1)]).await.unwrap();
    assert_eq!(
        shop.get(2, created.order_id).await.unwrap_err(),
        ErrorCode::OrderNotFound
    );
    let cancel = shop
        .orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 2,
            order_id: created.order_id,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(cancel).code, ErrorCode::OrderNotFound);
    assert_eq!(
        shop.get(1, created.order_id).await.unwrap().status,
        pb::OrderStatus::Pending as i32
    );
}

#[tokio::test]
async fn cancelling_releases_stock_once_and_only_a_pending_order() {
    let shop = Shop::start().await;
    let id = shop.product("x", 100, 10).await;
    let created = shop.order(1, &[(id, 4)]).await.unwrap();
    assert_eq!(shop.stock(id).await.0, 6);
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 1,
            order_id: created.order_id,
        })
        .await
        .unwrap();
    assert_eq!(shop.stock(id).await.0, 10);
    let again = shop
        .orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 1,
            order_id: created.order_id,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(again).code, ErrorCode::CannotCancel);
    assert_eq!(shop.stock(id).await.0, 10);
    let order = shop.get(1, created.order_id).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Cancelled as i32);

    let list = shop
        .orders
        .clone()
        .list_orders(pb::ListOrdersRequest {
            user_id: 1,
            page: 1,
            page_size: 10,
            status: pb::OrderStatus::Cancelled as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    let pending = shop
        .orders
        .clone()
        .list_orders(pb::ListOrdersRequest {
            user_id: 1,
            page: 1,
            page_size: 10,
            status: pb::OrderStatus::Pending as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.total, 0);
}

#[tokio::test]
async fn unpaid_orders_are_cancelled_after_the_timeout() {
    let shop = Shop::start_with(|config| config.payment_timeout = Duration::from_secs(1)).await;
    let id = shop.product("x", 100, 10).await;
    let created = shop.order(1, &[(id, 3)]).await.unwrap();
    let order = shop
        .wait_for_status(
            1,
            created.order_id,
            pb::OrderStatus::Cancelled,
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(order.status, pb::OrderStatus::Cancelled as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shop.stock(id).await.0 != 10 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(shop.stock(id).await.0, 10);
}

/// Half an hour after a sale its unpaid orders time out together: more than a batch's worth
/// here, made within a second of each other. The sweeper cancels each once, with one
/// `order.cancelled` saying why, and every unit comes back, while an order paid in time stays
/// paid.
#[tokio::test]
async fn a_sale_of_unpaid_orders_times_out_together_and_all_its_stock_comes_back() {
    use futures_util::StreamExt;
    let shop = Shop::start_with(|config| config.payment_timeout = Duration::from_secs(8)).await;
    let stock = 1000;
    let lamp = shop.product("lamp", 100, stock).await;
    let buyers = letsgo_platform::limits::SETTLEMENT_BATCH_MAX as i64 + 50;
    let orders: Vec<(i64, i64)> = futures_util::stream::iter(1..=buyers)
        .map(|user_id| {
            let shop = &shop;
            async move {
                (
                    user_id,
                    shop.order(user_id, &[(lamp, 2)]).await.unwrap().order_id,
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let payer = buyers + 1;
    let paid_order = shop.order(payer, &[(lamp, 2)]).await.unwrap().order_id;
    let paid = Event::new(
        "payment.succeeded",
        serde_json::json!({"paymentId": paid_order, "paymentNo": format!("PAY{paid_order}"),
                           "orderId": paid_order, "userId": payer, "amountCents": 200, "tradeNo": "T"}),
    )
    .unwrap();
    shop.publish(&paid, &paid_order.to_string()).await;
    shop.wait_for_status(
        payer,
        paid_order,
        pb::OrderStatus::Paid,
        Duration::from_secs(30),
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while shop.stock(lamp).await.0 != stock - 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        shop.stock(lamp).await.0,
        stock - 2,
        "every unpaid order's units came back; the paid one's stay sold"
    );
    for (user_id, order_id) in &orders {
        let order = shop.get(*user_id, *order_id).await.unwrap();
        assert_eq!(
            order.status,
            pb::OrderStatus::Cancelled as i32,
            "order {order_id}"
        );
        let cancelled = shop.events_of(*order_id, "order.cancelled").await;
        assert_eq!(cancelled.len(), 1, "order {order_id}: {cancelled:?}");
        assert_eq!(cancelled[0]["reason"], "payment timeout");
        assert_eq!(cancelled[0]["userId"], *user_id);
    }
    let order = shop.get(payer, paid_order).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Paid as i32);
    assert!(
        shop.events_of(paid_order, "order.cancelled")
            .await
            .is_empty()
    );
}

/// Several order services sweep the same database: their batches of unpaid orders never
/// overlap (a row another sweeper holds is left to it), so each order is cancelled once, with
/// one `order.cancelled`, however the sweepers interleave.
#[tokio::test]
async fn sweepers_running_at_once_cancel_each_unpaid_order_once() {
    use letsgo_order::storage::{NewItem, NewOrder, OrderStore, OrderToWrite};
    // The service's own sweeper stays out of it: the four below are the sweepers.
    let shop = Shop::start_with(|config| config.sweep_interval = Duration::from_secs(3600)).await;
    shop.product("mug", 100, 10).await;
    let pool = shop.order_database().await;
    let store = OrderStore::new(pool.clone());
    let mut ids = Vec::new();
    for _ in 0..450 {
        ids.push(store.next_id().await.unwrap());
    }
    let orders: Vec<OrderToWrite> = ids
        .iter()
        .map(|&id| {
            OrderToWrite::new(NewOrder {
                id,
                order_no: letsgo_order::rules::order_no(id, chrono::Utc::now()),
                user_id: id % 7 + 1,
                total_amount_cents: 100,
                address: "12 Harbour Road, Shanghai".into(),
                phone: "13800138000".into(),
                remark: String::new(),
                items: vec![NewItem {
                    product_id: 9,
                    name: "mug".into(),
                    price_cents: 100,
                    quantity: 1,
                    image: String::new(),
                }],
            })
            .unwrap()
        })
        .collect();
    store.insert(&orders).await.unwrap();
    sqlx::query(
        "UPDATE orders SET created_at = now() - interval '1 hour', stock_committed = true \
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&pool)
    .await
    .unwrap();

    let cutoff = chrono::Utc::now() - chrono::Duration::minutes(30);
    let sweepers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut cancelled = Vec::new();
            loop {
                let batch = store
                    .cancel_expired(cutoff, 40, "payment timeout")
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return cancelled;
                }
                cancelled.extend(batch);
            }
        })
    });
    let mut cancelled: Vec<i64> = futures_util::future::join_all(sweepers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    cancelled.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(cancelled, expected, "every order once, none twice");
    let (orders_cancelled, events, orders_with_one): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 5), \
                (SELECT count(*) FROM event_outbox WHERE topic = 'order.cancelled'), \
                (SELECT count(DISTINCT event_key) FROM event_outbox WHERE topic = 'order.cancelled')",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!((orders_cancelled, events, orders_with_one), (450, 450, 450));
}

/// The product service is away while a sale's unpaid orders time out: they are cancelled all
/// the same, each recording that its stock is still owed, and once the product service is back
/// the sweeper gives every unit back, more than a batch of them, each order's once.
#[tokio::test]
async fn releases_owed_while_the_product_service_is_away_are_made_once_it_is_back() {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    // Away from the start: on a slow machine the first orders may time out while the last
    // are still being made. Only cancellations release, so the orders go through as ever.
    let away = std::sync::Arc::new(AtomicBool::new(true));
    let refusing = away.clone();
    let shop = Shop::start_with(move |config| {
        config.payment_timeout = Duration::from_secs(4);
        ProductProxy::in_front_of(
            config,
            std::sync::Arc::new(move |path: &str| {
                (refusing.load(Ordering::SeqCst) && path.contains("/Release"))
                    .then(|| tonic::Status::unavailable("the product service is away"))
            }),
        );
    })
    .await;
    let stock = 1000;
    let lamp = shop.product("lamp", 100, stock).await;
    let buyers = letsgo_platform::limits::SETTLEMENT_BATCH_MAX as i64 + 50;
    futures_util::stream::iter(1..=buyers)
        .map(|user_id| {
            let shop = &shop;
            async move { shop.order(user_id, &[(lamp, 2)]).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    let pool = shop.order_database().await;
    let counts = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT count(*) FILTER (WHERE status = 5), \
                    count(*) FILTER (WHERE status = 5 AND NOT stock_released) FROM orders",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counts().await.0 < buyers && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        counts().await,
        (buyers, buyers),
        "all cancelled, all still owing"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        shop.stock(lamp).await.0,
        stock - 2 * buyers,
        "nothing came back while the product service was away"
    );

    away.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while shop.stock(lamp).await.0 != stock && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(shop.stock(lamp).await.0, stock, "every unit back, once");
    assert_eq!(counts().await, (buyers, 0));
    pool.close().await;
}

#[tokio::test]
async fn a_payment_event_marks_the_order_paid_once_and_counts_the_sale() {
    let shop = Shop::start().await;
    let id = shop.product("x", 250, 10).await;
    let created = shop.order(7, &[(id, 2)]).await.unwrap();
    let event = Event::new(
        "payment.succeeded",
        serde_json::json!({"paymentId": 1, "paymentNo": "PAY1", "orderId": created.order_id, "userId": 7, "amountCents": 500, "tradeNo": "T1"}),
    )
    .unwrap();
    // Delivered twice, as at-least-once delivery may.
    shop.publish(&event, &created.order_id.to_string()).await;
    shop.publish(&event, &created.order_id.to_string()).await;
    let order = shop
        .wait_for_status(
            7,
            created.order_id,
            pb::OrderStatus::Paid,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(order.status, pb::OrderStatus::Paid as i32);
    assert!(order.paid_at > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shop.stock(id).await.1 == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shop.stock(id).await, (8, 2), "sold once, stock stays taken");
    let cancel = shop
        .orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 7,
            order_id: created.order_id,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(cancel).code, ErrorCode::CannotCancel);
}

/// Payments that succeed together (here twelve events published at once, two of them twice,
/// one for an order cancelled first) mark each order paid once, count each sale once, and leave
/// the cancelled order cancelled.
#[tokio::test]
async fn payments_arriving_together_mark_each_order_paid_once() {
    let shop = Shop::start().await;
    let lamp = shop.product("lamp", 250, 20).await;
    let mut orders = Vec::new();
    for user_id in 1..=10 {
        orders.push((
            user_id,
            shop.order(user_id, &[(lamp, 1)]).await.unwrap().order_id,
        ));
    }
    let (cancelled_user, cancelled_order) = orders[9];
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: cancelled_user,
            order_id: cancelled_order,
        })
        .await
        .unwrap();
    // The commits the settlement queue makes, before the payments.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events: Vec<(Event, i64)> = orders
        .iter()
        .map(|(user_id, order_id)| {
            let event = Event::new(
                "payment.succeeded",
                serde_json::json!({"paymentId": order_id, "paymentNo": format!("PAY{order_id}"), "orderId": order_id,
                                   "userId": user_id, "amountCents": 250, "tradeNo": format!("T{order_id}")}),
            )
            .unwrap();
            (event, *order_id)
        })
        .collect();
    let topic_prefix = shop.shop.topic_prefix();
    let args = KafkaArgs::new(&kafka_brokers(), &topic_prefix);
    events::ensure_topics(&args, &["payment.succeeded"])
        .await
        .unwrap();
    let producer = events::producer(&args).unwrap();
    let topic = format!("{topic_prefix}payment.succeeded");
    let sends = events.iter().chain(&events[..2]).map(|(event, order_id)| {
        let (payload, key) = (serde_json::to_string(event).unwrap(), order_id.to_string());
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(error, _)| error)
                .unwrap();
        }
    });
    futures_util::future::join_all(sends).await;
    for (user_id, order_id) in &orders[..9] {
        let order = shop
            .wait_for_status(
                *user_id,
                *order_id,
                pb::OrderStatus::Paid,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(
            order.status,
            pb::OrderStatus::Paid as i32,
            "order {order_id}"
        );
        assert_eq!(shop.events_of(*order_id, "order.paid").await.len(), 1);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shop.stock(lamp).await.1 < 9 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        shop.stock(lamp).await,
        (11, 9),
        "nine sold once each, one given back"
    );
    let cancelled = shop.get(cancelled_user, cancelled_order).await.unwrap();
    assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
    assert!(
        shop.events_of(cancelled_order, "order.paid")
            .await
            .is_empty()
    );
    // They were marked in batches, not one by one.
    let metrics = shop.shop.metrics_of(ServiceName::Order).await;
    let batched = |outcome: &str| -> u64 {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("letsgo_events_batched_total{")
                    && line.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(
        batched("handled") >= 2,
        "no batch of payments was handled whole: {metrics}"
    );
    assert_eq!(batched("refused"), 0, "{metrics}");
}

/// Paid after it was cancelled: the success changes nothing here (the payment service refunds
/// it), and the refund, when confirmed, shows on the order.
#[tokio::test]
async fn a_payment_for_a_cancelled_order_leaves_it_cancelled_and_its_refund_shows() {
    let shop = Shop::start().await;
    let id = shop.product("x", 250, 10).await;
    let created = shop.order(7, &[(id, 2)]).await.unwrap();
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 7,
            order_id: created.order_id,
        })
        .await
        .unwrap();
    let data = serde_json::json!({"paymentId": 1, "paymentNo": "PAY1", "orderId": created.order_id, "userId": 7, "amountCents": 500, "tradeNo": "T1"});
    let key = created.order_id.to_string();
    shop.publish(
        &Event::new("payment.succeeded", data.clone()).unwrap(),
        &key,
    )
    .await;
    let refunded = Event::new("payment.refunded", data).unwrap();
    shop.publish(&refunded, &key).await;
    shop.publish(&refunded, &key).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut order = shop.get(7, created.order_id).await.unwrap();
    while order.refunded_at == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        order = shop.get(7, created.order_id).await.unwrap();
    }
    assert!(order.refunded_at > 0, "the refund shows");
    assert_eq!(order.status, pb::OrderStatus::Cancelled as i32);
    assert_eq!(order.paid_at, 0, "never paid as far as the order goes");
    assert_eq!(
        shop.stock(id).await,
        (10, 0),
        "its stock is back, nothing sold"
    );
}

#[tokio::test]
async fn two_buyers_never_get_the_last_item_twice() {
    let shop = Shop::start().await;
    let id = shop.product("last-one", 100, 1).await;
    let basket = [(id, 1)];
    let attempts = (1..=6).map(|user_id| shop.order(user_id, &basket));
    let results = futures_util::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|result| result.as_ref().err())
            .all(|code| *code == ErrorCode::OutOfStock)
    );
    assert_eq!(shop.stock(id).await.0, 0);
}

// ---------------------------------------------------------------- fulfilment

impl Shop {
    /// Pays `order_id` as the payment service would (a `payment.succeeded` event) and waits
    /// until the order shows paid.
    async fn pay(&self, user_id: i64, order_id: i64, amount_cents: i64) {
        let event = Event::new(
            "payment.succeeded",
            serde_json::json!({"paymentId": order_id, "paymentNo": format!("PAY{order_id}"), "orderId": order_id,
                               "userId": user_id, "amountCents": amount_cents, "tradeNo": format!("T{order_id}")}),
        )
        .unwrap();
        self.publish(&event, &order_id.to_string()).await;
        let order = self
            .wait_for_status(
                user_id,
                order_id,
                pb::OrderStatus::Paid,
                Duration::from_secs(30),
            )
            .await;
        assert_eq!(
            order.status,
            pb::OrderStatus::Paid as i32,
            "paid: {order:?}"
        );
    }

    /// A paid order of one unit of a new product, for `user_id`.
    async fn paid_order(&self, user_id: i64) -> i64 {
        let product = self.product("kettle", 3000, 10).await;
        let created = self.order(user_id, &[(product, 1)]).await.unwrap();
        self.pay(user_id, created.order_id, created.total_amount_cents)
            .await;
        created.order_id
    }

    async fn ship(&self, order_id: i64, carrier: &str, tracking_no: &str) -> Result<(), ErrorCode> {
        self.orders
            .clone()
            .ship_order(pb::ShipOrderRequest {
                order_id,
                carrier: carrier.into(),
                tracking_no: tracking_no.into(),
            })
            .await
            .map(|_| ())
            .map_err(|status| AppError::from(status).code)
    }

    async fn confirm(&self, user_id: i64, order_id: i64) -> Result<(), ErrorCode> {
        self.orders
            .clone()
            .confirm_receipt(pb::ConfirmReceiptRequest { user_id, order_id })
            .await
            .map(|_| ())
            .map_err(|status| AppError::from(status).code)
    }

    async fn list_all(
        &self,
        status: pb::OrderStatus,
        keyword: &str,
    ) -> Result<pb::OrderPage, ErrorCode> {
        self.orders
            .clone()
            .list_all_orders(pb::ListAllOrdersRequest {
                page: 1,
                page_size: 20,
                status: status as i32,
                keyword: keyword.into(),
            })
            .await
            .map(|reply| reply.into_inner())
            .map_err(|status| AppError::from(status).code)
    }

    async fn order_database(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.shop.database_url(ServiceName::Order))
            .await
            .unwrap()
    }

    /// The `data` of every `topic` event the order service wrote for `order_id`, oldest first.
    async fn events_of(&self, order_id: i64, topic: &str) -> Vec<serde_json::Value> {
        let pool = self.order_database().await;
        let payloads: Vec<sqlx::types::Json<serde_json::Value>> = sqlx::query_scalar(
            "SELECT payload FROM event_outbox WHERE event_key = $1 AND topic = $2 ORDER BY id",
        )
        .bind(order_id.to_string())
        .bind(topic)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        payloads
            .into_iter()
            .map(|payload| payload.0["data"].clone())
            .collect()
    }
}

#[tokio::test]
async fn only_a_paid_order_ships_and_the_same_shipment_again_changes_nothing() {
    let shop = Shop::start().await;
    let product = shop.product("kettle", 3000, 10).await;
    let pending = shop.order(7, &[(product, 1)]).await.unwrap().order_id;
    assert_eq!(
        shop.ship(pending, "SF Express", "SF100").await.unwrap_err(),
        ErrorCode::BadOrderStatus,
        "not paid yet"
    );
    let cancelled = shop.order(7, &[(product, 1)]).await.unwrap().order_id;
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 7,
            order_id: cancelled,
        })
        .await
        .unwrap();
    assert_eq!(
        shop.ship(cancelled, "SF Express", "SF100")
            .await
            .unwrap_err(),
        ErrorCode::BadOrderStatus,
        "cancelled"
    );
    assert_eq!(
        shop.ship(424_242, "SF Express", "SF100").await.unwrap_err(),
        ErrorCode::OrderNotFound
    );

    shop.pay(7, pending, 3000).await;
    let order_id = pending;
    shop.ship(order_id, "  SF Express ", " SF100 ")
        .await
        .unwrap();
    let shipped = shop.get(7, order_id).await.unwrap();
    assert_eq!(shipped.status, pb::OrderStatus::Shipped as i32);
    assert!(shipped.shipped_at > 0);
    assert_eq!(shipped.completed_at, 0);
    assert_eq!(
        (shipped.carrier.as_str(), shipped.tracking_no.as_str()),
        ("SF Express", "SF100"),
        "stored trimmed"
    );

    // A retried request: the same shipment succeeds and changes nothing.
    shop.ship(order_id, "SF Express", "SF100").await.unwrap();
    let again = shop.get(7, order_id).await.unwrap();
    assert_eq!(again.shipped_at, shipped.shipped_at);
    assert_eq!(again.updated_at, shipped.updated_at);
    // Another one is refused and changes nothing either.
    assert_eq!(
        shop.ship(order_id, "SF Express", "SF999")
            .await
            .unwrap_err(),
        ErrorCode::BadOrderStatus
    );
    assert_eq!(
        shop.ship(order_id, "EMS", "SF100").await.unwrap_err(),
        ErrorCode::BadOrderStatus
    );
    assert_eq!(shop.get(7, order_id).await.unwrap().tracking_no, "SF100");

    let events = shop.events_of(order_id, "order.shipped").await;
    assert_eq!(events.len(), 1, "one order.shipped: {events:?}");
    assert_eq!(events[0]["userId"], 7);
    assert_eq!(events[0]["carrier"], "SF Express");
    assert_eq!(events[0]["trackingNo"], "SF100");
    assert_eq!(events[0]["shippedAt"], shipped.shipped_at);
    assert!(shop.events_of(pending, "order.cancelled").await.is_empty());

    // Bad shipments are the caller's 1001, whatever state the order is in.
    for (carrier, tracking_no) in [
        ("", "SF1"),
        ("SF Express", ""),
        ("SF Express", "SF1\u{0}"),
        ("SF\nExpress", "SF1"),
        ("SF Express", "SF\u{202E}1"),
        (&*"x".repeat(51), "SF1"),
        ("SF Express", &*"9".repeat(100_000)),
    ] {
        assert_eq!(
            shop.ship(order_id, carrier, tracking_no).await.unwrap_err(),
            ErrorCode::InvalidParams,
            "{carrier:?}"
        );
    }
}

/// Two admins shipping the same order at once with different tracking numbers: one ships,
/// the others are told it shipped otherwise, and one event tells of the one shipment.
#[tokio::test]
async fn shipments_racing_for_one_order_ship_it_once() {
    let shop = Shop::start().await;
    let order_id = shop.paid_order(7).await;
    let attempts = (0..8).map(|n| {
        let shop = &shop;
        async move {
            (
                n,
                shop.ship(order_id, "SF Express", &format!("SF{n}")).await,
            )
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won: Vec<_> = results
        .iter()
        .filter(|(_, result)| result.is_ok())
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|(_, result)| result.err())
            .all(|code| code == ErrorCode::BadOrderStatus),
        "{results:?}"
    );
    let order = shop.get(7, order_id).await.unwrap();
    assert_eq!(order.tracking_no, format!("SF{}", won[0].0));
    let events = shop.events_of(order_id, "order.shipped").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["trackingNo"], order.tracking_no);
}

/// The status change and its event commit together or not at all: with the outbox refusing
/// the event, the order stays as it was.
#[tokio::test]
async fn shipping_and_completing_write_their_events_in_the_same_transaction() {
    let shop = Shop::start().await;
    let order_id = shop.paid_order(7).await;
    let pool = shop.order_database().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_fulfilment_events() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.topic IN ('order.shipped', 'order.completed') THEN \
           RAISE EXCEPTION 'outbox refuses %', NEW.topic; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_fulfilment_events BEFORE INSERT ON event_outbox \
           FOR EACH ROW EXECUTE FUNCTION refuse_fulfilment_events();",
    )
    .execute(&pool)
    .await
    .unwrap();

    assert!(shop.ship(order_id, "SF Express", "SF100").await.is_err());
    let order = shop.get(7, order_id).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Paid as i32, "not shipped");
    assert_eq!((order.shipped_at, order.carrier.as_str()), (0, ""));

    sqlx::query("ALTER TABLE event_outbox DISABLE TRIGGER refuse_fulfilment_events")
        .execute(&pool)
        .await
        .unwrap();
    shop.ship(order_id, "SF Express", "SF100").await.unwrap();
    sqlx::query("ALTER TABLE event_outbox ENABLE TRIGGER refuse_fulfilment_events")
        .execute(&pool)
        .await
        .unwrap();

    assert!(shop.confirm(7, order_id).await.is_err());
    let order = shop.get(7, order_id).await.unwrap();
    assert_eq!(
        order.status,
        pb::OrderStatus::Shipped as i32,
        "not completed"
    );
    assert_eq!(order.completed_at, 0);
    assert!(shop.events_of(order_id, "order.completed").await.is_empty());

    sqlx::query("ALTER TABLE event_outbox DISABLE TRIGGER refuse_fulfilment_events")
        .execute(&pool)
        .await
        .unwrap();
    shop.confirm(7, order_id).await.unwrap();
    pool.close().await;
    assert_eq!(shop.events_of(order_id, "order.shipped").await.len(), 1);
    assert_eq!(shop.events_of(order_id, "order.completed").await.len(), 1);
}

#[tokio::test]
async fn only_the_buyer_confirms_receipt_and_only_of_a_shipped_order() {
    let shop = Shop::start().await;
    let product = shop.product("kettle", 3000, 10).await;
    let pending = shop.order(7, &[(product, 1)]).await.unwrap().order_id;
    assert_eq!(
        shop.confirm(7, pending).await.unwrap_err(),
        ErrorCode::BadOrderStatus
    );
    let order_id = shop.paid_order(7).await;
    assert_eq!(
        shop.confirm(7, order_id).await.unwrap_err(),
        ErrorCode::BadOrderStatus,
        "paid, not shipped"
    );
    shop.ship(order_id, "SF Express", "SF100").await.unwrap();
    assert_eq!(
        shop.confirm(8, order_id).await.unwrap_err(),
        ErrorCode::OrderNotFound,
        "someone else's order is as missing as no order"
    );
    assert_eq!(
        shop.confirm(7, 424_242).await.unwrap_err(),
        ErrorCode::OrderNotFound
    );
    // With the default auto-complete period (14 days) the sweeper leaves it shipped.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        shop.get(7, order_id).await.unwrap().status,
        pb::OrderStatus::Shipped as i32
    );

    shop.confirm(7, order_id).await.unwrap();
    let order = shop.get(7, order_id).await.unwrap();
    assert_eq!(order.status, pb::OrderStatus::Completed as i32);
    assert!(order.completed_at >= order.shipped_at && order.completed_at > 0);
    assert_eq!(
        order.tracking_no, "SF100",
        "the shipment stays on the order"
    );
    assert_eq!(
        shop.confirm(7, order_id).await.unwrap_err(),
        ErrorCode::BadOrderStatus,
        "completed already"
    );
    // The admin's retry of the very same shipment is still fine; another is not.
    shop.ship(order_id, "SF Express", "SF100").await.unwrap();
    assert_eq!(
        shop.ship(order_id, "SF Express", "SF101")
            .await
            .unwrap_err(),
        ErrorCode::BadOrderStatus
    );
    let events = shop.events_of(order_id, "order.completed").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["by"], "buyer");
    assert_eq!(events[0]["userId"], 7);
    assert_eq!(events[0]["completedAt"], order.completed_at);

    let completed = shop
        .orders
        .clone()
        .list_orders(pb::ListOrdersRequest {
            user_id: 7,
            page: 1,
            page_size: 10,
            status: pb::OrderStatus::Completed as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(completed.total, 1);
    assert_eq!(completed.orders[0].id, order_id);
}

#[tokio::test]
async fn a_shipped_order_completes_by_itself_after_the_auto_complete_period() {
    let shop = Shop::start_with(|config| config.auto_complete = Duration::from_secs(1)).await;
    let shipped = shop.paid_order(7).await;
    let waiting = shop.paid_order(7).await;
    shop.ship(shipped, "SF Express", "SF100").await.unwrap();
    let order = shop
        .wait_for_status(
            7,
            shipped,
            pb::OrderStatus::Completed,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(order.status, pb::OrderStatus::Completed as i32);
    assert!(order.completed_at > 0);
    let events = shop.events_of(shipped, "order.completed").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["by"], "timeout");
    assert_eq!(
        shop.get(7, waiting).await.unwrap().status,
        pb::OrderStatus::Paid as i32,
        "a paid order that never shipped does not complete"
    );
    assert_eq!(
        shop.confirm(7, shipped).await.unwrap_err(),
        ErrorCode::BadOrderStatus,
        "nothing left to confirm"
    );
}

#[tokio::test]
async fn admins_list_every_order_newest_first_by_status_and_keyword() {
    let shop = Shop::start().await;
    let product = shop.product("kettle", 3000, 50).await;
    let mut ids = Vec::new();
    for (user_id, address, phone) in [
        (7, "12 Harbour Road, Shanghai", "13800138000"),
        (8, "3 Garden Lane, Beijing 100%", "13900139000"),
        (9, "7 River Street, Hangzhou", "13700137000"),
    ] {
        let created = shop
            .orders
            .clone()
            .create_order(pb::CreateOrderRequest {
                user_id,
                items: vec![pb::OrderLine {
                    product_id: product,
                    quantity: 1,
                }],
                address: address.into(),
                phone: phone.into(),
                remark: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(created);
    }
    shop.orders
        .clone()
        .cancel_order(pb::CancelOrderRequest {
            user_id: 9,
            order_id: ids[2].order_id,
        })
        .await
        .unwrap();

    let all = shop
        .list_all(pb::OrderStatus::Unspecified, "")
        .await
        .unwrap();
    assert_eq!(all.total, 3);
    assert_eq!(
        all.orders.iter().map(|order| order.id).collect::<Vec<_>>(),
        ids.iter()
            .rev()
            .map(|created| created.order_id)
            .collect::<Vec<_>>(),
        "every user's orders, newest first"
    );
    assert_eq!(all.orders[2].items.len(), 1, "with their items");

    let cancelled = shop.list_all(pb::OrderStatus::Cancelled, "").await.unwrap();
    assert_eq!(cancelled.total, 1);
    assert_eq!(cancelled.orders[0].user_id, 9);
    let pending = shop.list_all(pb::OrderStatus::Pending, "").await.unwrap();
    assert_eq!(pending.total, 2);

    let found = |page: pb::OrderPage| -> Vec<i64> {
        page.orders.iter().map(|order| order.user_id).collect()
    };
    let by_number = shop
        .list_all(
            pb::OrderStatus::Unspecified,
            &ids[1].order_no.to_lowercase(),
        )
        .await
        .unwrap();
    assert_eq!(found(by_number), [8], "the order number, in any case");
    let by_buyer = shop
        .list_all(pb::OrderStatus::Unspecified, " 8 ")
        .await
        .unwrap();
    assert!(found(by_buyer).contains(&8), "the buyer's user id");
    let by_phone = shop
        .list_all(pb::OrderStatus::Unspecified, "1370013")
        .await
        .unwrap();
    assert_eq!(found(by_phone), [9]);
    let by_address = shop
        .list_all(pb::OrderStatus::Unspecified, "harbour")
        .await
        .unwrap();
    assert_eq!(found(by_address), [7]);
    let both = shop
        .list_all(pb::OrderStatus::Pending, "hangzhou")
        .await
        .unwrap();
    assert_eq!(both.total, 0, "status and keyword together");
    let percent = shop
        .list_all(pb::OrderStatus::Unspecified, "100%")
        .await
        .unwrap();
    assert_eq!(found(percent), [8], "% is plain text");
    let nothing = shop
        .list_all(pb::OrderStatus::Unspecified, "_")
        .await
        .unwrap();
    assert_eq!(nothing.total, 0, "_ is plain text too");

    assert_eq!(
        shop.list_all(pb::OrderStatus::Unspecified, &"x".repeat(101))
            .await
            .unwrap_err(),
        ErrorCode::InvalidParams
    );
    let bad_status = shop
        .orders
        .clone()
        .list_all_orders(pb::ListAllOrdersRequest {
            status: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(bad_status).code, ErrorCode::InvalidParams);
    let bad_page = shop
        .orders
        .clone()
        .list_all_orders(pb::ListAllOrdersRequest {
            page: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(bad_page).code, ErrorCode::InvalidParams);
}

// ------------------------------------------------ the consumer group across processes

/// The order binary's command, as production runs it, on a scratch database and a topic prefix
/// of the test's, with static discovery pointing at nothing (the payment path needs no other
/// service); answers it with its admin address.
fn order_binary(
    database_url: &str,
    topic_prefix: &str,
    session: Duration,
) -> (std::process::Command, std::net::SocketAddr) {
    // Three distinct free ports: the listeners are held until all three are chosen.
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let [admin, grpc, nobody] = [0, 1, 2].map(|i| held[i].local_addr().unwrap());
    drop(held);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_letsgo-order"));
    command
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", kafka_brokers())
        .env("KAFKA_TOPIC_PREFIX", topic_prefix)
        .env("KAFKA_SESSION_TIMEOUT_MS", session.as_millis().to_string())
        .env("JWT_SECRET", letsgo_testkit::JWT_SECRET)
        .env("INTERNAL_TOKEN", letsgo_testkit::INTERNAL_TOKEN)
        .env("GRPC_LISTEN", grpc.to_string())
        .env("ADMIN_LISTEN", admin.to_string())
        .env("DISCOVERY", "static")
        .env("PRODUCT_RPC", nobody.to_string())
        .env("PAYMENT_RPC", nobody.to_string())
        .env("USER_RPC", nobody.to_string())
        .env("CART_RPC", nobody.to_string())
        .env("ORDER_RPC", grpc.to_string())
        .env("LOG_FORMAT", "json");
    (command, admin)
}

/// The order service's binary as it runs in production: a process of its own, on a scratch
/// database and a topic prefix of the test's, with static discovery pointing at nothing (the
/// payment path under test needs no other service). Killed (SIGKILL) when dropped.
struct OrderProcess {
    child: std::process::Child,
    admin: std::net::SocketAddr,
}

impl OrderProcess {
    async fn start(database_url: &str, topic_prefix: &str, session: Duration) -> OrderProcess {
        let (mut command, admin) = order_binary(database_url, topic_prefix, session);
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the order binary starts");
        let mut process = OrderProcess { child, admin };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !process.ready().await {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("the order binary exited ({status}) while starting; its log is above");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the order binary is not ready after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        process
    }

    async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut connection) = tokio::net::TcpStream::connect(self.admin).await else {
            return false;
        };
        let mut answer = String::new();
        connection
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .is_ok()
            && connection.read_to_string(&mut answer).await.is_ok()
            && (answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"))
    }

    /// SIGKILL: the member leaves nothing behind but its session in the broker.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OrderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The group's state and its members' ids, as the broker's coordinator describes them (not yet
/// known before its first member joins).
fn describe_group(group: &str) -> (String, Vec<String>) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .unwrap();
    let list = client
        .fetch_group_list(Some(group), Duration::from_secs(5))
        .unwrap();
    list.groups()
        .iter()
        .find(|info| info.name() == group)
        .map_or_else(
            || ("not yet known".to_owned(), Vec::new()),
            |info| {
                let members = info.members().iter().map(|member| member.id().to_owned());
                (info.state().to_owned(), members.collect())
            },
        )
}

/// Waits until the group is stable with exactly one member other than `not`; answers its id.
async fn sole_member(group: &str, not: Option<&str>, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let group_name = group.to_owned();
        let (state, members) = tokio::task::spawn_blocking(move || describe_group(&group_name))
            .await
            .unwrap();
        if state == "Stable" && members.len() == 1 && Some(members[0].as_str()) != not {
            return members[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} is {state} with members {members:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A pending order whose stock is committed, written straight into the service's database.
async fn insert_payable_order(pool: &sqlx::PgPool, id: i64) {
    sqlx::query(
        "INSERT INTO orders (id, order_no, user_id, total_amount_cents, status, address, phone, stock_committed) \
         VALUES ($1, $2, 7, 1250, 1, 'Main Street 1', '5550100', true)",
    )
    .bind(id)
    .bind(format!("killed-{id}"))
    .execute(pool)
    .await
    .unwrap();
}

async fn publish_payment(topic_prefix: &str, order_id: i64) {
    let args = KafkaArgs::new(&kafka_brokers(), topic_prefix);
    let event = Event::new(
        "payment.succeeded",
        serde_json::json!({"orderId": order_id, "paymentNo": format!("PAY-{order_id}")}),
    )
    .unwrap();
    let producer = events::producer(&args).unwrap();
    producer
        .send(
            FutureRecord::to(&format!("{topic_prefix}payment.succeeded"))
                .key(&order_id.to_string())
                .payload(&serde_json::to_string(&event).unwrap()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}

async fn wait_until_paid(pool: &sqlx::PgPool, order_id: i64, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status: i16 = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_one(pool)
            .await
            .unwrap();
        if status == 2 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {order_id} not paid after {within:?} (status {status})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On Apache Kafka, not an imitation: an order service killed without leaving its consumer
/// group (SIGKILL, as the OOM killer or a node loss does) is replaced by the next instance once
/// the dead member's session times out; the new one gets every partition and marks orders paid,
/// both the payment that waited through the kill and one sent after. Then a clean restart
/// (SIGTERM) hands the partitions over at once, as `make up` restarts do, again and again.
#[tokio::test]
async fn an_order_service_killed_without_leaving_its_group_is_replaced_within_the_session_timeout()
{
    let database = letsgo_testkit::ScratchDatabase::create(&letsgo_testkit::postgres_url())
        .await
        .unwrap();
    let prefix = letsgo_testkit::TopicPrefix::new("order-killed");
    let topic_prefix = prefix.as_str();
    let group = format!("{topic_prefix}letsgo-order");
    let session = Duration::from_secs(6);
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();

    let first = OrderProcess::start(&database.url, topic_prefix, session).await;
    let first_member = sole_member(&group, None, Duration::from_secs(60)).await;
    insert_payable_order(&pool, 1).await;
    publish_payment(topic_prefix, 1).await;
    wait_until_paid(&pool, 1, Duration::from_secs(30)).await;

    first.kill();
    let killed = tokio::time::Instant::now();
    // A payment while no live member holds the partitions waits in the broker.
    insert_payable_order(&pool, 2).await;
    publish_payment(topic_prefix, 2).await;
    let second = OrderProcess::start(&database.url, topic_prefix, session).await;
    sole_member(&group, Some(&first_member), session * 4).await;
    let replaced = killed.elapsed();
    wait_until_paid(&pool, 2, Duration::from_secs(30)).await;
    insert_payable_order(&pool, 3).await;
    publish_payment(topic_prefix, 3).await;
    wait_until_paid(&pool, 3, Duration::from_secs(30)).await;
    eprintln!(
        "the killed member was replaced {:.1} s after the kill (session timeout {:?})",
        replaced.as_secs_f64(),
        session
    );

    // Clean restarts (what `make up` does on Ctrl-C and a new run): the group is handed over
    // every time, and no payment waits for a session to time out.
    let mut current = second;
    for round in 0..3 {
        let member = sole_member(&group, None, Duration::from_secs(10)).await;
        let pid = current.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = current.child.wait();
        let restarted = tokio::time::Instant::now();
        current = OrderProcess::start(&database.url, topic_prefix, session).await;
        sole_member(&group, Some(&member), Duration::from_secs(30)).await;
        let order_id = 10 + round;
        insert_payable_order(&pool, order_id).await;
        publish_payment(topic_prefix, order_id).await;
        wait_until_paid(&pool, order_id, Duration::from_secs(30)).await;
        eprintln!(
            "clean restart {round}: the group was handed over and a payment consumed {:.1} s after SIGTERM",
            restarted.elapsed().as_secs_f64()
        );
    }
    drop(current);
    pool.close().await;
}

/// A session timeout below what the broker accepts (Kafka's default minimum is 6 s) would keep
/// the consumer out of its group for good, every payment waiting: the service says so, naming
/// the setting, instead of a generic receive warning.
#[tokio::test]
async fn a_session_timeout_the_broker_refuses_is_named_in_the_log() {
    use std::io::BufRead;

    let database = letsgo_testkit::ScratchDatabase::create(&letsgo_testkit::postgres_url())
        .await
        .unwrap();
    let prefix = letsgo_testkit::TopicPrefix::new("order-session");
    let (mut command, _) = order_binary(&database.url, prefix.as_str(), Duration::from_secs(3));
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the order binary starts");
    let lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let found = tokio::task::spawn_blocking(move || {
        lines
            .lines()
            .map_while(Result::ok)
            .take(10_000)
            .find(|line| line.contains("refuses this consumer's session timeout"))
    });
    let found = tokio::time::timeout(Duration::from_secs(60), found).await;
    let _ = child.kill();
    let _ = child.wait();
    let line = found
        .expect("the refusal is logged within 60 s")
        .unwrap()
        .expect("the refusal is logged");
    assert!(line.contains("KAFKA_SESSION_TIMEOUT_MS"), "{line}");
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
}
