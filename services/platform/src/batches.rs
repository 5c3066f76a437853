//! Asks decided in batches: callers queue what they want decided and wait for their answer;
//! a worker takes everything queued whenever it is free and decides it together. Nothing
//! waits for a batch to fill, so a lone ask goes at once, alone, and asks that arrive while
//! others are being decided share the next batch (one transaction, one commit, for example,
//! where each ask would have had its own).
//!
//! Asks go into lanes, a queue and a worker each, chosen by the caller's key: asks that would
//! only wait for each other anyway (the reservations of one product, which all lock its row)
//! share a lane and so a batch, while other lanes go on beside them.
//!
//! A batch runs in a span that is a child of its first ask's span and follows the others', so
//! the work it does for an ask (its queries, its calls to other services) stays in a trace.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::errors::{AppError, AppResult, ErrorCode};

struct Ask<A, R> {
    item: A,
    answer: oneshot::Sender<R>,
    /// The asker's span: a batch runs as a child of its first ask's and follows the others'.
    span: tracing::Span,
}

/// The lanes of asks and the workers that decide them in batches. Clones share the lanes.
pub struct Batches<A, R> {
    lanes: Arc<[mpsc::Sender<Ask<A, R>>]>,
    lane_of: fn(&A) -> u64,
}

impl<A, R> Clone for Batches<A, R> {
    fn clone(&self) -> Self {
        Batches {
            lanes: self.lanes.clone(),
            lane_of: self.lane_of,
        }
    }
}

/// How the workers run.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Lanes, each a queue and the one worker that decides its batches (each usually holds a
    /// database connection meanwhile).
    pub lanes: usize,
    /// Asks waiting in a lane; beyond it an ask is refused as the service being busy.
    pub queue_max: usize,
    /// The most asks one batch takes.
    pub batch_max: usize,
}

impl<A: Send + 'static, R: Send + 'static> Batches<A, R> {
    /// Starts the workers on the current runtime. An ask goes into lane `lane_of(ask)` modulo
    /// the lanes. `decide` answers a batch's asks, one answer per ask in the batch's order; it
    /// is never given an empty batch. The workers stop once every handle is dropped and their
    /// lanes are empty.
    pub fn start<D, F>(shape: Shape, lane_of: fn(&A) -> u64, decide: D) -> Batches<A, R>
    where
        D: Fn(Vec<A>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let lanes = (0..shape.lanes.max(1))
            .map(|_| {
                let (asks, queue) = mpsc::channel(shape.queue_max.max(1));
                tokio::spawn(work(queue, shape.batch_max.max(1), decide.clone()));
                asks
            })
            .collect();
        Batches { lanes, lane_of }
    }

    /// Queues `item` for the next batch and waits for its answer. A full queue refuses at once
    /// (the service is busy: `ServiceUnavailable`), so a backlog never grows without bound.
    pub async fn ask(&self, item: A) -> AppResult<R> {
        let (answer, answered) = oneshot::channel();
        let lane = (self.lane_of)(&item) % self.lanes.len() as u64;
        let lane = &self.lanes[usize::try_from(lane).expect("a lane's index fits a usize")];
        let span = tracing::Span::current();
        lane.try_send(Ask { item, answer, span })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "too many requests are waiting; please try again",
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    AppError::system("a batch's lane has stopped")
                }
            })?;
        answered
            .await
            .map_err(|_| AppError::system("the batch failed before answering"))
    }
}

