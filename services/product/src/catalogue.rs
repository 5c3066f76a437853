//! The catalogue's rules: what may be added and changed, how lists and searches page, how
//! stock moves, what an unlisted product is hidden from, and that every change reaches the
//! cache.

use tracing::Instrument;

use letsgo_platform::errors::{AppError, AppResult, ErrorCode};

use crate::product_cache::{Lookup, ProductCache};
use crate::reservations::Reservations;
use crate::rules;
use crate::storage::{
    CatalogueStore, NewProduct, ProductChange, ProductRecord, ReservedLine, ReviewRecord, SortKey,
    StockChange, released_error,
};

pub struct Page<T> {
    pub total: i64,
    pub items: Vec<T>,
}

pub struct Catalogue {
    store: CatalogueStore,
    /// Reservations, decided in batches as they arrive together.
    reservations: Reservations,
    cache: ProductCache,
}

use letsgo_platform::limits::PRODUCT_PAGE_SIZE_DEFAULT as DEFAULT_PAGE_SIZE;
use letsgo_platform::limits::SETTLEMENT_BATCH_MAX;

/// Runs a change and its invalidation to the end even when the caller stops waiting (a
/// cancelled or timed-out gRPC call drops its handler): a change committed but never
/// announced would leave the caches (this service's and the gateways') stale until their TTLs.
/// The work stays in the caller's span (and trace).
async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = AppResult<T>> + Send + 'static,
) -> AppResult<T> {
    tokio::spawn(work.in_current_span())
        .await
        .map_err(AppError::system)?
}
fn not_found() -> AppError {
    AppError::of(ErrorCode::ProductNotFound)
}

/// Most products one batched read may ask for (a cart's worth, with room).
const BATCH_MAX: usize = 200;

/// Refuses a settlement call (commits, sales) over too many orders.
fn check_settlement_batch(order_ids: &[i64]) -> AppResult<()> {
    if order_ids.len() > SETTLEMENT_BATCH_MAX {
        return Err(AppError::invalid(format!(
            "at most {SETTLEMENT_BATCH_MAX} orders per call"
        )));
    }
    Ok(())
}

impl Catalogue {
    pub fn new(store: CatalogueStore, cache: ProductCache, reservations: Reservations) -> Self {
        Catalogue {
            reservations,
            store,
            cache,
        }
    }

    pub async fn add(&self, product: NewProduct) -> AppResult<i64> {
        rules::check_name(&product.name)?;
        rules::check_description(&product.description)?;
        rules::check_price(product.price_cents)?;
        rules::check_stock(product.stock)?;
        rules::check_category(&product.category)?;
        rules::check_images(&product.images)?;
        self.store.insert(product).await
    }

    pub async fn update(&self, id: i64, change: ProductChange) -> AppResult<()> {
        if let Some(name) = &change.name {
            rules::check_name(name)?;
        }
        if let Some(description) = &change.description {
            rules::check_description(description)?;
        }
        if let Some(price) = change.price_cents {
            rules::check_price(price)?;
        }
        if let Some(category) = &change.category {
            rules::check_category(category)?;
        }
        if let Some(images) = &change.images {
            rules::check_images(images)?;
        }
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let found = to_completion(async move {
            let found = store.update(id, change).await?;
            cache.invalidate(&[id]).await;
            Ok(found)
        })
        .await?;
        if found {
            Ok(())
        } else {
            Err(AppError::of(ErrorCode::ProductNotFound))
        }
    }

    /// Takes a product off sale (`listed` false) or puts it back. The caches drop it before
    /// this answers, like any change.
    pub async fn set_listed(&self, id: i64, listed: bool) -> AppResult<()> {
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let found = to_completion(async move {
            let found = store.set_listed(id, listed).await?;
            cache.invalidate(&[id]).await;
            Ok(found)
        })
        .await?;
        if found {
            Ok(())
        } else {
            Err(AppError::of(ErrorCode::ProductNotFound))
        }
    }

    /// A listed product, served from the cache when it can be; an unlisted one is as missing
    /// as an unknown one (3000).
    pub async fn get(&self, id: i64) -> AppResult<ProductRecord> {
        let product = match self.cache.lookup(id).await {
            Lookup::Hit(product) => *product,
            Lookup::Miss { version } => {
                let product = self.store.get(id).await?.ok_or_else(not_found)?;
                self.cache.store(&product, &version).await;
                product
            }
        };
        if !product.listed {
            return Err(not_found());
        }
        Ok(product)
    }

    /// Always from the database: the cart needs current prices and stock. Unlisted products
    /// are left out, as unknown ones are.
    pub async fn batch_get(&self, ids: &[i64]) -> AppResult<Vec<ProductRecord>> {
        if ids.len() > BATCH_MAX {
            return Err(AppError::invalid(format!(
                "at most {BATCH_MAX} products per batch"
            )));
        }
        self.store.batch_get(ids).await
    }

    /// Listed products; `include_unlisted` (for admins: the caller checks) adds the others.
    pub async fn list(
        &self,
        category: &str,
        sort: SortKey,
        ascending: bool,
        include_unlisted: bool,
        page: i32,
        page_size: i32,
    ) -> AppResult<Page<ProductRecord>> {
        let (limit, offset) = rules::page(page, page_size, DEFAULT_PAGE_SIZE)?;
        let category = Some(category.trim()).filter(|category| !category.is_empty());
        let (total, items) = self
            .store
            .list(category, sort, ascending, include_unlisted, limit, offset)
            .await?;
        Ok(Page { total, items })
    }

