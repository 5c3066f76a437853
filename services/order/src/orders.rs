//! The order rules: how an order is made from a basket, who may see and cancel it, when it
//! times out, how payment events move it on, and how it is shipped and completed.
//!
//! Stock is reserved in the product service under the order's id before the order is written;
//! every path that gives up after reserving releases again. Releases and sales counts owed to
//! the product service after a status change are retried by [`Orders::sweep`] until they land.
//!
//! Fulfilment: an admin ships a paid order with its carrier and tracking number; the buyer
//! confirms receipt of a shipped one, or [`Orders::sweep`] completes it once it has been
//! shipped for the auto-complete period. Each change writes its event in its own transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use letsgo_platform::discovery::RpcChannel;
use letsgo_platform::errors::{AppError, AppResult, ErrorCode};
use letsgo_platform::events::Event;
use letsgo_platform::events::topics;
use letsgo_platform::limits::SETTLEMENT_BATCH_MAX;
use letsgo_platform::proto::cart::v1::cart_service_client::CartServiceClient;
use letsgo_platform::proto::product::v1::{
    CommitReservationRequest, CommitReservationsRequest, RecordSalesOfOrdersRequest,
    RecordSalesRequest, ReleaseReservationsRequest, ReleaseStockRequest, ReserveStockRequest,
    StockLine, product_service_client::ProductServiceClient,
};
use tonic::{Code, Status};

use crate::cart_removals::CartRemovals;
use crate::rules;
use crate::rules::OrderStatus;
use crate::saving::Saver;
use crate::settlement::SettlementQueue;
use crate::storage::{
    CancelOutcome, CompleteOutcome, CompletedBy, NewItem, NewOrder, OrderFilter, OrderStore,
    OrderToWrite, OrderWithItems, PaidOutcome, PaymentSucceeded, ShipOutcome, not_found,
};

/// Batches of settlements one sweep makes at most, so a backlog drains at once without one
/// pass holding the sweeper for long.
const SWEEP_BATCHES_MAX: usize = 20;

pub struct OrderRequest {
    pub user_id: i64,
    pub lines: Vec<(i64, i64)>,
    pub address: String,
    pub phone: String,
    pub remark: String,
}

pub struct CreatedOrder {
    pub id: i64,
    pub order_no: String,
    pub total_amount_cents: i64,
}

/// How committing an order's reservation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    Yes,
    /// Not now (the product service or database away): the sweeper retries.
    Later,
    /// Too late: the order is cancelled.
    Expired,
}

pub struct Page {
    pub total: i64,
    pub orders: Vec<OrderWithItems>,
}

/// The consumer group that marks orders paid.
pub const PAYMENT_CONSUMER_GROUP: &str = "letsgo-order";

#[derive(Clone)]
pub struct Orders {
    store: OrderStore,
    /// Where new orders wait to be written, in batches.
    saver: Saver,
    products: ProductServiceClient<RpcChannel>,
    /// Where ordered products wait to leave their carts, in batches.
    carts: CartRemovals,
    payment_timeout: Duration,
    /// How long after shipping an order completes by itself.
    auto_complete: Duration,
    /// Where stock commits and sales counts wait to be settled in batches; without one, each
    /// order settles its own at once.
    settlement: Option<SettlementQueue>,
}

/// Merges repeated products of a basket into one line each.
fn merge(lines: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
    for (product_id, quantity) in lines {
        *merged.entry(*product_id).or_default() += quantity;
    }
    merged.into_iter().collect()
}

impl Orders {
    /// The order rules over `store`; starts the writers of new orders on the current runtime.
    pub fn new(
        store: OrderStore,
        products: ProductServiceClient<RpcChannel>,
        carts: CartServiceClient<RpcChannel>,
        payment_timeout: Duration,
        auto_complete: Duration,
    ) -> Self {
        Orders {
            saver: Saver::start(store.clone()),
            store,
            products,
            carts: CartRemovals::start(carts),
            payment_timeout,
            auto_complete,
            settlement: None,
        }
    }

    /// The same orders, settling with the product service through `queue` in batches.
    pub fn settling_through(mut self, queue: SettlementQueue) -> Self {
        self.settlement = Some(queue);
        self
    }

