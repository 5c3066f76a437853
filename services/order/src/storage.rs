//! The `orders` and `order_items` tables, and the events written beside them. All SQL of the
//! service is here.

use chrono::{DateTime, Utc};
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::events::topics;
use letsgo_platform::events::{self, Event, OutboxRow};
use serde_json::json;
use sqlx::{FromRow, PgPool};
use tracing::instrument;
use uuid::Uuid;

use crate::rules::OrderStatus;

#[derive(Debug, Clone, FromRow)]
pub struct OrderRow {
    pub id: i64,
    pub order_no: String,
    pub user_id: i64,
    pub total_amount_cents: i64,
    pub status: i16,
    pub address: String,
    pub phone: String,
    pub remark: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    /// Empty until shipped.
    pub carrier: String,
    pub tracking_no: String,
}

const ORDER_COLUMNS: &str = "id, order_no, user_id, total_amount_cents, status, address, phone, \
     remark, created_at, updated_at, paid_at, shipped_at, completed_at, refunded_at, carrier, \
     tracking_no";

#[derive(Debug, Clone, FromRow, serde::Deserialize)]
pub struct ItemRow {
    pub id: i64,
    pub order_id: i64,
    pub product_id: i64,
    pub name: String,
    pub price_cents: i64,
    pub quantity: i64,
    pub image: String,
}

pub struct OrderWithItems {
    pub order: OrderRow,
    pub items: Vec<ItemRow>,
}

/// An order with its items as one JSON array, read in one statement.
#[derive(FromRow)]
struct OrderWithItemsRow {
    #[sqlx(flatten)]
    order: OrderRow,
    items_json: String,
}

pub struct NewItem {
    pub product_id: i64,
    pub name: String,
    pub price_cents: i64,
    pub quantity: i64,
    pub image: String,
}

pub struct NewOrder {
    pub id: i64,
    pub order_no: String,
    pub user_id: i64,
    pub total_amount_cents: i64,
    pub address: String,
    pub phone: String,
    pub remark: String,
    pub items: Vec<NewItem>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    NotPending,
    NotFound,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PaidOutcome {
    Paid,
    /// The event was handled before: nothing changed.
    AlreadyHandled,
    /// The order was not pending (cancelled meanwhile, say): nothing changed.
    NotPending(Option<i16>),
    /// The order is pending but its reservation is not committed yet: nothing changed.
    AwaitsStockCommit,
}

/// What a `payment.succeeded` event tells the order service.
#[derive(Debug, Clone)]
pub struct PaymentSucceeded {
    pub event_id: Uuid,
    pub order_id: i64,
    pub payment_no: String,
}

/// Marks the order paid inside `transaction`, once per event, and writes `order.paid`. Only an
/// order whose stock is committed is marked paid, so the units sold are units held; one that
/// is not yet answers [`PaidOutcome::AwaitsStockCommit`], and the caller must roll back.
async fn mark_paid_in(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    group: &str,
    payment: &PaymentSucceeded,
) -> Result<PaidOutcome, AppError> {
    let order_id = payment.order_id;
    if !events::mark_handled(transaction, group, payment.event_id).await? {
        return Ok(PaidOutcome::AlreadyHandled);
    }
    let paid: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE orders SET status = 2, paid_at = now(), updated_at = now() \
         WHERE id = $1 AND status = 1 AND stock_committed RETURNING user_id, paid_at",
    )
    .bind(order_id)
    .fetch_optional(&mut **transaction)
    .await?;
    if let Some((user_id, paid_at)) = paid {
        let paid = event(
            topics::ORDER_PAID,
            json!({"orderId": order_id, "userId": user_id, "paymentNo": payment.payment_no, "paidAt": paid_at.timestamp()}),
        )?;
        events::enqueue(transaction, &order_id.to_string(), &paid).await?;
        return Ok(PaidOutcome::Paid);
    }
    let found: Option<(i16, bool)> =
        sqlx::query_as("SELECT status, stock_committed FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&mut **transaction)
            .await?;
    Ok(match found {
        Some((status, false)) if status == OrderStatus::Pending as i16 => {
            PaidOutcome::AwaitsStockCommit
        }
        found => PaidOutcome::NotPending(found.map(|(status, _)| status)),
    })
}

#[derive(Debug, PartialEq, Eq)]
pub enum ShipOutcome {
    Shipped,
    /// Shipped (or since completed) with this very carrier and tracking number: a repeat.
    AlreadyShipped,
    /// Shipped with another carrier or tracking number.
    ShippedOtherwise,
    /// Not paid: pending, or cancelled.
    NotPaid(OrderStatus),
    NotFound,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CompleteOutcome {
    Completed,
    NotShipped,
    NotFound,
}

/// Who completed an order, as `order.completed` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletedBy {
    /// The buyer confirmed receipt.
    Buyer,
    /// It was shipped long enough ago (ORDER_AUTO_COMPLETE_SECS).
    Timeout,
}

impl CompletedBy {
    fn as_str(self) -> &'static str {
        match self {
            CompletedBy::Buyer => "buyer",
            CompletedBy::Timeout => "timeout",
        }
    }
}

