//! `/api/v1/order/*`: the signed-in user's own orders.
//!
//! The order shapes here are also the admins' (`routes::admin`).

use axum::extract::State;
use letsgo_platform::errors::{AppError, Envelope, ErrorCode};
use letsgo_platform::limits::{
    ADDRESS_MAX_CHARS, ADDRESS_MIN_CHARS, ORDER_LINES_MAX, ORDER_PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX,
    PHONE_DIGITS, QUANTITY_MAX, REMARK_MAX_CHARS,
};
use letsgo_platform::proto::order::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, ErrorEnvelope, SuccessData, success};
use crate::app::AppState;
use crate::auth::SignedIn;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::money::Yuan;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineRequest {
    pub product_id: i64,
    /// 1 to 999.
    pub quantity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrderRequest {
    /// At least one line.
    pub items: Vec<OrderLineRequest>,
    /// 10 to 200 characters.
    pub address: String,
    /// 11 digits.
    pub phone: String,
    #[serde(default)]
    pub remark: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOrderData {
    pub order_id: i64,
    pub order_no: String,
    #[schema(value_type = f64)]
    pub total_amount: Yuan,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemData {
    pub id: i64,
    pub product_id: i64,
    /// As it was when ordered.
    pub name: String,
    /// As it was when ordered.
    #[schema(value_type = f64)]
    pub price: Yuan,
    pub quantity: i64,
    pub image: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderData {
    pub id: i64,
    pub user_id: i64,
    pub order_no: String,
    #[schema(value_type = f64)]
    pub total_amount: Yuan,
    /// 1 pending, 2 paid, 3 shipped, 4 completed, 5 cancelled.
    pub status: i32,
    pub address: String,
    pub phone: String,
    pub remark: String,
    pub items: Vec<OrderItemData>,
    pub created_at: i64,
    pub updated_at: i64,
    /// 0 until paid.
    pub paid_at: i64,
    pub shipped_at: i64,
    pub completed_at: i64,
    /// When a payment of the order was refunded (it was cancelled while, or after, the buyer
    /// paid); 0 when none was. Our addition.
    pub refunded_at: i64,
    /// Who carries the order once shipped; empty before. Our addition.
    pub carrier: String,
    /// The carrier's tracking number once shipped; empty before. Our addition.
    pub tracking_no: String,
}

impl From<pb::Order> for OrderData {
    fn from(order: pb::Order) -> Self {
        OrderData {
            id: order.id,
            user_id: order.user_id,
            order_no: order.order_no,
            total_amount: Yuan(order.total_amount_cents),
            status: order.status,
            address: order.address,
            phone: order.phone,
            remark: order.remark,
            items: order
                .items
                .into_iter()
                .map(|item| OrderItemData {
                    id: item.id,
                    product_id: item.product_id,
                    name: item.name,
                    price: Yuan(item.price_cents),
                    quantity: item.quantity,
                    image: item.image,
                })
                .collect(),
            created_at: order.created_at,
            updated_at: order.updated_at,
            paid_at: order.paid_at,
            shipped_at: order.shipped_at,
            completed_at: order.completed_at,
            refunded_at: order.refunded_at,
            carrier: order.carrier,
            tracking_no: order.tracking_no,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPageData {
    pub total: i64,
    pub orders: Vec<OrderData>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDetailData {
    pub order: OrderData,
}

pub(crate) const UNAUTHORIZED: &str = "2003/2004: no, bad or expired token";

/// Orders the given products: prices come from the catalogue, stock is reserved, and the
/// products leave the cart.
#[utoipa::path(post, path = "/api/v1/order/create", tag = "order", security(("bearer" = [])), request_body = CreateOrderRequest,
    responses(
        (status = 200, description = "Ordered", body = Envelope<CreatedOrderData>),
        (status = 400, description = "1001: no items, a bad quantity, address or phone", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "3000: a product does not exist", body = ErrorEnvelope),
        (status = 409, description = "3001: a product is out of stock", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: a service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn create(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiJson(body): ApiJson<CreateOrderRequest>,
) -> ApiResult<CreatedOrderData> {
    // A sale's late buyers: refused from the sold-out marks, without a call (see
    // product_cache). Only an order the order service would not refuse for its lines first.
    let lines = merged_lines(&body.items);
    let well_formed = is_well_formed(&body, &lines);
    if well_formed
        && let Some((product_id, _)) = lines
            .iter()
            .find(|(id, quantity)| state.product_details.is_sold_out(*id, *quantity))
    {
        return Err(sold_out(*product_id));
    }
    let one_product = match lines.as_slice() {
        [(id, quantity)] if well_formed => {
            Some((*id, *quantity, state.product_details.ticket(*id)))
        }
        _ => None,
    };
    let ordered = state
        .order_client()
        .create_order(pb::CreateOrderRequest {
            user_id: caller.user_id,
            items: body
                .items
                .into_iter()
                .map(|line| pb::OrderLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                })
                .collect(),
            address: body.address,
            phone: body.phone,
            remark: body.remark.unwrap_or_default(),
        })
        .await;
    let reply = match ordered {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            let error = AppError::from(status);
            if let (ErrorCode::OutOfStock, Some((id, quantity, ticket))) = (error.code, one_product)
            {
                state.product_details.mark_sold_out(id, ticket, quantity);
            }
            return Err(error);
        }
    };
    success(CreatedOrderData {
        order_id: reply.order_id,
        order_no: reply.order_no,
        total_amount: Yuan(reply.total_amount_cents),
    })
}

/// Whether the order service would take `order` as input (its lines as sent and added
/// together, its address, phone and remark), so that a sold-out mark never answers what the
/// order service would refuse as bad input. The same limits as the order service's checks.
fn is_well_formed(order: &CreateOrderRequest, merged: &[(i64, i64)]) -> bool {
    let fits = |quantity: i64| (1..=QUANTITY_MAX).contains(&quantity);
    let address = order.address.trim().chars().count();
    !order.items.is_empty()
        && order.items.len() <= ORDER_LINES_MAX
        && order.items.iter().all(|line| fits(line.quantity))
        && merged.iter().all(|(_, quantity)| fits(*quantity))
        && (ADDRESS_MIN_CHARS..=ADDRESS_MAX_CHARS).contains(&address)
        && order.phone.len() == PHONE_DIGITS
        && order.phone.bytes().all(|byte| byte.is_ascii_digit())
        && order
            .remark
            .as_deref()
            .is_none_or(|remark| remark.chars().count() <= REMARK_MAX_CHARS)
}

/// An order's lines, one per product, quantities added (as the order service counts them).
fn merged_lines(items: &[OrderLineRequest]) -> Vec<(i64, i64)> {
    let mut merged: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
    for line in items {
        let quantity = merged.entry(line.product_id).or_default();
        *quantity = quantity.saturating_add(line.quantity);
    }
    merged.into_iter().collect()
}

/// The answer the product service gives a sold-out product, word for word.
fn sold_out(product_id: i64) -> AppError {
    AppError::new(
        ErrorCode::OutOfStock,
        format!("product {product_id} is out of stock"),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// From 1; default 1.
    pub page: Option<i32>,
    /// 1 to 100 (larger is clamped); default 10.
    pub page_size: Option<i32>,
    /// 0 (or absent) for all, else 1 to 5.
    pub status: Option<i32>,
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/api/v1/order/list", tag = "order", security(("bearer" = [])), params(OrderListQuery),
    responses(
        (status = 200, description = "A page of orders", body = Envelope<OrderPageData>),
        (status = 400, description = "1001: bad paging or status", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn list(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiQuery(query): ApiQuery<OrderListQuery>,
) -> ApiResult<OrderPageData> {
    let page = query.page.unwrap_or(1);
    let page_size = query.page_size.unwrap_or(ORDER_PAGE_SIZE_DEFAULT);
    if page < 1 || page_size < 1 {
        return Err(AppError::invalid("page and pageSize must be at least 1"));
    }
    let reply = state
        .order_client()
        .list_orders(pb::ListOrdersRequest {
            user_id: caller.user_id,
            page,
            page_size: page_size.min(PAGE_SIZE_MAX),
            status: query.status.unwrap_or(0),
        })
        .await?
        .into_inner();
    success(OrderPageData {
        total: reply.total,
        orders: reply.orders.into_iter().map(OrderData::from).collect(),
    })
}

/// One of the caller's orders; anyone else's is a 404.
#[utoipa::path(get, path = "/api/v1/order/detail/{id}", tag = "order", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Envelope<OrderDetailData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "5000: no such order of the caller's", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn detail(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<OrderDetailData> {
    let order = state
        .order_client()
        .get_order(pb::GetOrderRequest {
            user_id: caller.user_id,
            order_id: id,
        })
        .await?
        .into_inner();
    success(OrderDetailData {
        order: order.into(),
    })
}

/// Cancels a pending order and gives its stock back.
#[utoipa::path(put, path = "/api/v1/order/cancel/{id}", tag = "order", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled", body = Envelope<SuccessData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "5000: no such order of the caller's", body = ErrorEnvelope),
        (status = 409, description = "5002: only a pending order can be cancelled", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<SuccessData> {
    state
        .order_client()
        .cancel_order(pb::CancelOrderRequest {
            user_id: caller.user_id,
            order_id: id,
        })
        .await?;
    success(SuccessData { success: true })
}

/// The buyer confirms a shipped order arrived: it completes (our addition).
#[utoipa::path(put, path = "/api/v1/order/confirm/{id}", tag = "order", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Order id")),
    responses(
        (status = 200, description = "Completed", body = Envelope<SuccessData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "5000: no such order of the caller's", body = ErrorEnvelope),
        (status = 409, description = "5001: only a shipped order can be confirmed", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the order service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn confirm(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<SuccessData> {
    state
        .order_client()
        .confirm_receipt(pb::ConfirmReceiptRequest {
            user_id: caller.user_id,
            order_id: id,
        })
        .await?;
    success(SuccessData { success: true })
}
