//! Reservations batched: the asks that arrive while others are being decided share one
//! transaction ([`CatalogueStore::reserve_batch`]). A sale's buyers all want one product, and
//! each transaction holds that product's row until it commits; deciding them a batch at a time
//! pays for the row lock and the commit once per batch instead of once per buyer. Nothing waits
//! for a batch to fill: a worker takes everything queued when it is free, so a lone ask goes
//! at once, alone.

use std::sync::Arc;
use std::time::Duration;

use letsgo_platform::errors::{AppError, AppResult};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::storage::{CatalogueStore, Reservation};

/// Workers deciding batches at once: a few, as each holds a connection while it decides.
const WORKERS: usize = 4;
/// Asks waiting for a worker; beyond it an ask is refused as the service being busy.
const QUEUE_MAX: usize = 4096;

struct Ask {
    order_id: i64,
    lines: Vec<(i64, i64)>,
    answer: oneshot::Sender<AppResult<Reservation>>,
}

/// The queue of reservation asks and the workers that decide them in batches.
#[derive(Clone)]
pub struct Reservations {
    asks: mpsc::Sender<Ask>,
}

impl Reservations {
    /// Starts the workers on the current runtime, deciding with `store` at most `batch_max`
    /// asks at a time, each reservation held for `hold`. Workers run concurrently (batches of
    /// different products do not wait for each other; batches of one product wait for its
    /// row, in turn).
    pub fn start(store: CatalogueStore, hold: Duration, batch_max: usize) -> Reservations {
        let (asks, queue) = mpsc::channel(QUEUE_MAX);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..WORKERS {
            tokio::spawn(work(store.clone(), hold, batch_max.max(1), queue.clone()));
        }
        Reservations { asks }
    }

    /// Reserves `lines` for `order_id`, in the next batch.
    pub async fn reserve(&self, order_id: i64, lines: Vec<(i64, i64)>) -> AppResult<Reservation> {
        let (answer, answered) = oneshot::channel();
        self.asks
            .try_send(Ask {
                order_id,
                lines,
                answer,
            })
            .map_err(|_| AppError::of(letsgo_platform::errors::ErrorCode::ServiceUnavailable))?;
        answered
            .await
            .map_err(|_| AppError::system("the reservation's worker stopped"))?
    }
}

async fn work(
    store: CatalogueStore,
    hold: Duration,
    batch_max: usize,
    queue: Arc<Mutex<mpsc::Receiver<Ask>>>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < batch_max {
                match queue.try_recv() {
                    Ok(ask) => batch.push(ask),
                    Err(_) => break,
                }
            }
            batch
        };
        decide(&store, hold, batch).await;
    }
}

/// Decides a batch: alone (as before batching) when it is one ask, together otherwise; a batch
/// that fails as a whole (a deadlock, a retry that raced it) is decided again ask by ask.
async fn decide(store: &CatalogueStore, hold: Duration, batch: Vec<Ask>) {
    if batch.len() == 1 {
        let ask = batch.into_iter().next().expect("one ask");
        let outcome = store.reserve(ask.order_id, &ask.lines, hold).await;
        let _ = ask.answer.send(outcome);
        return;
    }
    let orders: Vec<(i64, Vec<(i64, i64)>)> = batch
        .iter()
        .map(|ask| (ask.order_id, ask.lines.clone()))
        .collect();
    match store.reserve_batch(&orders, hold).await {
        Ok(outcomes) => {
            for (ask, outcome) in batch.into_iter().zip(outcomes) {
                let outcome = match outcome {
                    Some(outcome) => outcome,
                    // A retry of an order that has a reservation: settled as before.
                    None => store.reserve(ask.order_id, &ask.lines, hold).await,
                };
                let _ = ask.answer.send(outcome);
            }
        }
        Err(error) => {
            tracing::warn!(%error, asks = batch.len(), "a batch of reservations failed; deciding them one by one");
            for ask in batch {
                let outcome = store.reserve(ask.order_id, &ask.lines, hold).await;
                let _ = ask.answer.send(outcome);
            }
        }
    }
}
