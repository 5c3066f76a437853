//! The product service over real gRPC, on a PostgreSQL database and a Redis key prefix of its
//! own per test.

use std::time::Duration;

use letsgo_platform::discovery::ServiceName;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::product::v1::{
    self as pb, product_service_client::ProductServiceClient,
};
use letsgo_testkit::{ScratchDatabase, postgres_url, redis_url};
use tonic::transport::Channel;

/// A product service, with a client.
struct Service {
    client: ProductServiceClient<Channel>,
    shop: letsgo_testkit::Shop,
}

impl Service {
    async fn start() -> Service {
        Service::start_with(|_| {}).await
    }

    /// A service whose settings are adjusted by `tweak` (the settings under test).
    async fn start_with(
        tweak: impl FnOnce(&mut letsgo_product::Config) + Send + 'static,
    ) -> Service {
        let shop = letsgo_testkit::Shop::builder().product(tweak).start().await;
        Service {
            client: ProductServiceClient::new(shop.channel(ServiceName::Product).await),
            shop,
        }
    }

    /// The service's database.
    fn database_url(&self) -> &str {
        self.shop.database_url(ServiceName::Product)
    }

    async fn add(&self, name: &str, price_cents: i64, stock: i64, category: &str) -> i64 {
        self.add_described(name, "", price_cents, stock, category)
            .await
    }

    /// A product added and then taken off sale.
    async fn add_unlisted(&self, name: &str, price_cents: i64, stock: i64) -> i64 {
        let id = self.add(name, price_cents, stock, "x").await;
        self.client
            .clone()
            .set_product_listed(pb::SetProductListedRequest {
                product_id: id,
                listed: false,
            })
            .await
            .unwrap();
        id
    }

    async fn add_described(
        &self,
        name: &str,
        description: &str,
        price_cents: i64,
        stock: i64,
        category: &str,
    ) -> i64 {
        self.client
            .clone()
            .add_product(pb::AddProductRequest {
                name: name.into(),
                description: description.into(),
                price_cents,
                stock,
                category: category.into(),
                images: vec!["https://img.example.com/p.jpg".into()],
                attributes: r#"{"color":"red"}"#.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .product_id
    }

    async fn product(&self, id: i64) -> pb::Product {
        self.client
            .clone()
            .get_product(pb::GetProductRequest { id })
            .await
            .unwrap()
            .into_inner()
    }

    /// The order's stock back (ReleaseStock); it must succeed.
    async fn release(&self, order_id: i64) {
        self.client
            .clone()
            .release_stock(pb::ReleaseStockRequest { order_id })
            .await
            .unwrap();
    }

    /// The order's units sold (RecordSales); it must succeed.
    async fn sell(&self, order_id: i64) {
        self.client
            .clone()
            .record_sales(pb::RecordSalesRequest { order_id })
            .await
            .unwrap();
    }

    /// The order's reservation kept for good (CommitReservation); it must succeed.
    async fn commit(&self, order_id: i64) {
        self.client
            .clone()
            .commit_reservation(pb::CommitReservationRequest { order_id })
            .await
            .unwrap();
    }

    async fn reserve(&self, order_id: i64, lines: &[(i64, i64)]) -> Result<(), ErrorCode> {
        self.client
            .clone()
            .reserve_stock(pb::ReserveStockRequest {
                order_id,
                lines: lines
                    .iter()
                    .map(|(product_id, quantity)| pb::StockLine {
                        product_id: *product_id,
                        quantity: *quantity,
                    })
                    .collect(),
            })
            .await
            .map(|_| ())
            .map_err(code_of)
    }
}

fn code_of(status: tonic::Status) -> ErrorCode {
    AppError::from(status).code
}

fn new_product(name: &str) -> pb::AddProductRequest {
    pb::AddProductRequest {
        name: name.into(),
        description: "d".into(),
        price_cents: 100,
        stock: 1,
        category: "c".into(),
        images: vec!["https://img.example.com/p.jpg".into()],
        attributes: String::new(),
    }
}

#[tokio::test]
async fn invalid_products_are_1001() {
    let service = Service::start().await;
    let cases = [
        pb::AddProductRequest {
            name: String::new(),
            ..new_product("x")
        },
        pb::AddProductRequest {
            name: "x".repeat(201),
            ..new_product("x")
        },
        pb::AddProductRequest {
            price_cents: 0,
            ..new_product("x")
        },
        pb::AddProductRequest {
            price_cents: -5,
            ..new_product("x")
        },
        pb::AddProductRequest {
            stock: -1,
            ..new_product("x")
        },
        pb::AddProductRequest {
            images: vec![],
            ..new_product("x")
        },
        pb::AddProductRequest {
            category: " ".into(),
            ..new_product("x")
        },
        pb::AddProductRequest {
            attributes: "[1,2]".into(),
            ..new_product("x")
        },
        pb::AddProductRequest {
            attributes: "not json".into(),
            ..new_product("x")
        },
    ];
    for case in cases {
        let error = service.client.clone().add_product(case).await.unwrap_err();
        assert_eq!(code_of(error), ErrorCode::InvalidParams);
    }
    let unknown = service
        .client
        .clone()
        .get_product(pb::GetProductRequest { id: 424242 })
        .await
        .unwrap_err();
    assert_eq!(code_of(unknown), ErrorCode::ProductNotFound);
}

#[tokio::test]
async fn a_product_reads_back_as_added_with_attributes_as_a_json_string() {
    let service = Service::start().await;
    let id = service.add("Teapot", 4999, 7, "home").await;
    let product = service.product(id).await;
    assert_eq!(product.name, "Teapot");
    assert_eq!(product.price_cents, 4999);
    assert_eq!(product.stock, 7);
    assert_eq!(product.images, vec!["https://img.example.com/p.jpg"]);
    let attributes: serde_json::Value = serde_json::from_str(&product.attributes).unwrap();
    assert_eq!(attributes, serde_json::json!({"color": "red"}));
    assert!(product.created_at > 0 && product.updated_at >= product.created_at);
}

#[tokio::test]
async fn lists_page_sort_and_filter() {
    let service = Service::start().await;
    for (name, price, category) in [
        ("a", 300, "x"),
        ("b", 100, "y"),
        ("c", 200, "x"),
        ("d", 400, "x"),
    ] {
        service.add(name, price, 1, category).await;
    }
    let list = |page, page_size, category: &str, sort_by: pb::SortBy, ascending| {
        let mut client = service.client.clone();
        let request = pb::ListProductsRequest {
            page,
            page_size,
            category: category.into(),
            sort_by: sort_by as i32,
            ascending,
            include_unlisted: false,
        };
        async move { client.list_products(request).await }
    };
    let newest = list(1, 2, "", pb::SortBy::Unspecified, false)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest.total, 4);
    assert_eq!(
        newest
            .products
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["d", "c"]
    );
    let second = list(2, 2, "", pb::SortBy::Unspecified, false)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second
            .products
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"]
    );
    let cheapest_x = list(1, 10, "x", pb::SortBy::Price, true)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cheapest_x.total, 3);
    assert_eq!(
        cheapest_x
            .products
            .iter()
            .map(|p| p.price_cents)
            .collect::<Vec<_>>(),
        [200, 300, 400]
    );
    let beyond = list(9, 10, "", pb::SortBy::Unspecified, false)
        .await
        .unwrap()
        .into_inner();
    assert_eq!((beyond.total, beyond.products.len()), (4, 0));
    let clamped = list(1, 5000, "", pb::SortBy::Unspecified, false)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(clamped.products.len(), 4);
    for (page, size) in [(-1, 10), (1, -1)] {
        let error = list(page, size, "", pb::SortBy::Unspecified, false)
            .await
            .unwrap_err();
        assert_eq!(code_of(error), ErrorCode::InvalidParams);
    }
}

