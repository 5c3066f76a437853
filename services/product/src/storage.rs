//! The catalogue's tables. All SQL of the service is here.

use std::collections::BTreeMap;
use std::time::Duration;
use tracing::instrument;

use chrono::{DateTime, Utc};
use letsgo_platform::errors::{AppError, ErrorCode};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};

/// A product as stored (and as cached).
#[derive(Debug, Clone, PartialEq, FromRow, Serialize, Deserialize)]
pub struct ProductRecord {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category: String,
    pub images: Vec<String>,
    /// The JSON object, as text.
    pub attributes: String,
    pub sales: i64,
    pub rating_sum: i64,
    pub rating_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// False once an admin took it off sale. Entries cached before unlisting existed are of
    /// listed products.
    #[serde(default = "listed_by_default")]
    pub listed: bool,
}

fn listed_by_default() -> bool {
    true
}

const PRODUCT_COLUMNS: &str = "id, name, description, price_cents, stock, category, images, \
     attributes::text AS attributes, sales, rating_sum, rating_count, created_at, updated_at, listed";

#[derive(Debug, Clone, FromRow)]
pub struct ReviewRecord {
    pub id: i64,
    pub product_id: i64,
    pub user_id: i64,
    pub rating: i32,
    pub comment: String,
    pub created_at: DateTime<Utc>,
}

pub struct NewProduct {
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub stock: i64,
    pub category: String,
    pub images: Vec<String>,
    pub attributes: serde_json::Value,
}

#[derive(Default)]
pub struct ProductChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub category: Option<String>,
    pub images: Option<Vec<String>>,
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Created,
    Price,
    Sales,
}

#[derive(Debug, Clone, Copy)]
pub enum StockChange {
    SetTo(i64),
    Delta(i64),
}

#[derive(Clone)]
pub struct CatalogueStore {
    pool: PgPool,
}

/// Merges repeated products of a basket and orders lines by product id, so concurrent
/// reservations lock rows in one order and never deadlock.
pub fn merge_lines(lines: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (product_id, quantity) in lines {
        *merged.entry(*product_id).or_default() += quantity;
    }
    merged.into_iter().collect()
}

/// The one product every ask orders, when there is one: each ask has lines, all of them of
/// that product and for a positive quantity.
fn sole_product(asks: &[(i64, Vec<(i64, i64)>)]) -> Option<i64> {
    let first = asks.first()?.1.first()?.0;
    let sole = asks.iter().all(|(_, lines)| {
        !lines.is_empty()
            && lines
                .iter()
                .all(|(product_id, quantity)| *product_id == first && *quantity > 0)
    });
    sole.then_some(first)
}

/// One line of a reservation, priced as it was taken.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ReservedLine {
    pub product_id: i64,
    pub quantity: i64,
    pub name: String,
    pub price_cents: i64,
    pub image: String,
}

/// What [`CatalogueStore::reserve`] holds for an order.
pub struct Reservation {
    pub lines: Vec<ReservedLine>,
    /// False when the reservation existed already (a retry): no stock moved.
    pub changed_stock: bool,
}

/// The lines of a batch of reservations, column by column, for one `unnest` insert.
#[derive(Default)]
struct LineRows {
    order_ids: Vec<i64>,
    product_ids: Vec<i64>,
    quantities: Vec<i64>,
    names: Vec<String>,
    prices: Vec<i64>,
    images: Vec<String>,
}

impl LineRows {
    fn push(
        &mut self,
        order_id: i64,
        product_id: i64,
        quantity: i64,
        name: &str,
        price: i64,
        image: &str,
    ) {
        self.order_ids.push(order_id);
        self.product_ids.push(product_id);
        self.quantities.push(quantity);
        self.names.push(name.to_owned());
        self.prices.push(price);
        self.images.push(image.to_owned());
    }
}

