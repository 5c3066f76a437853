//! `/api/v1/user/*`: register, login, profile.

use axum::Extension;
use axum::extract::State;
use letsgo_platform::errors::{AppError, Envelope, ErrorCode};
use letsgo_platform::limits::{PASSWORD_MAX_CHARS, USERNAME_STORED_MAX_CHARS};
use letsgo_platform::proto::user::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, ErrorEnvelope, SuccessData, success};
use crate::app::AppState;
use crate::auth::SignedIn;
use crate::client_address::ClientAddress;
use crate::extract::ApiJson;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    /// 3–20 letters, digits, `_` or `-`; unique regardless of case. (Accounts the original
    /// made may have longer names; they sign in, but no new one is registered.)
    pub username: String,
    /// 6 to 128 characters.
    pub password: String,
    /// Unique regardless of case.
    pub email: String,
    /// 11 digits, optional.
    #[serde(default)]
    pub phone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// 1 to 50 characters: the names of accounts the original made may be longer than ours
    /// (see `USERNAME_STORED_MAX_CHARS`), and they sign in too.
    pub username: String,
    /// At most 128 characters.
    pub password: String,
}

impl LoginRequest {
    /// No account has a longer name or password, so such a sign-in is refused before it
    /// costs a lookup, a hash or a place in the sign-in throttle's tables.
    fn check(&self) -> Result<(), AppError> {
        let name_length = self.username.trim().chars().count();
        if name_length == 0 || name_length > USERNAME_STORED_MAX_CHARS {
            return Err(AppError::invalid(format!(
                "username must be 1 to {USERNAME_STORED_MAX_CHARS} characters"
            )));
        }
        if self.password.chars().count() > PASSWORD_MAX_CHARS {
            return Err(AppError::invalid(format!(
                "password must be at most {PASSWORD_MAX_CHARS} characters"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthData {
    pub user_id: i64,
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When the token stops working, unix seconds (our addition).
    pub expires_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileData {
    pub user_id: i64,
    pub username: String,
    pub email: String,
    pub phone: String,
    pub avatar: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProfileRequest {
    #[serde(default)]
    pub email: Option<String>,
    /// 11 digits.
    #[serde(default)]
    pub phone: Option<String>,
    /// An http(s) URL.
    #[serde(default)]
    pub avatar: Option<String>,
}

fn auth_data(reply: pb::AuthReply) -> AuthData {
    AuthData {
        user_id: reply.user_id,
        token: reply.token,
        expires_at: reply.expires_at,
    }
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/api/v1/user/register", tag = "user", request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered and signed in", body = Envelope<AuthData>),
        (status = 400, description = "1001: malformed JSON or a field out of its rules", body = ErrorEnvelope),
        (status = 409, description = "2001: the username or email is taken", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests; see Retry-After", body = ErrorEnvelope),
        (status = 503, description = "1004: the user service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<AuthData> {
    let reply = state
        .user_client()
        .register(pb::RegisterRequest {
            username: body.username,
            password: body.password,
            email: body.email,
            phone: body.phone.unwrap_or_default(),
        })
        .await?
        .into_inner();
    success(auth_data(reply))
}

/// Signs in. An unknown username and a wrong password get the same answer. Failed sign-ins
/// are budgeted per account and per client address: past either budget, sign-ins are refused
/// with 429 until it recovers.
#[utoipa::path(post, path = "/api/v1/user/login", tag = "user", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = Envelope<AuthData>),
        (status = 400, description = "1001: malformed JSON, missing fields, or a username or password longer than any account's", body = ErrorEnvelope),
        (status = 401, description = "2002: wrong username or password", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests, or too many failed sign-ins for this account or from this address (refused whatever the password); see Retry-After", body = ErrorEnvelope),
        (status = 503, description = "1004: the user service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: Option<Extension<ClientAddress>>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<AuthData> {
    body.check()?;
    let address = client.map(|Extension(address)| address.limit_key());
    let attempt = state.sign_in_throttle.begin(&body.username, address)?;
    let reply = state
        .user_client()
        .login(pb::LoginRequest {
            username: body.username,
            password: body.password,
        })
        .await
        .map_err(AppError::from);
    match reply {
        Ok(reply) => success(auth_data(reply.into_inner())),
        Err(error) => {
            if error.code == ErrorCode::WrongPassword {
                attempt.failed();
            }
            Err(error)
        }
    }
}

/// The signed-in user's profile.
#[utoipa::path(get, path = "/api/v1/user/profile", tag = "user", security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = Envelope<ProfileData>),
        (status = 401, description = "2003: no or invalid token; 2004: token expired", body = ErrorEnvelope),
        (status = 404, description = "2000: the user no longer exists", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests; see Retry-After", body = ErrorEnvelope),
        (status = 503, description = "1004: the user service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn get_profile(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
) -> ApiResult<ProfileData> {
    let profile = state
        .user_client()
        .get_profile(pb::GetProfileRequest {
            user_id: caller.user_id,
        })
        .await?
        .into_inner();
    success(ProfileData {
        user_id: profile.user_id,
        username: profile.username,
        email: profile.email,
        phone: profile.phone,
        avatar: profile.avatar,
        created_at: profile.created_at,
    })
}

/// Changes the fields given; the others stay.
#[utoipa::path(put, path = "/api/v1/user/profile", tag = "user", security(("bearer" = [])), request_body = UpdateProfileRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<SuccessData>),
        (status = 400, description = "1001: malformed JSON or a field out of its rules", body = ErrorEnvelope),
        (status = 401, description = "2003: no or invalid token; 2004: token expired", body = ErrorEnvelope),
        (status = 404, description = "2000: the user no longer exists", body = ErrorEnvelope),
        (status = 409, description = "2001: the email belongs to another account", body = ErrorEnvelope),
        (status = 429, description = "1006: too many requests; see Retry-After", body = ErrorEnvelope),
        (status = 503, description = "1004: the user service is unavailable", body = ErrorEnvelope),
    ))]
pub async fn update_profile(
    State(state): State<AppState>,
    SignedIn(caller): SignedIn,
    ApiJson(body): ApiJson<UpdateProfileRequest>,
) -> ApiResult<SuccessData> {
    state
        .user_client()
        .update_profile(pb::UpdateProfileRequest {
            user_id: caller.user_id,
            email: body.email,
            phone: body.phone,
            avatar: body.avatar,
        })
        .await?;
    success(SuccessData { success: true })
}
