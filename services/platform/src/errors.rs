//! The error codes of the original letsGO contract, and how each travels: as a gRPC status
//! between services and as an HTTP status plus the `{code,msg,data}` envelope at the gateway.
//!
//! A service returns an [`AppError`]; it crosses gRPC as a status whose `letsgo-code` metadata
//! carries the numeric code, so the gateway recovers the exact code and not just a gRPC class.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The numeric codes clients see. Values are the original's and never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    System = 1000,
    InvalidParams = 1001,
    Database = 1002,
    Cache = 1003,
    ServiceUnavailable = 1004,
    ThirdParty = 1005,
    TooManyRequests = 1006,
    NotFound = 1007,
    MethodNotAllowed = 1008,
    UserNotFound = 2000,
    UserExists = 2001,
    WrongPassword = 2002,
    InvalidToken = 2003,
    TokenExpired = 2004,
    PermissionDenied = 2005,
    ProductNotFound = 3000,
    OutOfStock = 3001,
    InvalidProduct = 3002,
    CartEmpty = 4000,
    CartItemNotFound = 4001,
    CartLimit = 4002,
    OrderNotFound = 5000,
    BadOrderStatus = 5001,
    CannotCancel = 5002,
    OrderCreationFailed = 5003,
    PaymentNotFound = 6000,
    PaymentFailed = 6001,
    PaymentTimeout = 6002,
    PaymentAmount = 6003,
    /// An idempotency key reused with another request body.
    IdempotencyConflict = 6004,
}

impl ErrorCode {
    const ALL: [ErrorCode; 30] = [
        ErrorCode::System,
        ErrorCode::InvalidParams,
        ErrorCode::Database,
        ErrorCode::Cache,
        ErrorCode::ServiceUnavailable,
        ErrorCode::ThirdParty,
        ErrorCode::TooManyRequests,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UserNotFound,
        ErrorCode::UserExists,
        ErrorCode::WrongPassword,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::PermissionDenied,
        ErrorCode::ProductNotFound,
        ErrorCode::OutOfStock,
        ErrorCode::InvalidProduct,
        ErrorCode::CartEmpty,
        ErrorCode::CartItemNotFound,
        ErrorCode::CartLimit,
        ErrorCode::OrderNotFound,
        ErrorCode::BadOrderStatus,
        ErrorCode::CannotCancel,
        ErrorCode::OrderCreationFailed,
        ErrorCode::PaymentNotFound,
        ErrorCode::PaymentFailed,
        ErrorCode::PaymentTimeout,
        ErrorCode::PaymentAmount,
        ErrorCode::IdempotencyConflict,
    ];

    pub fn as_u32(self) -> u32 {
        self as u32
    }

