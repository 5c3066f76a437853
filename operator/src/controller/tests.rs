//! The reconcile loop against a mocked API server: each test names the conversation it
//! expects, and fails on a missing, extra or different request.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Method;
use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::*;
use crate::store::{DiscoveryMode, Middleware, MiddlewareSource, StoreSpec};

/// The conversations a reconcile can have.
enum Scenario {
    /// A new Store with managed middleware: settings and middleware are applied, the services
    /// wait, the status says Pending.
    FirstReconcileWaitsForMiddleware,
    /// Middleware is ready and the Secret exists: the services are applied, everything is
    /// ready, the Secret's values are kept.
    MiddlewareReadyAppliesServices,
    /// External middleware: nothing to wait for, so the first reconcile starts the services
    /// that call no other (user, product); the rest wait for their callees' endpoints.
    ExternalMiddlewareFirstReconcile,
    /// A spec breaking a rule: a Warning event and an Invalid status, nothing applied.
    InvalidSpecReported,
    /// A Ready Store, nothing changed since: the same applies again (the API server changes
    /// nothing for an identical apply), the pruning lists find only wanted children, no Event,
    /// the same status.
    NothingChanged,
    /// A Ready Store whose Deployment `shop-cart` was deleted: the apply re-creates it (201,
    /// not ready yet), the Store turns Degraded with a Warning event.
    DeletedDeploymentRecreated,
}

impl Scenario {
    /// The Secret and every child exist and are ready.
    fn steady(&self) -> bool {
        matches!(
            self,
            Scenario::NothingChanged | Scenario::DeletedDeploymentRecreated
        )
    }
}

const MIDDLEWARE: [&str; 3] = ["postgres", "redis", "kafka"];
const SERVICES: [&str; 5] = ["user", "product", "cart", "order", "payment"];

fn existing_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "shop-secrets", "namespace": NAMESPACE},
        "data": {
            "jwt-secret": "ZXhpc3Rpbmctand0LXNlY3JldC12YWx1ZQ==",
            "webhook-secret": "ZXhpc3Rpbmctd2ViaG9vay1zZWNyZXQ=",
            "postgres-password": "ZXhpc3RpbmctcGFzc3dvcmQ=",
            "admin-password": "ZXhpc3RpbmctYWRtaW4tcGFzc3dvcmQ=",
            "internal-token": "ZXhpc3RpbmctaW50ZXJuYWwtdG9rZW4=",
            "redis-password": "ZXhpc3RpbmctcmVkaXMtcGFzc3dvcmQ="
        }
    })
}

