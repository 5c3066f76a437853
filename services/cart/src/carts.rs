//! The cart rules: quantities per line, what may be added, and how a cart is priced.

use letsgo_platform::discovery::RpcChannel;
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use letsgo_platform::proto::product::v1::{
    BatchGetProductsRequest, GetProductRequest, Product,
    product_service_client::ProductServiceClient,
};

use crate::storage::{AddOutcome, CartStore};

/// Most units of one product in a cart, as the original allows.
pub use letsgo_platform::limits::QUANTITY_MAX;

/// Most carts one `RemoveProductsOfCarts` call changes: the order service sends at most a
/// batch of saved orders, far fewer.
pub const CARTS_PER_REMOVAL_MAX: usize = 1000;

pub struct PricedLine {
    pub product: Product,
    pub quantity: i64,
}

pub struct PricedCart {
    pub lines: Vec<PricedLine>,
    pub total_price_cents: i64,
    pub total_count: i64,
}

pub struct Carts {
    store: CartStore,
    products: ProductServiceClient<RpcChannel>,
    max_lines: u32,
}

fn check_quantity(quantity: i64) -> AppResult<()> {
    if (1..=QUANTITY_MAX).contains(&quantity) {
        Ok(())
    } else {
        Err(AppError::invalid(format!(
            "quantity must be 1 to {QUANTITY_MAX}"
        )))
    }
}

impl Carts {
    pub fn new(
        store: CartStore,
        products: ProductServiceClient<RpcChannel>,
        max_lines: u32,
    ) -> Self {
        Carts {
            store,
            products,
            max_lines,
        }
    }

    /// The cart with every line's current name, price and stock, from one batched call.
    /// Lines whose product has since been removed from the catalogue are dropped.
    pub async fn get(&self, user_id: i64) -> AppResult<PricedCart> {
        let lines = self.store.lines(user_id).await?;
        if lines.is_empty() {
            return Ok(PricedCart {
                lines: Vec::new(),
                total_price_cents: 0,
                total_count: 0,
            });
        }
        let ids: Vec<i64> = lines.iter().map(|(id, _)| *id).collect();
        let products = self
            .products
            .clone()
            .batch_get_products(BatchGetProductsRequest { ids })
            .await?
            .into_inner()
            .products;
        let mut priced = Vec::with_capacity(lines.len());
        let mut gone = Vec::new();
        for (product_id, quantity) in lines {
            match products.iter().find(|product| product.id == product_id) {
                Some(product) => priced.push(PricedLine {
                    product: product.clone(),
                    quantity,
                }),
                None => gone.push(product_id),
            }
        }
        if !gone.is_empty() {
            self.store.remove(user_id, &gone).await?;
        }
        let total_price_cents = priced
            .iter()
            .map(|line| line.product.price_cents * line.quantity)
            .sum();
        let total_count = priced.iter().map(|line| line.quantity).sum();
        Ok(PricedCart {
            lines: priced,
            total_price_cents,
            total_count,
        })
    }

    /// Adds to a line (summing with what is there); the product must exist (3000) and the line
    /// stay within QUANTITY_MAX units (4002), the cart within its line limit (4002).
    pub async fn add(&self, user_id: i64, product_id: i64, quantity: i64) -> AppResult<()> {
        check_quantity(quantity)?;
        self.products
            .clone()
            .get_product(GetProductRequest { id: product_id })
            .await?;
        match self
            .store
            .add(user_id, product_id, quantity, QUANTITY_MAX, self.max_lines)
            .await?
        {
            AddOutcome::Added { .. } => Ok(()),
            AddOutcome::OverLineLimit => Err(AppError::new(
                ErrorCode::CartLimit,
                format!("a cart line holds at most {QUANTITY_MAX} units"),
            )),
            AddOutcome::TooManyLines => Err(AppError::new(
                ErrorCode::CartLimit,
                format!("a cart holds at most {} products", self.max_lines),
            )),
        }
    }

    /// Sets a line's quantity; 4001 when the line is not in the cart.
    pub async fn update(&self, user_id: i64, product_id: i64, quantity: i64) -> AppResult<()> {
        check_quantity(quantity)?;
        if self
            .store
            .set_existing(user_id, product_id, quantity)
            .await?
        {
            Ok(())
        } else {
            Err(AppError::of(ErrorCode::CartItemNotFound))
        }
    }

    /// 4001 when the line is not in the cart.
    pub async fn remove(&self, user_id: i64, product_id: i64) -> AppResult<()> {
        if self.store.remove(user_id, &[product_id]).await? == 1 {
            Ok(())
        } else {
            Err(AppError::of(ErrorCode::CartItemNotFound))
        }
    }

    pub async fn clear(&self, user_id: i64) -> AppResult<()> {
        self.store.clear(user_id).await
    }

    /// Removes whatever of these products is in the cart (after an order); never fails for
    /// absent lines.
    pub async fn remove_products(&self, user_id: i64, product_ids: &[i64]) -> AppResult<()> {
        self.store.remove(user_id, product_ids).await?;
        Ok(())
    }

    /// [`Carts::remove_products`] for several carts at once (the orders saved together).
    pub async fn remove_products_of_carts(&self, carts: &[(i64, Vec<i64>)]) -> AppResult<()> {
        if carts.len() > CARTS_PER_REMOVAL_MAX {
            return Err(AppError::invalid(format!(
                "at most {CARTS_PER_REMOVAL_MAX} carts at once"
            )));
        }
        self.store.remove_from_each(carts).await
    }
}
