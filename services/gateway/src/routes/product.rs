//! `/api/v1/product/*`: browse, search, detail, reviews; add, update, stock and unlisting for
//! admins. Shoppers see listed products only.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use letsgo_platform::errors::{AppError, Envelope};
use letsgo_platform::limits::{PAGE_SIZE_MAX, PRODUCT_PAGE_SIZE_DEFAULT, PRODUCT_STOCK_MAX};
use letsgo_platform::proto::product::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, ErrorEnvelope, SuccessData, success};
use crate::app::AppState;
use crate::auth::{Admin, SignedIn};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::money::Yuan;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductData {
    pub id: i64,
    pub name: String,
    pub description: String,
    #[schema(value_type = f64)]
    pub price: Yuan,
    pub stock: i64,
    pub category: String,
    pub images: Vec<String>,
    /// A JSON object, as a string (the original's form).
    pub attributes: String,
    /// Units sold.
    pub sales: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Average review rating, one decimal; 0 without reviews (our addition).
    pub rating: f64,
    /// Number of reviews (our addition).
    pub review_count: i64,
    /// False for a product an admin took off sale: only the admins' list shows one (our
    /// addition).
    pub listed: bool,
}

impl From<pb::Product> for ProductData {
    fn from(product: pb::Product) -> Self {
        ProductData {
            id: product.id,
            name: product.name,
            description: product.description,
            price: Yuan(product.price_cents),
            stock: product.stock,
            category: product.category,
            images: product.images,
            attributes: product.attributes,
            sales: product.sales,
            created_at: product.created_at,
            updated_at: product.updated_at,
            rating: product.rating_average,
            review_count: product.rating_count,
            listed: product.listed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductPageData {
    pub total: i64,
    pub products: Vec<ProductData>,
}

pub(crate) fn page_data(page: pb::ProductPage) -> ProductPageData {
    ProductPageData {
        total: page.total,
        products: page.products.into_iter().map(ProductData::from).collect(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductDetailData {
    pub product: ProductData,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// From 1; default 1.
    pub page: Option<i32>,
    /// 1 to 100 (larger is clamped); default 20.
    pub page_size: Option<i32>,
    pub category: Option<String>,
    /// price, created or sales; default created.
    pub sort_by: Option<String>,
    /// asc or desc; default desc.
    pub order: Option<String>,
}

pub(crate) fn page_args(page: Option<i32>, page_size: Option<i32>) -> Result<(i32, i32), AppError> {
    let page = page.unwrap_or(1);
    let page_size = page_size.unwrap_or(PRODUCT_PAGE_SIZE_DEFAULT);
    if page < 1 {
        return Err(AppError::invalid("page must be at least 1"));
    }
    if page_size < 1 {
        return Err(AppError::invalid("pageSize must be at least 1"));
    }
    Ok((page, page_size.min(PAGE_SIZE_MAX)))
}

/// Lists the catalogue, newest first unless asked otherwise.
#[utoipa::path(get, path = "/api/v1/product/list", tag = "product", params(ListQuery),
    responses(
        (status = 200, description = "A page of products", body = Envelope<ProductPageData>),
        (status = 400, description = "1001: page < 1, pageSize < 1, unknown sortBy or order", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<ProductPageData> {
    let (page, page_size) = page_args(query.page, query.page_size)?;
    let sort_by = match query.sort_by.as_deref().unwrap_or("created") {
        "created" | "" => pb::SortBy::Created,
        "price" => pb::SortBy::Price,
        "sales" => pb::SortBy::Sales,
        other => {
            return Err(AppError::invalid(format!(
                "sortBy must be price, created or sales, not {other:?}"
            )));
        }
    };
    let ascending = match query.order.as_deref().unwrap_or("desc") {
        "desc" | "" => false,
        "asc" => true,
        other => {
            return Err(AppError::invalid(format!(
                "order must be asc or desc, not {other:?}"
            )));
        }
    };
    let reply = state
        .product_client()
        .list_products(pb::ListProductsRequest {
            page,
            page_size,
            category: query.category.unwrap_or_default(),
            sort_by: sort_by as i32,
            ascending,
            include_unlisted: false,
        })
        .await?
        .into_inner();
    success(page_data(reply))
}

/// One product.
#[utoipa::path(get, path = "/api/v1/product/detail/{id}", tag = "product", params(("id" = i64, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Envelope<ProductDetailData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn detail(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, AppError> {
    // Served from the gateway's cache when it can be (see `product_cache`).
    let cache = &state.product_details;
    if let Some(body) = cache.get(id) {
        return Ok(json_body(body));
    }
    let ticket = cache.ticket(id);
    let product = state
        .product_client()
        .get_product(pb::GetProductRequest { id })
        .await?
        .into_inner();
    let answer = Envelope::success(ProductDetailData {
        product: product.into(),
    });
    let body = Bytes::from(serde_json::to_vec(&answer).map_err(AppError::system)?);
    cache.store(id, ticket, body.clone());
    Ok(json_body(body))
}

fn json_body(body: Bytes) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words to find in name, description or category, case-insensitively.
    pub keyword: String,
    pub page: Option<i32>,
    pub page_size: Option<i32>,
}

/// Searches name, description and category; best matches first.
#[utoipa::path(get, path = "/api/v1/product/search", tag = "product", params(SearchQuery),
    responses(
        (status = 200, description = "A page of matches", body = Envelope<ProductPageData>),
        (status = 400, description = "1001: no keyword, or bad paging", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn search(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> ApiResult<ProductPageData> {
    let (page, page_size) = page_args(query.page, query.page_size)?;
    let reply = state
        .product_client()
        .search_products(pb::SearchProductsRequest {
            keyword: query.keyword,
            page,
            page_size,
            include_unlisted: false,
        })
        .await?
        .into_inner();
    success(page_data(reply))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddProductRequest {
    /// 1–200 characters.
    pub name: String,
    pub description: String,
    /// Above 0, at most two decimals.
    #[schema(value_type = f64)]
    pub price: Yuan,
    /// 0 or more.
    pub stock: i64,
    pub category: String,
    /// At least one image URL.
    pub images: Vec<String>,
    /// A JSON object as a string.
    #[serde(default)]
    pub attributes: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddProductData {
    pub product_id: i64,
}

/// Adds a product (admins only).
#[utoipa::path(post, path = "/api/v1/product/add", tag = "product", security(("bearer" = [])), request_body = AddProductRequest,
    responses(
        (status = 200, description = "Added", body = Envelope<AddProductData>),
        (status = 400, description = "1001: a field out of its rules", body = ErrorEnvelope),
        (status = 401, description = "2003/2004: no, bad or expired token", body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn add(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiJson(body): ApiJson<AddProductRequest>,
) -> ApiResult<AddProductData> {
    let reply = state
        .product_client()
        .add_product(pb::AddProductRequest {
            name: body.name,
            description: body.description,
            price_cents: body.price.0,
            stock: body.stock,
            category: body.category,
            images: body.images,
            attributes: body.attributes.unwrap_or_default(),
        })
        .await?
        .into_inner();
    success(AddProductData {
        product_id: reply.product_id,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProductRequest {
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub price: Option<Yuan>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub attributes: Option<String>,
    /// Not accepted here: stock changes go through PUT /api/v1/product/stock.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub stock: Option<serde_json::Value>,
}

/// Changes the fields given (admins only). Stock is not among them.
#[utoipa::path(put, path = "/api/v1/product/update", tag = "product", security(("bearer" = [])), request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<SuccessData>),
        (status = 400, description = "1001: a field out of its rules, or stock given", body = ErrorEnvelope),
        (status = 401, description = "2003/2004: no, bad or expired token", body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiJson(body): ApiJson<UpdateProductRequest>,
) -> ApiResult<SuccessData> {
    if body.stock.is_some() {
        return Err(AppError::invalid(
            "stock cannot be changed here: use PUT /api/v1/product/stock",
        ));
    }
    state
        .product_client()
        .update_product(pb::UpdateProductRequest {
            id: body.id,
            name: body.name,
            description: body.description,
            price_cents: body.price.map(|price| price.0),
            category: body.category,
            images: body.images.map(|values| pb::StringList { values }),
            attributes: body.attributes,
        })
        .await?;
    // The product service announces the change to every gateway; this one also drops its
    // copy before answering, so the admin reads their own change at once.
    state.product_details.evict(body.id);
    success(SuccessData { success: true })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeStockRequest {
    pub product_id: i64,
    /// Sets the stock to this (0 or more).
    #[serde(default)]
    pub stock: Option<i64>,
    /// Or moves it by this much, up or down (never below 0; at most the largest stock either
    /// way).
    #[serde(default)]
    pub delta: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockData {
    pub stock: i64,
}

/// Sets or moves a product's stock (admins only; our addition).
#[utoipa::path(put, path = "/api/v1/product/stock", tag = "product", security(("bearer" = [])), request_body = ChangeStockRequest,
    responses(
        (status = 200, description = "The new stock", body = Envelope<StockData>),
        (status = 400, description = "1001: neither or both of stock and delta, a stock out of its range, or a larger delta; 3002: the delta would take this product's stock past the largest stock", body = ErrorEnvelope),
        (status = 401, description = "2003/2004: no, bad or expired token", body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 409, description = "3001: the delta would take stock below zero", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn change_stock(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiJson(body): ApiJson<ChangeStockRequest>,
) -> ApiResult<StockData> {
    use pb::change_stock_request::Change;
    let change = match (body.stock, body.delta) {
        (Some(stock), None) => Change::SetTo(stock),
        // A larger move could only take the stock out of its range, or its arithmetic past
        // the integer's.
        (None, Some(delta)) if delta.abs() > PRODUCT_STOCK_MAX => {
            return Err(AppError::invalid(format!(
                "delta must be -{PRODUCT_STOCK_MAX} to {PRODUCT_STOCK_MAX}"
            )));
        }
        (None, Some(delta)) => Change::Delta(delta),
        _ => return Err(AppError::invalid("give exactly one of stock and delta")),
    };
    let reply = state
        .product_client()
        .change_stock(pb::ChangeStockRequest {
            product_id: body.product_id,
            change: Some(change),
        })
        .await?
        .into_inner();
    state.product_details.evict(body.product_id);
    success(StockData { stock: reply.stock })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnlistRequest {
    pub product_id: i64,
    /// false (the default) takes the product off sale; true puts it back.
    #[serde(default)]
    pub listed: bool,
}

/// Takes a product off sale, or puts it back with `listed: true` (admins only; our addition).
/// Unlisted, it leaves lists and searches, its detail and reviews are 404 (3000), carts drop
/// it, and ordering it is a 404 (3000); orders that hold it keep their lines.
#[utoipa::path(put, path = "/api/v1/product/unlist", tag = "product", security(("bearer" = [])), request_body = UnlistRequest,
    responses(
        (status = 200, description = "Unlisted (or relisted); doing it twice is fine", body = Envelope<SuccessData>),
        (status = 400, description = "1001: no productId, or not a boolean listed", body = ErrorEnvelope),
        (status = 401, description = "2003/2004: no, bad or expired token", body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn unlist(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiJson(body): ApiJson<UnlistRequest>,
) -> ApiResult<SuccessData> {
    state
        .product_client()
        .set_product_listed(pb::SetProductListedRequest {
            product_id: body.product_id,
            listed: body.listed,
        })
        .await?;
    state.product_details.evict(body.product_id);
    success(SuccessData { success: true })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRequest {
    pub product_id: i64,
    /// 1 to 5.
    pub rating: i32,
    /// At most 1000 characters.
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewCreatedData {
    pub review_id: i64,
}

/// Rates and comments a product; a user's new review of a product replaces their old one.
#[utoipa::path(post, path = "/api/v1/product/review", tag = "product", security(("bearer" = [])), request_body = ReviewRequest,
    responses(
        (status = 200, description = "Reviewed", body = Envelope<ReviewCreatedData>),
        (status = 400, description = "1001: rating outside 1–5 or comment too long", body = ErrorEnvelope),
        (status = 401, description = "2003/2004: no, bad or expired token", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn review(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> ApiResult<ReviewCreatedData> {
    let reply = state
        .product_client()
        .add_review(pb::AddReviewRequest {
            product_id: body.product_id,
            user_id: caller.user_id,
            rating: body.rating,
            comment: body.comment,
        })
        .await?
        .into_inner();
    state.product_details.evict(body.product_id);
    success(ReviewCreatedData {
        review_id: reply.review_id,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub page: Option<i32>,
    pub page_size: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewData {
    pub id: i64,
    pub product_id: i64,
    pub user_id: i64,
    pub rating: i32,
    pub comment: String,
    pub created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewPageData {
    pub total: i64,
    pub reviews: Vec<ReviewData>,
}

/// A product's reviews, newest first.
#[utoipa::path(get, path = "/api/v1/product/reviews/{id}", tag = "product", params(("id" = i64, Path, description = "Product id"), PageQuery),
    responses(
        (status = 200, description = "A page of reviews", body = Envelope<ReviewPageData>),
        (status = 400, description = "1001: bad id or paging", body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn reviews(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<ReviewPageData> {
    let (page, page_size) = page_args(query.page, query.page_size)?;
    let reply = state
        .product_client()
        .list_reviews(pb::ListReviewsRequest {
            product_id: id,
            page,
            page_size,
        })
        .await?
        .into_inner();
    success(ReviewPageData {
        total: reply.total,
        reviews: reply
            .reviews
            .into_iter()
            .map(|review| ReviewData {
                id: review.id,
                product_id: review.product_id,
                user_id: review.user_id,
                rating: review.rating,
                comment: review.comment,
                created_at: review.created_at,
            })
            .collect(),
    })
}
