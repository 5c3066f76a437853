//! Test fixtures: Stores, and a mocked API server that checks each request the reconciler makes
//! (method, path, query and body) and answers as the API server would.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::controller::Context;
use crate::metrics::Metrics;
use crate::store::{Store, StoreSpec};

pub const NAMESPACE: &str = "default";
pub const UID: &str = "6f1c2a9e-0000-4000-8000-000000000001";

/// A Store as the API server returns it: named `shop`, with a uid and a generation.
pub fn store(spec: StoreSpec) -> Store {
    let mut store = Store::new("shop", spec);
    store.metadata.namespace = Some(NAMESPACE.into());
    store.metadata.uid = Some(UID.into());
    store.metadata.generation = Some(1);
    store
}

type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// The other end of the reconciler's client.
pub struct ApiServerVerifier(ApiServerHandle);

/// A context whose client talks to the returned verifier.
pub fn test_context() -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let ctx = Context::new(client, Arc::new(Metrics::default()), Some("test".into()));
    (Arc::new(ctx), ApiServerVerifier(handle))
}

/// How the mock answers one request.
pub enum Answer {
    /// The request's body, as a server-side apply returns the object it applied.
    Echo,
    /// The request's body with `status` set to this value.
    EchoWithStatus(Value),
    /// The request's body with these top-level fields added, e.g. the `metadata` and `spec`
    /// a status patch's answer carries besides the status it sent.
    EchoWith(Value),
    /// The request's body with 201 Created and no status: a server-side apply that created the
    /// object because it did not exist (a child deleted behind the operator's back).
    Created,
    NotFound,
    Json(Value),
    /// An empty list of the requested kind.
    EmptyList,
}

/// One expected request.
pub struct Step {
    pub method: Method,
    pub path: String,
    pub answer: Answer,
}

impl Step {
    pub fn new(method: Method, path: impl Into<String>, answer: Answer) -> Step {
        Step {
            method,
            path: path.into(),
            answer,
        }
    }

    pub fn apply(path: impl Into<String>) -> Step {
        Step::new(Method::PATCH, path, Answer::Echo)
    }

    /// The status patch of the Store `shop`, answered with the whole Store.
    pub fn store_status_patch() -> Step {
        Step::new(
            Method::PATCH,
            store_status(),
            Answer::EchoWith(json!({
                "metadata": {"name": "shop", "namespace": NAMESPACE, "uid": UID, "generation": 1},
                "spec": {}
            })),
        )
    }
}

/// A request as the mock received it.
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// Kept for a failing test's message (`{seen:?}`).
    #[allow(dead_code)]
    pub query: String,
    pub body: Value,
}

impl ApiServerVerifier {
    /// Answers `steps` in order, failing on any request that is not the next one expected, and
    /// returns what was received so tests can look at the bodies.
    pub async fn expect(mut self, steps: Vec<Step>) -> Vec<Seen> {
        let mut seen = Vec::new();
        for (index, step) in steps.into_iter().enumerate() {
            let (request, send) =
                self.0.next_request().await.unwrap_or_else(|| {
                    panic!("step {index}: expected {} {}", step.method, step.path)
                });
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert_eq!(
                (&method, path.as_str()),
                (&step.method, step.path.as_str()),
                "step {index}"
            );
            if method == Method::PATCH {
                assert!(
                    query.contains("fieldManager=letsgo-operator") && query.contains("force=true"),
                    "step {index}: a server-side apply under our field manager, got {query}"
                );
            }
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("a JSON body")
            };
            let (code, answer) = match step.answer {
                Answer::Echo => (StatusCode::OK, body.clone()),
                Answer::EchoWithStatus(status) => {
                    let mut object = body.clone();
                    object["status"] = status;
                    (StatusCode::OK, object)
                }
                Answer::EchoWith(fields) => {
                    let mut object = body.clone();
                    for (key, value) in fields.as_object().expect("an object of fields") {
                        object[key] = value.clone();
                    }
                    (StatusCode::OK, object)
                }
                Answer::Created => (StatusCode::CREATED, body.clone()),
                Answer::NotFound => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
                Answer::Json(value) => (StatusCode::OK, value),
                Answer::EmptyList => (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
                ),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
            seen.push(Seen {
                method,
                path,
                query,
                body,
            });
        }
        seen
    }
}

/// Paths of the namespaced objects the reconciler touches.
pub fn core(kind: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/{kind}/{name}")
}

pub fn apps(kind: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NAMESPACE}/{kind}/{name}")
}

pub fn ingresses() -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses")
}

pub fn network_policy(name: &str) -> String {
    format!("/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies/{name}")
}

pub fn events() -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events")
}

pub fn store_status() -> String {
    format!("/apis/letsgo.dev/v1alpha1/namespaces/{NAMESPACE}/stores/shop/status")
}

/// The lists of children that come and go with the spec, answered empty.
pub fn prune_lists() -> Vec<Step> {
    vec![
        Step::new(
            Method::GET,
            format!("/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"),
            Answer::EmptyList,
        ),
        Step::new(Method::GET, ingresses(), Answer::EmptyList),
        Step::new(
            Method::GET,
            format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"),
            Answer::EmptyList,
        ),
        Step::new(
            Method::GET,
            format!("/api/v1/namespaces/{NAMESPACE}/services"),
            Answer::EmptyList,
        ),
        Step::new(
            Method::GET,
            format!("/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers"),
            Answer::EmptyList,
        ),
        Step::new(
            Method::GET,
            format!("/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies"),
            Answer::EmptyList,
        ),
        Step::new(
            Method::GET,
            format!("/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs"),
            Answer::EmptyList,
        ),
    ]
}