fn steps(scenario: &Scenario) -> Vec<Step> {
    let mut steps = Vec::new();
    match scenario {
        Scenario::InvalidSpecReported => {
            steps.push(Step::new(Method::POST, events(), Answer::Echo));
            steps.push(Step::store_status_patch());
            return steps;
        }
        Scenario::MiddlewareReadyAppliesServices
        | Scenario::NothingChanged
        | Scenario::DeletedDeploymentRecreated => steps.push(Step::new(
            Method::GET,
            core("secrets", "shop-secrets"),
            Answer::Json(existing_secret()),
        )),
        _ => steps.push(Step::new(
            Method::GET,
            core("secrets", "shop-secrets"),
            Answer::NotFound,
        )),
    }
    if matches!(scenario, Scenario::ExternalMiddlewareFirstReconcile) {
        // The external Secrets, in name order, each with every key the services read.
        for (name, data) in [
            ("shop-kafka", json!({"brokers": "a2Fma2E6OTA5Mg=="})),
            (
                "shop-postgres",
                json!({"host": "ZGI=", "username": "c2hvcA==", "password": "cHc="}),
            ),
            ("shop-redis", json!({"url": "cmVkaXM6Ly9yZWRpcw=="})),
        ] {
            steps.push(Step::new(
                Method::GET,
                core("secrets", name),
                Answer::Json(json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": NAMESPACE}, "data": data})),
            ));
        }
    }
    steps.push(Step::apply(core("configmaps", "shop-config")));
    steps.push(Step::apply(core("secrets", "shop-secrets")));
    let external = matches!(scenario, Scenario::ExternalMiddlewareFirstReconcile);
    if !external {
        steps.push(Step::apply(core("configmaps", "shop-postgres-init")));
    }
    // A NetworkPolicy per component: the services and gateway, then the managed middleware.
    let guarded = SERVICES
        .into_iter()
        .chain(["gateway"])
        .chain(MIDDLEWARE.into_iter().filter(|_| !external));
    for name in guarded {
        steps.push(Step::apply(network_policy(&format!("shop-{name}"))));
    }
    if !external {
        for name in MIDDLEWARE {
            steps.push(Step::apply(core("services", &format!("shop-{name}"))));
            steps.push(Step::apply(core(
                "services",
                &format!("shop-{name}-client"),
            )));
            let ready =
                matches!(scenario, Scenario::MiddlewareReadyAppliesServices) || scenario.steady();
            steps.push(Step::new(
                Method::PATCH,
                apps("statefulsets", &format!("shop-{name}")),
                if ready {
                    Answer::EchoWithStatus(json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}))
                } else {
                    Answer::Echo
                },
            ));
        }
    }
    if !matches!(scenario, Scenario::FirstReconcileWaitsForMiddleware) {
        let deployment_answer = |name: &str| match scenario {
            Scenario::DeletedDeploymentRecreated if name == "cart" => Answer::Created,
            Scenario::MiddlewareReadyAppliesServices
            | Scenario::NothingChanged
            | Scenario::DeletedDeploymentRecreated => Answer::EchoWithStatus(
                json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
            ),
            _ => Answer::Echo,
        };
        // A new shop (no version recorded yet) reads which of its services answer.
        let answering: Option<&[&str]> = match scenario {
            Scenario::MiddlewareReadyAppliesServices => Some(&SERVICES),
            Scenario::ExternalMiddlewareFirstReconcile => Some(&[]),
            _ => None,
        };
        if let Some(answering) = answering {
            steps.push(endpoint_slices(answering));
        }
        for name in SERVICES.into_iter().chain(["gateway"]) {
            steps.push(Step::apply(core("services", &format!("shop-{name}"))));
            if matches!(scenario, Scenario::ExternalMiddlewareFirstReconcile)
                && !["user", "product"].contains(&name)
            {
                // Its callees have no ready endpoint yet: not started.
                continue;
            }
            if name == "gateway" && matches!(scenario, Scenario::DeletedDeploymentRecreated) {
                // The gateway rolls last: while a service has not rolled out, it is only read.
                let current = match scenario {
                    Scenario::DeletedDeploymentRecreated => Answer::Json(json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "shop-gateway", "namespace": NAMESPACE,
                            "labels": {"app.kubernetes.io/component": "gateway"}},
                        "spec": {"replicas": 1, "selector": {}, "template": {}},
                        "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
                            "availableReplicas": 1}
                    })),
                    _ => Answer::NotFound,
                };
                steps.push(Step::new(
                    Method::GET,
                    apps("deployments", "shop-gateway"),
                    current,
                ));
                continue;
            }
            steps.push(Step::new(
                Method::PATCH,
                apps("deployments", &format!("shop-{name}")),
                deployment_answer(name),
            ));
        }
    }
    let mut lists = prune_lists();
    if scenario.steady() {
        // What the server has: only children the Store still asks for, so nothing is deleted.
        lists[2].answer = owned_list("StatefulSetList", MIDDLEWARE);
        let services = MIDDLEWARE.into_iter().chain(SERVICES).chain(["gateway"]);
        lists[3].answer = owned_list("ServiceList", services);
    }
    steps.extend(lists);
    if !matches!(
        scenario,
        Scenario::MiddlewareReadyAppliesServices | Scenario::NothingChanged
    ) {
        // Something is not ready: the Store's Pods are read for failures.
        steps.push(Step::new(
            Method::GET,
            format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            Answer::EmptyList,
        ));
    }
    if !matches!(scenario, Scenario::MiddlewareReadyAppliesServices) && !scenario.steady() {
        // SecretsGenerated
        steps.push(Step::new(Method::POST, events(), Answer::Echo));
    }
    if !matches!(scenario, Scenario::NothingChanged) {
        // The phase changed.
        steps.push(Step::new(Method::POST, events(), Answer::Echo));
    }
    steps.push(Step::store_status_patch());
    steps
}

