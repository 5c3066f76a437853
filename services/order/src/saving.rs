//! New orders saved in batches: the orders that are ready while others are being written share
//! one statement ([`OrderStore::insert`]), so a sale's orders pay for a round trip, the
//! executor's start and a commit's WAL flush once per batch instead of once per order. A lone
//! order is written at once, alone.
//!
//! A batch is all or nothing in the database. One that fails for a reason of its own orders
//! (text PostgreSQL refuses, say) is written again order by order, so one bad order fails
//! alone; one that fails because the database is away fails every order in it at once, as each
//! would have alone.

use letsgo_platform::batches::{Batches, Shape};
use letsgo_platform::errors::{AppResult, ErrorCode};

use crate::storage::{OrderStore, OrderToWrite};

/// Batches written at once: one. A statement of tens of orders takes a few milliseconds, and
/// the orders that arrive meanwhile make the next batch; more writers would only split them
/// into smaller ones (four made batches of four orders in a sale).
const LANES: usize = 1;
/// Orders waiting for the writer; beyond it an order is refused as the service being busy.
const QUEUE_MAX: usize = 4096;
/// The most orders one statement writes.
const BATCH_MAX: usize = 64;

/// The queue of orders to save and the writers that save them in batches.
#[derive(Clone)]
pub struct Saver {
    batches: Batches<OrderToWrite, AppResult<()>>,
}

impl Saver {
    /// Starts the writers on the current runtime, writing through `store`.
    pub fn start(store: OrderStore) -> Saver {
        let shape = Shape {
            lanes: LANES,
            queue_max: QUEUE_MAX,
            batch_max: BATCH_MAX,
        };
        let batches = Batches::start(
            shape,
            |_| 0,
            move |orders| {
                let store = store.clone();
                async move { write_batch(&store, orders).await }
            },
        );
        Saver { batches }
    }

    /// Saves `order`, in the next batch. Once this answers Ok the order is in the database; an
    /// error may mean it is not, or (its answer lost) that it is.
    pub async fn save(&self, order: OrderToWrite) -> AppResult<()> {
        self.batches.ask(order).await?
    }
}

/// Writes `orders` in one statement, or, when that fails for a reason of their own, one by one;
/// answers how it went for each, in their order.
pub async fn write_batch(store: &OrderStore, orders: Vec<OrderToWrite>) -> Vec<AppResult<()>> {
    let error = match store.insert(&orders).await {
        Ok(()) => return orders.iter().map(|_| Ok(())).collect(),
        Err(error) => error,
    };
    if orders.len() == 1 || error.code == ErrorCode::ServiceUnavailable {
        return orders.iter().map(|_| Err(error.clone())).collect();
    }
    tracing::warn!(%error, orders = orders.len(), "a batch of orders failed; writing them one by one");
    let mut outcomes = Vec::with_capacity(orders.len());
    for order in orders {
        outcomes.push(store.insert(std::slice::from_ref(&order)).await);
    }
    outcomes
}