    pub async fn create(&self, request: OrderRequest) -> AppResult<CreatedOrder> {
        rules::check_lines(&request.lines)?;
        let lines = merge(&request.lines);
        rules::check_lines(&lines)?;
        let address = request.address.trim().to_owned();
        rules::check_address(&address)?;
        rules::check_phone(&request.phone)?;
        rules::check_remark(&request.remark)?;

        // Names and prices come from the catalogue, never from the client: the reservation
        // answers them, read in the same transaction that takes the stock.
        let id = self.store.next_id().await?;
        let reserved = self
            .products
            .clone()
            .reserve_stock(ReserveStockRequest {
                order_id: id,
                lines: lines
                    .iter()
                    .map(|(product_id, quantity)| StockLine {
                        product_id: *product_id,
                        quantity: *quantity,
                    })
                    .collect(),
            })
            .await;
        let held = match reserved {
            Ok(reply) => reply.into_inner().lines,
            Err(status) => {
                let error = AppError::from(status);
                // Refused (sold out, not for sale): the product service took nothing and has
                // recorded the refusal, so a late retry takes nothing either. Any other failure
                // leaves the outcome unknown: the reservation may have landed with its answer
                // lost, and releasing also stops a late retry from taking stock.
                if !matches!(
                    error.code,
                    ErrorCode::OutOfStock | ErrorCode::ProductNotFound
                ) {
                    self.release_with_retries(id).await;
                }
                return Err(error);
            }
        };
        let mut items = Vec::with_capacity(held.len());
        let mut total: Option<i64> = Some(0);
        for line in held {
            total = line
                .price_cents
                .checked_mul(line.quantity)
                .and_then(|cost| total?.checked_add(cost));
            items.push(NewItem {
                product_id: line.product_id,
                name: line.name,
                price_cents: line.price_cents,
                quantity: line.quantity,
                image: line.image,
            });
        }
        let Some(total) = total else {
            self.release_with_retries(id).await;
            return Err(AppError::invalid("the order's total is too large"));
        };
        let order = NewOrder {
            id,
            order_no: rules::order_no(id, chrono::Utc::now()),
            user_id: request.user_id,
            total_amount_cents: total,
            address,
            phone: request.phone,
            remark: request.remark,
            items,
        };
        let order_no = order.order_no.clone();
        let saved = match OrderToWrite::new(order) {
            Ok(order) => self.saver.save(order).await,
            Err(error) => Err(error),
        };
        if let Err(error) = saved {
            self.release_with_retries(id).await;
            return Err(error);
        }
        // Saved: the reservation is to be kept for good, in the next batch (its hold lasts
        // minutes). A product service that is away leaves the commit to the sweeper; a
        // reservation that expired first cancels the order.
        match &self.settlement {
            Some(queue) => queue.commit_stock(id),
            None => match self.commit_stock(id).await {
                Committed::Yes | Committed::Later => {}
                Committed::Expired => {
                    return Err(AppError::new(
                        ErrorCode::ServiceUnavailable,
                        "the stock held for this order ran out of time before the order was \
                         saved; please order again",
                    ));
                }
            },
        }
        // The ordered products leave the cart before the answer; a cart that is away only
        // keeps them there.
        let ordered: Vec<i64> = lines.iter().map(|(id, _)| *id).collect();
        if let Err(error) = self.carts.remove(request.user_id, ordered).await {
            tracing::warn!(order_id = id, %error, "could not remove ordered products from the cart");
        }
        Ok(CreatedOrder {
            id,
            order_no,
            total_amount_cents: total,
        })
    }

    /// Commits the order's reservation and records it; an expired reservation cancels the
    /// order (its stock is back in the catalogue already).
    async fn commit_stock(&self, order_id: i64) -> Committed {
        self.commit_stock_of(&[order_id])
            .await
            .into_iter()
            .find(|(id, _)| *id == order_id)
            .map_or(Committed::Later, |(_, committed)| committed)
    }