/// The Store's EndpointSlices: one ready endpoint for each service in `answering`.
fn endpoint_slices(answering: &[&str]) -> Step {
    let items: Vec<Value> = answering
        .iter()
        .map(|name| {
            json!({
                "metadata": {"name": format!("shop-{name}-x1"), "namespace": NAMESPACE,
                    "labels": {"letsgo.dev/store": "shop", "app.kubernetes.io/component": name,
                        "kubernetes.io/service-name": format!("shop-{name}")}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.0.9"], "conditions": {"ready": true}}]
            })
        })
        .collect();
    Step::new(
        Method::GET,
        format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"),
        Answer::Json(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
            "metadata": {"resourceVersion": "1"}, "items": items}),
        ),
    )
}

/// A list of objects `shop-<name>` carrying the Store's label and owner reference.
fn owned_list<'a>(kind: &str, names: impl IntoIterator<Item = &'a str>) -> Answer {
    let items: Vec<Value> = names
        .into_iter()
        .map(|name| {
            json!({"metadata": {
                "name": format!("shop-{name}"), "namespace": NAMESPACE,
                "labels": {"letsgo.dev/store": "shop"},
                "ownerReferences": [{"apiVersion": "letsgo.dev/v1alpha1", "kind": "Store",
                    "name": "shop", "uid": UID, "controller": true}]
            }})
        })
        .collect();
    Answer::Json(json!({"apiVersion": "v1", "kind": kind, "metadata": {}, "items": items}))
}

/// Runs one reconcile against the scenario's conversation; returns its result and the requests.
async fn run(store: Store, scenario: Scenario) -> (Result<Action>, Vec<Seen>) {
    let (ctx, verifier) = test_context();
    let server = tokio::spawn(verifier.expect(steps(&scenario)));
    let result = reconcile(Arc::new(store), ctx).await;
    let seen = tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("the reconcile made every expected request in time")
        .expect("every request was the expected one");
    (result, seen)
}

fn body_at<'a>(seen: &'a [Seen], method: Method, path: &str) -> &'a Value {
    &seen
        .iter()
        .find(|s| s.method == method && s.path == path)
        .unwrap_or_else(|| panic!("no {method} {path}"))
        .body
}

fn status_body(seen: &[Seen]) -> &Value {
    &body_at(seen, Method::PATCH, &store_status())["status"]
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn first_reconcile_applies_settings_and_middleware_and_reports_pending() {
    let (result, seen) = run(
        store(StoreSpec::default()),
        Scenario::FirstReconcileWaitsForMiddleware,
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));

    let secret = body_at(&seen, Method::PATCH, &core("secrets", "shop-secrets"));
    // The credentials outlive the Store with its volumes (spec.dataRetention: Retain).
    assert!(secret["metadata"]["ownerReferences"].is_null(), "{secret}");
    assert_eq!(secret["data"].as_object().unwrap().len(), 6);
    let postgres = body_at(&seen, Method::PATCH, &apps("statefulsets", "shop-postgres"));
    assert_eq!(postgres["kind"], "StatefulSet");
    assert_eq!(postgres["metadata"]["labels"]["letsgo.dev/store"], "shop");

    let status = status_body(&seen);
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["readyComponents"], "0/9");
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(
        condition(status, "Progressing")["reason"],
        "WaitingForMiddleware"
    );
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(
        status["gatewayEndpoint"],
        "http://shop-gateway.default.svc:8888"
    );
    let events: Vec<&Value> = seen
        .iter()
        .filter(|s| s.path == events())
        .map(|s| &s.body)
        .collect();
    assert_eq!(events[0]["reason"], "SecretsGenerated");
    assert_eq!(events[1]["reason"], "Pending");
    assert_eq!(events[1]["regarding"]["kind"], "Store");
}

