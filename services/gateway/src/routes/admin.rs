//! `/api/v1/admin/*`: what the shop's staff see and do beyond the catalogue calls (our
//! addition): every order, shipping, and the catalogue with its unlisted products. Admins
//! only (the [`Admin`] extractor: 401 without a valid token, 403 for anyone else).

use axum::extract::State;
use letsgo_platform::errors::{AppError, Envelope};
use letsgo_platform::limits::{ORDER_PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use letsgo_platform::proto::order::v1 as order_pb;
use letsgo_platform::proto::product::v1 as product_pb;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::order::{OrderData, OrderPageData, UNAUTHORIZED};
use super::product::{ProductPageData, page_args, page_data};
use super::{ApiResult, ErrorEnvelope, SuccessData, success};
use crate::app::AppState;
use crate::auth::Admin;
use crate::extract::{ApiJson, ApiPath, ApiQuery};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AdminOrderQuery {
    /// From 1; default 1.
    pub page: Option<i32>,
    /// 1 to 100 (larger is clamped); default 10.
    pub page_size: Option<i32>,
    /// 0 (or absent) for all, else 1 to 5.
    pub status: Option<i32>,
    /// Up to 100 characters: found anywhere in the order number, address or phone
    /// (case-insensitively), and, when it is a whole number, as the order id or the buyer's
    /// user id.
    pub keyword: Option<String>,
}

/// Every user's orders, newest first, by status and keyword (admins only; our addition).
#[utoipa::path(get, path = "/api/v1/admin/orders", tag = "admin", security(("bearer" = [])), params(AdminOrderQuery),
    responses(
        (status = 200, description = "A page of orders", body = Envelope<OrderPageData>),
        (status = 400, description = "1001: bad paging, status or keyword", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn orders(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiQuery(query): ApiQuery<AdminOrderQuery>,
) -> ApiResult<OrderPageData> {
    let page = query.page.unwrap_or(1);
    let page_size = query.page_size.unwrap_or(ORDER_PAGE_SIZE_DEFAULT);
    if page < 1 || page_size < 1 {
        return Err(AppError::invalid("page and pageSize must be at least 1"));
    }
    let reply = state
        .order_client()
        .list_all_orders(order_pb::ListAllOrdersRequest {
            page,
            page_size: page_size.min(PAGE_SIZE_MAX),
            status: query.status.unwrap_or(0),
            keyword: query.keyword.unwrap_or_default(),
        })
        .await?
        .into_inner();
    success(OrderPageData {
        total: reply.total,
        orders: reply.orders.into_iter().map(OrderData::from).collect(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipRequest {
    /// Who carries it: 1 to 50 characters, no control or invisible characters (trimmed).
    pub carrier: String,
    /// The carrier's tracking number: 1 to 64 characters, no control or invisible characters
    /// (trimmed).
    pub tracking_no: String,
}

/// Ships a paid order with its carrier and tracking number (admins only; our addition). The
/// same carrier and tracking number again succeed and change nothing.
#[utoipa::path(put, path = "/api/v1/admin/orders/{id}/ship", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")), request_body = ShipRequest,
    responses(
        (status = 200, description = "Shipped (or shipped so before)", body = Envelope<SuccessData>),
        (status = 400, description = "1001: a bad id, carrier or tracking number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 404, description = "5000: no such order", body = ErrorEnvelope),
        (status = 409, description = "5001: the order is not paid, or shipped with another carrier or tracking number", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn ship(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<ShipRequest>,
) -> ApiResult<SuccessData> {
    state
        .order_client()
        .ship_order(order_pb::ShipOrderRequest {
            order_id: id,
            carrier: body.carrier,
            tracking_no: body.tracking_no,
        })
        .await?;
    success(SuccessData { success: true })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AdminProductQuery {
    /// From 1; default 1.
    pub page: Option<i32>,
    /// 1 to 100 (larger is clamped); default 20.
    pub page_size: Option<i32>,
    /// Words to find in name, description or category, as the shop's search does; absent
    /// for every product, newest first.
    pub keyword: Option<String>,
}

/// The whole catalogue, unlisted products included (`listed` false), newest first or best
/// matches first (admins only; our addition).
#[utoipa::path(get, path = "/api/v1/admin/products", tag = "admin", security(("bearer" = [])), params(AdminProductQuery),
    responses(
        (status = 200, description = "A page of products", body = Envelope<ProductPageData>),
        (status = 400, description = "1001: bad paging or keyword", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 403, description = "2005: not an admin", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn products(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    ApiQuery(query): ApiQuery<AdminProductQuery>,
) -> ApiResult<ProductPageData> {
    let (page, page_size) = page_args(query.page, query.page_size)?;
    let mut client = state.product_client();
    let reply = match query.keyword.filter(|keyword| !keyword.trim().is_empty()) {
        Some(keyword) => client
            .search_products(product_pb::SearchProductsRequest {
                keyword,
                page,
                page_size,
                include_unlisted: true,
            })
            .await?
            .into_inner(),
        None => client
            .list_products(product_pb::ListProductsRequest {
                page,
                page_size,
                include_unlisted: true,
                ..Default::default()
            })
            .await?
            .into_inner(),
    };
    success(page_data(reply))
}
