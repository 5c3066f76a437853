//! The whole HTTP surface: [`app`] builds it from an [`AppState`], so tests can drive it
//! without a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use letsgo_platform::auth::TokenKeys;
use letsgo_platform::discovery::RpcChannel;
use letsgo_platform::discovery::{Discovery, ServiceName};
use letsgo_platform::errors::{AppError, ErrorCode};
use letsgo_platform::proto::cart::v1::cart_service_client::CartServiceClient;
use letsgo_platform::proto::order::v1::order_service_client::OrderServiceClient;
use letsgo_platform::proto::payment::v1::payment_service_client::PaymentServiceClient;
use letsgo_platform::proto::product::v1::product_service_client::ProductServiceClient;
use letsgo_platform::proto::user::v1::user_service_client::UserServiceClient;
use letsgo_platform::telemetry::Metrics;
use letsgo_platform::traces;
use tower::BoxError;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, OnResponse, TraceLayer};

use crate::client_address::{self, TrustedProxies};
use crate::product_cache::ProductDetailCache;
use crate::rate_limit::{self, ClientRateLimit};
use crate::routes::cart;
use crate::sign_in_throttle::SignInThrottle;
use crate::{auth, openapi};

/// What handlers share: one allocation, so a clone (one per middleware and handler of every
/// request) is a reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    user: UserServiceClient<RpcChannel>,
    product: ProductServiceClient<RpcChannel>,
    cart: CartServiceClient<RpcChannel>,
    order: OrderServiceClient<RpcChannel>,
    payment: PaymentServiceClient<RpcChannel>,
    pub tokens: TokenKeys,
    pub trusted_proxies: TrustedProxies,
    pub rate_limit: ClientRateLimit,
    pub sign_in_throttle: SignInThrottle,
    pub product_details: ProductDetailCache,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub metrics: Metrics,
    pub openapi: Arc<serde_json::Value>,
}

/// How clients are told apart, and the budgets they are held to.
pub struct ClientLimits {
    pub trusted_proxies: TrustedProxies,
    pub rate_limit: ClientRateLimit,
    pub sign_in_throttle: SignInThrottle,
}

impl AppState {
    /// Channels connect lazily: the gateway starts even while a service is down, and answers
    /// 503 for its routes until it is back.
    pub fn new(
        discovery: &Discovery,
        tokens: TokenKeys,
        clients: ClientLimits,
        product_details: ProductDetailCache,
        request_timeout: Duration,
        max_concurrent_requests: usize,
        metrics: Metrics,
    ) -> Self {
        AppState(Arc::new(Shared {
            user: UserServiceClient::new(discovery.channel(ServiceName::User)),
            product: ProductServiceClient::new(discovery.channel(ServiceName::Product)),
            cart: CartServiceClient::new(discovery.channel(ServiceName::Cart)),
            order: OrderServiceClient::new(discovery.channel(ServiceName::Order)),
            payment: PaymentServiceClient::new(discovery.channel(ServiceName::Payment)),
            tokens,
            trusted_proxies: clients.trusted_proxies,
            rate_limit: clients.rate_limit,
            sign_in_throttle: clients.sign_in_throttle,
            product_details,
            request_timeout,
            max_concurrent_requests,
            metrics,
            openapi: Arc::new(openapi::document()),
        }))
    }
}

impl Shared {
    pub fn user_client(&self) -> UserServiceClient<RpcChannel> {
        self.user.clone()
    }

    pub fn product_client(&self) -> ProductServiceClient<RpcChannel> {
        self.product.clone()
    }

    pub fn cart_client(&self) -> CartServiceClient<RpcChannel> {
        self.cart.clone()
    }

    pub fn order_client(&self) -> OrderServiceClient<RpcChannel> {
        self.order.clone()
    }

    pub fn payment_client(&self) -> PaymentServiceClient<RpcChannel> {
        self.payment.clone()
    }
}

/// The gateway's router, with its middleware.
pub fn app(state: AppState) -> Router {
    // The API's routes come with their OpenAPI entries (openapi::routes); the only route not
    // documented is the cart's bare path, a courtesy beside the original's trailing slash.
    let (documented, _) = crate::openapi::routes().split_for_parts();
    let api = documented
        .route("/api/v1/cart", get(cart::get))
        .merge(crate::storefront::routes())
        .fallback(|| async { AppError::of(ErrorCode::NotFound) })
        .method_not_allowed_fallback(|| async { AppError::of(ErrorCode::MethodNotAllowed) });

    api.layer(
        ServiceBuilder::new()
            // A panicking handler still answers with the envelope, and the process lives on.
            .layer(CatchPanicLayer::custom(|_| {
                AppError::of(ErrorCode::System).into_response()
            }))
            // Every request gets an x-request-id (kept if the client sent one) for log
            // correlation: a v4 UUID, from uuid's thread-local generator (its fast-rng feature).
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            // One span per request, with method, path and request id; while traces are
            // exported, the server span of the trace the client's traceparent names (or a new one).
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(record_response),
            )
            // Counts and times requests by route and status for /metrics.
            .layer(state.metrics.layer())
            // Beyond the concurrency limit, answer 503 at once rather than queue without bound.
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                AppError::new(
                    ErrorCode::ServiceUnavailable,
                    "the shop is busy; try again shortly",
                )
            }))
            .load_shed()
            // Global: Router::layer wraps each route on its own, so a plain limit would be per route.
            .layer(GlobalConcurrencyLimitLayer::new(
                state.max_concurrent_requests,
            ))
            // Bounds how long any request can hold resources.
            .layer(middleware::from_fn_with_state(
                state.request_timeout,
                limit_duration,
            ))
            // Works out the client's address once (through trusted proxies), for the limiter
            // and the sign-in throttle.
            .layer(middleware::from_fn_with_state(
                state.trusted_proxies.clone(),
                client_address::identify,
            ))
            // Reads the bearer token once, for the limiter and the handlers.
            .layer(middleware::from_fn_with_state(
                state.tokens.clone(),
                auth::read_token,
            ))
            // Keeps one client from starving the others.
            .layer(middleware::from_fn_with_state(
                state.rate_limit.clone(),
                rate_limit::limit,
            )),
    )
    .with_state(state)
}

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if traces::is_on() {
        // The route, not the path: ids in paths would make every span name different.
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        span.record("otel.name", format!("{} {route}", request.method()));
        span.record("http.route", route);
        traces::continue_from_headers(&span, request.headers());
    }
    span
}

fn record_response(response: &Response, latency: Duration, span: &tracing::Span) {
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    DefaultOnResponse::default().on_response(response, latency, span);
}

async fn limit_duration(State(budget): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::new(ErrorCode::ServiceUnavailable, "request timed out").into_response(),
    }
}