#[tokio::test]
async fn once_middleware_is_ready_the_services_are_applied_and_the_store_is_ready() {
    let mut pending = store(StoreSpec::default());
    pending.status = Some(crate::store::StoreStatus {
        observed_generation: Some(1),
        phase: Some(StorePhase::Pending),
        ..Default::default()
    });
    let (result, seen) = run(pending, Scenario::MiddlewareReadyAppliesServices).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));

    // The generated values already in the cluster are applied again unchanged.
    let secret = body_at(&seen, Method::PATCH, &core("secrets", "shop-secrets"));
    assert_eq!(secret["data"], existing_secret()["data"]);

    let user = body_at(&seen, Method::PATCH, &apps("deployments", "shop-user"));
    assert_eq!(
        user["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/letsgo/letsgo-user:0.1.0"
    );

    let status = status_body(&seen);
    assert_eq!(status["phase"], "Ready");
    assert_eq!(status["readyComponents"], "9/9");
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Ready")["reason"], "AllComponentsReady");
    assert_eq!(condition(status, "Progressing")["status"], "False");
    let event = body_at(&seen, Method::POST, &events());
    assert_eq!(event["reason"], "Ready");
    assert_eq!(event["type"], "Normal");
}

#[tokio::test]
async fn with_external_middleware_the_first_reconcile_starts_the_services_that_call_no_other() {
    let spec = StoreSpec {
        middleware: Middleware {
            postgres: MiddlewareSource::external("shop-postgres"),
            redis: MiddlewareSource::external("shop-redis"),
            kafka: MiddlewareSource::external("shop-kafka"),
            etcd: None,
            ..Middleware::default()
        },
        ..StoreSpec::default()
    };
    let (result, seen) = run(store(spec), Scenario::ExternalMiddlewareFirstReconcile).await;
    result.unwrap();
    // The callers (cart, order, payment, the gateway) wait for their callees' endpoints: the
    // conversation has no apply of their Deployments.
    let user = body_at(&seen, Method::PATCH, &apps("deployments", "shop-user"));
    let env = user["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env.iter().any(|e| e["name"] == "DB_HOST"
        && e["valueFrom"]["secretKeyRef"]["name"] == "shop-postgres"
        && e["valueFrom"]["secretKeyRef"]["key"] == "host"));
    let status = status_body(&seen);
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(condition(status, "Progressing")["reason"], "RollingOut");
    assert_eq!(status["readyComponents"], "0/6");
}

#[test]
fn a_new_shops_services_wait_only_for_the_services_they_call() {
    use ServiceKind::*;
    let none = HashSet::new();
    assert!(first_start_waits_for(User, &none).is_empty());
    assert!(first_start_waits_for(Product, &none).is_empty());
    assert_eq!(first_start_waits_for(Cart, &none), [Product]);
    assert_eq!(first_start_waits_for(Order, &none), [Product, Cart]);
    assert_eq!(first_start_waits_for(Payment, &none), [Order]);
    let all_but_payment = HashSet::from([User, Product, Cart, Order]);
    assert_eq!(first_start_waits_for(Gateway, &all_but_payment), [Payment]);
    assert!(first_start_waits_for(Gateway, &HashSet::from(ServiceKind::SERVICES)).is_empty());
}

#[tokio::test]
async fn a_bad_spec_is_reported_in_status_not_crashed_on() {
    let spec = StoreSpec {
        discovery: DiscoveryMode::Etcd,
        ..StoreSpec::default()
    };
    let (result, seen) = run(store(spec), Scenario::InvalidSpecReported).await;
    assert_eq!(result.unwrap(), Action::await_change());
    let event = body_at(&seen, Method::POST, &events());
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
    let status = status_body(&seen);
    assert_eq!(status["phase"], "Invalid");
    assert_eq!(condition(status, "Degraded")["status"], "True");
    assert_eq!(condition(status, "Degraded")["reason"], "InvalidSpec");
    assert!(
        condition(status, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("middleware.etcd must be set")
    );
}

/// A Store made Ready by a reconcile (from Pending), and the requests that reconcile made.
async fn ready_store() -> (Store, Vec<Seen>) {
    let mut pending = store(StoreSpec::default());
    pending.status = Some(crate::store::StoreStatus {
        observed_generation: Some(1),
        phase: Some(StorePhase::Pending),
        ..Default::default()
    });
    let (result, seen) = run(pending, Scenario::MiddlewareReadyAppliesServices).await;
    result.unwrap();
    let mut ready = store(StoreSpec::default());
    ready.status = Some(serde_json::from_value(status_body(&seen).clone()).unwrap());
    assert_eq!(
        ready.status.as_ref().unwrap().phase,
        Some(StorePhase::Ready)
    );
    (ready, seen)
}

/// The server-side applies of children (every PATCH but the Store's status), in order.
fn child_applies(seen: &[Seen]) -> Vec<(&str, &Value)> {
    seen.iter()
        .filter(|s| s.method == Method::PATCH && s.path != store_status())
        .map(|s| (s.path.as_str(), &s.body))
        .collect()
}

#[tokio::test]
async fn a_second_pass_with_nothing_changed_changes_nothing() {
    let (ready, first) = ready_store().await;
    let (result, second) = run(ready, Scenario::NothingChanged).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));

    // What the reconciler does: it applies every child again, with byte-for-byte the bodies of
    // the pass before, under the same field manager, which a server-side apply makes a no-op
    // (no new resourceVersion, no rollout). It deletes nothing, creates nothing, publishes no
    // Event, and writes the same status (conditions keep their transition times).
    let applied = child_applies(&second);
    // Settings 3, policies 9, middleware 3 x 3 (two Services and the set), services 6 x 2.
    assert_eq!(applied.len(), 3 + 9 + 3 * 3 + 6 * 2, "every child, once");
    assert_eq!(applied, child_applies(&first));
    assert!(
        second
            .iter()
            .all(|s| s.method == Method::GET || s.method == Method::PATCH),
        "only reads and applies: {second:?}"
    );
    assert_eq!(status_body(&second), status_body(&first));
}

