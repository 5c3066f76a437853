//! Reservations batched: the asks that arrive while others are being decided share one
//! transaction ([`CatalogueStore::reserve_batch`]). A sale's buyers all want one product, and
//! each transaction holds that product's row until it commits; deciding them a batch at a time
//! pays for the row lock and the commit once per batch instead of once per buyer. A batch whose
//! asks all order one product that has the stock for all of them (a sale's, until its last
//! units) is taken in one statement instead ([`CatalogueStore::reserve_all`]). Nothing waits
//! for a batch to fill: a worker takes everything queued when it is free, so a lone ask goes
//! at once, alone.
//!
//! A batch's stock changes are announced once, after its commit and before any of its asks is
//! answered: a sale's batch of tens of orders of one product drops that product's cached
//! entries and tells the gateways once, where each order used to do it for itself.

use std::time::Duration;

use letsgo_platform::batches::{Batches, Shape};
use letsgo_platform::errors::{AppResult, ErrorCode};

use crate::product_cache::ProductCache;
use crate::storage::{CatalogueStore, Reservation};

/// Lanes deciding batches at once: a few, as each holds a connection while it decides. An
/// order's lane is chosen by its first product: a sale's orders all share one lane, so the
/// reservations that would only wait for that product's row in turn wait in one queue instead
/// and are decided together, while other products' orders go on in the other lanes.
const LANES: usize = 4;
/// Asks waiting in a lane; beyond it an ask is refused as the service being busy.
const QUEUE_MAX: usize = 4096;
/// The longest a batch waits for its stock changes to be announced before answering.
const ANNOUNCE_WAIT: Duration = Duration::from_millis(500);

/// An order's lines to reserve.
type Ask = (i64, Vec<(i64, i64)>);

/// The queue of reservation asks and the workers that decide them in batches.
#[derive(Clone)]
pub struct Reservations {
    batches: Batches<Ask, AppResult<Reservation>>,
}

impl Reservations {
    /// Starts the workers on the current runtime, deciding with `store` at most `batch_max`
    /// asks at a time, each reservation held for `hold`, and announcing the stock each batch
    /// moved through `cache`. Lanes run concurrently (batches of products in different lanes
    /// do not wait for each other).
    pub fn start(
        store: CatalogueStore,
        cache: ProductCache,
        hold: Duration,
        batch_max: usize,
    ) -> Reservations {
        let shape = Shape {
            lanes: LANES,
            queue_max: QUEUE_MAX,
            batch_max,
        };
        let batches = Batches::start(shape, first_product, move |asks: Vec<Ask>| {
            let (store, cache) = (store.clone(), cache.clone());
            async move {
                let asked: Vec<i64> = asks
                    .iter()
                    .flat_map(|(_, lines)| lines.iter().map(|(product_id, _)| *product_id))
                    .collect();
                let (outcomes, whole_batch_failed) = decide(&store, hold, asks).await;
                // A batch that failed as a whole may have committed unseen (its answer lost):
                // its asks, decided again, then find their reservations and move nothing.
                let touched = if whole_batch_failed {
                    asked
                } else {
                    moved_stock(&outcomes)
                };
                announce(&cache, &touched).await;
                outcomes
            }
        });
        Reservations { batches }
    }

    /// Reserves `lines` for `order_id`, in the next batch. When stock moved, the change has
    /// been announced by the time this answers.
    pub async fn reserve(&self, order_id: i64, lines: Vec<(i64, i64)>) -> AppResult<Reservation> {
        self.batches.ask((order_id, lines)).await?
    }
}

/// The lane key of an ask: its smallest product id (the first row its transaction locks).
fn first_product((_, lines): &Ask) -> u64 {
    let first = lines.iter().map(|(product_id, _)| *product_id).min();
    first.and_then(|id| u64::try_from(id).ok()).unwrap_or(0)
}

/// The products whose stock a batch's reservations moved.
fn moved_stock(outcomes: &[AppResult<Reservation>]) -> Vec<i64> {
    outcomes
        .iter()
        .flatten()
        .filter(|reservation| reservation.changed_stock)
        .flat_map(|reservation| reservation.lines.iter().map(|line| line.product_id))
        .collect()
}

/// Drops the cached entries of `products` and tells the gateways, waiting at most
/// [`ANNOUNCE_WAIT`]: a Redis that does not answer holds up the lane that long per batch, and
/// the entries live out their TTL, as when Redis is away.
async fn announce(cache: &ProductCache, products: &[i64]) {
    if products.is_empty() {
        return;
    }
    if tokio::time::timeout(ANNOUNCE_WAIT, cache.invalidate(products))
        .await
        .is_err()
    {
        tracing::warn!(
            wait_ms = ANNOUNCE_WAIT.as_millis() as u64,
            "announcing a batch's stock changes timed out; cached entries expire by their TTL"
        );
    }
}

/// Decides a batch: in one statement when its asks all order one product and the stock covers
/// them (see [`CatalogueStore::reserve_all`]); otherwise alone (as before batching) when it is
/// one ask, together when more. A batch that fails as a whole (a deadlock, a retry that raced
/// it) is decided again ask by ask; one that fails because the database is away fails every
/// ask at once. Either says so: it may have committed unseen.
async fn decide(
    store: &CatalogueStore,
    hold: Duration,
    asks: Vec<Ask>,
) -> (Vec<AppResult<Reservation>>, bool) {
    // A sale's batch, every ask of one product and its stock enough for all: one statement.
    let together = match store.reserve_all(&asks, hold).await {
        Ok(Some(reservations)) => return (reservations.into_iter().map(Ok).collect(), false),
        Ok(None) if asks.len() == 1 => {
            let (order_id, lines) = &asks[0];
            return (vec![store.reserve(*order_id, lines, hold).await], false);
        }
        Ok(None) => store.reserve_batch(&asks, hold).await,
        // The database away: deciding the asks one by one would only wait for it once per ask.
        Err(error) if error.code == ErrorCode::ServiceUnavailable => {
            tracing::warn!(%error, asks = asks.len(), "a batch of reservations failed");
            return (asks.iter().map(|_| Err(error.clone())).collect(), true);
        }
        Err(error) => Err(error),
    };
    let decided = match together {
        Ok(decided) => decided,
        Err(error) => {
            tracing::warn!(%error, asks = asks.len(), "a batch of reservations failed; deciding them one by one");
            let mut outcomes = Vec::with_capacity(asks.len());
            for (order_id, lines) in &asks {
                outcomes.push(store.reserve(*order_id, lines, hold).await);
            }
            return (outcomes, true);
        }
    };
    let mut outcomes = Vec::with_capacity(asks.len());
    for ((order_id, lines), outcome) in asks.iter().zip(decided) {
        outcomes.push(match outcome {
            Some(outcome) => outcome,
            // A retry of an order that has a reservation: settled as before.
            None => store.reserve(*order_id, lines, hold).await,
        });
    }
    (outcomes, false)
}