/// What the admins' list filters on; `None` is no filter.
pub struct OrderFilter {
    pub status: Option<i16>,
    /// Matched anywhere in the order number, address and phone, case-insensitively.
    pub text: Option<String>,
    /// Matched against the order id and the buyer's user id.
    pub number: Option<i64>,
}

/// `%text%` for ILIKE, with the text's own `%`, `_` and `\` matched literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn event(event_type: &str, data: serde_json::Value) -> Result<Event, AppError> {
    Event::new(event_type, data).map_err(AppError::system)
}

/// Orders ($1-$8: their columns as arrays, one status for all), their items ($9-$14, arrays of
/// a column each, the order's id first) and their events ($15-$19, outbox rows) in one
/// statement. The items' foreign key is checked at the statement's end, when the orders' rows
/// are there.
static INSERT_ORDERS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH new_orders AS ( \
           INSERT INTO orders (id, order_no, user_id, total_amount_cents, status, address, phone, remark, stock_committed) \
           SELECT o.id, o.order_no, o.user_id, o.total, $5, o.address, o.phone, o.remark, false \
           FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $6::text[], $7::text[], $8::text[]) \
             AS o (id, order_no, user_id, total, address, phone, remark)), \
         new_items AS ( \
           INSERT INTO order_items (order_id, product_id, name, price_cents, quantity, image) \
           SELECT * FROM UNNEST($9::bigint[], $10::bigint[], $11::text[], $12::bigint[], $13::bigint[], $14::text[])) \
         INSERT INTO {} SELECT * FROM UNNEST($15::uuid[], $16::text[], $17::text[], $18::jsonb[], $19::text[])",
        events::OUTBOX_COLUMNS
    )
});

/// Writes many events at once, bound by [`events::bind_outbox_rows`] as $1 to $5.
static INSERT_OUTBOX_ROWS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO {} SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::text[])",
        events::OUTBOX_COLUMNS
    )
});

/// An order ready to be written: the order and its `order.created` event, made in the
/// request's trace.
pub struct OrderToWrite {
    pub order: NewOrder,
    created: OutboxRow,
}

impl OrderToWrite {
    pub fn new(order: NewOrder) -> Result<OrderToWrite, AppError> {
        let created = event(
            topics::ORDER_CREATED,
            json!({
                "orderId": order.id,
                "orderNo": order.order_no,
                "userId": order.user_id,
                "totalAmountCents": order.total_amount_cents,
                "items": order.items.iter().map(|item| json!({
                    "productId": item.product_id, "quantity": item.quantity, "priceCents": item.price_cents,
                })).collect::<Vec<_>>(),
            }),
        )?;
        Ok(OrderToWrite {
            created: OutboxRow::new(order.id.to_string(), created),
            order,
        })
    }
}

/// How many ids one `nextval()` of `orders_id_seq` reserves: its increment (see the migration
/// `order_id_blocks`).
const ID_BLOCK: i64 = 50;

#[derive(Clone)]
pub struct OrderStore {
    pool: PgPool,
    /// The rest of this instance's block of ids: the next one to hand out, and the end.
    ids: std::sync::Arc<tokio::sync::Mutex<std::ops::Range<i64>>>,
}

impl OrderStore {
    pub fn new(pool: PgPool) -> Self {
        OrderStore {
            pool,
            ids: std::sync::Arc::new(tokio::sync::Mutex::new(0..0)),
        }
    }