/// Locks the products an order's reservation holds, in id order: the order every transaction
/// here takes product locks in (reservations update their lines sorted), so two transactions
/// over the same products wait for each other instead of deadlocking. Without it, a release or
/// sale updating several products in join order deadlocked with another (found under load:
/// PostgreSQL broke the cycle after its one-second deadlock timeout).
async fn lock_products_of(
    transaction: &mut sqlx::Transaction<'_, Postgres>,
    order_ids: &[i64],
) -> Result<(), AppError> {
    sqlx::query(
        "SELECT p.id FROM products p JOIN stock_reservation_lines l ON l.product_id = p.id \
         WHERE l.order_id = ANY($1) ORDER BY p.id FOR NO KEY UPDATE OF p",
    )
    .bind(order_ids)
    .execute(&mut **transaction)
    .await?;
    Ok(())
}

/// Locks the reservations of `order_ids` that are still `reserved`, in order id order (so two
/// batches over the same orders wait for each other instead of deadlocking), and answers them
/// with whether each is still within its hold.
async fn lock_reserved(
    transaction: &mut sqlx::Transaction<'_, Postgres>,
    order_ids: &[i64],
) -> Result<Vec<(i64, bool)>, AppError> {
    Ok(sqlx::query_as(
        "SELECT order_id, (expires_at IS NULL OR expires_at > now()) AS live \
         FROM stock_reservations WHERE order_id = ANY($1) AND state = 'reserved' \
         ORDER BY order_id FOR UPDATE",
    )
    .bind(order_ids)
    .fetch_all(&mut **transaction)
    .await?)
}

/// Marks the locked `reserved` reservations of `order_ids` released and gives their stock back;
/// answers the products whose stock changed.
async fn release_locked(
    transaction: &mut sqlx::Transaction<'_, Postgres>,
    order_ids: &[i64],
) -> Result<Vec<i64>, AppError> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(
        "UPDATE stock_reservations SET state = 'released', updated_at = now() WHERE order_id = ANY($1)",
    )
    .bind(order_ids)
    .execute(&mut **transaction)
    .await?;
    give_back(transaction, order_ids).await
}

/// Puts the units that `order_ids` reserved back in stock (their reservations are released in
/// this transaction); answers the products whose stock changed.
async fn give_back(
    transaction: &mut sqlx::Transaction<'_, Postgres>,
    order_ids: &[i64],
) -> Result<Vec<i64>, AppError> {
    lock_products_of(transaction, order_ids).await?;
    Ok(sqlx::query_scalar(
        "UPDATE products p SET stock = p.stock + l.quantity, updated_at = now() \
         FROM (SELECT product_id, sum(quantity)::bigint AS quantity FROM stock_reservation_lines \
               WHERE order_id = ANY($1) GROUP BY product_id) l \
         WHERE l.product_id = p.id RETURNING p.id",
    )
    .bind(order_ids)
    .fetch_all(&mut **transaction)
    .await?)
}