    pub fn from_u32(value: u32) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|code| code.as_u32() == value)
    }

    /// The code clients see in the envelope. An idempotency conflict travels as 1001, as the
    /// design asks, told apart from bad input by its 409. Unknown routes (1007) and wrong methods
    /// (1008) are codes of ours: the original answered those without an envelope at all.
    pub fn wire_code(self) -> u32 {
        match self {
            ErrorCode::IdempotencyConflict => ErrorCode::InvalidParams.as_u32(),
            other => other.as_u32(),
        }
    }

    /// The default message, in the original's words where it had them.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::System => "system error",
            ErrorCode::InvalidParams => "invalid parameters",
            ErrorCode::Database => "database error",
            ErrorCode::Cache => "cache error",
            ErrorCode::ServiceUnavailable => "service unavailable",
            ErrorCode::ThirdParty => "third-party service error",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::NotFound => "no such route",
            ErrorCode::MethodNotAllowed => "method not allowed",
            ErrorCode::UserNotFound => "user not found",
            ErrorCode::UserExists => "user already exists",
            ErrorCode::WrongPassword => "wrong username or password",
            ErrorCode::InvalidToken => "invalid token",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::ProductNotFound => "product not found",
            ErrorCode::OutOfStock => "out of stock",
            ErrorCode::InvalidProduct => "invalid product",
            ErrorCode::CartEmpty => "cart is empty",
            ErrorCode::CartItemNotFound => "cart item not found",
            ErrorCode::CartLimit => "cart limit exceeded",
            ErrorCode::OrderNotFound => "order not found",
            ErrorCode::BadOrderStatus => "order status does not allow this",
            ErrorCode::CannotCancel => "order cannot be cancelled",
            ErrorCode::OrderCreationFailed => "order creation failed",
            ErrorCode::PaymentNotFound => "payment not found",
            ErrorCode::PaymentFailed => "payment failed",
            ErrorCode::PaymentTimeout => "payment timed out",
            ErrorCode::PaymentAmount => "payment amount does not match the order",
            ErrorCode::IdempotencyConflict => "idempotency key reused with another request",
        }
    }

    pub fn http_status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidParams | PaymentAmount | CartLimit | InvalidProduct | CartEmpty => {
                StatusCode::BAD_REQUEST
            }
            WrongPassword | InvalidToken | TokenExpired => StatusCode::UNAUTHORIZED,
            PermissionDenied => StatusCode::FORBIDDEN,
            NotFound | UserNotFound | ProductNotFound | CartItemNotFound | OrderNotFound
            | PaymentNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            UserExists | OutOfStock | BadOrderStatus | CannotCancel | IdempotencyConflict => {
                StatusCode::CONFLICT
            }
            TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            System | Database | Cache | ThirdParty | OrderCreationFailed | PaymentFailed
            | PaymentTimeout => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use ErrorCode::*;
        match self {
            InvalidParams | PaymentAmount | CartLimit | InvalidProduct | CartEmpty => {
                tonic::Code::InvalidArgument
            }
            WrongPassword | InvalidToken | TokenExpired => tonic::Code::Unauthenticated,
            PermissionDenied => tonic::Code::PermissionDenied,
            NotFound | UserNotFound | ProductNotFound | CartItemNotFound | OrderNotFound
            | PaymentNotFound => tonic::Code::NotFound,
            MethodNotAllowed => tonic::Code::Unimplemented,
            UserExists | IdempotencyConflict => tonic::Code::AlreadyExists,
            OutOfStock | BadOrderStatus | CannotCancel => tonic::Code::FailedPrecondition,
            TooManyRequests => tonic::Code::ResourceExhausted,
            ServiceUnavailable => tonic::Code::Unavailable,
            PaymentTimeout => tonic::Code::DeadlineExceeded,
            System | Database | Cache | ThirdParty | OrderCreationFailed | PaymentFailed => {
                tonic::Code::Internal
            }
        }
    }
}

/// The gRPC metadata key that carries an [`ErrorCode`] across a service boundary.
pub const CODE_METADATA_KEY: &str = "letsgo-code";

/// A failure with the code a client sees and a message safe to show them.
///
/// Internal detail (SQL errors, connection failures) is logged where it happens and never put
/// in the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?} ({}): {message}", code.as_u32())]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds a client should wait before retrying, for 429 answers.
    pub retry_after: Option<u64>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn of(code: ErrorCode) -> Self {
        AppError::new(code, code.default_message())
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::InvalidParams, message)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        AppError {
            retry_after: Some(retry_after_secs.max(1)),
            ..AppError::of(ErrorCode::TooManyRequests)
        }
    }

    /// A database failure: logs the detail, answers 1002.
    pub fn database(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "database error");
        AppError::of(ErrorCode::Database)
    }

    /// An unexpected failure: logs the detail, answers 1000.
    pub fn system(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "system error");
        AppError::of(ErrorCode::System)
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::error!(%error, "database unreachable");
                AppError::of(ErrorCode::ServiceUnavailable)
            }
            // PostgreSQL refuses NUL in text (SQLSTATE 22021): the client's input, not a fault.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
                AppError::invalid("text must not contain NUL (\\u0000) characters")
            }
            // The server going away or not taking connections yet: a connection failure
            // (class 08), or a shutdown, a crash's restart, a start-up still recovering (57P01,
            // 57P02, 57P03). Passing, like an unreachable server: 1004, not a database fault.
            sqlx::Error::Database(db) if db.code().is_some_and(|code| is_unavailable(&code)) => {
                tracing::error!(error = %db, "database unavailable");
                AppError::of(ErrorCode::ServiceUnavailable)
            }
            other => AppError::database(other),
        }
    }
}