#[tokio::test]
async fn a_deleted_child_is_re_created() {
    let (ready, first) = ready_store().await;
    let (result, seen) = run(ready, Scenario::DeletedDeploymentRecreated).await;
    // Not ready again yet: looked at again soon.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(30)));

    // The apply of the missing Deployment is what re-creates it, whole, owned by the Store.
    let cart = apps("deployments", "shop-cart");
    let recreated = body_at(&seen, Method::PATCH, &cart);
    assert_eq!(recreated, body_at(&first, Method::PATCH, &cart));
    assert_eq!(recreated["metadata"]["ownerReferences"][0]["uid"], UID);
    assert!(seen.iter().all(|s| s.method != Method::DELETE));

    let status = status_body(&seen);
    assert_eq!(status["phase"], "Degraded");
    assert_eq!(status["readyComponents"], "8/9");
    let degraded = condition(status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ComponentsUnavailable");
    assert!(degraded["message"].as_str().unwrap().contains("cart"));
    assert_eq!(condition(status, "Ready")["status"], "False");
    let event = body_at(&seen, Method::POST, &events());
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "Degraded");
}

#[tokio::test]
async fn a_child_the_spec_no_longer_asks_for_is_deleted() {
    let (ctx, verifier) = test_context();
    let store = store(StoreSpec::default());
    let target = StoreRef::new(&store).unwrap();
    let desired = desired_state(&target, None, "");
    let stale_ingress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressList", "metadata": {},
        "items": [{
            "metadata": {"name": "shop-gateway", "namespace": NAMESPACE,
                "ownerReferences": [{"apiVersion": "letsgo.dev/v1alpha1", "kind": "Store",
                    "name": "shop", "uid": UID, "controller": true}]},
        }]
    });
    let mut expected = prune_lists();
    expected[1].answer = Answer::Json(stale_ingress);
    expected.insert(
        2,
        Step::new(
            Method::DELETE,
            format!("{}/shop-gateway", ingresses()),
            Answer::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
            ),
        ),
    );
    let server = tokio::spawn(verifier.expect(expected));
    prune(&ctx.client, &target, &desired.all().collect::<Vec<_>>())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn retries_back_off_from_five_seconds_to_five_minutes() {
    assert_eq!(retry_delay(1), Duration::from_secs(5));
    assert_eq!(retry_delay(2), Duration::from_secs(10));
    assert_eq!(retry_delay(4), Duration::from_secs(40));
    assert_eq!(retry_delay(20), Duration::from_secs(300));
}

#[test]
fn a_secret_missing_a_key_is_incomplete() {
    let mut secret: Secret = serde_json::from_value(existing_secret()).unwrap();
    assert!(secret_data_is_complete(&secret));
    secret.data = Some(BTreeMap::from([(
        "jwt-secret".to_owned(),
        ByteString(b"x".to_vec()),
    )]));
    assert!(!secret_data_is_complete(&secret));
}
