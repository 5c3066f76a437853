//! A Store's status, worked out from what the last apply returned: pure, so each rule about
//! phases and conditions is a unit test.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;

use crate::manifests::{Child, ServiceKind};
use crate::store::{
    ComponentStatus, GatewayServiceType, Store, StoreCondition, StorePhase, StoreStatus,
};

/// What one reconcile saw.
#[derive(Debug, Default)]
pub struct Observation {
    /// The objects as the API server returned them from the apply (status included).
    pub applied: Vec<Child>,
    /// Managed middleware the services wait for, and whether each is ready.
    pub middleware_ready: bool,
}

/// The status of a Store whose children were applied (or, for services waiting on their
/// middleware, not yet). `now` is an RFC 3339 time for conditions that change.
pub fn summarise(store: &Store, seen: &Observation, now: &str) -> StoreStatus {
    let mut components = Vec::new();
    for child in &seen.applied {
        match child {
            Child::StatefulSet(set) => components.push(component(
                child,
                set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                set.status.as_ref().and_then(|s| s.ready_replicas),
            )),
            Child::Deployment(deployment) => components.push(component(
                child,
                deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1),
                deployment.status.as_ref().and_then(|s| s.ready_replicas),
            )),
            _ => {}
        }
    }
    if !seen.middleware_ready {
        // The services are not applied yet: they count, as not ready.
        for kind in ServiceKind::ALL {
            components.push(ComponentStatus {
                name: kind.as_str().to_owned(),
                ready_replicas: 0,
                desired_replicas: replicas_of(store, kind),
            });
        }
    }
    let ready = components
        .iter()
        .filter(|c| c.ready_replicas >= c.desired_replicas)
        .count();
    let not_ready: Vec<&str> = components
        .iter()
        .filter(|c| c.ready_replicas < c.desired_replicas)
        .map(|c| c.name.as_str())
        .collect();

    let previous = store.status.as_ref();
    let generation = store.metadata.generation;
    let spec_changed = previous.and_then(|s| s.observed_generation) != generation;
    let was_ready = previous
        .and_then(|s| s.phase)
        .is_some_and(|p| matches!(p, StorePhase::Ready | StorePhase::Degraded));

    let (phase, reason, message) = if !seen.middleware_ready {
        (
            StorePhase::Pending,
            "WaitingForMiddleware",
            format!(
                "services start once the middleware is ready: {}",
                not_ready.join(", ")
            ),
        )
    } else if not_ready.is_empty() {
        (
            StorePhase::Ready,
            "AllComponentsReady",
            "every component is ready".to_owned(),
        )
    } else if was_ready && !spec_changed {
        (
            StorePhase::Degraded,
            "ComponentsUnavailable",
            format!("not ready: {}", not_ready.join(", ")),
        )
    } else {
        (
            StorePhase::Progressing,
            "RollingOut",
            format!("waiting for: {}", not_ready.join(", ")),
        )
    };

    let ready_condition = ("Ready", phase == StorePhase::Ready, reason, message.clone());
    let progressing = matches!(phase, StorePhase::Pending | StorePhase::Progressing);
    let progressing_condition = (
        "Progressing",
        progressing,
        if progressing { reason } else { "Complete" },
        if progressing {
            message.clone()
        } else {
            String::new()
        },
    );
    let degraded = phase == StorePhase::Degraded;
    let degraded_condition = (
        "Degraded",
        degraded,
        if degraded { reason } else { "AsExpected" },
        if degraded { message } else { String::new() },
    );
    let conditions = [ready_condition, progressing_condition, degraded_condition]
        .into_iter()
        .map(|(type_, status, reason, message)| {
            condition(store, type_, status, reason, message, now)
        })
        .collect();

    StoreStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        ready_components: Some(format!("{ready}/{}", components.len())),
        components,
        gateway_endpoint: gateway_endpoint(store, &seen.applied),
    }
}

/// The status of a Store whose spec breaks a rule: nothing was applied.
pub fn invalid(store: &Store, problems: &[String], now: &str) -> StoreStatus {
    let message = problems.join("; ");
    let previous = store.status.clone().unwrap_or_default();
    StoreStatus {
        observed_generation: store.metadata.generation,
        phase: Some(StorePhase::Invalid),
        conditions: vec![
            condition(store, "Ready", false, "InvalidSpec", message.clone(), now),
            condition(
                store,
                "Progressing",
                false,
                "InvalidSpec",
                message.clone(),
                now,
            ),
            condition(store, "Degraded", true, "InvalidSpec", message, now),
        ],
        // What runs keeps running; its last known readiness stays visible.
        components: previous.components,
        ready_components: previous.ready_components,
        gateway_endpoint: previous.gateway_endpoint,
    }
}

fn component(child: &Child, desired: i32, ready: Option<i32>) -> ComponentStatus {
    let name = match child {
        Child::StatefulSet(o) => o.metadata.labels.as_ref(),
        Child::Deployment(o) => o.metadata.labels.as_ref(),
        _ => None,
    }
    .and_then(|labels| labels.get("app.kubernetes.io/component").cloned())
    .unwrap_or_else(|| child.name());
    ComponentStatus {
        name,
        ready_replicas: ready.unwrap_or(0),
        desired_replicas: desired,
    }
}

fn replicas_of(store: &Store, kind: ServiceKind) -> i32 {
    let services = &store.spec.services;
    match kind {
        ServiceKind::User => services.user.replicas,
        ServiceKind::Product => services.product.replicas,
        ServiceKind::Cart => services.cart.replicas,
        ServiceKind::Order => services.order.replicas,
        ServiceKind::Payment => services.payment.replicas,
        ServiceKind::Gateway => services.gateway.replicas,
    }
}

/// A condition whose transition time moves only when its status does.
fn condition(
    store: &Store,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &str,
) -> StoreCondition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = store
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    StoreCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: store.metadata.generation,
    }
}

/// The Ingress URL when there is one, else the LoadBalancer's address once it has one, else
/// the in-cluster URL.
fn gateway_endpoint(store: &Store, applied: &[Child]) -> Option<String> {
    let namespace = store.metadata.namespace.as_deref().unwrap_or("default");
    let name = store.metadata.name.as_deref()?;
    let port = ServiceKind::Gateway.serving_port();
    let ingress: Option<&Ingress> = applied.iter().find_map(|c| match c {
        Child::Ingress(i) => Some(i),
        _ => None,
    });
    if let Some(spec) = &store.spec.gateway.ingress
        && ingress.is_some()
    {
        let scheme = if spec.tls_secret_name.is_some() {
            "https"
        } else {
            "http"
        };
        return Some(format!("{scheme}://{}", spec.host));
    }
    if store.spec.gateway.service_type == GatewayServiceType::LoadBalancer {
        let service: Option<&Service> = applied.iter().find_map(|c| match c {
            Child::Service(s) if s.metadata.name.as_deref() == Some(&format!("{name}-gateway")) => {
                Some(s)
            }
            _ => None,
        });
        let address = service
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|ingress| ingress.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
        return address.map(|address| format!("http://{address}:{port}"));
    }
    Some(format!("http://{name}-gateway.{namespace}.svc:{port}"))
}
