//! The gRPC server every service runs: its own service plus grpc.health.v1 and server
//! reflection, request timeouts, per-connection load shedding, request metrics, and a graceful
//! drain on shutdown (health turns NOT_SERVING first, then in-flight calls finish).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::http::Request;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower::Service;
use tracing::Instrument;

use crate::assembly::ServiceError;
use crate::config::GrpcServerArgs;
use crate::internal_auth::InternalAuth;
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::shutdown::Shutdown;
use crate::telemetry::{Metrics, Readiness};
use crate::traces;

/// The two sockets a service listens on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses, or the service's defaults.
    pub async fn bind(
        args: &GrpcServerArgs,
        default_grpc: SocketAddr,
        default_admin: SocketAddr,
    ) -> Result<Listeners, ServiceError> {
        let grpc_addr = args.listen.unwrap_or(default_grpc);
        let admin_addr = args.admin_listen.unwrap_or(default_admin);
        let grpc = crate::listen::bind(grpc_addr).await.map_err(|error| {
            ServiceError::setting("GRPC_LISTEN", format!("{grpc_addr}: {error}"))
        })?;
        let admin = crate::listen::bind(admin_addr).await.map_err(|error| {
            ServiceError::setting("ADMIN_LISTEN", format!("{admin_addr}: {error}"))
        })?;
        Ok(Listeners { grpc, admin })
    }
}

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// Serves `service` on `listener` until `shutdown` triggers, then drains.
pub async fn serve<S>(
    service: S,
    listener: TcpListener,
    args: &GrpcServerArgs,
    auth: &InternalAuth,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: Service<Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(S::NAME, ServingStatus::Serving)
        .await;
    // Reflection tells anyone who asks every method of this service: only when asked for. It
    // describes this server alone (its service, health, reflection), in both versions of the
    // protocol: v1, and v1alpha for older grpcurl and Postman.
    let (reflection, reflection_v1alpha) = if args.grpc_reflection {
        let described = |reflection: &str| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(S::NAME)
                .with_service_name(HEALTH_SERVICE)
                .with_service_name(reflection)
        };
        (
            Some(described(REFLECTION_V1).build_v1()?),
            Some(described(REFLECTION_V1ALPHA).build_v1alpha()?),
        )
    } else {
        (None, None)
    };

    let drain = async move {
        shutdown.wait().await;
        readiness.set_ready(false);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(S::NAME, ServingStatus::NotServing)
            .await;
    };

    Server::builder()
        // A call that outlives its budget is answered rather than left hanging.
        .timeout(args.request_timeout)
        // Continues the caller's trace (when traces are exported), around everything below.
        .layer(ServerSpanLayer)
        .layer(metrics.layer())
        // Beyond the limit, refuse at once with UNAVAILABLE instead of queueing without bound.
        .layer(ConcurrencyGateLayer::new(args.max_concurrent_requests))
        // Only the shop's own callers (when it has an internal token).
        .layer(auth.require())
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), drain)
        .await?;
    Ok(())
}

/// Gives each call a server span, child of the trace its `traceparent` metadata names (a new
/// trace without one). Does nothing while traces are off. Health and reflection calls get none:
/// they are not part of anyone's request.
#[derive(Clone, Copy, Default)]
pub struct ServerSpanLayer;

impl<S> tower::Layer<S> for ServerSpanLayer {
    type Service = ServerSpan<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerSpan { inner }
    }
}

#[derive(Clone)]
pub struct ServerSpan<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerSpan<S>
where
    S: Service<Request<ReqBody>, Response = axum::http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if !traces::is_on() || path.starts_with("/grpc.") {
            return Box::pin(self.inner.call(request));
        }
        // Only methods we serve name spans: a caller cannot mint span names.
        let (name, service, method) = if crate::telemetry::is_known_grpc_method(path) {
            traces::grpc_method_parts(path)
        } else {
            ("unknown", "", "")
        };
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        traces::continue_from_headers(&span, request.headers());
        let answer = span.in_scope(|| self.inner.call(request));
        let recorded = span.clone();
        Box::pin(
            async move {
                let response = answer.await;
                if let Ok(response) = &response {
                    traces::record_grpc_status(&recorded, response.headers());
                }
                response
            }
            .instrument(span),
        )
    }
}

/// Set on answers refused by [`ConcurrencyGate`]: the call was never processed, so a client may
/// safely send it to another instance.
pub const SHED_HEADER: &str = "letsgo-shed";

/// Limits the calls a server processes at once across all its connections; a call beyond the
/// limit is answered UNAVAILABLE at once (with [`SHED_HEADER`]) rather than queued.
#[derive(Clone)]
pub struct ConcurrencyGateLayer {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ConcurrencyGateLayer {
    pub fn new(limit: usize) -> Self {
        ConcurrencyGateLayer {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
        }
    }
}

impl<S> tower::Layer<S> for ConcurrencyGateLayer {
    type Service = ConcurrencyGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyGate {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ConcurrencyGate<S> {
    inner: S,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
}

impl<S, ReqBody> Service<Request<ReqBody>> for ConcurrencyGate<S>
where
    S: Service<Request<ReqBody>, Response = axum::http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = axum::http::Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let response = answer.await;
                    drop(permit);
                    response
                })
            }
            Err(_) => {
                let mut response = tonic::Status::unavailable("server at its concurrency limit")
                    .into_http::<Body>();
                response
                    .headers_mut()
                    .insert(SHED_HEADER, axum::http::HeaderValue::from_static("1"));
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn calls_beyond_the_limit_are_refused_at_once_with_unavailable() {
        let (release, released) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_request: Request<Body>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|done| *done).await;
                Ok::<_, std::convert::Infallible>(axum::http::Response::new(Body::default()))
            }
        });
        let gate = ConcurrencyGateLayer::new(1);
        let first = tokio::spawn(
            tower::Layer::layer(&gate, slow.clone()).oneshot(Request::new(Body::default())),
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let refused = tower::Layer::layer(&gate, slow.clone())
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        assert_eq!(refused.headers()["grpc-status"], "14");
        assert_eq!(refused.headers()[SHED_HEADER], "1");
        release.send_replace(true);
        let answered = first.await.unwrap().unwrap();
        assert!(answered.headers().get("grpc-status").is_none());
        let again = tower::Layer::layer(&gate, slow)
            .oneshot(Request::new(Body::default()))
            .await
            .unwrap();
        assert!(
            again.headers().get(SHED_HEADER).is_none(),
            "the permit came back"
        );
    }
}
