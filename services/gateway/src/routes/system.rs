//! The gateway's own routes: health and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiResult, success};
use crate::app::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthData {
    /// "ok" while the gateway serves.
    pub status: String,
}

/// Liveness of the gateway itself.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "The gateway serves", body = letsgo_platform::errors::Envelope<HealthData>)))]
pub async fn health() -> ApiResult<HealthData> {
    success(HealthData {
        status: "ok".to_owned(),
    })
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", content_type = "application/json")))]
pub async fn openapi(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.openapi.as_ref().clone())
}