impl CatalogueStore {
    pub fn new(pool: PgPool) -> Self {
        CatalogueStore { pool }
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "insert"))]
    pub async fn insert(&self, product: NewProduct) -> Result<i64, AppError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO products (name, description, price_cents, stock, category, images, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(product.name)
        .bind(product.description)
        .bind(product.price_cents)
        .bind(product.stock)
        .bind(product.category)
        .bind(product.images)
        .bind(sqlx::types::Json(product.attributes))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Answers false when there is no such product.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "update"))]
    pub async fn update(&self, id: i64, change: ProductChange) -> Result<bool, AppError> {
        let updated = sqlx::query(
            "UPDATE products SET name = COALESCE($2, name), description = COALESCE($3, description), \
             price_cents = COALESCE($4, price_cents), category = COALESCE($5, category), \
             images = COALESCE($6, images), attributes = COALESCE($7, attributes), updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(change.name)
        .bind(change.description)
        .bind(change.price_cents)
        .bind(change.category)
        .bind(change.images)
        .bind(change.attributes.map(sqlx::types::Json))
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// The product, listed or not.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "get"))]
    pub async fn get(&self, id: i64) -> Result<Option<ProductRecord>, AppError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The listed products among `ids`.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "batch_get"))]
    pub async fn batch_get(&self, ids: &[i64]) -> Result<Vec<ProductRecord>, AppError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ANY($1) AND listed ORDER BY id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes a product off sale or puts it back; answers false when there is no such product.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "set_listed"))]
    pub async fn set_listed(&self, id: i64, listed: bool) -> Result<bool, AppError> {
        let updated =
            sqlx::query("UPDATE products SET listed = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(listed)
                .execute(&self.pool)
                .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Listed products (and unlisted ones too with `include_unlisted`).
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "list"))]
    pub async fn list(
        &self,
        category: Option<&str>,
        sort: SortKey,
        ascending: bool,
        include_unlisted: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<ProductRecord>), AppError> {
        let direction = if ascending { "ASC" } else { "DESC" };
        let order = match sort {
            SortKey::Created => format!("created_at {direction}, id {direction}"),
            SortKey::Price => format!("price_cents {direction}, id {direction}"),
            SortKey::Sales => format!("sales {direction}, id {direction}"),
        };
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM products WHERE ($1::text IS NULL OR category = $1) AND (listed OR $2)",
        )
        .bind(category)
        .bind(include_unlisted)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query_as(&format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE ($1::text IS NULL OR category = $1) \
             AND (listed OR $4) ORDER BY {order} LIMIT $2 OFFSET $3"
        ))
        .bind(category)
        .bind(limit)
        .bind(offset)
        .bind(include_unlisted)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, rows))
    }

    /// Products whose name, description or category hold every word, case-insensitively:
    /// listed ones (and unlisted ones too with `include_unlisted`). Ranked: more words in the
    /// name first, then how alike name and keyword are, then sales.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "search"))]
    pub async fn search(
        &self,
        words: &[String],
        keyword: &str,
        include_unlisted: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<ProductRecord>), AppError> {
        let patterns: Vec<String> = words.iter().map(|word| like_pattern(word)).collect();
        let filter = |builder: &mut QueryBuilder<'_, Postgres>| {
            builder.push(" WHERE (listed OR ");
            builder.push_bind(include_unlisted).push(")");
            for pattern in &patterns {
                builder
                    .push(" AND (name || ' ' || description || ' ' || category) ILIKE ")
                    .push_bind(pattern.clone());
            }
        };
        let mut count = QueryBuilder::new("SELECT count(*) FROM products");
        filter(&mut count);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        let mut query = QueryBuilder::new(format!("SELECT {PRODUCT_COLUMNS} FROM products"));
        filter(&mut query);
        query.push(" ORDER BY (0");
        for pattern in &patterns {
            query
                .push(" + (name ILIKE ")
                .push_bind(pattern.clone())
                .push(")::int");
        }
        query
            .push(") DESC, similarity(name, ")
            .push_bind(keyword.to_owned())
            .push(") DESC, sales DESC, id DESC LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = query.build_query_as().fetch_all(&self.pool).await?;
        Ok((total, rows))
    }

    /// Answers the new stock; 3000 for an unknown product, 3001 when a delta would go below 0.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "change_stock"))]
    pub async fn change_stock(&self, id: i64, change: StockChange) -> Result<i64, AppError> {
        let updated: Option<i64> = match change {
            StockChange::SetTo(stock) => sqlx::query_scalar(
                "UPDATE products SET stock = $2, updated_at = now() WHERE id = $1 RETURNING stock",
            )
            .bind(id)
            .bind(stock)
            .fetch_optional(&self.pool)
            .await?,
            StockChange::Delta(delta) => {
                sqlx::query_scalar(
                    "UPDATE products SET stock = stock + $2, updated_at = now() \
                     WHERE id = $1 AND stock + $2 BETWEEN 0 AND $3 RETURNING stock",
                )
                .bind(id)
                .bind(delta)
                .bind(letsgo_platform::limits::PRODUCT_STOCK_MAX)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        match (updated, change) {
            (Some(stock), _) => Ok(stock),
            (None, change) => match self.get(id).await? {
                None => Err(AppError::of(ErrorCode::ProductNotFound)),
                // The request was well formed; the product's own stock is what refuses it.
                Some(_) if matches!(change, StockChange::Delta(delta) if delta > 0) => {
                    Err(AppError::new(
                        ErrorCode::InvalidProduct,
                        format!(
                            "stock cannot exceed {}",
                            letsgo_platform::limits::PRODUCT_STOCK_MAX
                        ),
                    ))
                }
                Some(_) => Err(AppError::new(
                    ErrorCode::OutOfStock,
                    "stock cannot go below zero",
                )),
            },
        }
    }

    /// Takes a whole basket out of stock for `order_id`, or nothing, and answers what it holds,
    /// priced as it was reserved. A reservation that exists already (a retry) is answered as it
    /// stands, without reserving again.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "reserve"))]
    pub async fn reserve(
        &self,
        order_id: i64,
        lines: &[(i64, i64)],
        hold: Duration,
    ) -> Result<Reservation, AppError> {
        let lines = merge_lines(lines);
        let mut transaction = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO stock_reservations (order_id, state, expires_at) \
             VALUES ($1, 'reserved', now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING",
        )
        .bind(order_id)
        .bind(hold.as_secs_f64())
        .execute(&mut *transaction)
        .await?;
        if created.rows_affected() == 0 {
            let (state, expired): (String, bool) = sqlx::query_as(
                "SELECT state, COALESCE(expires_at <= now(), false) FROM stock_reservations \
                 WHERE order_id = $1",
            )
            .bind(order_id)
            .fetch_one(&mut *transaction)
            .await?;
            if state == "released" || (state == "reserved" && expired) {
                return Err(released_error());
            }
            let held: Vec<ReservedLine> = sqlx::query_as(
                "SELECT l.product_id, l.quantity, COALESCE(l.name, p.name) AS name, \
                 COALESCE(l.price_cents, p.price_cents) AS price_cents, \
                 COALESCE(l.image, p.images[1], '') AS image \
                 FROM stock_reservation_lines l JOIN products p ON p.id = l.product_id \
                 WHERE l.order_id = $1 ORDER BY l.product_id",
            )
            .bind(order_id)
            .fetch_all(&mut *transaction)
            .await?;
            return Ok(Reservation {
                lines: held,
                changed_stock: false,
            });
        }
        let mut held = Vec::with_capacity(lines.len());
        for (product_id, quantity) in &lines {
            // The conditional update is the guard: it only takes what is there, of a product on
            // sale. The price read here is the one the order charges.
            let taken: Option<(String, i64, String)> = sqlx::query_as(
                "UPDATE products SET stock = stock - $2, updated_at = now() \
                 WHERE id = $1 AND listed AND stock >= $2 \
                 RETURNING name, price_cents, COALESCE(images[1], '')",
            )
            .bind(product_id)
            .bind(quantity)
            .fetch_optional(&mut *transaction)
            .await?;
            let Some((name, price_cents, image)) = taken else {
                let listed: Option<bool> =
                    sqlx::query_scalar("SELECT listed FROM products WHERE id = $1")
                        .bind(product_id)
                        .fetch_optional(&mut *transaction)
                        .await?;
                // Every line reserved so far goes back; the refusal is recorded, so the order
                // service need not release an order that took nothing.
                transaction.rollback().await?;
                self.record_refused(order_id).await?;
                return Err(match listed {
                    Some(true) => AppError::new(
                        ErrorCode::OutOfStock,
                        format!("product {product_id} is out of stock"),
                    ),
                    Some(false) => AppError::new(
                        ErrorCode::ProductNotFound,
                        format!("product {product_id} is no longer sold"),
                    ),
                    None => AppError::new(
                        ErrorCode::ProductNotFound,
                        format!("product {product_id} not found"),
                    ),
                });
            };
            sqlx::query(
                "INSERT INTO stock_reservation_lines (order_id, product_id, quantity, name, price_cents, image) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(order_id)
            .bind(product_id)
            .bind(quantity)
            .bind(&name)
            .bind(price_cents)
            .bind(&image)
            .execute(&mut *transaction)
            .await?;
            held.push(ReservedLine {
                product_id: *product_id,
                quantity: *quantity,
                name,
                price_cents,
                image,
            });
        }
        transaction.commit().await?;
        Ok(Reservation {
            lines: held,
            changed_stock: true,
        })
    }

    /// Takes the stock of many orders' reservations in one transaction, as a hot product's
    /// buyers arrive together: the products are locked once (in id order, like every
    /// transaction here), each order is decided in arrival order against what is left, and the
    /// whole batch commits once. Answers each order's outcome in the asks' order: its lines,
    /// or why it was refused (refused orders are recorded released, so a late retry of theirs
    /// takes nothing). An order that has a reservation already (a retry) is answered `None`:
    /// the caller settles it with [`CatalogueStore::reserve`]. An error fails the whole batch
    /// and nothing of it is kept.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "reserve_batch", orders = asks.len()))]
    pub async fn reserve_batch(
        &self,
        asks: &[(i64, Vec<(i64, i64)>)],
        hold: Duration,
    ) -> Result<Vec<Option<Result<Reservation, AppError>>>, AppError> {
        let asks: Vec<(i64, Vec<(i64, i64)>)> = asks
            .iter()
            .map(|(order_id, lines)| (*order_id, merge_lines(lines)))
            .collect();
        let order_ids: Vec<i64> = asks.iter().map(|(order_id, _)| *order_id).collect();
        let mut product_ids: Vec<i64> = asks
            .iter()
            .flat_map(|(_, lines)| lines.iter().map(|(product_id, _)| *product_id))
            .collect();
        product_ids.sort_unstable();
        product_ids.dedup();

        let mut transaction = self.pool.begin().await?;
        let known: Vec<i64> =
            sqlx::query_scalar("SELECT order_id FROM stock_reservations WHERE order_id = ANY($1)")
                .bind(&order_ids)
                .fetch_all(&mut *transaction)
                .await?;
        let products: Vec<(i64, i64, bool, String, i64, String)> = sqlx::query_as(
            "SELECT id, stock, listed, name, price_cents, COALESCE(images[1], '') FROM products \
             WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&product_ids)
        .fetch_all(&mut *transaction)
        .await?;
        let mut left: BTreeMap<i64, (i64, bool, String, i64, String)> = products
            .into_iter()
            .map(|(id, stock, listed, name, price, image)| {
                (id, (stock, listed, name, price, image))
            })
            .collect();

        let mut outcomes = Vec::with_capacity(asks.len());
        let (mut reserved_ids, mut released_ids) = (Vec::new(), Vec::new());
        let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
        let mut rows = LineRows::default();
        let mut seen = std::collections::HashSet::new();
        for (order_id, lines) in &asks {
            // A retry of an order (or the same order twice in one batch) is settled alone.
            if known.contains(order_id) || !seen.insert(*order_id) {
                outcomes.push(None);
                continue;
            }
            let refusal =
                lines
                    .iter()
                    .find_map(|(product_id, quantity)| match left.get(product_id) {
                        None => Some(AppError::new(
                            ErrorCode::ProductNotFound,
                            format!("product {product_id} not found"),
                        )),
                        Some((_, false, ..)) => Some(AppError::new(
                            ErrorCode::ProductNotFound,
                            format!("product {product_id} is no longer sold"),
                        )),
                        Some((stock, true, ..)) if stock < quantity => Some(AppError::new(
                            ErrorCode::OutOfStock,
                            format!("product {product_id} is out of stock"),
                        )),
                        Some(_) => None,
                    });
            if let Some(refusal) = refusal {
                released_ids.push(*order_id);
                outcomes.push(Some(Err(refusal)));
                continue;
            }
            let mut held = Vec::with_capacity(lines.len());
            for (product_id, quantity) in lines {
                let (stock, _, name, price_cents, image) =
                    left.get_mut(product_id).expect("checked above");
                *stock -= quantity;
                *taken.entry(*product_id).or_default() += quantity;
                rows.push(*order_id, *product_id, *quantity, name, *price_cents, image);
                held.push(ReservedLine {
                    product_id: *product_id,
                    quantity: *quantity,
                    name: name.clone(),
                    price_cents: *price_cents,
                    image: image.clone(),
                });
            }
            reserved_ids.push(*order_id);
            outcomes.push(Some(Ok(Reservation {
                lines: held,
                changed_stock: true,
            })));
        }

        // The batch's writes in one statement, so the product's row stays locked for one round
        // trip and the commit. A plain insert: an order that got a reservation since the check
        // above (a retry on another instance) fails the batch rather than taking stock twice.
        // The lines' foreign key to their reservation is checked at the statement's end, when
        // the reservations' rows are there.
        let (ids, quantities): (Vec<i64>, Vec<i64>) = taken.into_iter().unzip();
        sqlx::query(
            "WITH reservations AS ( \
               INSERT INTO stock_reservations (order_id, state, expires_at) \
               SELECT id, 'reserved', now() + make_interval(secs => $2) FROM unnest($1::bigint[]) AS r(id) \
               UNION ALL SELECT id, 'released', NULL FROM unnest($3::bigint[]) AS r(id)), \
             stock AS ( \
               UPDATE products p SET stock = p.stock - t.quantity, updated_at = now() \
               FROM unnest($4::bigint[], $5::bigint[]) AS t(id, quantity) WHERE p.id = t.id) \
             INSERT INTO stock_reservation_lines (order_id, product_id, quantity, name, price_cents, image) \
             SELECT * FROM unnest($6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::text[])",
        )
        .bind(&reserved_ids)
        .bind(hold.as_secs_f64())
        .bind(&released_ids)
        .bind(&ids)
        .bind(&quantities)
        .bind(&rows.order_ids)
        .bind(&rows.product_ids)
        .bind(&rows.quantities)
        .bind(&rows.names)
        .bind(&rows.prices)
        .bind(&rows.images)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(outcomes)
    }

    /// Reserves every ask of a batch in one statement when they all order one product and its
    /// stock covers them all: a sale's batch. The product's row is updated only if the stock
    /// covers the batch's total, and the reservations and their lines are written with it, in
    /// one round trip and one commit (the general path, [`CatalogueStore::reserve_batch`],
    /// takes five). Answers `None`, having changed nothing, when the asks are not all of one
    /// product, when the product is not on sale or lacks the stock for all of them, or when an
    /// order has a reservation already (a retry, refused by the reservations' key): the caller
    /// then decides them one by one on the general path.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "reserve_all", orders = asks.len()))]
    pub async fn reserve_all(
        &self,
        asks: &[(i64, Vec<(i64, i64)>)],
        hold: Duration,
    ) -> Result<Option<Vec<Reservation>>, AppError> {
        let Some(product_id) = sole_product(asks) else {
            return Ok(None);
        };
        // Each order's quantity, in the asks' order; too large a sum is left to the general path.
        let ordered: Option<Vec<i64>> = asks
            .iter()
            .map(|(_, lines)| {
                lines
                    .iter()
                    .try_fold(0i64, |sum, (_, quantity)| sum.checked_add(*quantity))
            })
            .collect();
        let Some(ordered) = ordered else {
            return Ok(None);
        };
        let Some(total) = ordered
            .iter()
            .try_fold(0i64, |total, quantity| total.checked_add(*quantity))
        else {
            return Ok(None);
        };
        // In order id order, as releases write theirs: inserts racing on the same orders meet
        // them in one order.
        let mut rows: Vec<(i64, i64)> = asks
            .iter()
            .map(|(order_id, _)| *order_id)
            .zip(ordered.iter().copied())
            .collect();
        rows.sort_unstable();
        let (order_ids, quantities): (Vec<i64>, Vec<i64>) = rows.into_iter().unzip();
        // The update's condition is the guard: the row is changed only when it covers the
        // total, re-checked on its newest version when another transaction changed it first.
        // The inserts take their rows from the update's, so nothing is written without it.
        let taken: Result<Option<(String, i64, String)>, sqlx::Error> = sqlx::query_as(
            "WITH stock AS ( \
               UPDATE products SET stock = stock - $2, updated_at = now() \
               WHERE id = $1 AND listed AND stock >= $2 \
               RETURNING name, price_cents, COALESCE(images[1], '') AS image), \
             reservations AS ( \
               INSERT INTO stock_reservations (order_id, state, expires_at) \
               SELECT r.id, 'reserved', now() + make_interval(secs => $4) \
               FROM unnest($3::bigint[]) AS r(id), stock), \
             lines AS ( \
               INSERT INTO stock_reservation_lines (order_id, product_id, quantity, name, price_cents, image) \
               SELECT r.id, $1, r.quantity, s.name, s.price_cents, s.image \
               FROM unnest($3::bigint[], $5::bigint[]) AS r(id, quantity), stock s) \
             SELECT name, price_cents, image FROM stock",
        )
        .bind(product_id)
        .bind(total)
        .bind(&order_ids)
        .bind(hold.as_secs_f64())
        .bind(&quantities)
        .fetch_optional(&self.pool)
        .await;
        let (name, price_cents, image) = match taken {
            Ok(Some(taken)) => taken,
            Ok(None) => return Ok(None),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        Ok(Some(
            ordered
                .into_iter()
                .map(|quantity| Reservation {
                    lines: vec![ReservedLine {
                        product_id,
                        quantity,
                        name: name.clone(),
                        price_cents,
                        image: image.clone(),
                    }],
                    changed_stock: true,
                })
                .collect(),
        ))
    }

    /// Records `order_id` released after its reservation was refused, so that a late retry
    /// of it takes nothing; without waiting for the disk, as a lost record only lets such a
    /// retry hold stock until its hold expires.
    pub async fn record_refused(&self, order_id: i64) -> Result<(), AppError> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit TO off")
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO stock_reservations (order_id, state) VALUES ($1, 'released') ON CONFLICT DO NOTHING",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Keeps the reservations of `order_ids` for good (their orders are saved), in one
    /// transaction, and answers the orders whose stock is no longer held: released, never
    /// reserved, or expired. An expired reservation the sweeper has not reached yet is released
    /// here, since its stock may be sold again; a sold one counts as kept.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "commit_reservations", orders = order_ids.len()))]
    pub async fn commit_reservations(&self, order_ids: &[i64]) -> Result<Commits, AppError> {
        let mut transaction = self.pool.begin().await?;
        let (mut live, mut expired) = (Vec::new(), Vec::new());
        for (order_id, within_hold) in lock_reserved(&mut transaction, order_ids).await? {
            if within_hold {
                live.push(order_id);
            } else {
                expired.push(order_id);
            }
        }
        if !live.is_empty() {
            sqlx::query(
                "UPDATE stock_reservations SET expires_at = NULL, updated_at = now() \
                 WHERE order_id = ANY($1)",
            )
            .bind(&live)
            .execute(&mut *transaction)
            .await?;
        }
        let touched = release_locked(&mut transaction, &expired).await?;
        // Whatever was not reserved: sold (kept), released, or unknown.
        let sold: Vec<i64> = sqlx::query_scalar(
            "SELECT order_id FROM stock_reservations WHERE order_id = ANY($1) AND state = 'sold'",
        )
        .bind(order_ids)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        let lost = order_ids
            .iter()
            .copied()
            .filter(|order_id| !live.contains(order_id) && !sold.contains(order_id))
            .collect();
        Ok(Commits { lost, touched })
    }

    /// Reservations past their expiry, oldest first: for the sweeper to release.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "expired_reservations"))]
    pub async fn expired_reservations(&self, limit: i64) -> Result<Vec<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT order_id FROM stock_reservations WHERE state = 'reserved' \
             AND expires_at <= now() ORDER BY expires_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Releases `order_id`'s reservation if it has expired meanwhile (a commit may have won).
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "release_expired"))]
    pub async fn release_expired(&self, order_id: i64) -> Result<Vec<i64>, AppError> {
        let mut transaction = self.pool.begin().await?;
        let released = sqlx::query(
            "UPDATE stock_reservations SET state = 'released', updated_at = now() \
             WHERE order_id = $1 AND state = 'reserved' AND expires_at <= now()",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        if released.rows_affected() == 0 {
            transaction.commit().await?;
            return Ok(Vec::new());
        }
        let touched = give_back(&mut transaction, &[order_id]).await?;
        transaction.commit().await?;
        Ok(touched)
    }

    /// Gives back what each of `order_ids` holds, once, in one transaction; answers the
    /// products whose stock changed. Releasing an unknown order records it as released, so a
    /// reservation that arrives late (a retry racing a cancel) cannot take stock.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "release", orders = order_ids.len()))]
    pub async fn release(&self, order_ids: &[i64]) -> Result<Vec<i64>, AppError> {
        let mut order_ids = order_ids.to_vec();
        order_ids.sort_unstable();
        order_ids.dedup();
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO stock_reservations (order_id, state) \
             SELECT order_id, 'released' FROM unnest($1::bigint[]) AS o(order_id) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&order_ids)
        .execute(&mut *transaction)
        .await?;
        let held: Vec<i64> = lock_reserved(&mut transaction, &order_ids)
            .await?
            .into_iter()
            .map(|(order_id, _)| order_id)
            .collect();
        let touched = release_locked(&mut transaction, &held).await?;
        transaction.commit().await?;
        Ok(touched)
    }

    /// Counts the units of `order_ids` as sold, each order once, in one transaction; answers
    /// the products whose sales changed. Orders whose reservation is not held (released, or
    /// sold already) change nothing.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "record_sales", orders = order_ids.len()))]
    pub async fn record_sales(&self, order_ids: &[i64]) -> Result<Vec<i64>, AppError> {
        let mut transaction = self.pool.begin().await?;
        let sold: Vec<i64> = lock_reserved(&mut transaction, order_ids)
            .await?
            .into_iter()
            .map(|(order_id, _)| order_id)
            .collect();
        if sold.is_empty() {
            transaction.commit().await?;
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE stock_reservations SET state = 'sold', updated_at = now() WHERE order_id = ANY($1)",
        )
        .bind(&sold)
        .execute(&mut *transaction)
        .await?;
        lock_products_of(&mut transaction, &sold).await?;
        let touched: Vec<i64> = sqlx::query_scalar(
            "UPDATE products p SET sales = p.sales + l.quantity, updated_at = now() \
             FROM (SELECT product_id, sum(quantity)::bigint AS quantity FROM stock_reservation_lines \
                   WHERE order_id = ANY($1) GROUP BY product_id) l \
             WHERE l.product_id = p.id RETURNING p.id",
        )
        .bind(&sold)
        .fetch_all(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(touched)
    }

    /// Adds or replaces the user's review of a listed product and refreshes the product's
    /// rating, in one transaction that holds the product row, so concurrent reviews never lose
    /// a count.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "upsert_review"))]
    pub async fn upsert_review(
        &self,
        product_id: i64,
        user_id: i64,
        rating: i32,
        comment: &str,
    ) -> Result<i64, AppError> {
        let mut transaction = self.pool.begin().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM products WHERE id = $1 AND listed FOR UPDATE")
                .bind(product_id)
                .fetch_optional(&mut *transaction)
                .await?;
        if exists.is_none() {
            return Err(AppError::of(ErrorCode::ProductNotFound));
        }
        let review_id: i64 = sqlx::query_scalar(
            "INSERT INTO reviews (product_id, user_id, rating, comment) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (product_id, user_id) DO UPDATE SET rating = EXCLUDED.rating, \
             comment = EXCLUDED.comment, created_at = now() RETURNING id",
        )
        .bind(product_id)
        .bind(user_id)
        .bind(rating)
        .bind(comment)
        .fetch_one(&mut *transaction)
        .await?;
        sqlx::query(
            "UPDATE products SET rating_sum = r.total, rating_count = r.count \
             FROM (SELECT COALESCE(sum(rating), 0) AS total, count(*) AS count FROM reviews WHERE product_id = $1) r \
             WHERE id = $1",
        )
        .bind(product_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(review_id)
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "list_reviews"))]
    pub async fn list_reviews(
        &self,
        product_id: i64,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<ReviewRecord>), AppError> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM reviews WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query_as(
            "SELECT id, product_id, user_id, rating, comment, created_at FROM reviews \
             WHERE product_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(product_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, rows))
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "is_empty"))]
    pub async fn is_empty(&self) -> Result<bool, AppError> {
        Ok(
            !sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM products)")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// `%word%` for ILIKE, with the word's own `%`, `_` and `\` matched literally.
pub fn like_pattern(word: &str) -> String {
    let mut pattern = String::with_capacity(word.len() + 2);
    pattern.push('%');
    for c in word.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// What committing a batch of reservations found.
#[derive(Debug, Default)]
pub struct Commits {
    /// The orders whose stock is no longer held: their reservation expired, was released or
    /// never existed.
    pub lost: Vec<i64>,
    /// Products whose stock came back, from expired reservations released just now.
    pub touched: Vec<i64>,
}

pub fn released_error() -> AppError {
    AppError::new(
        ErrorCode::BadOrderStatus,
        "this order's reservation was released or expired",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_wildcards_literally() {
        assert_eq!(like_pattern("50%_off"), "%50\\%\\_off%");
    }

    #[test]
    fn basket_lines_merge_and_sort() {
        assert_eq!(merge_lines(&[(3, 1), (1, 2), (3, 4)]), vec![(1, 2), (3, 5)]);
    }
}
