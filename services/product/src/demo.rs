//! The demo catalogue `make up` loads into an empty shop, so a newcomer sees products.

use serde::Deserialize;
use sqlx::PgPool;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DemoProduct {
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
    category: String,
    images: Vec<String>,
    attributes: serde_json::Value,
}

const CATALOGUE: &str = include_str!("../demo/catalogue.json");

/// Loads the demo products when the catalogue is empty; answers how many it added. Replicas
/// starting together take turns on an advisory lock, so the catalogue is loaded once.
pub async fn load_if_empty(
    pool: &PgPool,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let products: Vec<DemoProduct> = serde_json::from_str(CATALOGUE)?;
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('letsgo.product.demo'))")
        .execute(&mut *transaction)
        .await?;
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM products)")
        .fetch_one(&mut *transaction)
        .await?;
    if !empty {
        return Ok(0);
    }
    for product in &products {
        sqlx::query(
            "INSERT INTO products (name, description, price_cents, stock, category, images, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&product.name)
        .bind(&product.description)
        .bind(product.price_cents)
        .bind(product.stock)
        .bind(&product.category)
        .bind(&product.images)
        .bind(sqlx::types::Json(&product.attributes))
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(products.len())
}
