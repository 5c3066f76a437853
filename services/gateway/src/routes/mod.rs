//! The HTTP routes, one module per service, plus the gateway's own.

pub mod admin;
pub mod cart;
pub mod order;
pub mod payment;
pub mod product;
pub mod system;
pub mod user;

use axum::Json;
use letsgo_platform::errors::{AppError, Envelope};
use serde::Serialize;

/// What every handler returns: the success envelope, or an error that becomes one.
pub type ApiResult<T> = Result<Json<Envelope<T>>, AppError>;

pub fn success<T: Serialize>(data: T) -> ApiResult<T> {
    Ok(Json(Envelope::success(data)))
}

/// `data` of calls that only say they worked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuccessData {
    pub success: bool,
}

/// The shape of every error answer: `data` is always null.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// An error code of the table (never 0).
    pub code: u32,
    pub msg: String,
    /// Always null.
    #[schema(value_type = Option<Object>)]
    pub data: Option<()>,
}