    /// Commits the reservations of saved orders in one call and records it in one statement;
    /// an order whose stock is no longer held is cancelled (its stock is back in the catalogue
    /// already). Answers how it went for each order.
    pub(crate) async fn commit_stock_of(&self, order_ids: &[i64]) -> Vec<(i64, Committed)> {
        let lost = match self.commit_reservations(order_ids).await {
            Ok(lost) => lost,
            Err(status) => {
                tracing::warn!(orders = order_ids.len(), error = %status.message(), "committing reservations failed; the sweeper retries");
                return order_ids
                    .iter()
                    .map(|order_id| (*order_id, Committed::Later))
                    .collect();
            }
        };
        let (lost, kept): (Vec<i64>, Vec<i64>) = order_ids
            .iter()
            .partition(|order_id| lost.contains(order_id));
        let recorded = if kept.is_empty() {
            Committed::Yes
        } else {
            match self.store.mark_stock_committed(&kept).await {
                Ok(()) => Committed::Yes,
                Err(error) => {
                    tracing::warn!(orders = kept.len(), %error, "could not record committed reservations; the sweeper commits them again");
                    Committed::Later
                }
            }
        };
        let mut outcome: Vec<(i64, Committed)> = kept
            .into_iter()
            .map(|order_id| (order_id, recorded))
            .collect();
        for order_id in lost {
            // A buyer who cancelled meanwhile released the reservation: nothing to say then.
            let cancelled = match self
                .store
                .cancel(None, order_id, "stock hold expired")
                .await
            {
                Ok(CancelOutcome::Cancelled) => {
                    tracing::warn!(
                        order_id,
                        "the order's reservation expired before it was committed; cancelled the order"
                    );
                    let _ = self.settle_releases(&[order_id]).await;
                    Committed::Expired
                }
                Ok(_) => Committed::Expired,
                Err(error) => {
                    tracing::warn!(order_id, %error, "could not cancel; the sweeper will");
                    Committed::Later
                }
            };
            outcome.push((order_id, cancelled));
        }
        outcome
    }

    /// Asks the product service to keep the orders' reservations; answers the orders whose
    /// stock is no longer held. A product service older than the batch call (a rolling upgrade
    /// that reached this service first) is asked one order at a time.
    async fn commit_reservations(&self, order_ids: &[i64]) -> Result<Vec<i64>, Status> {
        let mut products = self.products.clone();
        match products
            .commit_reservations(CommitReservationsRequest {
                order_ids: order_ids.to_vec(),
            })
            .await
        {
            Ok(reply) => return Ok(reply.into_inner().lost_order_ids),
            Err(status) if status.code() != Code::Unimplemented => return Err(status),
            Err(_) => {}
        }
        let mut lost = Vec::new();
        for &order_id in order_ids {
            match products
                .commit_reservation(CommitReservationRequest { order_id })
                .await
            {
                Ok(_) => {}
                Err(status) if AppError::from(status.clone()).code == ErrorCode::BadOrderStatus => {
                    lost.push(order_id)
                }
                Err(status) => return Err(status),
            }
        }
        Ok(lost)
    }