    /// An order id taken before the order is written, so stock can be reserved under it. Ids
    /// come from this instance's block; the database is asked only for a new block.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "next_id"))]
    pub async fn next_id(&self) -> Result<i64, AppError> {
        let mut ids = self.ids.lock().await;
        if ids.is_empty() {
            let first: i64 =
                sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('orders', 'id'))")
                    .fetch_one(&self.pool)
                    .await?;
            *ids = first..first + ID_BLOCK;
        }
        let id = ids.start;
        ids.start += 1;
        Ok(id)
    }

    /// Writes orders, their items and their `order.created` events in one statement: a
    /// statement is a transaction of its own, all or nothing, and a single round trip and
    /// commit for every order in it (per order, BEGIN, three INSERTs and COMMIT took five, and
    /// the order database's backends were the busiest processes of a sale).
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "insert", orders = orders.len()))]
    pub async fn insert(&self, orders: &[OrderToWrite]) -> Result<(), AppError> {
        let items = || orders.iter().flat_map(|to_write| &to_write.order.items);
        let item_orders = orders.iter().flat_map(|to_write| {
            std::iter::repeat_n(to_write.order.id, to_write.order.items.len())
        });
        let column = |value: fn(&NewOrder) -> &str| {
            orders
                .iter()
                .map(|to_write| value(&to_write.order))
                .collect::<Vec<_>>()
        };
        let query = sqlx::query(INSERT_ORDERS.as_str())
            .bind(orders.iter().map(|o| o.order.id).collect::<Vec<_>>())
            .bind(column(|order| &order.order_no))
            .bind(orders.iter().map(|o| o.order.user_id).collect::<Vec<_>>())
            .bind(
                orders
                    .iter()
                    .map(|o| o.order.total_amount_cents)
                    .collect::<Vec<_>>(),
            )
            .bind(OrderStatus::Pending as i16)
            .bind(column(|order| &order.address))
            .bind(column(|order| &order.phone))
            .bind(column(|order| &order.remark))
            .bind(item_orders.collect::<Vec<_>>())
            .bind(items().map(|item| item.product_id).collect::<Vec<_>>())
            .bind(items().map(|item| item.name.as_str()).collect::<Vec<_>>())
            .bind(items().map(|item| item.price_cents).collect::<Vec<_>>())
            .bind(items().map(|item| item.quantity).collect::<Vec<_>>())
            .bind(items().map(|item| item.image.as_str()).collect::<Vec<_>>());
        let created: Vec<&OutboxRow> = orders.iter().map(|o| &o.created).collect();
        events::bind_outbox_rows(query, &created)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn items_of(&self, order_ids: &[i64]) -> Result<Vec<ItemRow>, AppError> {
        Ok(sqlx::query_as(
            "SELECT id, order_id, product_id, name, price_cents, quantity, image FROM order_items \
             WHERE order_id = ANY($1) ORDER BY id",
        )
        .bind(order_ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The user's order; another user's order is as absent as a missing one.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "get"))]
    pub async fn get(
        &self,
        user_id: i64,
        order_id: i64,
    ) -> Result<Option<OrderWithItems>, AppError> {
        // One statement (one round trip, one transaction) for the order and its items: the
        // payment service asks for it on every payment.
        let row: Option<OrderWithItemsRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS}, (SELECT COALESCE(json_agg(json_build_object( \
               'id', i.id, 'order_id', i.order_id, 'product_id', i.product_id, 'name', i.name, \
               'price_cents', i.price_cents, 'quantity', i.quantity, 'image', i.image) \
               ORDER BY i.id), '[]') FROM order_items i WHERE i.order_id = orders.id)::text \
               AS items_json \
             FROM orders WHERE id = $1 AND user_id = $2"
        ))
        .bind(order_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let items: Vec<ItemRow> =
            serde_json::from_str(&row.items_json).map_err(AppError::system)?;
        Ok(Some(OrderWithItems {
            order: row.order,
            items,
        }))
    }

    /// The user's orders, newest first, optionally of one status.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "list"))]
    pub async fn list(
        &self,
        user_id: i64,
        status: Option<i16>,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<OrderWithItems>), AppError> {
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE user_id = $1 AND ($2::smallint IS NULL OR status = $2)",
        )
        .bind(user_id)
        .bind(status)
        .fetch_one(&self.pool)
        .await?;
        let orders: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 AND ($2::smallint IS NULL OR status = $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(user_id)
        .bind(status)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, self.with_items(orders).await?))
    }

    /// Every user's orders, newest first, filtered.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "list_all"))]
    pub async fn list_all(
        &self,
        filter: &OrderFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(i64, Vec<OrderWithItems>), AppError> {
        const MATCHES: &str = "($1::smallint IS NULL OR status = $1) AND ($2::text IS NULL \
             OR order_no ILIKE $2 OR address ILIKE $2 OR phone ILIKE $2 \
             OR id = $3::bigint OR user_id = $3::bigint)";
        let pattern = filter.text.as_deref().map(like_pattern);
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM orders WHERE {MATCHES}"))
                .bind(filter.status)
                .bind(&pattern)
                .bind(filter.number)
                .fetch_one(&self.pool)
                .await?;
        let orders: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {MATCHES} \
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
        ))
        .bind(filter.status)
        .bind(&pattern)
        .bind(filter.number)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((total, self.with_items(orders).await?))
    }

    /// The orders with their items, in one read of the items.
    async fn with_items(&self, orders: Vec<OrderRow>) -> Result<Vec<OrderWithItems>, AppError> {
        let ids: Vec<i64> = orders.iter().map(|order| order.id).collect();
        let mut items = self.items_of(&ids).await?;
        Ok(orders
            .into_iter()
            .map(|order| {
                let (mine, rest): (Vec<ItemRow>, Vec<ItemRow>) =
                    items.drain(..).partition(|item| item.order_id == order.id);
                items = rest;
                OrderWithItems { order, items: mine }
            })
            .collect())
    }

    /// Ships a paid order with its carrier and tracking number and writes `order.shipped`, in
    /// one transaction. Of two shipments at once, one ships; the other, once the first has
    /// committed, finds the order shipped and compares.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "ship"))]
    pub async fn ship(
        &self,
        order_id: i64,
        carrier: &str,
        tracking_no: &str,
    ) -> Result<ShipOutcome, AppError> {
        let mut transaction = self.pool.begin().await?;
        let shipped: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE orders SET status = 3, shipped_at = now(), updated_at = now(), \
             carrier = $2, tracking_no = $3 WHERE id = $1 AND status = 2 RETURNING user_id, shipped_at",
        )
        .bind(order_id)
        .bind(carrier)
        .bind(tracking_no)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((user_id, shipped_at)) = shipped else {
            let found: Option<(i16, String, String)> =
                sqlx::query_as("SELECT status, carrier, tracking_no FROM orders WHERE id = $1")
                    .bind(order_id)
                    .fetch_optional(&mut *transaction)
                    .await?;
            let Some((status, shipped_by, shipped_as)) = found else {
                return Ok(ShipOutcome::NotFound);
            };
            return Ok(match OrderStatus::from_i16(status) {
                Some(OrderStatus::Shipped | OrderStatus::Completed)
                    if shipped_by == carrier && shipped_as == tracking_no =>
                {
                    ShipOutcome::AlreadyShipped
                }
                Some(OrderStatus::Shipped | OrderStatus::Completed) => {
                    ShipOutcome::ShippedOtherwise
                }
                Some(other) => ShipOutcome::NotPaid(other),
                None => {
                    return Err(AppError::system(format!(
                        "order {order_id} has status {status}"
                    )));
                }
            });
        };
        let shipped = event(
            topics::ORDER_SHIPPED,
            json!({"orderId": order_id, "userId": user_id, "carrier": carrier,
                   "trackingNo": tracking_no, "shippedAt": shipped_at.timestamp()}),
        )?;
        events::enqueue(&mut transaction, &order_id.to_string(), &shipped).await?;
        transaction.commit().await?;
        Ok(ShipOutcome::Shipped)
    }

    /// Completes a shipped order and writes `order.completed`, in one transaction. With a
    /// user, only that user's order; without (the timeout), any.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "complete"))]
    pub async fn complete(
        &self,
        user_id: Option<i64>,
        order_id: i64,
        by: CompletedBy,
    ) -> Result<CompleteOutcome, AppError> {
        let mut transaction = self.pool.begin().await?;
        let completed: Option<(i64, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE orders SET status = 4, completed_at = now(), updated_at = now() \
             WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2) AND status = 3 \
             RETURNING user_id, completed_at",
        )
        .bind(order_id)
        .bind(user_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((owner, completed_at)) = completed else {
            return Ok(
                if order_exists(&mut transaction, order_id, user_id).await? {
                    CompleteOutcome::NotShipped
                } else {
                    CompleteOutcome::NotFound
                },
            );
        };
        let completed = event(
            topics::ORDER_COMPLETED,
            json!({"orderId": order_id, "userId": owner, "completedAt": completed_at.timestamp(),
                   "by": by.as_str()}),
        )?;
        events::enqueue(&mut transaction, &order_id.to_string(), &completed).await?;
        transaction.commit().await?;
        Ok(CompleteOutcome::Completed)
    }

    /// Orders shipped before `cutoff` and not completed yet, oldest shipment first.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "completions_due"))]
    pub async fn completions_due(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM orders WHERE status = 3 AND shipped_at < $1 ORDER BY shipped_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Cancels a pending order and writes `order.cancelled`, in one transaction. With a user,
    /// only that user's order; without (the timeout), any.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "cancel"))]
    pub async fn cancel(
        &self,
        user_id: Option<i64>,
        order_id: i64,
        reason: &str,
    ) -> Result<CancelOutcome, AppError> {
        let mut transaction = self.pool.begin().await?;
        let cancelled: Option<i64> = sqlx::query_scalar(
            "UPDATE orders SET status = 5, cancelled_at = now(), updated_at = now() \
             WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2) AND status = 1 RETURNING user_id",
        )
        .bind(order_id)
        .bind(user_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(owner) = cancelled else {
            return Ok(
                if order_exists(&mut transaction, order_id, user_id).await? {
                    CancelOutcome::NotPending
                } else {
                    CancelOutcome::NotFound
                },
            );
        };
        let cancelled = event(
            topics::ORDER_CANCELLED,
            json!({"orderId": order_id, "userId": owner, "reason": reason}),
        )?;
        events::enqueue(&mut transaction, &order_id.to_string(), &cancelled).await?;
        transaction.commit().await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// Cancels at most `limit` pending orders created before `cutoff`, oldest first, each with
    /// its `order.cancelled` (reason `reason`), in one transaction; answers the orders
    /// cancelled. Orders another sweeper or a buyer holds just then are left for the next pass.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "cancel_expired"))]
    pub async fn cancel_expired(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
        reason: &str,
    ) -> Result<Vec<i64>, AppError> {
        let mut transaction = self.pool.begin().await?;
        let cancelled: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE orders SET status = 5, cancelled_at = now(), updated_at = now() \
             WHERE id IN (SELECT id FROM orders WHERE status = 1 AND created_at < $1 \
                          ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND status = 1 RETURNING id, user_id",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&mut *transaction)
        .await?;
        let events = cancelled
            .iter()
            .map(|(order_id, owner)| {
                let cancelled = event(
                    topics::ORDER_CANCELLED,
                    json!({"orderId": order_id, "userId": owner, "reason": reason}),
                )?;
                Ok(OutboxRow::new(order_id.to_string(), cancelled))
            })
            .collect::<Result<Vec<_>, AppError>>()?;
        if !events.is_empty() {
            let rows: Vec<&OutboxRow> = events.iter().collect();
            events::bind_outbox_rows(sqlx::query(INSERT_OUTBOX_ROWS.as_str()), &rows)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        Ok(cancelled
            .into_iter()
            .map(|(order_id, _)| order_id)
            .collect())
    }

    /// Marks the order paid for a `payment.succeeded` event, once per event, and writes
    /// `order.paid`, in one transaction.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_paid"))]
    pub async fn mark_paid(
        &self,
        group: &str,
        payment: &PaymentSucceeded,
    ) -> Result<PaidOutcome, AppError> {
        let mut transaction = self.pool.begin().await?;
        let outcome = mark_paid_in(&mut transaction, group, payment).await?;
        if outcome == PaidOutcome::AwaitsStockCommit {
            // Not handled yet: the event comes back once the stock is committed.
            transaction.rollback().await?;
        } else {
            transaction.commit().await?;
        }
        Ok(outcome)
    }

    /// [`mark_paid`](Self::mark_paid) for many events, in one transaction; answers each
    /// event's outcome in order, or none (and nothing changed) when any order still awaits its
    /// stock commit.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_many_paid", orders = payments.len()))]
    pub async fn mark_many_paid(
        &self,
        group: &str,
        payments: &[PaymentSucceeded],
    ) -> Result<Option<Vec<PaidOutcome>>, AppError> {
        // Rows are locked in order id order, as every batch does, so two batches never wait
        // on each other in a circle.
        let mut by_order: Vec<usize> = (0..payments.len()).collect();
        by_order.sort_by_key(|&index| payments[index].order_id);
        let mut transaction = self.pool.begin().await?;
        let mut outcomes: Vec<Option<PaidOutcome>> = (0..payments.len()).map(|_| None).collect();
        for index in by_order {
            let outcome = mark_paid_in(&mut transaction, group, &payments[index]).await?;
            if outcome == PaidOutcome::AwaitsStockCommit {
                transaction.rollback().await?;
                return Ok(None);
            }
            outcomes[index] = Some(outcome);
        }
        transaction.commit().await?;
        Ok(Some(outcomes.into_iter().flatten().collect()))
    }

    /// Pending orders saved before `cutoff` whose reservation is not committed yet.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "commits_due"))]
    pub async fn commits_due(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM orders WHERE status = 1 AND NOT stock_committed AND created_at < $1 \
             ORDER BY created_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that these orders' reservations are committed, in one statement.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_stock_committed"))]
    pub async fn mark_stock_committed(&self, order_ids: &[i64]) -> Result<(), AppError> {
        sqlx::query(
            "UPDATE orders SET stock_committed = true WHERE id = ANY($1) AND NOT stock_committed",
        )
        .bind(order_ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a refund of the order's payment, once per event; answers whether it was new.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_refunded"))]
    pub async fn mark_refunded(
        &self,
        group: &str,
        event_id: Uuid,
        order_id: i64,
    ) -> Result<bool, AppError> {
        let mut transaction = self.pool.begin().await?;
        if !events::mark_handled(&mut transaction, group, event_id).await? {
            return Ok(false);
        }
        let updated = sqlx::query(
            "UPDATE orders SET refunded_at = now(), updated_at = now() \
             WHERE id = $1 AND refunded_at IS NULL",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Cancelled orders whose stock has not been given back yet.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "releases_due"))]
    pub async fn releases_due(&self, limit: i64) -> Result<Vec<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM orders WHERE status = 5 AND NOT stock_released ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_stock_released", orders = order_ids.len()))]
    pub async fn mark_stock_released(&self, order_ids: &[i64]) -> Result<(), AppError> {
        sqlx::query("UPDATE orders SET stock_released = true WHERE id = ANY($1)")
            .bind(order_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Orders paid before `paid_before` (and since shipped or completed) whose units have not
    /// been counted as sold yet.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "sales_due"))]
    pub async fn sales_due(
        &self,
        paid_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<i64>, AppError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM orders WHERE status IN (2, 3, 4) AND NOT sales_recorded \
             AND (paid_at IS NULL OR paid_at < $1) ORDER BY id LIMIT $2",
        )
        .bind(paid_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that these orders' units are counted as sold, in one statement.
    #[instrument(level = "trace", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "mark_sales_recorded"))]
    pub async fn mark_sales_recorded(&self, order_ids: &[i64]) -> Result<(), AppError> {
        sqlx::query(
            "UPDATE orders SET sales_recorded = true WHERE id = ANY($1) AND NOT sales_recorded",
        )
        .bind(order_ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// 5000 for an order that is not there (or not the caller's).
pub fn not_found() -> AppError {
    AppError::of(ErrorCode::OrderNotFound)
}

/// Whether `order_id` exists (as `user_id`'s, when given): what tells "not yours or none" from
/// "not in the right status" after a conditional update changed nothing.
async fn order_exists(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    order_id: i64,
    user_id: Option<i64>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1 AND ($2::bigint IS NULL OR user_id = $2))",
    )
    .bind(order_id)
    .bind(user_id)
    .fetch_one(&mut **transaction)
    .await
}
