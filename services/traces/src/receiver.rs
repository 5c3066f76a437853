//! An OTLP trace collector for tests (feature `receiver`), over gRPC or over HTTP/protobuf as a
//! collector serves them: it keeps every span it is sent, with the name of the service that
//! sent it and the headers the export carried, so a test can assert what processes exported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use prost::Message;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// The attributes of the process that sent it (`service.name`, `OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: HashMap<String, String>,
    /// A header the export carried, as `OTEL_EXPORTER_OTLP_HEADERS` sets one: the value of
    /// `authorization`, empty without one.
    pub authorization: String,
}

impl ReceivedSpan {
    /// An attribute's value as text, empty when the span has none by that name.
    pub fn attribute(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// The name of the service that exported it.
    pub fn service(&self) -> &str {
        self.resource.get("service.name").map_or("", String::as_str)
    }
}

/// An OTLP collector that keeps every span it is sent.
#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.keep(request.into_inner(), &authorization);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(attributes: Vec<KeyValue>) -> HashMap<String, String> {
    attributes
        .into_iter()
        .map(|attribute| {
            let value = match attribute.value.and_then(|value| value.value) {
                Some(OtlpValue::StringValue(text)) => text,
                Some(OtlpValue::IntValue(number)) => number.to_string(),
                Some(OtlpValue::BoolValue(flag)) => flag.to_string(),
                Some(OtlpValue::DoubleValue(number)) => number.to_string(),
                other => format!("{other:?}"),
            };
            (attribute.key, value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Receiver {
    fn keep(&self, request: ExportTraceServiceRequest, authorization: &str) {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.resource_spans {
            let resource = text(
                resource_spans
                    .resource
                    .map_or_else(Vec::new, |r| r.attributes),
            );
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(ReceivedSpan {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name,
                        kind: span.kind,
                        attributes: text(span.attributes),
                        resource: resource.clone(),
                        authorization: authorization.to_owned(),
                    });
                }
            }
        }
    }

    /// Listens for OTLP/gRPC on a port of its own on 127.0.0.1, serving on the current runtime.
    pub async fn start() -> (Receiver, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    /// Listens for OTLP/HTTP with protobuf bodies (`POST /v1/traces`, as a collector's port
    /// 4318 does) on a port of its own on 127.0.0.1. Any other path is 404, as a collector
    /// answers an exporter that posts to the wrong place.
    pub async fn start_http() -> (Receiver, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let kept = receiver.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
                let protobuf = headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|kind| kind == "application/x-protobuf");
                if !protobuf {
                    return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
                }
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, Vec::new());
                };
                let authorization = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default();
                kept.keep(request, authorization);
                let answer = ExportTraceServiceResponse {
                    partial_success: None,
                };
                (StatusCode::OK, answer.encode_to_vec())
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    /// The spans of one trace received so far.
    pub fn of_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().unwrap().clone()
    }
}