    /// Asks the product service to count the orders' units as sold; one order at a time when
    /// it is older than the batch call.
    async fn record_sales_of_orders(&self, order_ids: &[i64]) -> Result<(), Status> {
        let mut products = self.products.clone();
        match products
            .record_sales_of_orders(RecordSalesOfOrdersRequest {
                order_ids: order_ids.to_vec(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if status.code() != Code::Unimplemented => return Err(status),
            Err(_) => {}
        }
        for &order_id in order_ids {
            products
                .record_sales(RecordSalesRequest { order_id })
                .await?;
        }
        Ok(())
    }

    async fn release(&self, order_id: i64) -> bool {
        match self
            .products
            .clone()
            .release_stock(ReleaseStockRequest { order_id })
            .await
        {
            Ok(_) => true,
            Err(status) => {
                tracing::warn!(order_id, error = %status.message(), "stock release failed; will retry");
                false
            }
        }
    }

    async fn release_with_retries(&self, order_id: i64) {
        for attempt in 0..3 {
            if self.release(order_id).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        tracing::error!(order_id, "stock of a failed order could not be released");
    }

    pub async fn get(&self, user_id: i64, order_id: i64) -> AppResult<OrderWithItems> {
        self.store
            .get(user_id, order_id)
            .await?
            .ok_or_else(not_found)
    }

    pub async fn list(
        &self,
        user_id: i64,
        status: i32,
        page: i32,
        page_size: i32,
    ) -> AppResult<Page> {
        let (limit, offset) = rules::page(page, page_size)?;
        let status = rules::status_filter(status)?;
        let (total, orders) = self.store.list(user_id, status, limit, offset).await?;
        Ok(Page { total, orders })
    }

    /// Every user's orders, newest first (for admins: the caller checks). A keyword matches
    /// the order number, address or phone anywhere, and, when it is a whole number, the order
    /// id or the buyer's user id.
    pub async fn list_all(
        &self,
        status: i32,
        keyword: &str,
        page: i32,
        page_size: i32,
    ) -> AppResult<Page> {
        let (limit, offset) = rules::page(page, page_size)?;
        let keyword = rules::keyword(keyword)?;
        let filter = OrderFilter {
            status: rules::status_filter(status)?,
            number: keyword.parse().ok(),
            text: Some(keyword).filter(|keyword| !keyword.is_empty()),
        };
        let (total, orders) = self.store.list_all(&filter, limit, offset).await?;
        Ok(Page { total, orders })
    }

    /// Ships a paid order (5001 otherwise). The same carrier and tracking number again is a
    /// success that changes nothing, so a retried request is safe; others are a 5001.
    pub async fn ship(&self, order_id: i64, carrier: &str, tracking_no: &str) -> AppResult<()> {
        let (carrier, tracking_no) = rules::shipment(carrier, tracking_no)?;
        match self.store.ship(order_id, &carrier, &tracking_no).await? {
            ShipOutcome::Shipped => {
                tracing::info!(order_id, carrier, tracking_no, "order shipped");
                Ok(())
            }
            ShipOutcome::AlreadyShipped => Ok(()),
            ShipOutcome::ShippedOtherwise => Err(AppError::new(
                ErrorCode::BadOrderStatus,
                "this order has already shipped with another carrier or tracking number",
            )),
            ShipOutcome::NotPaid(status) => Err(AppError::new(
                ErrorCode::BadOrderStatus,
                match status {
                    OrderStatus::Cancelled => "a cancelled order cannot be shipped",
                    _ => "only a paid order can be shipped",
                },
            )),
            ShipOutcome::NotFound => Err(not_found()),
        }
    }

    /// The buyer confirms a shipped order arrived: it completes. Only the buyer's own order
    /// (5000 otherwise), only a shipped one (5001 otherwise).
    pub async fn confirm_receipt(&self, user_id: i64, order_id: i64) -> AppResult<()> {
        match self
            .store
            .complete(Some(user_id), order_id, CompletedBy::Buyer)
            .await?
        {
            CompleteOutcome::Completed => Ok(()),
            CompleteOutcome::NotShipped => Err(AppError::new(
                ErrorCode::BadOrderStatus,
                "only a shipped order can be confirmed as received",
            )),
            CompleteOutcome::NotFound => Err(not_found()),
        }
    }

    /// Only a pending order can be cancelled (5002 otherwise); its stock goes back at once, or
    /// through the sweeper if the product service is away.
    pub async fn cancel(&self, user_id: i64, order_id: i64) -> AppResult<()> {
        match self.store.cancel(Some(user_id), order_id, "user").await? {
            CancelOutcome::Cancelled => {
                self.settle_releases(&[order_id]).await?;
                Ok(())
            }
            CancelOutcome::NotPending => Err(AppError::of(ErrorCode::CannotCancel)),
            CancelOutcome::NotFound => Err(not_found()),
        }
    }

    /// Gives back the stock of cancelled orders and records it; what the product service did
    /// not take stays owed (`stock_released` false) for the sweeper. Answers how many went.
    async fn settle_releases(&self, order_ids: &[i64]) -> AppResult<usize> {
        let released = self.release_all(order_ids).await;
        if !released.is_empty() {
            self.store.mark_stock_released(&released).await?;
        }
        Ok(released.len())
    }

    /// Asks the product service to give back the stock of `order_ids` in one call; answers the
    /// orders released. A product service older than the batch call (a rolling upgrade that
    /// reached this service first) is asked one order at a time.
    async fn release_all(&self, order_ids: &[i64]) -> Vec<i64> {
        if order_ids.is_empty() {
            return Vec::new();
        }
        match self
            .products
            .clone()
            .release_reservations(ReleaseReservationsRequest {
                order_ids: order_ids.to_vec(),
            })
            .await
        {
            Ok(_) => return order_ids.to_vec(),
            Err(status) if status.code() != Code::Unimplemented => {
                tracing::warn!(orders = order_ids.len(), error = %status.message(), "stock release failed; the sweeper retries");
                return Vec::new();
            }
            Err(_) => {}
        }
        let mut released = Vec::with_capacity(order_ids.len());
        for &order_id in order_ids {
            if self.release(order_id).await {
                released.push(order_id);
            }
        }
        released
    }

    /// Counts the units of paid orders as sold, in one call, and records it in one statement;
    /// a failure leaves them to the sweeper.
    /// Answers whether both went through.
    pub(crate) async fn record_sales_of(&self, order_ids: &[i64]) -> bool {
        match self.record_sales_of_orders(order_ids).await {
            Ok(_) => match self.store.mark_sales_recorded(order_ids).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(orders = order_ids.len(), %error, "could not record counted sales; the sweeper counts them again");
                    false
                }
            },
            Err(status) => {
                tracing::warn!(orders = order_ids.len(), error = %status.message(), "recording sales failed; the sweeper retries");
                false
            }
        }
    }

    /// Handles `payment.succeeded`: marks the order paid (once, however often the event comes)
    /// and counts its units as sold.
    pub async fn on_payment_succeeded(&self, event: &Event) -> AppResult<()> {
        let payment = payment_succeeded(event)?;
        let mut outcome = self
            .store
            .mark_paid(PAYMENT_CONSUMER_GROUP, &payment)
            .await?;
        if outcome == PaidOutcome::AwaitsStockCommit {
            // Paid before its reservation was committed (the product service was away): commit
            // it first, so the units sold are units held. An expired one cancels the order.
            if self.commit_stock(payment.order_id).await == Committed::Later {
                return Err(not_committed_yet());
            }
            outcome = self
                .store
                .mark_paid(PAYMENT_CONSUMER_GROUP, &payment)
                .await?;
        }
        if outcome == PaidOutcome::AwaitsStockCommit {
            return Err(not_committed_yet());
        }
        self.after_payment(&payment, outcome).await;
        Ok(())
    }

    /// Handles payment events that arrived together in one transaction, when every one is a
    /// `payment.succeeded` for an order that can be settled now. Any other batch is refused,
    /// unchanged, and the consumer hands its events to [`Orders::on_payment_event`] one by one.
    pub async fn on_payment_events(&self, events: Vec<Event>) -> AppResult<()> {
        let payments = events
            .iter()
            .map(|event| match event.event_type.as_str() {
                topics::PAYMENT_SUCCEEDED => payment_succeeded(event),
                other => Err(AppError::invalid(format!(
                    "{other} is handled one event at a time"
                ))),
            })
            .collect::<AppResult<Vec<_>>>()?;
        let Some(outcomes) = self
            .store
            .mark_many_paid(PAYMENT_CONSUMER_GROUP, &payments)
            .await?
        else {
            return Err(not_committed_yet());
        };
        for (payment, outcome) in payments.iter().zip(outcomes) {
            self.after_payment(payment, outcome).await;
        }
        Ok(())
    }

    /// What follows marking an order paid: its units are counted as sold.
    async fn after_payment(&self, payment: &PaymentSucceeded, outcome: PaidOutcome) {
        match outcome {
            PaidOutcome::Paid => match &self.settlement {
                Some(queue) => queue.record_sales(payment.order_id),
                None => {
                    self.record_sales_of(&[payment.order_id]).await;
                }
            },
            PaidOutcome::NotPending(status) => {
                // Paid after it was cancelled: the payment service heard of the cancellation
                // too, and refunds the payment (payment.refunded then marks the order).
                tracing::warn!(
                    order_id = payment.order_id,
                    ?status,
                    payment_no = payment.payment_no,
                    "payment succeeded for an order that is not pending; the payment service refunds it"
                );
            }
            PaidOutcome::AlreadyHandled | PaidOutcome::AwaitsStockCommit => {}
        }
    }

    /// Handles `payment.refunded`: the order shows the refund.
    pub async fn on_payment_refunded(&self, event: &Event) -> AppResult<()> {
        let order_id = event.data["orderId"]
            .as_i64()
            .ok_or_else(|| AppError::invalid("payment.refunded without orderId"))?;
        if self
            .store
            .mark_refunded(PAYMENT_CONSUMER_GROUP, event.id, order_id)
            .await?
        {
            tracing::info!(order_id, "the order's payment was refunded");
        }
        Ok(())
    }

    /// Hands a payment event to its handler.
    pub async fn on_payment_event(&self, event: &Event) -> AppResult<()> {
        match event.event_type.as_str() {
            topics::PAYMENT_SUCCEEDED => self.on_payment_succeeded(event).await,
            topics::PAYMENT_REFUNDED => self.on_payment_refunded(event).await,
            other => Err(AppError::invalid(format!("unexpected event type {other}"))),
        }
    }

    /// One pass of the background work: cancels orders unpaid past the timeout, completes
    /// orders shipped longer than the auto-complete period, and retries the releases and sales
    /// counts still owed to the product service.
    pub async fn sweep(&self) -> AppResult<()> {
        let timeout = chrono::Duration::from_std(self.payment_timeout).map_err(AppError::system)?;
        // Unpaid orders past the timeout (thousands at once, half an hour after a sale), a
        // batch at a time while batches come full: each batch one transaction here and one
        // release in the product service.
        for _ in 0..SWEEP_BATCHES_MAX {
            let cancelled = self
                .store
                .cancel_expired(
                    chrono::Utc::now() - timeout,
                    SETTLEMENT_BATCH_MAX as i64,
                    "payment timeout",
                )
                .await?;
            if !cancelled.is_empty() {
                tracing::info!(order_ids = ?cancelled, "cancelled orders unpaid past the payment timeout");
            }
            self.settle_releases(&cancelled).await?;
            if cancelled.len() < SETTLEMENT_BATCH_MAX {
                break;
            }
        }
        let auto_complete =
            chrono::Duration::from_std(self.auto_complete).map_err(AppError::system)?;
        for order_id in self
            .store
            .completions_due(chrono::Utc::now() - auto_complete, 100)
            .await?
        {
            // The buyer may have confirmed since: then nothing changes here.
            if self
                .store
                .complete(None, order_id, CompletedBy::Timeout)
                .await?
                == CompleteOutcome::Completed
            {
                tracing::info!(order_id, "completed an order shipped long enough ago");
            }
        }
        // What the settlement queue did not settle (it was full, or the process stopped
        // first), with a moment's grace for the batch in flight; a batch at a time while they
        // are full and going through.
        let grace = chrono::Duration::seconds(2);
        for _ in 0..SWEEP_BATCHES_MAX {
            let due = self
                .store
                .commits_due(chrono::Utc::now() - grace, SETTLEMENT_BATCH_MAX as i64)
                .await?;
            if due.is_empty() {
                break;
            }
            let outcome = self.commit_stock_of(&due).await;
            let stuck = outcome.iter().all(|(_, c)| *c == Committed::Later);
            if stuck || due.len() < SETTLEMENT_BATCH_MAX {
                break;
            }
        }
        // Releases the product service did not take when they were made (it was away): a
        // batch at a time while they come full and go through.
        for _ in 0..SWEEP_BATCHES_MAX {
            let owed = self.store.releases_due(SETTLEMENT_BATCH_MAX as i64).await?;
            let released = self.settle_releases(&owed).await?;
            if released < owed.len() || owed.len() < SETTLEMENT_BATCH_MAX {
                break;
            }
        }
        for _ in 0..SWEEP_BATCHES_MAX {
            let due = self
                .store
                .sales_due(chrono::Utc::now() - grace, SETTLEMENT_BATCH_MAX as i64)
                .await?;
            if due.is_empty() {
                break;
            }
            let recorded = self.record_sales_of(&due).await;
            if !recorded || due.len() < SETTLEMENT_BATCH_MAX {
                break;
            }
        }
        Ok(())
    }
}

/// The order and payment a `payment.succeeded` event names.
fn payment_succeeded(event: &Event) -> AppResult<PaymentSucceeded> {
    Ok(PaymentSucceeded {
        event_id: event.id,
        order_id: event.data["orderId"]
            .as_i64()
            .ok_or_else(|| AppError::invalid("payment.succeeded without orderId"))?,
        payment_no: event.data["paymentNo"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A payment event that must wait for the order's stock to be committed: retried later.
fn not_committed_yet() -> AppError {
    AppError::new(
        ErrorCode::ServiceUnavailable,
        "the order's reservation is not committed yet",
    )
}
