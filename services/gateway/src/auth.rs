//! Who is calling: the bearer token is read once per request, by [`read_token`], and the
//! outcome is left in the request's extensions for the rate limiter and the handlers.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use letsgo_platform::auth::{Caller, Role, TokenKeys};
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::user::v1::GetProfileRequest;

use crate::app::AppState;

/// What the request's `Authorization` header said.
#[derive(Clone, Debug)]
pub enum Authentication {
    /// No header.
    Anonymous,
    /// A header that does not hold a valid, unexpired token: the error to answer with on a
    /// route that needs a user.
    Refused(AppError),
    Valid(Caller),
}

impl Authentication {
    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Authentication::Valid(caller) => Some(caller),
            _ => None,
        }
    }
}

fn authenticate(keys: &TokenKeys, header: Option<&axum::http::HeaderValue>) -> Authentication {
    let Some(header) = header else {
        return Authentication::Anonymous;
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .filter(|token| !token.is_empty());
    match token {
        Some(token) => match keys.verify(token) {
            Ok(caller) => Authentication::Valid(caller),
            Err(error) => Authentication::Refused(error),
        },
        None => Authentication::Refused(AppError::new(
            ErrorCode::InvalidToken,
            "Authorization must be \"Bearer <token>\"",
        )),
    }
}

/// Middleware: checks the token, if any, and records the outcome. Never refuses by itself:
/// public routes stay public whatever header comes with them.
pub async fn read_token(
    State(keys): State<TokenKeys>,
    mut request: Request,
    next: Next,
) -> Response {
    let authentication = authenticate(&keys, request.headers().get(AUTHORIZATION));
    request.extensions_mut().insert(authentication);
    next.run(request).await
}

/// A handler argument for routes that need a signed-in user: 401 with 2003 without a token or
/// with a bad one, 2004 with an expired one.
pub struct SignedIn(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Valid(caller)) => Ok(SignedIn(caller.clone())),
            Some(Authentication::Refused(error)) => Err(error.clone()),
            Some(Authentication::Anonymous) | None => Err(AppError::new(
                ErrorCode::InvalidToken,
                "sign in first: no token given",
            )),
        }
    }
}

/// A handler argument for admin-only routes: 403 with 2005 for a signed-in non-admin. The
/// account's role is read from the user service on each call rather than trusted from the
/// token, which says what it was at sign-in: a revoked admin loses the rights at once, and a
/// granted one gains them at once. Admin calls are rare, so the extra call costs little.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(caller) = SignedIn::from_request_parts(parts, state).await?;
        let profile = state
            .user_client()
            .get_profile(GetProfileRequest {
                user_id: caller.user_id,
            })
            .await
            .map_err(AppError::from);
        match profile {
            Ok(profile) if Role::parse(&profile.get_ref().role) == Some(Role::Admin) => {
                Ok(Admin(caller))
            }
            Ok(_) => Err(AppError::of(ErrorCode::PermissionDenied)),
            Err(error) if error.code == ErrorCode::UserNotFound => {
                Err(AppError::of(ErrorCode::PermissionDenied))
            }
            Err(error) => Err(error),
        }
    }
}
