//! Who may talk to whom inside a Store: one NetworkPolicy per component. Only the gateway
//! takes traffic from outside the Store; each service takes gRPC only from the components that
//! call it; each managed middleware only from the services that use it. Admin ports
//! (`/metrics`, `/readyz`) stay open to the cluster for Prometheus and probes.
//!
//! The policies restrict nothing on a cluster without a NetworkPolicy controller; the internal
//! token (INTERNAL_TOKEN) guards the services there.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::middleware::MiddlewareKind;
use super::services::{Deployable, ServiceKind};
use super::{Child, STORE_LABEL, StoreRef, selector_labels};

const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// The components that call `kind` over gRPC.
pub fn callers(kind: ServiceKind) -> &'static [ServiceKind] {
    use ServiceKind::*;
    match kind {
        User | Payment => &[Gateway],
        Product => &[Gateway, Cart, Order],
        Cart => &[Gateway, Order],
        Order => &[Gateway, Payment],
        Gateway => &[],
    }
}

/// The services `kind` calls over gRPC: the inverse of [`callers`].
pub fn callees(kind: ServiceKind) -> impl Iterator<Item = ServiceKind> {
    ServiceKind::ALL
        .into_iter()
        .filter(move |callee| callers(*callee).contains(&kind))
}

/// The services that use `kind`.
pub fn users(kind: MiddlewareKind) -> Vec<ServiceKind> {
    ServiceKind::ALL
        .into_iter()
        .filter(|service| match kind {
            MiddlewareKind::Postgres => service.uses_database(),
            MiddlewareKind::Redis => service.uses_redis(),
            MiddlewareKind::Kafka => service.uses_kafka(),
            // Discovery: every component registers or resolves.
            MiddlewareKind::Etcd => true,
        })
        .collect()
}

/// The Store's policies (none when `spec.networkPolicies` is off).
pub(super) fn policies(store: &StoreRef<'_>, managed: &[MiddlewareKind]) -> Vec<Child> {
    if !store.store.spec.network_policies {
        return Vec::new();
    }
    let mut policies: Vec<Child> = ServiceKind::ALL
        .into_iter()
        .map(|kind| {
            let serving = if kind == ServiceKind::Gateway {
                // The shop's front door: anyone.
                rule(None, kind.serving_port())
            } else {
                let callers: Vec<&str> = callers(kind).iter().map(|c| c.as_str()).collect();
                rule(Some(peers(store, &callers)), kind.serving_port())
            };
            policy(
                store,
                kind.as_str(),
                vec![serving, rule(None, kind.admin_port())],
            )
        })
        .collect();
    for kind in managed {
        let mut users: Vec<&str> = users(*kind).iter().map(|s| s.as_str()).collect();
        if *kind == MiddlewareKind::Postgres && store.store.spec.backup.is_some() {
            users.push(super::backup::COMPONENT);
            users.push(super::backup::RESTORE_COMPONENT);
        }
        policies.push(policy(
            store,
            kind.as_str(),
            vec![rule(Some(peers(store, &users)), kind.port())],
        ));
    }
    policies
}

fn policy(store: &StoreRef<'_>, component: &str, ingress: Vec<NetworkPolicyIngressRule>) -> Child {
    Child::NetworkPolicy(NetworkPolicy {
        metadata: store.meta(store.child_name(component), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&store.name, component)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// Traffic to `port`, from `from` (anyone when `None`).
fn rule(from: Option<NetworkPolicyPeer>, port: u16) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: from.map(|peer| vec![peer]),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(port))),
            protocol: Some("TCP".to_owned()),
            ..NetworkPolicyPort::default()
        }]),
    }
}

/// The Store's Pods of `components`.
fn peers(store: &StoreRef<'_>, components: &[&str]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some([(STORE_LABEL.to_owned(), store.name.clone())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: COMPONENT_LABEL.to_owned(),
                operator: "In".to_owned(),
                values: Some(components.iter().map(|c| (*c).to_owned()).collect()),
            }]),
        }),
        ..NetworkPolicyPeer::default()
    }
}
