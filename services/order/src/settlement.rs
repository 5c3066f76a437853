//! Settling with the product service in batches: what saved and paid orders owe it (their
//! reservations committed, their units counted as sold) goes on a queue, and one loop per kind
//! settles whatever has gathered in one call and one commit of the order's flags.
//!
//! Per order, that was two commits in each database for each kind; under load a batch carries
//! tens of orders. The queue is not the record: the orders' `stock_committed` and
//! `sales_recorded` flags are, and [`Orders::sweep`](crate::orders::Orders::sweep) settles
//! whatever the queue lost (full, or the process stopped first).

use std::future::Future;
use std::time::Duration;

use letsgo_platform::limits::SETTLEMENT_BATCH_MAX;
use letsgo_platform::shutdown::Shutdown;
use tokio::sync::mpsc;

use crate::orders::Orders;

/// How long a batch gathers after its first order arrives. A commit or a sales count this much
/// later changes nothing anyone sees (a reservation is held for minutes, a payment takes
/// longer), and at a few hundred orders a second a batch fills with tens of orders.
pub const LINGER: Duration = Duration::from_millis(50);

/// Orders waiting per kind; past this the sweeper settles the rest.
const QUEUE_CAPACITY: usize = 10_000;

/// How long a stopping service waits for more orders once nothing is queued.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the order paths put what they owe the product service.
#[derive(Clone)]
pub struct SettlementQueue {
    commits: mpsc::Sender<i64>,
    sales: mpsc::Sender<i64>,
}

/// What waits to be settled; [`Backlog::run`] settles it.
pub struct Backlog {
    commits: mpsc::Receiver<i64>,
    sales: mpsc::Receiver<i64>,
}

/// A queue and the backlog it fills.
pub fn queue() -> (SettlementQueue, Backlog) {
    let (commits, commits_waiting) = mpsc::channel(QUEUE_CAPACITY);
    let (sales, sales_waiting) = mpsc::channel(QUEUE_CAPACITY);
    (
        SettlementQueue { commits, sales },
        Backlog {
            commits: commits_waiting,
            sales: sales_waiting,
        },
    )
}

impl SettlementQueue {
    /// The saved order's reservation is to be committed.
    pub fn commit_stock(&self, order_id: i64) {
        if self.commits.try_send(order_id).is_err() {
            tracing::warn!(
                order_id,
                "settlement queue full; the sweeper commits the order's stock"
            );
        }
    }

    /// The paid order's units are to be counted as sold.
    pub fn record_sales(&self, order_id: i64) {
        if self.sales.try_send(order_id).is_err() {
            tracing::warn!(
                order_id,
                "settlement queue full; the sweeper records the order's sales"
            );
        }
    }
}

impl Backlog {
    /// Settles batches through `orders` (which must not queue themselves) until every queue
    /// handle is gone, or, once `shutdown` has come, nothing has arrived for a few seconds.
    pub async fn run(self, orders: Orders, shutdown: Shutdown) {
        let committing = orders.clone();
        tokio::join!(
            drain(self.commits, &shutdown, move |batch| {
                let orders = committing.clone();
                async move {
                    orders.commit_stock_of(&batch).await;
                }
            }),
            drain(self.sales, &shutdown, move |batch| {
                let orders = orders.clone();
                async move {
                    orders.record_sales_of(&batch).await;
                }
            }),
        );
    }
}

/// Hands `settle` batches of at most [`SETTLEMENT_BATCH_MAX`] distinct orders, each gathered
/// for [`LINGER`] after its first order (not when stopping).
async fn drain<F, Fut>(mut queue: mpsc::Receiver<i64>, shutdown: &Shutdown, settle: F)
where
    F: Fn(Vec<i64>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let first = if shutdown.is_triggered() {
            match tokio::time::timeout(SHUTDOWN_GRACE, queue.recv()).await {
                Ok(Some(order_id)) => order_id,
                Ok(None) | Err(_) => return,
            }
        } else {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(order_id) => order_id,
                    None => return,
                },
                _ = shutdown.wait() => continue,
            }
        };
        if !shutdown.is_triggered() {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = shutdown.wait() => {}
            }
        }
        let mut batch = vec![first];
        while batch.len() < SETTLEMENT_BATCH_MAX {
            match queue.try_recv() {
                Ok(order_id) => batch.push(order_id),
                Err(_) => break,
            }
        }
        batch.sort_unstable();
        batch.dedup();
        settle(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn orders_that_arrive_together_are_settled_in_one_batch_and_the_rest_at_shutdown() {
        let (queue, backlog) = queue();
        let shutdown = Shutdown::new();
        let batches = Arc::new(Mutex::new(Vec::<Vec<i64>>::new()));
        let seen = batches.clone();
        let draining = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                drain(backlog.commits, &shutdown, move |batch| {
                    seen.lock().unwrap().push(batch);
                    async {}
                })
                .await
            }
        });
        for order_id in [3, 1, 2, 1] {
            queue.commit_stock(order_id);
        }
        tokio::time::sleep(LINGER * 2).await;
        queue.commit_stock(9);
        shutdown.trigger();
        tokio::time::sleep(Duration::from_millis(1)).await;
        queue.commit_stock(10);
        drop(queue);
        draining.await.unwrap();
        assert_eq!(
            *batches.lock().unwrap(),
            vec![vec![1, 2, 3], vec![9], vec![10]],
            "gathered, sorted and once each; what comes while stopping is settled too"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_never_exceeds_the_limit() {
        let (queue, backlog) = queue();
        let shutdown = Shutdown::new();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        for order_id in 0..(SETTLEMENT_BATCH_MAX as i64 * 2 + 5) {
            queue.record_sales(order_id);
        }
        drop(queue);
        drain(backlog.sales, &shutdown, move |batch| {
            seen.lock().unwrap().push(batch.len());
            async {}
        })
        .await;
        assert_eq!(
            *sizes.lock().unwrap(),
            vec![SETTLEMENT_BATCH_MAX, SETTLEMENT_BATCH_MAX, 5]
        );
    }
}
