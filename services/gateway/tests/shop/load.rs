//! Rate limits, load shedding and the load generator.

use super::*;

#[tokio::test]
async fn the_payment_providers_callbacks_are_not_rate_limited() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 3,
        ..Default::default()
    })
    .await;
    // Far past the address's burst: each callback still reaches the payment service (and is
    // refused there for its bad signature), none is a 429.
    for _ in 0..10 {
        let (status, answer) = shop
            .send(
                shop.http
                    .post(format!("{}/api/v1/payment/callback", shop.base))
                    .header("X-Signature", "t=1,v1=00")
                    .body("{}"),
            )
            .await;
        assert_error(status, &answer, StatusCode::UNAUTHORIZED, 2003);
    }
    // The address's other requests are limited as before.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            shop.http
                .get(format!("{}/health", shop.base))
                .send()
                .await
                .unwrap()
                .status(),
        );
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_client_over_its_rate_is_429_with_retry_after() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 3,
        ..Default::default()
    })
    .await;
    // wait_for_user_service may have spent part of the burst; let it refill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut limited = None;
    for _ in 0..6 {
        let response = shop
            .http
            .get(format!("{}/health", shop.base))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("the fourth request within a second is refused");
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        1006,
    );
}

#[tokio::test]
async fn signed_in_users_have_a_quota_of_their_own() {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 1,
        burst: 2,
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, token) = shop.register("frank").await;
    // The address spends its burst...
    let mut limited = false;
    for _ in 0..10 {
        if shop.get_with_token("/health", None).await.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "the address runs out of quota");
    // ...but frank, signed in, is counted as himself.
    let (status, body) = shop
        .get_with_token("/api/v1/user/profile", Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A whole shop whose rate limits the load generator never reaches, and the generator's
/// command line against it: `command` (none: the shopper mix) with the shop's address, the
/// admin's password and `args`.
async fn shop_and_load_generator(
    command: Option<&str>,
    args: &[&str],
) -> (Shop, letsgo_loadgen::config::Cli) {
    let shop = Shop::start_with(ShopOptions {
        rate_per_second: 100_000,
        burst: 100_000,
        ..ShopOptions::default()
    })
    .await;
    let mut argv = vec!["letsgo-loadgen"];
    argv.extend(command);
    argv.extend([
        "--target-url",
        &shop.base,
        "--admin-password",
        ADMIN_PASSWORD,
    ]);
    argv.extend(args);
    let cli = letsgo_loadgen::config::Cli::try_parse_from(argv).unwrap();
    (shop, cli)
}

/// The load generator (tools/loadgen, what `make bench` measures with) plays every kind of
/// shopper against a whole shop: if it and the API drift apart, or the shop fails under mixed
/// concurrent load (as it did once, with a deadlock between sales and reservations), this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_plays_every_kind_of_shopper_without_an_error() {
    let (_shop, cli) = shop_and_load_generator(
        None,
        &[
            "--mix",
            "browse=30,search=20,detail=20,cart=15,checkout=15",
            "--connections",
            "4",
            "--products",
            "5",
            "--duration",
            "3s",
            "--warmup",
            "0s",
        ],
    )
    .await;
    let report = letsgo_loadgen::run::run(cli.load, 2).await.unwrap();
    let table = report.to_table();
    assert_eq!(report.totals.errors, 0, "{table}");
    for name in [
        "browse",
        "search",
        "detail",
        "cart_add",
        "order_create",
        "payment_create",
        "checkout",
    ] {
        let done = report
            .operations
            .iter()
            .find(|operation| operation.name == name)
            .map_or(0, |operation| operation.ok);
        assert!(done > 0, "no {name} succeeded:\n{table}");
    }
}

/// The flash sale `make bench` runs, played small against a whole shop: twelve buyers, each
/// ordering twice over four connections, on fifteen units. Exactly the fifteen units are sold,
/// the other nine orders are refused as sold out, no order is refused while stock is left at
/// the end, and the product's stock reads 0 afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generators_flash_sale_sells_every_unit_once_and_refuses_the_rest() {
    let (_shop, cli) = shop_and_load_generator(
        Some("flash-sale"),
        &[
            "--buyers",
            "12",
            "--orders-each",
            "2",
            "--units",
            "15",
            "-c",
            "4",
            "--baseline",
            "1s",
        ],
    )
    .await;
    let Some(letsgo_loadgen::config::Command::FlashSale(args)) = cli.command else {
        panic!("flash-sale did not parse as the flash sale");
    };
    let report = letsgo_loadgen::flash_sale::run(args).await.unwrap();
    let table = report.to_table();
    assert!(report.held(), "{table}");
    assert_eq!(report.orders_each, 2, "{table}");
    assert_eq!(report.decisions, 24, "{table}");
    assert_eq!(report.accepted, 15, "{table}");
    assert_eq!(report.refused_sold_out, 9, "{table}");
    assert_eq!(report.stock_left, 0, "{table}");
    assert!(report.sold_out_after_secs.is_some(), "{table}");
    assert_eq!(report.readers.before.errors, 0, "{table}");
}

#[tokio::test]
async fn beyond_its_concurrency_limit_the_gateway_sheds_load_with_503() {
    // A "service" that accepts connections and never answers: requests to it hang.
    let (address, holder) = blackhole().await;
    let shop = Shop::start_with(ShopOptions {
        with_user_service: false,
        services_at: Some(address),
        max_concurrent: 1,
        ..Default::default()
    })
    .await;
    let url = format!("{}/api/v1/user/login", shop.base);
    let http = shop.http.clone();
    let slow = tokio::spawn(async move {
        http.post(url)
            .json(&json!({"username": "ann", "password": "secret1"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = shop.get_with_token("/health", None).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, 1004);
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the hung call ends at its deadline"
    );
    let (status, _) = shop.get_with_token("/health", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "capacity is back once the slow call ended"
    );
    holder.abort();
}

// ---------------------------------------------------------------- the storefront