/// Whether a SQLSTATE says the server is unavailable for now rather than that a statement failed.
#[cfg(feature = "postgres")]
fn is_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03")
}

impl From<AppError> for tonic::Status {
    fn from(error: AppError) -> Self {
        let mut status = tonic::Status::new(error.code.grpc_code(), error.message);
        if let Ok(value) = error.code.as_u32().to_string().parse() {
            status.metadata_mut().insert(CODE_METADATA_KEY, value);
        }
        status
    }
}

impl From<tonic::Status> for AppError {
    /// Recovers the code a service sent; a status without one (transport failures, deadlines,
    /// a peer that is not ours) maps by its gRPC class.
    fn from(status: tonic::Status) -> Self {
        let sent = status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u32>().ok())
            .and_then(ErrorCode::from_u32);
        if let Some(code) = sent {
            return AppError::new(code, status.message());
        }
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                tracing::warn!(grpc_code = ?status.code(), message = status.message(), "upstream unavailable");
                AppError::of(ErrorCode::ServiceUnavailable)
            }
            tonic::Code::InvalidArgument => AppError::invalid(status.message()),
            tonic::Code::ResourceExhausted => AppError::of(ErrorCode::ServiceUnavailable),
            _ => AppError::system(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

/// The answer every gateway route gives: `{"code":0,"msg":"success","data":...}` on success,
/// and `data: null` with an error code otherwise.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T: Serialize> {
    /// 0 on success, else an error code of the table.
    pub code: u32,
    /// "success", or what went wrong in words a client can show.
    pub msg: String,
    /// The answer; null on errors.
    pub data: Option<T>,
}

impl<T: Serialize> Envelope<T> {
    pub fn success(data: T) -> Self {
        Envelope {
            code: 0,
            msg: "success".to_owned(),
            data: Some(data),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let body = Envelope::<()> {
            code: self.code.wire_code(),
            msg: self.message,
            data: None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "postgres")]
    #[test]
    fn a_server_restarting_is_unavailable_and_a_failed_statement_a_database_error() {
        assert!(
            is_unavailable("57P03"),
            "the database system is starting up"
        );
        assert!(is_unavailable("57P01"), "terminating connection (shutdown)");
        assert!(is_unavailable("08006"), "connection failure");
        assert!(
            !is_unavailable("23505"),
            "a unique violation is the statement's"
        );
        assert!(
            !is_unavailable("57014"),
            "a cancelled statement is not an outage"
        );
        assert!(
            !is_unavailable("40001"),
            "a serialization failure is the statement's"
        );
    }

    #[test]
    fn every_code_round_trips_through_its_number() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u32(code.as_u32()), Some(code));
        }
    }

    #[test]
    fn a_business_code_survives_a_grpc_hop() {
        let sent = AppError::new(ErrorCode::UserExists, "username taken");
        let status: tonic::Status = sent.clone().into();
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(AppError::from(status), sent);
    }

    #[test]
    fn a_transport_failure_becomes_service_unavailable() {
        let error = AppError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(error.code, ErrorCode::ServiceUnavailable);
        assert_eq!(error.code.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn statuses_follow_the_design_table() {
        assert_eq!(ErrorCode::InvalidParams.http_status(), 400);
        assert_eq!(ErrorCode::PaymentAmount.http_status(), 400);
        assert_eq!(ErrorCode::WrongPassword.http_status(), 401);
        assert_eq!(ErrorCode::TokenExpired.http_status(), 401);
        assert_eq!(ErrorCode::PermissionDenied.http_status(), 403);
        assert_eq!(ErrorCode::CartItemNotFound.http_status(), 404);
        assert_eq!(ErrorCode::OutOfStock.http_status(), 409);
        assert_eq!(ErrorCode::TooManyRequests.http_status(), 429);
        assert_eq!(ErrorCode::ServiceUnavailable.http_status(), 503);
        assert_eq!(ErrorCode::IdempotencyConflict.http_status(), 409);
        assert_eq!(ErrorCode::IdempotencyConflict.wire_code(), 1001);
    }
}