async fn work<A, R, D, F>(mut queue: mpsc::Receiver<Ask<A, R>>, batch_max: usize, decide: D)
where
    A: Send + 'static,
    R: Send + 'static,
    D: Fn(Vec<A>) -> F,
    F: Future<Output = Vec<R>> + Send + 'static,
{
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match queue.try_recv() {
                Ok(ask) => batch.push(ask),
                Err(_) => break,
            }
        }
        // What the batch does (its queries, its calls to other services) shows in the first
        // ask's trace, and the batch follows every other ask's.
        let span = tracing::info_span!(parent: &batch[0].span, "batch", asks = batch.len());
        for ask in &batch[1..] {
            span.follows_from(&ask.span);
        }
        let (items, answers): (Vec<A>, Vec<oneshot::Sender<R>>) =
            batch.into_iter().map(|ask| (ask.item, ask.answer)).unzip();
        let asked = answers.len();
        // On a task of its own, so that a batch that panics fails its own asks (their answers
        // are dropped unsent) and the lane goes on with the next.
        let decided = match tokio::spawn(decide(items).instrument(span)).await {
            Ok(decided) => decided,
            Err(error) => {
                tracing::error!(%error, asked, "a batch failed without answering");
                continue;
            }
        };
        if decided.len() != asked {
            // A bug in `decide`; the asks left without an answer see their worker stopped.
            tracing::error!(
                asked,
                decided = decided.len(),
                "a batch was answered with the wrong number of answers"
            );
        }
        for (answer, outcome) in answers.into_iter().zip(decided) {
            // The asker may have gone (its request cancelled): the outcome stands regardless.
            let _ = answer.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn asks_arriving_together_share_a_batch_and_each_gets_its_own_answer() {
        let batches_seen = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
        let seen = batches_seen.clone();
        let batches = Batches::start(
            Shape {
                lanes: 1,
                queue_max: 100,
                batch_max: 8,
            },
            |_| 0,
            move |items: Vec<u32>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(items.len());
                    // Long enough for the others to queue behind the first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    items.into_iter().map(|n| n * 10).collect::<Vec<_>>()
                }
            },
        );
        let asks = (0..20u32).map(|n| {
            let batches = batches.clone();
            tokio::spawn(async move { (n, batches.ask(n).await.unwrap()) })
        });
        for ask in asks.collect::<Vec<_>>() {
            let (n, answer) = ask.await.unwrap();
            assert_eq!(answer, n * 10, "each ask gets the answer to its own item");
        }
        let sizes = batches_seen.lock().unwrap().clone();
        assert_eq!(
            sizes.iter().sum::<usize>(),
            20,
            "every ask decided once: {sizes:?}"
        );
        assert!(
            sizes.iter().all(|size| *size <= 8),
            "no batch beyond its maximum: {sizes:?}"
        );
        assert!(
            sizes.len() < 20,
            "asks that waited together were decided together: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_as_busy() {
        let started = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let counter = started.clone();
        let batches = Batches::start(
            Shape {
                lanes: 1,
                queue_max: 2,
                batch_max: 1,
            },
            |_| 0,
            move |items: Vec<u32>| {
                let counter = counter.clone();
                let mut released = released.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = released.wait_for(|go| *go).await;
                    items
                }
            },
        );
        // The first is taken by the worker, which then waits; two more fill the queue.
        let first = tokio::spawn({
            let batches = batches.clone();
            async move { batches.ask(1).await }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (2..4u32)
            .map(|n| {
                let batches = batches.clone();
                tokio::spawn(async move { batches.ask(n).await })
            })
            .collect();
        // Both are in the queue once it has no room left.
        tokio::time::timeout(Duration::from_secs(30), async {
            while batches.lanes[0].capacity() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the two asks reach the queue");
        let refused = batches.ask(4).await.expect_err("the queue is full");
        assert_eq!(refused.code, ErrorCode::ServiceUnavailable);
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for (ask, n) in queued.into_iter().zip(2..) {
            assert_eq!(
                ask.await.unwrap().unwrap(),
                n,
                "the queued asks are still answered"
            );
        }
    }

    #[tokio::test]
    async fn a_busy_lane_holds_up_only_its_own_asks() {
        let (release, released) = tokio::sync::watch::channel(false);
        let batches = Batches::start(
            Shape {
                lanes: 2,
                queue_max: 10,
                batch_max: 10,
            },
            |n: &u32| u64::from(*n),
            move |items: Vec<u32>| {
                let mut released = released.clone();
                async move {
                    // Lane 1 (odd asks) waits until released; lane 0 answers at once.
                    if items[0] % 2 == 1 {
                        let _ = released.wait_for(|go| *go).await;
                    }
                    items
                }
            },
        );
        let odd = tokio::spawn({
            let batches = batches.clone();
            async move { batches.ask(1).await }
        });
        for n in [2, 4, 6] {
            let answer = tokio::time::timeout(Duration::from_secs(30), batches.ask(n))
                .await
                .expect("lane 0 answers while lane 1 is held");
            assert_eq!(answer.unwrap(), n);
        }
        assert!(!odd.is_finished(), "lane 1 is still held");
        release.send(true).unwrap();
        assert_eq!(odd.await.unwrap().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_batch_that_panics_fails_its_own_asks_and_the_lane_goes_on() {
        let batches = Batches::start(
            Shape {
                lanes: 1,
                queue_max: 10,
                batch_max: 1,
            },
            |_| 0,
            |items: Vec<u32>| async move {
                assert_ne!(items[0], 13, "a bug met");
                items
            },
        );
        let failed = batches.ask(13).await.expect_err("its batch panicked");
        assert_eq!(failed.code, ErrorCode::System);
        assert_eq!(batches.ask(14).await.unwrap(), 14, "the lane still answers");
    }
}