    /// Listed products matching `keyword`; `include_unlisted` (for admins) adds the others.
    pub async fn search(
        &self,
        keyword: &str,
        include_unlisted: bool,
        page: i32,
        page_size: i32,
    ) -> AppResult<Page<ProductRecord>> {
        let words = rules::keyword_words(keyword)?;
        let (limit, offset) = rules::page(page, page_size, DEFAULT_PAGE_SIZE)?;
        let (total, items) = self
            .store
            .search(&words, keyword.trim(), include_unlisted, limit, offset)
            .await?;
        Ok(Page { total, items })
    }

    pub async fn change_stock(&self, id: i64, change: StockChange) -> AppResult<i64> {
        match change {
            StockChange::SetTo(stock) => rules::check_stock(stock)?,
            // Larger than any stock: refused before it could overflow the column.
            StockChange::Delta(delta) if delta.unsigned_abs() > rules::STOCK_MAX as u64 => {
                return Err(AppError::invalid(format!(
                    "a stock change must be at most {} either way",
                    rules::STOCK_MAX
                )));
            }
            StockChange::Delta(_) => {}
        }
        let (store, cache) = (self.store.clone(), self.cache.clone());
        to_completion(async move {
            let result = store.change_stock(id, change).await;
            cache.invalidate(&[id]).await;
            result
        })
        .await
    }

    pub async fn reserve(
        &self,
        order_id: i64,
        lines: &[(i64, i64)],
    ) -> AppResult<Vec<ReservedLine>> {
        if lines.is_empty() {
            return Err(AppError::invalid("a reservation needs at least one line"));
        }
        if lines.iter().any(|(_, quantity)| *quantity <= 0) {
            return Err(AppError::invalid("quantities must be positive"));
        }
        // The batch that decides it announces the stock it moved before answering.
        let reservation = self.reservations.reserve(order_id, lines.to_vec()).await?;
        Ok(reservation.lines)
    }

    /// Keeps an order's reservation for good; 5001 when it expired first.
    pub async fn commit_reservation(&self, order_id: i64) -> AppResult<()> {
        if self.commit_reservations(&[order_id]).await?.is_empty() {
            Ok(())
        } else {
            Err(released_error())
        }
    }

    /// Keeps many orders' reservations for good, in one transaction; answers the orders whose
    /// stock is no longer held (their orders must be cancelled).
    pub async fn commit_reservations(&self, order_ids: &[i64]) -> AppResult<Vec<i64>> {
        check_settlement_batch(order_ids)?;
        let (store, cache, order_ids) =
            (self.store.clone(), self.cache.clone(), order_ids.to_vec());
        to_completion(async move {
            let commits = store.commit_reservations(&order_ids).await?;
            cache.invalidate(&commits.touched).await;
            Ok(commits.lost)
        })
        .await
    }

    /// Releases every reservation past its expiry; answers how many.
    pub async fn release_expired(&self) -> AppResult<usize> {
        let expired = self.store.expired_reservations(100).await?;
        for order_id in &expired {
            let touched = self.store.release_expired(*order_id).await?;
            if !touched.is_empty() {
                tracing::info!(order_id, "released stock no order committed in time");
            }
            self.cache.invalidate(&touched).await;
        }
        Ok(expired.len())
    }

    /// Gives back what each of `order_ids` holds, once, in one transaction.
    pub async fn release(&self, order_ids: &[i64]) -> AppResult<()> {
        check_settlement_batch(order_ids)?;
        let (store, cache, order_ids) =
            (self.store.clone(), self.cache.clone(), order_ids.to_vec());
        to_completion(async move {
            let touched = store.release(&order_ids).await?;
            cache.invalidate(&touched).await;
            Ok(())
        })
        .await
    }

    /// Counts the units of `order_ids` as sold, each order once, in one transaction.
    pub async fn record_sales(&self, order_ids: &[i64]) -> AppResult<()> {
        check_settlement_batch(order_ids)?;
        let (store, cache, order_ids) =
            (self.store.clone(), self.cache.clone(), order_ids.to_vec());
        to_completion(async move {
            let touched = store.record_sales(&order_ids).await?;
            cache.invalidate(&touched).await;
            Ok(())
        })
        .await
    }

    pub async fn review(
        &self,
        product_id: i64,
        user_id: i64,
        rating: i32,
        comment: &str,
    ) -> AppResult<i64> {
        rules::check_review(rating, comment)?;
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let comment = comment.trim().to_owned();
        to_completion(async move {
            let id = store
                .upsert_review(product_id, user_id, rating, &comment)
                .await?;
            cache.invalidate(&[product_id]).await;
            Ok(id)
        })
        .await
    }

    pub async fn reviews(
        &self,
        product_id: i64,
        page: i32,
        page_size: i32,
    ) -> AppResult<Page<ReviewRecord>> {
        let (limit, offset) = rules::page(page, page_size, DEFAULT_PAGE_SIZE)?;
        if !self
            .store
            .get(product_id)
            .await?
            .is_some_and(|product| product.listed)
        {
            return Err(not_found());
        }
        let (total, items) = self.store.list_reviews(product_id, limit, offset).await?;
        Ok(Page { total, items })
    }

    pub async fn is_empty(&self) -> AppResult<bool> {
        self.store.is_empty().await
    }
}
