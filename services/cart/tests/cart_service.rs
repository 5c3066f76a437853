//! The cart service over real gRPC, on Redis, against a real product service (its own
//! PostgreSQL database) for names, prices and existence.

use letsgo_platform::discovery::ServiceName;
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::cart::v1::{self as pb, cart_service_client::CartServiceClient};
use letsgo_platform::proto::product::v1::{
    self as product_pb, product_service_client::ProductServiceClient,
};
use tonic::transport::Channel;

/// A product and a cart service, with clients to both.
struct Shop {
    cart: CartServiceClient<Channel>,
    products: ProductServiceClient<Channel>,
    _shop: letsgo_testkit::Shop,
}

impl Shop {
    async fn start() -> Shop {
        Shop::start_with_max_lines(100).await
    }

    async fn start_with_max_lines(max_lines: u32) -> Shop {
        let shop = letsgo_testkit::Shop::builder()
            .product(|_| {})
            .cart(move |config| config.max_lines = max_lines)
            .start()
            .await;
        Shop {
            cart: CartServiceClient::new(shop.channel(ServiceName::Cart).await),
            products: ProductServiceClient::new(shop.channel(ServiceName::Product).await),
            _shop: shop,
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

    async fn add(&self, user_id: i64, product_id: i64, quantity: i64) -> Result<(), ErrorCode> {
        self.cart
            .clone()
            .add_item(pb::AddItemRequest {
                user_id,
                product_id,
                quantity,
            })
            .await
            .map(|_| ())
            .map_err(|status| AppError::from(status).code)
    }

    async fn get(&self, user_id: i64) -> pb::Cart {
        self.cart
            .clone()
            .get_cart(pb::GetCartRequest { user_id })
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test]
async fn an_empty_cart_is_a_normal_answer() {
    let shop = Shop::start().await;
    let cart = shop.get(1).await;
    assert!(cart.items.is_empty());
    assert_eq!((cart.total_price_cents, cart.total_count), (0, 0));
}

#[tokio::test]
async fn the_cart_is_priced_now_and_counts_units() {
    let shop = Shop::start().await;
    let tea = shop.product("tea", 1990, 50).await;
    let cup = shop.product("cup", 500, 50).await;
    shop.add(1, tea, 2).await.unwrap();
    shop.add(1, cup, 3).await.unwrap();
    shop.add(1, tea, 1).await.unwrap();
    let cart = shop.get(1).await;
    assert_eq!(cart.items.len(), 2);
    assert_eq!(cart.total_count, 6, "units, not lines");
    assert_eq!(cart.total_price_cents, 3 * 1990 + 3 * 500);
    let tea_line = cart
        .items
        .iter()
        .find(|item| item.product_id == tea)
        .unwrap();
    assert_eq!(
        (tea_line.quantity, tea_line.name.as_str(), tea_line.stock),
        (3, "tea", 50)
    );
    assert_eq!(tea_line.image, "https://img.example.com/tea.jpg");

    // A new price shows at once: the cart keeps quantities, not prices.
    shop.products
        .clone()
        .update_product(product_pb::UpdateProductRequest {
            id: tea,
            price_cents: Some(2500),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(shop.get(1).await.total_price_cents, 3 * 2500 + 3 * 500);
}

#[tokio::test]
async fn bad_quantities_unknown_products_and_the_line_limit_are_refused() {
    let shop = Shop::start().await;
    let id = shop.product("pen", 100, 5).await;
    for quantity in [0, -1, 1000] {
        assert_eq!(
            shop.add(1, id, quantity).await,
            Err(ErrorCode::InvalidParams),
            "{quantity}"
        );
    }
    assert_eq!(
        shop.add(1, 999_999, 1).await,
        Err(ErrorCode::ProductNotFound)
    );
    shop.add(1, id, 998).await.unwrap();
    shop.add(1, id, 1).await.unwrap();
    assert_eq!(
        shop.add(1, id, 1).await,
        Err(ErrorCode::CartLimit),
        "beyond 999 units"
    );
    assert_eq!(
        shop.get(1).await.total_count,
        999,
        "a refused add changes nothing"
    );
}

#[tokio::test]
async fn a_cart_holds_a_bounded_number_of_products() {
    let shop = Shop::start_with_max_lines(2).await;
    let a = shop.product("a", 100, 5).await;
    let b = shop.product("b", 100, 5).await;
    let c = shop.product("c", 100, 5).await;
    shop.add(1, a, 1).await.unwrap();
    shop.add(1, b, 1).await.unwrap();
    assert_eq!(shop.add(1, c, 1).await, Err(ErrorCode::CartLimit));
    shop.add(1, a, 1).await.unwrap();
}

#[tokio::test]
async fn updating_or_removing_a_missing_line_is_4001() {
    let shop = Shop::start().await;
    let id = shop.product("ink", 100, 5).await;
    let mut cart = shop.cart.clone();
    let update = cart
        .update_item(pb::UpdateItemRequest {
            user_id: 1,
            product_id: id,
            quantity: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(update).code, ErrorCode::CartItemNotFound);
    let remove = cart
        .remove_item(pb::RemoveItemRequest {
            user_id: 1,
            product_id: id,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(remove).code, ErrorCode::CartItemNotFound);

    shop.add(1, id, 1).await.unwrap();
    cart.update_item(pb::UpdateItemRequest {
        user_id: 1,
        product_id: id,
        quantity: 7,
    })
    .await
    .unwrap();
    assert_eq!(shop.get(1).await.total_count, 7);
    let bad = cart
        .update_item(pb::UpdateItemRequest {
            user_id: 1,
            product_id: id,
            quantity: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(bad).code, ErrorCode::InvalidParams);
    cart.remove_item(pb::RemoveItemRequest {
        user_id: 1,
        product_id: id,
    })
    .await
    .unwrap();
    assert!(shop.get(1).await.items.is_empty());
}

#[tokio::test]
async fn carts_are_kept_apart_per_user() {
    let shop = Shop::start().await;
    let id = shop.product("mug", 800, 5).await;
    shop.add(1, id, 2).await.unwrap();
    assert!(shop.get(2).await.items.is_empty());
    shop.cart
        .clone()
        .clear_cart(pb::ClearCartRequest { user_id: 2 })
        .await
        .unwrap();
    assert_eq!(
        shop.get(1).await.total_count,
        2,
        "clearing another cart leaves this one"
    );
    let remove = shop
        .cart
        .clone()
        .remove_item(pb::RemoveItemRequest {
            user_id: 2,
            product_id: id,
        })
        .await
        .unwrap_err();
    assert_eq!(AppError::from(remove).code, ErrorCode::CartItemNotFound);
    shop.cart
        .clone()
        .clear_cart(pb::ClearCartRequest { user_id: 1 })
        .await
        .unwrap();
    assert!(shop.get(1).await.items.is_empty());
}

#[tokio::test]
async fn concurrent_adds_to_one_line_lose_nothing_and_never_pass_the_limit() {
    let shop = Shop::start().await;
    let id = shop.product("bead", 1, 10_000).await;
    let adds = (0..30).map(|_| shop.add(1, id, 40));
    let results = futures_util::future::join_all(adds).await;
    let accepted = results.iter().filter(|result| result.is_ok()).count() as i64;
    assert_eq!(accepted, 999 / 40);
    assert_eq!(shop.get(1).await.total_count, accepted * 40);
}

#[tokio::test]
async fn the_orders_of_several_buyers_leave_their_carts_in_one_call() {
    let shop = Shop::start().await;
    let a = shop.product("a", 100, 5).await;
    let b = shop.product("b", 100, 5).await;
    for user in [1, 2, 3] {
        shop.add(user, a, 1).await.unwrap();
        shop.add(user, b, 1).await.unwrap();
    }
    let removal = |user_id, product_ids: Vec<i64>| pb::RemoveProductsRequest {
        user_id,
        product_ids,
    };
    shop.cart
        .clone()
        .remove_products_of_carts(pb::RemoveProductsOfCartsRequest {
            carts: vec![
                removal(1, vec![a]),
                removal(2, vec![a, b, 424242]),
                // A buyer with no cart, and a removal of nothing: neither is an error.
                removal(9, vec![a]),
                removal(3, vec![]),
            ],
        })
        .await
        .unwrap();
    let products_of = |cart: pb::Cart| {
        cart.items
            .iter()
            .map(|item| item.product_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(products_of(shop.get(1).await), [b]);
    assert!(products_of(shop.get(2).await).is_empty());
    assert_eq!(products_of(shop.get(3).await), [a, b], "untouched");
    assert!(products_of(shop.get(9).await).is_empty());

    // Nothing to do is no error; more carts than one call takes is refused, and changes none.
    shop.cart
        .clone()
        .remove_products_of_carts(pb::RemoveProductsOfCartsRequest { carts: vec![] })
        .await
        .unwrap();
    let too_many = (0..1001).map(|_| removal(3, vec![a])).collect();
    let refused = shop
        .cart
        .clone()
        .remove_products_of_carts(pb::RemoveProductsOfCartsRequest { carts: too_many })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert_eq!(products_of(shop.get(3).await), [a, b]);
}

#[tokio::test]
async fn ordered_products_leave_the_cart_and_others_stay() {
    let shop = Shop::start().await;
    let a = shop.product("a", 100, 5).await;
    let b = shop.product("b", 100, 5).await;
    shop.add(1, a, 1).await.unwrap();
    shop.add(1, b, 1).await.unwrap();
    shop.cart
        .clone()
        .remove_products(pb::RemoveProductsRequest {
            user_id: 1,
            product_ids: vec![a, 424242],
        })
        .await
        .unwrap();
    let cart = shop.get(1).await;
    assert_eq!(
        cart.items
            .iter()
            .map(|item| item.product_id)
            .collect::<Vec<_>>(),
        [b]
    );
}
