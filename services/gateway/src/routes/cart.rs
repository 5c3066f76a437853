//! `/api/v1/cart/*`: the signed-in user's own cart.

use axum::extract::State;
use letsgo_platform::errors::Envelope;
use letsgo_platform::proto::cart::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, ErrorEnvelope, SuccessData, success};
use crate::app::AppState;
use crate::auth::SignedIn;
use crate::extract::{ApiJson, ApiPath};
use crate::money::Yuan;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartItemData {
    /// The line's id: the product id.
    pub id: i64,
    pub product_id: i64,
    pub name: String,
    /// The current unit price.
    #[schema(value_type = f64)]
    pub price: Yuan,
    pub quantity: i64,
    pub image: String,
    pub stock: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartData {
    pub items: Vec<CartItemData>,
    #[schema(value_type = f64)]
    pub total_price: Yuan,
    /// Units, not lines.
    pub total_count: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CartLineRequest {
    pub product_id: i64,
    /// 1 to 999.
    pub quantity: i64,
}

const UNAUTHORIZED: &str = "2003/2004: no, bad or expired token";

/// The caller's cart, priced now; an empty cart is a normal answer.
#[utoipa::path(get, path = "/api/v1/cart/", tag = "cart", security(("bearer" = [])),
    responses(
        (status = 200, description = "The cart", body = Envelope<CartData>),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the cart or product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn get(State(state): State<AppState>, SignedIn(caller): SignedIn) -> ApiResult<CartData> {
    let cart = state
        .cart_client()
        .get_cart(pb::GetCartRequest {
            user_id: caller.user_id,
        })
        .await?
        .into_inner();
    success(CartData {
        items: cart
            .items
            .into_iter()
            .map(|item| CartItemData {
                id: item.product_id,
                product_id: item.product_id,
                name: item.name,
                price: Yuan(item.price_cents),
                quantity: item.quantity,
                image: item.image,
                stock: item.stock,
            })
            .collect(),
        total_price: Yuan(cart.total_price_cents),
        total_count: cart.total_count,
    })
}

/// Adds units of a product; adding to a line sums the quantities.
#[utoipa::path(post, path = "/api/v1/cart/add", tag = "cart", security(("bearer" = [])), request_body = CartLineRequest,
    responses(
        (status = 200, description = "Added", body = Envelope<SuccessData>),
        (status = 400, description = "1001: quantity outside 1–999; 4002: the line would pass 999 units or the cart its line limit", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "3000: no such product", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the cart or product service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn add(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiJson(body): ApiJson<CartLineRequest>,
) -> ApiResult<SuccessData> {
    state
        .cart_client()
        .add_item(pb::AddItemRequest {
            user_id: caller.user_id,
            product_id: body.product_id,
            quantity: body.quantity,
        })
        .await?;
    success(SuccessData { success: true })
}

/// Sets a line's quantity.
#[utoipa::path(put, path = "/api/v1/cart/update", tag = "cart", security(("bearer" = [])), request_body = CartLineRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<SuccessData>),
        (status = 400, description = "1001: quantity outside 1–999", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "4001: the product is not in the cart", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the cart service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn update(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiJson(body): ApiJson<CartLineRequest>,
) -> ApiResult<SuccessData> {
    state
        .cart_client()
        .update_item(pb::UpdateItemRequest {
            user_id: caller.user_id,
            product_id: body.product_id,
            quantity: body.quantity,
        })
        .await?;
    success(SuccessData { success: true })
}

/// Removes a line; the item id is the product id.
#[utoipa::path(delete, path = "/api/v1/cart/remove/{itemId}", tag = "cart", security(("bearer" = [])),
    params(("itemId" = i64, Path, description = "The line's id: the product id")),
    responses(
        (status = 200, description = "Removed", body = Envelope<SuccessData>),
        (status = 400, description = "1001: the id is not a number", body = ErrorEnvelope),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 404, description = "4001: the product is not in the cart", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the cart service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiPath(item_id): ApiPath<i64>,
) -> ApiResult<SuccessData> {
    state
        .cart_client()
        .remove_item(pb::RemoveItemRequest {
            user_id: caller.user_id,
            product_id: item_id,
        })
        .await?;
    success(SuccessData { success: true })
}

/// Empties the cart.
#[utoipa::path(delete, path = "/api/v1/cart/clear", tag = "cart", security(("bearer" = [])),
    responses(
        (status = 200, description = "Emptied", body = Envelope<SuccessData>),
        (status = 401, description = UNAUTHORIZED, body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests", body = ErrorEnvelope),
        (status = 503, description = "1004: the cart service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn clear(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
) -> ApiResult<SuccessData> {
    state
        .cart_client()
        .clear_cart(pb::ClearCartRequest {
            user_id: caller.user_id,
        })
        .await?;
    success(SuccessData { success: true })
}