#[tokio::test]
async fn search_ranks_name_matches_first_and_treats_sql_as_text() {
    let service = Service::start().await;
    let in_description = service
        .add_described("Kettle", "boils water for green tea", 100, 1, "home")
        .await;
    let in_name = service
        .add_described("Green Tea Longjing", "spring harvest", 100, 1, "food")
        .await;
    let in_category = service
        .add_described("Matcha", "whisked", 100, 1, "tea")
        .await;
    service
        .add_described("Hammer", "hits nails", 100, 1, "tools")
        .await;

    let mut client = service.client.clone();
    let found = client
        .search_products(pb::SearchProductsRequest {
            keyword: "TEA".into(),
            page: 1,
            page_size: 10,
            include_unlisted: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.total, 3);
    assert_eq!(found.products[0].id, in_name, "a name match ranks first");
    let ids: Vec<i64> = found.products.iter().map(|p| p.id).collect();
    assert!(ids.contains(&in_description) && ids.contains(&in_category));

    let both_words = client
        .search_products(pb::SearchProductsRequest {
            keyword: "green water".into(),
            page: 1,
            page_size: 10,
            include_unlisted: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        both_words.products.iter().map(|p| p.id).collect::<Vec<_>>(),
        [in_description]
    );

    for hostile in ["'; DROP TABLE products; --", "%", "_", "\\", "' OR '1'='1"] {
        let result = client
            .search_products(pb::SearchProductsRequest {
                keyword: hostile.into(),
                page: 1,
                page_size: 10,
                include_unlisted: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(result.total, 0, "{hostile:?} matches nothing literally");
    }
    let still_there = client
        .list_products(pb::ListProductsRequest {
            page: 1,
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(still_there.total, 4);
    let empty = client
        .search_products(pb::SearchProductsRequest {
            keyword: "   ".into(),
            page: 1,
            page_size: 10,
            include_unlisted: false,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(empty), ErrorCode::InvalidParams);
}

#[tokio::test]
async fn many_buyers_of_the_last_units_get_exactly_that_many_reservations() {
    let service = Service::start().await;
    let last_units = 5;
    let id = service.add("Limited edition", 9900, last_units, "x").await;
    let attempts = (0..40).map(|order_id| {
        let service = &service;
        async move { service.reserve(1000 + order_id, &[(id, 1)]).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(won as i64, last_units);
    assert!(
        results
            .iter()
            .filter_map(|result| result.err())
            .all(|code| code == ErrorCode::OutOfStock)
    );
    assert_eq!(service.product(id).await.stock, 0);

    let pool = sqlx::PgPool::connect(service.database_url()).await.unwrap();
    let reserved: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(quantity), 0)::bigint FROM stock_reservation_lines",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reserved, last_units);
    pool.close().await;
}

#[tokio::test]
async fn a_reservation_answers_its_lines_priced_as_reserved_and_a_retry_answers_the_same() {
    let service = Service::start().await;
    let kettle = service.add("Kettle", 2500, 10, "home").await;
    let mug = service.add("Mug", 900, 10, "home").await;
    let client = service.client.clone();
    let reserve = |order_id: i64| {
        let mut client = client.clone();
        async move {
            client
                .reserve_stock(pb::ReserveStockRequest {
                    order_id,
                    lines: [(mug, 1), (kettle, 2), (mug, 2)]
                        .iter()
                        .map(|(product_id, quantity)| pb::StockLine {
                            product_id: *product_id,
                            quantity: *quantity,
                        })
                        .collect(),
                })
                .await
                .unwrap()
                .into_inner()
                .lines
        }
    };
    let line = |product_id: i64, quantity: i64, name: &str, price_cents: i64| pb::ReservedLine {
        product_id,
        quantity,
        name: name.into(),
        price_cents,
        image: "https://img.example.com/p.jpg".into(),
    };
    let expected = vec![line(kettle, 2, "Kettle", 2500), line(mug, 3, "Mug", 900)];
    assert_eq!(
        reserve(31).await,
        expected,
        "merged, in product order, priced"
    );

    // A price change after the reservation does not reprice it: a retry answers the same.
    client
        .clone()
        .update_product(pb::UpdateProductRequest {
            id: kettle,
            price_cents: Some(9900),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reserve(31).await, expected);
    assert_eq!(service.product(kettle).await.stock, 8, "reserved once");
    assert_eq!(
        reserve(32).await[0].price_cents,
        9900,
        "a new one pays the new price"
    );
}

#[tokio::test]
async fn a_basket_is_reserved_whole_or_not_at_all() {
    let service = Service::start().await;
    let plenty = service.add("plenty", 100, 10, "x").await;
    let scarce = service.add("scarce", 100, 1, "x").await;
    assert_eq!(
        service.reserve(1, &[(plenty, 3), (scarce, 2)]).await,
        Err(ErrorCode::OutOfStock)
    );
    assert_eq!(
        service.product(plenty).await.stock,
        10,
        "the first line was given back"
    );
    assert_eq!(
        service.reserve(2, &[(plenty, 1), (99999, 1)]).await,
        Err(ErrorCode::ProductNotFound)
    );
    assert_eq!(service.product(plenty).await.stock, 10);
    // The same product twice in a basket counts twice.
    assert_eq!(
        service.reserve(3, &[(plenty, 6), (plenty, 6)]).await,
        Err(ErrorCode::OutOfStock)
    );
    assert_eq!(
        service.reserve(4, &[(plenty, 4), (plenty, 6)]).await,
        Ok(())
    );
    assert_eq!(service.product(plenty).await.stock, 0);
}

/// An order service that dies (or whose caller gives up) between reserving and saving the
/// order never commits the reservation: its stock comes back by itself, and a commit that
/// arrives too late is refused rather than keeping stock that may be sold again.
#[tokio::test]
async fn a_reservation_no_order_commits_comes_back_by_itself() {
    let service = Service::start_with(|config| {
        config.reservation_hold = Duration::from_secs(1);
        config.reservation_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let id = service.add("widget", 100, 10, "x").await;
    let mut client = service.client.clone();
    service.reserve(40, &[(id, 3)]).await.unwrap();
    service.reserve(41, &[(id, 2)]).await.unwrap();
    service.commit(41).await;
    assert_eq!(service.product(id).await.stock, 5);

    let mut stock = 0;
    for _ in 0..50 {
        stock = service.product(id).await.stock;
        if stock == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stock, 8,
        "order 40's three units came back; order 41's two stay held"
    );
    let late = client
        .commit_reservation(pb::CommitReservationRequest { order_id: 40 })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(late).code, ErrorCode::BadOrderStatus);
    assert_eq!(
        service.reserve(40, &[(id, 3)]).await,
        Err(ErrorCode::BadOrderStatus),
        "a retried reservation cannot take the stock again"
    );
    // The committed one is sold as usual, and committing it again is harmless.
    service.sell(41).await;
    service.commit(41).await;
    let product = service.product(id).await;
    assert_eq!((product.stock, product.sales), (8, 2));
}

/// A commit racing the sweeper: whichever wins, the stock is counted once.
#[tokio::test]
async fn an_expired_reservation_is_released_by_its_late_commit_when_the_sweeper_has_not_run() {
    let service = Service::start_with(|config| {
        config.reservation_hold = Duration::from_secs(1);
        config.reservation_sweep_interval = Duration::from_secs(600);
    })
    .await;
    let id = service.add("widget", 100, 10, "x").await;
    service.reserve(50, &[(id, 4)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = service
        .client
        .clone()
        .commit_reservation(pb::CommitReservationRequest { order_id: 50 })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(late).code, ErrorCode::BadOrderStatus);
    assert_eq!(service.product(id).await.stock, 10);
}

/// Many orders settled in one call each way: the commit answers exactly the orders whose stock
/// is no longer held (expired and not yet swept, released, never reserved) and gives an expired
/// one's stock back; the sales count each held order once, however often it is named.
#[tokio::test]
async fn many_orders_commit_and_sell_in_one_call_each_and_each_order_counts_once() {
    let service = Service::start_with(|config| {
        config.reservation_hold = Duration::from_secs(1);
        config.reservation_sweep_interval = Duration::from_secs(600);
    })
    .await;
    let lamp = service.add("lamp", 100, 100, "x").await;
    let desk = service.add("desk", 900, 100, "x").await;
    let mut client = service.client.clone();
    service.reserve(60, &[(lamp, 1), (desk, 1)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Order 60's hold has run out; 61 to 63 are fresh; 64 is given back; 65 never reserved.
    for order_id in 61..=64 {
        service
            .reserve(order_id, &[(desk, 2), (lamp, 3)])
            .await
            .unwrap();
    }
    service.release(64).await;
    let lost = client
        .commit_reservations(pb::CommitReservationsRequest {
            order_ids: vec![65, 64, 63, 62, 61, 60, 61],
        })
        .await
        .unwrap()
        .into_inner()
        .lost_order_ids;
    let mut lost_sorted = lost.clone();
    lost_sorted.sort_unstable();
    assert_eq!(lost_sorted, vec![60, 64, 65], "answered {lost:?}");
    let (lamp_now, desk_now) = (service.product(lamp).await, service.product(desk).await);
    assert_eq!(
        (lamp_now.stock, desk_now.stock),
        (100 - 9, 100 - 6),
        "order 60's units came back; 61 to 63 stay held"
    );

    // Past the hold, the committed ones are still held.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sell = |order_ids: Vec<i64>| {
        let mut client = service.client.clone();
        async move {
            client
                .record_sales_of_orders(pb::RecordSalesOfOrdersRequest { order_ids })
                .await
                .unwrap();
        }
    };
    sell(vec![61, 62, 62, 60, 64, 65]).await;
    sell(vec![62, 63]).await;
    sell(vec![61, 62, 63]).await;
    let (lamp_now, desk_now) = (service.product(lamp).await, service.product(desk).await);
    assert_eq!(
        (
            lamp_now.stock,
            lamp_now.sales,
            desk_now.stock,
            desk_now.sales
        ),
        (91, 9, 94, 6),
        "three orders sold once each; released, expired and unknown ones sell nothing"
    );
    // Sold reservations count as kept when committed again.
    let lost = client
        .commit_reservations(pb::CommitReservationsRequest {
            order_ids: vec![61, 62, 63],
        })
        .await
        .unwrap()
        .into_inner()
        .lost_order_ids;
    assert!(lost.is_empty(), "answered {lost:?}");

    let too_many = (0..=letsgo_platform::limits::SETTLEMENT_BATCH_MAX as i64).collect::<Vec<_>>();
    let refused = client
        .record_sales_of_orders(pb::RecordSalesOfOrdersRequest {
            order_ids: too_many.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::InvalidParams);
    let refused = client
        .commit_reservations(pb::CommitReservationsRequest {
            order_ids: too_many.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::InvalidParams);
    let refused = client
        .release_reservations(pb::ReleaseReservationsRequest {
            order_ids: too_many,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(refused), ErrorCode::InvalidParams);
}

/// ReleaseReservations gives back what each named order holds, once, whatever else is named
/// with it: held (committed or not) orders come back, a sold one stays sold, an unknown one is
/// recorded released so its late reservation takes nothing, and naming them again changes
/// nothing.
#[tokio::test]
async fn many_orders_release_in_one_call_and_each_gives_back_once() {
    let service = Service::start().await;
    let lamp = service.add("lamp", 100, 100, "x").await;
    let desk = service.add("desk", 900, 100, "x").await;
    let mut client = service.client.clone();
    for order_id in 70..=73 {
        service
            .reserve(order_id, &[(desk, 2), (lamp, 3)])
            .await
            .unwrap();
    }
    let lost = client
        .commit_reservations(pb::CommitReservationsRequest {
            order_ids: vec![71],
        })
        .await
        .unwrap()
        .into_inner()
        .lost_order_ids;
    assert!(lost.is_empty());
    service.sell(72).await;
    let release = |order_ids: Vec<i64>| {
        let mut client = service.client.clone();
        async move {
            client
                .release_reservations(pb::ReleaseReservationsRequest { order_ids })
                .await
                .unwrap();
        }
    };
    // 70 held, 71 committed, 72 sold, 74 never reserved; 70 named twice.
    release(vec![74, 72, 71, 70, 70]).await;
    release(vec![70, 71, 72, 74]).await;
    let (lamp_now, desk_now) = (service.product(lamp).await, service.product(desk).await);
    assert_eq!(
        (
            lamp_now.stock,
            lamp_now.sales,
            desk_now.stock,
            desk_now.sales
        ),
        (100 - 6, 3, 100 - 4, 2),
        "70 and 71 came back once each; 72 stays sold; 73 stays held"
    );
    assert_eq!(
        service.reserve(74, &[(lamp, 1)]).await,
        Err(ErrorCode::BadOrderStatus),
        "a reservation after its order's release takes nothing"
    );
    release(vec![]).await;
    assert_eq!(service.product(lamp).await.stock, 100 - 6);
}

#[tokio::test]
async fn reservations_releases_and_sales_are_idempotent_per_order() {
    let service = Service::start().await;
    let id = service.add("widget", 100, 10, "x").await;
    service.reserve(7, &[(id, 3)]).await.unwrap();
    service.reserve(7, &[(id, 3)]).await.unwrap();
    assert_eq!(
        service.product(id).await.stock,
        7,
        "a retried reservation reserves once"
    );

    service.release(7).await;
    service.release(7).await;
    assert_eq!(
        service.product(id).await.stock,
        10,
        "a repeated release gives back once"
    );
    assert_eq!(
        service.reserve(7, &[(id, 3)]).await,
        Err(ErrorCode::BadOrderStatus)
    );

    // A release that arrives before its reservation (a cancel racing a retry) wins.
    service.release(8).await;
    assert_eq!(
        service.reserve(8, &[(id, 1)]).await,
        Err(ErrorCode::BadOrderStatus)
    );
    assert_eq!(service.product(id).await.stock, 10);

    service.reserve(9, &[(id, 4)]).await.unwrap();
    service.sell(9).await;
    service.sell(9).await;
    service.release(9).await;
    let product = service.product(id).await;
    assert_eq!(
        (product.stock, product.sales),
        (6, 4),
        "sold units count once and are not released"
    );
}

#[tokio::test]
async fn concurrent_reservations_releases_and_sales_of_shared_products_never_deadlock() {
    let service = Service::start().await;
    let initial = 1000;
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d"] {
        ids.push(service.add(name, 100, initial, "x").await);
    }
    // Every basket holds every product, listed in a different order each time.
    let basket = |order_id: i64| {
        let mut lines: Vec<(i64, i64)> = ids.iter().map(|id| (*id, 1)).collect();
        lines.rotate_left(order_id as usize % ids.len());
        lines
    };
    let first = (1..=40).map(|order_id| {
        let (service, lines) = (&service, basket(order_id));
        async move { service.reserve(order_id, &lines).await }
    });
    for result in futures_util::future::join_all(first).await {
        assert_eq!(result, Ok(()));
    }

    // Sales for half, releases for the other half, and new reservations, all at once.
    let mut work = Vec::new();
    for order_id in 1..=40_i64 {
        let mut client = service.client.clone();
        work.push(tokio::spawn(async move {
            if order_id % 4 == 0 {
                // A batch overlapping another task's single sale.
                client
                    .record_sales_of_orders(pb::RecordSalesOfOrdersRequest {
                        order_ids: vec![order_id, order_id - 2],
                    })
                    .await
                    .map(|_| ())
            } else if order_id % 2 == 0 {
                client
                    .record_sales(pb::RecordSalesRequest { order_id })
                    .await
                    .map(|_| ())
            } else {
                client
                    .release_stock(pb::ReleaseStockRequest { order_id })
                    .await
                    .map(|_| ())
            }
        }));
    }
    let more = (41..=80).map(|order_id| {
        let (service, lines) = (&service, basket(order_id));
        async move { service.reserve(order_id, &lines).await }
    });
    for result in futures_util::future::join_all(more).await {
        assert_eq!(result, Ok(()));
    }
    for task in work {
        task.await.unwrap().expect("release or sale");
    }

    // Nothing lost or made: 20 sold, 20 given back, 40 still reserved, of each product.
    for id in ids {
        let product = service.product(id).await;
        assert_eq!(
            (product.stock, product.sales),
            (initial - 60, 20),
            "product {id}"
        );
    }
}

#[tokio::test]
async fn the_cached_detail_is_never_stale_after_a_change() {
    let service = Service::start().await;
    let id = service.add("lamp", 1000, 5, "home").await;
    assert_eq!(service.product(id).await.stock, 5); // now cached
    let pool = sqlx::PgPool::connect(service.database_url()).await.unwrap();

    service.reserve(1, &[(id, 2)]).await.unwrap();
    assert_eq!(service.product(id).await.stock, 3, "after a reservation");
    service.release(1).await;
    assert_eq!(service.product(id).await.stock, 5, "after a release");
    service
        .client
        .clone()
        .update_product(pb::UpdateProductRequest {
            id,
            price_cents: Some(1500),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        service.product(id).await.price_cents,
        1500,
        "after an update"
    );
    service
        .client
        .clone()
        .change_stock(pb::ChangeStockRequest {
            product_id: id,
            change: Some(pb::change_stock_request::Change::Delta(10)),
        })
        .await
        .unwrap();
    assert_eq!(service.product(id).await.stock, 15, "after a stock change");
    service
        .client
        .clone()
        .add_review(pb::AddReviewRequest {
            product_id: id,
            user_id: 1,
            rating: 4,
            comment: "bright".into(),
        })
        .await
        .unwrap();
    assert_eq!(service.product(id).await.rating_count, 1, "after a review");

    // And the cache is really used: a change behind the service's back is not seen until the
    // entry expires or a change through the service invalidates it.
    assert_eq!(service.product(id).await.name, "lamp");
    sqlx::query("UPDATE products SET name = 'renamed behind its back' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        service.product(id).await.name,
        "lamp",
        "served from the cache"
    );
    pool.close().await;
}

#[tokio::test]
async fn each_of_a_batch_of_reservations_is_seen_in_the_cache_once_answered() {
    let service = Service::start().await;
    let id = service.add("kettle", 1000, 100, "home").await;
    assert_eq!(service.product(id).await.stock, 100); // now cached
    // Forty buyers at once: their reservations are decided in batches, and each batch tells
    // the cache once. Whoever has been answered must already see their unit gone.
    let buyers = (1..=40).map(|order_id| {
        let service = &service;
        async move {
            service.reserve(order_id, &[(id, 1)]).await.unwrap();
            service.product(id).await.stock
        }
    });
    let seen = futures_util::future::join_all(buyers).await;
    assert!(
        seen.iter().all(|stock| *stock < 100),
        "a buyer read the stock from before their own reservation: {seen:?}"
    );
    assert_eq!(service.product(id).await.stock, 60);
}

#[tokio::test]
async fn a_change_to_several_cached_products_refreshes_each_of_them() {
    let service = Service::start().await;
    let lamp = service.add("lamp", 1000, 5, "home").await;
    let desk = service.add("desk", 5000, 5, "home").await;
    let chair = service.add("chair", 2000, 5, "home").await;
    for id in [lamp, desk, chair] {
        assert_eq!(service.product(id).await.stock, 5); // now cached
    }
    // One announcement for the batch's products, all in one script.
    service
        .reserve(1, &[(lamp, 1), (desk, 2), (chair, 3)])
        .await
        .unwrap();
    let mut seen = Vec::new();
    for id in [lamp, desk, chair] {
        seen.push(service.product(id).await.stock);
    }
    assert_eq!(seen, [4, 3, 2]);
    service.release(1).await;
    for id in [lamp, desk, chair] {
        assert_eq!(service.product(id).await.stock, 5, "after the release");
    }
}

#[tokio::test]
async fn admin_stock_changes_never_go_below_zero() {
    let service = Service::start().await;
    let id = service.add("bolt", 10, 3, "tools").await;
    let mut client = service.client.clone();
    use pb::change_stock_request::Change;
    let change = |change| pb::ChangeStockRequest {
        product_id: id,
        change: Some(change),
    };
    assert_eq!(
        client
            .change_stock(change(Change::SetTo(8)))
            .await
            .unwrap()
            .into_inner()
            .stock,
        8
    );
    assert_eq!(
        client
            .change_stock(change(Change::Delta(-8)))
            .await
            .unwrap()
            .into_inner()
            .stock,
        0
    );
    assert_eq!(
        code_of(
            client
                .change_stock(change(Change::Delta(-1)))
                .await
                .unwrap_err()
        ),
        ErrorCode::OutOfStock
    );
    assert_eq!(
        code_of(
            client
                .change_stock(change(Change::SetTo(-1)))
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidParams
    );
    let unknown = pb::ChangeStockRequest {
        product_id: 999_999,
        change: Some(Change::Delta(1)),
    };
    assert_eq!(
        code_of(client.change_stock(unknown).await.unwrap_err()),
        ErrorCode::ProductNotFound
    );
}

#[tokio::test]
async fn reviews_average_and_a_second_review_replaces_the_first() {
    let service = Service::start().await;
    let id = service.add("book", 500, 1, "books").await;
    let mut client = service.client.clone();
    for (user_id, rating) in [(1, 5), (2, 4), (1, 2)] {
        client
            .add_review(pb::AddReviewRequest {
                product_id: id,
                user_id,
                rating,
                comment: format!("user {user_id}"),
            })
            .await
            .unwrap();
    }
    let product = service.product(id).await;
    assert_eq!(product.rating_count, 2);
    assert_eq!(product.rating_average, 3.0);
    let page = client
        .list_reviews(pb::ListReviewsRequest {
            product_id: id,
            page: 1,
            page_size: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.total, 2);
    assert_eq!(page.reviews[0].user_id, 1, "newest first");
    for rating in [0, 6] {
        let error = client
            .add_review(pb::AddReviewRequest {
                product_id: id,
                user_id: 3,
                rating,
                comment: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(error), ErrorCode::InvalidParams);
    }
    let error = client
        .add_review(pb::AddReviewRequest {
            product_id: 999_999,
            user_id: 3,
            rating: 3,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(error), ErrorCode::ProductNotFound);
}

#[tokio::test]
async fn the_demo_catalogue_loads_once_into_an_empty_shop() {
    let database = ScratchDatabase::create(&postgres_url()).await.unwrap();
    let pool = letsgo_platform::db::connect(&database.url, 4)
        .await
        .unwrap();
    letsgo_platform::db::migrate(&pool, sqlx::migrate!("./migrations"))
        .await
        .unwrap();
    let loads =
        futures_util::future::join_all((0..3).map(|_| letsgo_product::demo::load_if_empty(&pool)))
            .await;
    let added: usize = loads.into_iter().map(Result::unwrap).sum();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(added as i64, count);
    assert!(count >= 24);
    let categories: i64 = sqlx::query_scalar("SELECT count(DISTINCT category) FROM products")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(categories >= 4);
    pool.close().await;
}

#[tokio::test]
async fn a_read_that_raced_a_change_is_not_cached() {
    use letsgo_product::product_cache::{Lookup, ProductCache};
    let prefix = format!("test:{}:", uuid_like());
    let cache = letsgo_platform::cache::Cache::connect_url(&redis_url(), &prefix)
        .await
        .unwrap();
    let products = ProductCache::new(cache.clone(), Duration::from_secs(60));
    let record = |name: &str| letsgo_product::storage::ProductRecord {
        id: 1,
        name: name.into(),
        description: String::new(),
        price_cents: 100,
        stock: 1,
        category: "x".into(),
        images: vec![],
        attributes: "{}".into(),
        sales: 0,
        rating_sum: 0,
        rating_count: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        listed: true,
    };
    // A reader misses and reads the old row; meanwhile a writer commits and invalidates.
    let Lookup::Miss { version } = products.lookup(1).await else {
        panic!("empty cache hits")
    };
    products.invalidate(&[1]).await;
    products.store(&record("old"), &version).await;
    assert!(
        matches!(products.lookup(1).await, Lookup::Miss { .. }),
        "the stale read was not stored"
    );
    // The next reader, after the change, stores the fresh row.
    let Lookup::Miss { version } = products.lookup(1).await else {
        panic!()
    };
    products.store(&record("new"), &version).await;
    let Lookup::Hit(hit) = products.lookup(1).await else {
        panic!("a fresh read is cached")
    };
    assert_eq!(hit.name, "new");
    let mut connection = cache.connection();
    let _: () = redis::cmd("DEL")
        .arg(cache.key("product:1"))
        .arg(cache.key("product:1:version"))
        .query_async(&mut connection)
        .await
        .unwrap();
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

// ---------------------------------------------------------------- unlisting

impl Service {
    async fn set_listed(&self, product_id: i64, listed: bool) -> Result<(), ErrorCode> {
        self.client
            .clone()
            .set_product_listed(pb::SetProductListedRequest { product_id, listed })
            .await
            .map(|_| ())
            .map_err(code_of)
    }

    /// The names a list shows, newest first.
    async fn listed_names(&self, include_unlisted: bool) -> Vec<String> {
        let page = self
            .client
            .clone()
            .list_products(pb::ListProductsRequest {
                page: 1,
                page_size: 50,
                include_unlisted,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total as usize, page.products.len());
        page.products
            .into_iter()
            .map(|product| product.name)
            .collect()
    }

    async fn found_names(&self, keyword: &str, include_unlisted: bool) -> Vec<String> {
        let page = self
            .client
            .clone()
            .search_products(pb::SearchProductsRequest {
                keyword: keyword.into(),
                page: 1,
                page_size: 50,
                include_unlisted,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total as usize, page.products.len());
        page.products
            .into_iter()
            .map(|product| product.name)
            .collect()
    }

    /// Stock and sales as stored, whatever the product's listing.
    async fn stored_stock(&self, id: i64) -> (i64, i64) {
        let pool = sqlx::PgPool::connect(self.database_url()).await.unwrap();
        let stored = sqlx::query_as("SELECT stock, sales FROM products WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        stored
    }
}

#[tokio::test]
async fn an_unlisted_product_leaves_lists_searches_and_detail_until_relisted() {
    let service = Service::start().await;
    let green = service.add("Green tea", 100, 5, "tea").await;
    let black = service.add("Black tea", 100, 5, "tea").await;
    assert!(service.product(green).await.listed);
    service
        .client
        .clone()
        .add_review(pb::AddReviewRequest {
            product_id: green,
            user_id: 1,
            rating: 5,
            comment: "fresh".into(),
        })
        .await
        .unwrap();
    assert_eq!(service.product(green).await.rating_count, 1); // now cached

    service.set_listed(green, false).await.unwrap();
    let detail = service
        .client
        .clone()
        .get_product(pb::GetProductRequest { id: green })
        .await
        .unwrap_err();
    assert_eq!(
        code_of(detail),
        ErrorCode::ProductNotFound,
        "not the cached copy"
    );
    assert_eq!(service.listed_names(false).await, ["Black tea"]);
    assert_eq!(service.found_names("tea", false).await, ["Black tea"]);
    let batch = service
        .client
        .clone()
        .batch_get_products(pb::BatchGetProductsRequest {
            ids: vec![green, black],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        batch.products.iter().map(|p| p.id).collect::<Vec<_>>(),
        [black],
        "a cart leaves it out"
    );
    let reviews = service
        .client
        .clone()
        .list_reviews(pb::ListReviewsRequest {
            product_id: green,
            page: 1,
            page_size: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(reviews), ErrorCode::ProductNotFound);
    let review = service
        .client
        .clone()
        .add_review(pb::AddReviewRequest {
            product_id: green,
            user_id: 2,
            rating: 1,
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(review), ErrorCode::ProductNotFound);

    // Admins still see it, marked, and can still change it.
    let mut everything = service.listed_names(true).await;
    everything.sort();
    assert_eq!(everything, ["Black tea", "Green tea"]);
    assert_eq!(service.found_names("green", true).await, ["Green tea"]);
    let admin_view = service
        .client
        .clone()
        .list_products(pb::ListProductsRequest {
            include_unlisted: true,
            category: "tea".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let unlisted = admin_view.products.iter().find(|p| p.id == green).unwrap();
    assert!(!unlisted.listed);
    service
        .client
        .clone()
        .update_product(pb::UpdateProductRequest {
            id: green,
            price_cents: Some(120),
            ..Default::default()
        })
        .await
        .unwrap();

    // Unlisting twice is fine; an unknown product is a 3000.
    service.set_listed(green, false).await.unwrap();
    assert_eq!(
        service.set_listed(424_242, false).await,
        Err(ErrorCode::ProductNotFound)
    );

    service.set_listed(green, true).await.unwrap();
    let back = service.product(green).await;
    assert!(back.listed);
    assert_eq!((back.price_cents, back.rating_count), (120, 1));
    assert_eq!(service.listed_names(false).await.len(), 2);
    assert_eq!(service.found_names("green", false).await, ["Green tea"]);
}

/// An unlisted product takes no new reservation, alone or in a basket (nothing of the basket
/// is taken), while orders that reserved it before settle as usual.
#[tokio::test]
async fn an_unlisted_product_cannot_be_reserved_but_earlier_reservations_settle() {
    let service = Service::start().await;
    let kettle = service.add("Kettle", 2500, 10, "home").await;
    let mug = service.add("Mug", 900, 10, "home").await;
    service.reserve(1, &[(kettle, 2)]).await.unwrap();
    service.reserve(2, &[(kettle, 3)]).await.unwrap();
    service.set_listed(kettle, false).await.unwrap();

    assert_eq!(
        service.reserve(3, &[(kettle, 1)]).await,
        Err(ErrorCode::ProductNotFound)
    );
    assert_eq!(
        service.reserve(4, &[(mug, 1), (kettle, 1)]).await,
        Err(ErrorCode::ProductNotFound)
    );
    assert_eq!(
        service.product(mug).await.stock,
        10,
        "the basket took nothing"
    );
    assert_eq!(service.stored_stock(kettle).await, (5, 0));

    // A retry of a reservation made before unlisting answers what it holds.
    assert_eq!(service.reserve(1, &[(kettle, 2)]).await, Ok(()));
    service.commit(1).await;
    service.sell(1).await;
    service.release(2).await;
    assert_eq!(
        service.stored_stock(kettle).await,
        (8, 2),
        "sold two, three came back"
    );
}

/// Another instance of `service`'s product service, on its database and Redis prefix, as a
/// second replica runs: answers a client of it and what stops it.
async fn second_instance(
    service: &Service,
) -> (
    ProductServiceClient<Channel>,
    letsgo_platform::shutdown::Shutdown,
) {
    let prefix = service.shop.redis_prefix();
    let redis = redis_url();
    let config = <letsgo_product::Config as clap::Parser>::try_parse_from([
        "letsgo-product",
        "--database-url",
        service.database_url(),
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
        "--log-format",
        "text",
        "--discovery",
        "static",
    ])
    .unwrap();
    let shutdown = letsgo_platform::shutdown::Shutdown::new();
    let (addr, _task) = letsgo_testkit::start_on_free_ports(
        |listeners, shutdown| letsgo_product::run(config, listeners, shutdown),
        &shutdown,
    )
    .await;
    let channel = letsgo_testkit::channel_when_up(addr).await;
    (ProductServiceClient::new(channel), shutdown)
}

/// A sale's buyers all at once, on two replicas: the reservations are decided in batches
/// (each replica's workers take what queued while they were busy), and exactly the units on
/// sale are held, whatever replica took them, every other buyer refused as sold out and
/// recorded so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_on_two_replicas_holds_exactly_its_units() {
    let service = Service::start().await;
    let (other, stop_other) = second_instance(&service).await;
    let units = 25;
    let id = service.add("Flash sale lamp", 2500, units, "sale").await;
    let buyers = 300;
    let attempts = (0..buyers).map(|buyer| {
        let mut client = if buyer % 2 == 0 {
            service.client.clone()
        } else {
            other.clone()
        };
        async move {
            client
                .reserve_stock(pb::ReserveStockRequest {
                    order_id: 50_000 + buyer,
                    lines: vec![pb::StockLine {
                        product_id: id,
                        quantity: 1,
                    }],
                })
                .await
                .map(|_| ())
                .map_err(code_of)
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    let won = results.iter().filter(|result| result.is_ok()).count() as i64;
    assert_eq!(won, units, "exactly the units on sale were reserved");
    let refusals: Vec<ErrorCode> = results.iter().filter_map(|r| r.err()).collect();
    assert!(
        refusals.iter().all(|code| *code == ErrorCode::OutOfStock),
        "{refusals:?}"
    );
    assert_eq!(service.product(id).await.stock, 0);

    let pool = sqlx::PgPool::connect(service.database_url()).await.unwrap();
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(quantity), 0)::bigint FROM stock_reservation_lines",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, units);
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM stock_reservations GROUP BY state ORDER BY state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![
            ("released".to_owned(), buyers - units),
            ("reserved".to_owned(), units)
        ],
        "every refused buyer is recorded released"
    );
    pool.close().await;
    stop_other.trigger();
}

/// One batch, decided in arrival order: a basket is taken whole or not at all, a line that
/// does not fit refuses its order only, unknown and unlisted products refuse theirs, and an
/// order that has a reservation already (or comes twice) is left to be settled on its own.
#[tokio::test]
async fn a_batch_decides_each_order_in_turn_against_what_is_left() {
    use letsgo_product::storage::CatalogueStore;

    let service = Service::start().await;
    let lamp = service.add("Lamp", 1000, 3, "x").await;
    let shade = service.add("Shade", 300, 5, "x").await;
    let gone = service.add_unlisted("Gone", 300, 5).await;
    service.reserve(1, &[(shade, 1)]).await.unwrap();

    let pool = sqlx::PgPool::connect(service.database_url()).await.unwrap();
    let store = CatalogueStore::new(pool.clone());
    let asks = vec![
        (10, vec![(lamp, 2)]),
        (11, vec![(lamp, 2)]),
        (12, vec![(shade, 1), (lamp, 1)]),
        (13, vec![(lamp, 1)]),
        (14, vec![(shade, 1), (999_999, 1)]),
        (15, vec![(gone, 1)]),
        (1, vec![(shade, 1)]),
        (12, vec![(shade, 1), (lamp, 1)]),
    ];
    let outcomes = store
        .reserve_batch(&asks, Duration::from_secs(60))
        .await
        .unwrap();
    let summary: Vec<Option<Result<i64, ErrorCode>>> = outcomes
        .into_iter()
        .map(|outcome| {
            outcome.map(|result| {
                result
                    .map(|reservation| reservation.lines.iter().map(|line| line.quantity).sum())
                    .map_err(|error| error.code)
            })
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            Some(Ok(2)),
            Some(Err(ErrorCode::OutOfStock)),
            Some(Ok(2)),
            Some(Err(ErrorCode::OutOfStock)),
            Some(Err(ErrorCode::ProductNotFound)),
            Some(Err(ErrorCode::ProductNotFound)),
            None,
            None,
        ]
    );
    assert_eq!(service.product(lamp).await.stock, 0);
    assert_eq!(
        service.product(shade).await.stock,
        3,
        "order 1's and order 12's"
    );
    let gone_stock: i64 = sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
        .bind(gone)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone_stock, 5);
    let states: Vec<(i64, String)> =
        sqlx::query_as("SELECT order_id, state FROM stock_reservations ORDER BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let state = |order: i64| {
        states
            .iter()
            .find(|(id, _)| *id == order)
            .map(|(_, state)| state.as_str())
    };
    assert_eq!(state(10), Some("reserved"));
    assert_eq!(state(12), Some("reserved"));
    for refused in [11, 13, 14, 15] {
        assert_eq!(state(refused), Some("released"), "order {refused}");
    }
    let lines: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT order_id, product_id, quantity FROM stock_reservation_lines \
         WHERE order_id >= 10 ORDER BY order_id, product_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected = vec![(10, lamp, 2), (12, lamp, 1), (12, shade, 1)];
    expected.sort();
    assert_eq!(lines, expected);
    pool.close().await;
}

/// A buyer refused as sold out took nothing, and stays refused: the refusal is recorded, so a
/// late retry of that order (a timed-out attempt arriving after stock came back) takes nothing,
/// and the order service need not release it.
#[tokio::test]
async fn a_refused_order_stays_refused_after_stock_comes_back() {
    let service = Service::start().await;
    let id = service.add("Sold out", 100, 0, "x").await;
    assert_eq!(
        service.reserve(77, &[(id, 1)]).await,
        Err(ErrorCode::OutOfStock)
    );
    service
        .client
        .clone()
        .change_stock(pb::ChangeStockRequest {
            product_id: id,
            change: Some(pb::change_stock_request::Change::Delta(5)),
        })
        .await
        .unwrap();
    assert_eq!(
        service.reserve(77, &[(id, 1)]).await,
        Err(ErrorCode::BadOrderStatus),
        "the retry of a refused order is refused as released"
    );
    assert_eq!(service.product(id).await.stock, 5);
    assert!(service.reserve(78, &[(id, 1)]).await.is_ok());
}

/// A stock change never overflows nor passes the largest stock, the stock unchanged: a delta
/// beyond the largest stock either way is a bad request (1001; i64::MAX used to fail in the
/// database, a 500), and one the product's current stock cannot take is the product's refusal
/// (3002), as a schema cannot foresee it.
#[tokio::test]
async fn a_stock_change_beyond_the_largest_stock_is_refused() {
    use pb::change_stock_request::Change;
    let service = Service::start().await;
    let id = service.add("Bulk", 100, 999_999_995, "x").await;
    for (change, code) in [
        (Change::Delta(i64::MAX), ErrorCode::InvalidParams),
        (Change::Delta(i64::MIN), ErrorCode::InvalidParams),
        (Change::Delta(10), ErrorCode::InvalidProduct),
    ] {
        let refused = service
            .client
            .clone()
            .change_stock(pb::ChangeStockRequest {
                product_id: id,
                change: Some(change),
            })
            .await
            .map_err(code_of);
        assert_eq!(refused.err(), Some(code), "{change:?}");
    }
    assert_eq!(service.product(id).await.stock, 999_999_995);
    let filled = service
        .client
        .clone()
        .change_stock(pb::ChangeStockRequest {
            product_id: id,
            change: Some(Change::Delta(5)),
        })
        .await
        .map_err(code_of)
        .map(|reply| reply.into_inner().stock);
    assert_eq!(
        filled,
        Ok(1_000_000_000),
        "up to the largest stock is taken"
    );
}

/// A sale's batch in one statement: every ask of one product, taken whole when the stock
/// covers them all (one line per order, priced as reserved, answered in the asks' order) and
/// not at all otherwise: short of stock, not on sale, a retry of an order that has a
/// reservation or one order twice, or asks of several products change nothing and are left to
/// the general path. Batches racing on two connections for the last units never take more
/// than there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_one_product_is_taken_in_one_statement_only_when_its_stock_covers_it() {
    use letsgo_product::storage::{CatalogueStore, ReservedLine};

    let service = Service::start().await;
    let lamp = service.add("Lamp", 1000, 6, "lighting").await;
    let shade = service.add("Shade", 300, 5, "x").await;
    let gone = service.add_unlisted("Gone", 300, 5).await;
    let pool = sqlx::PgPool::connect(service.database_url()).await.unwrap();
    let store = CatalogueStore::new(pool.clone());
    let hold = Duration::from_secs(60);

    let taken = store
        .reserve_all(
            &[(11, vec![(lamp, 1), (lamp, 2)]), (10, vec![(lamp, 2)])],
            hold,
        )
        .await
        .unwrap()
        .expect("the stock covers both");
    assert!(taken.iter().all(|reservation| reservation.changed_stock));
    let lines: Vec<Vec<ReservedLine>> = taken.into_iter().map(|taken| taken.lines).collect();
    let lamp_line = |quantity| {
        vec![ReservedLine {
            product_id: lamp,
            quantity,
            name: "Lamp".to_owned(),
            price_cents: 1000,
            image: "https://img.example.com/p.jpg".to_owned(),
        }]
    };
    assert_eq!(
        lines,
        vec![lamp_line(3), lamp_line(2)],
        "in the asks' order"
    );
    assert_eq!(service.product(lamp).await.stock, 1);

    let untouched = [
        (
            vec![(12, vec![(lamp, 1)]), (13, vec![(lamp, 1)])],
            "short of stock",
        ),
        (vec![(10, vec![(lamp, 1)])], "a retry"),
        (
            vec![(14, vec![(lamp, 1)]), (15, vec![(shade, 1)])],
            "two products",
        ),
        (
            vec![(18, vec![(shade, 1)]), (18, vec![(shade, 1)])],
            "one order twice",
        ),
        (vec![(16, vec![(gone, 1)])], "not on sale"),
        (vec![(17, vec![(999_999, 1)])], "no such product"),
    ];
    for (asks, why) in untouched {
        let outcome = store.reserve_all(&asks, hold).await.unwrap();
        assert!(outcome.is_none(), "{why}");
    }
    assert_eq!(service.product(lamp).await.stock, 1);
    assert_eq!(service.product(shade).await.stock, 5);
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT r.order_id, r.state, l.quantity FROM stock_reservations r \
         JOIN stock_reservation_lines l USING (order_id) ORDER BY r.order_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (10, "reserved".to_owned(), 2),
            (11, "reserved".to_owned(), 3)
        ],
        "only the batch that was taken left rows"
    );

    // Twenty batches of two on two connections for seven units: three are taken.
    let sale = service.add("Sale", 500, 7, "x").await;
    let other = CatalogueStore::new(sqlx::PgPool::connect(service.database_url()).await.unwrap());
    let batches = (0..20).map(|batch: i64| {
        let store = if batch % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let asks = vec![
            (100 + 2 * batch, vec![(sale, 1)]),
            (101 + 2 * batch, vec![(sale, 1)]),
        ];
        async move { store.reserve_all(&asks, hold).await.unwrap().is_some() }
    });
    let taken = futures_util::future::join_all(batches).await;
    assert_eq!(taken.iter().filter(|taken| **taken).count(), 3);
    assert_eq!(service.product(sale).await.stock, 1);
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(quantity), 0)::bigint FROM stock_reservation_lines WHERE product_id = $1",
    )
    .bind(sale)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 6);
    pool.close().await;
}
