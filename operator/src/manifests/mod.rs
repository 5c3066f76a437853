//! Manifest builders: pure functions from a Store to the Kubernetes objects that run it.
//!
//! Nothing here talks to the API server, so every object a Store produces can be checked in a
//! unit test. Each object carries the Store as its controller owner (deleting the Store deletes
//! it) and the labels in [`labels`], which the reconciler uses to find what it made.

pub mod backup;
pub mod external;
mod middleware;
pub mod network;
mod services;
mod settings;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, LocalObjectReference, PersistentVolumeClaim, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::store::{DiscoveryMode, Store};
use crate::{Error, Result};

pub use middleware::{MiddlewareKind, POSTGRES_CREDENTIALS_SCRIPT};
pub use services::ServiceKind;
pub use settings::{SECRET_KEYS, secret_data_is_complete};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "letsgo-operator";
/// Label naming the Store an object belongs to; the reconciler selects children by it.
pub const STORE_LABEL: &str = "letsgo.dev/store";
/// Pod-template annotation holding a hash of the shop's settings, so a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "letsgo.dev/config-hash";
/// Middleware pod-template annotation holding a hash of the generated credentials.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "letsgo.dev/credentials-hash";

/// What the operator's installation decides for every Store it reconciles (the chart's values):
/// the middleware images a cluster behind a mirror or without a public registry runs, and the
/// image pull secrets every Pod the operator makes gets. A Store's own choice wins over these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallDefaults {
    pub postgres_image: Option<String>,
    pub redis_image: Option<String>,
    pub kafka_image: Option<String>,
    pub etcd_image: Option<String>,
    /// The image of the backups' `aws` CLI.
    pub backup_image: Option<String>,
    /// Names of Secrets (of type kubernetes.io/dockerconfigjson) in each Store's namespace.
    pub image_pull_secrets: Vec<String>,
    /// The cluster's DNS domain; `cluster.local` when None.
    pub cluster_domain: Option<String>,
}

/// An installation that decides nothing: the official images, no pull secrets.
static NO_INSTALL_DEFAULTS: InstallDefaults = InstallDefaults {
    postgres_image: None,
    redis_image: None,
    kafka_image: None,
    etcd_image: None,
    backup_image: None,
    image_pull_secrets: Vec::new(),
    cluster_domain: None,
};

/// The Store as its builders need it: name, namespace and the owner reference, checked once,
/// and the installation's defaults.
#[derive(Clone, Debug)]
pub struct StoreRef<'a> {
    pub store: &'a Store,
    pub name: String,
    pub namespace: String,
    owner: OwnerReference,
    defaults: &'a InstallDefaults,
}

impl<'a> StoreRef<'a> {
    /// Fails for a Store the API server has not stored yet (no namespace or uid).
    pub fn new(store: &'a Store) -> Result<StoreRef<'a>> {
        let namespace = store
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
        let owner = store
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?;
        Ok(StoreRef {
            store,
            name: store.name_any(),
            namespace,
            owner,
            defaults: &NO_INSTALL_DEFAULTS,
        })
    }

    /// The same Store under an installation's defaults.
    pub fn with_defaults(self, defaults: &'a InstallDefaults) -> StoreRef<'a> {
        StoreRef { defaults, ..self }
    }

    /// The pull secrets of every Pod the operator makes for this Store: the installation's,
    /// then the Store's own (`spec.image.pullSecrets`), each once.
    fn image_pull_secrets(&self) -> Option<Vec<LocalObjectReference>> {
        let mut names: Vec<&str> = Vec::new();
        let own = &self.store.spec.image.pull_secrets;
        for name in self.defaults.image_pull_secrets.iter().chain(own) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        (!names.is_empty()).then(|| {
            names
                .into_iter()
                .map(|name| LocalObjectReference {
                    name: name.to_owned(),
                })
                .collect()
        })
    }

    /// The fully qualified DNS name of the child Service `<store>-<suffix>`, with the root's dot:
    /// resolvers take it as it is. A short name is tried against each domain of the Pod's search
    /// list first, and while the Service has no ready Pod every try fails, the last ones with
    /// the node's own search domains, outside the cluster.
    pub fn address(&self, suffix: &str) -> String {
        format!("{}.{}", self.child_name(suffix), self.service_domain())
    }

    /// `<namespace>.svc.<cluster domain>.`: what follows a Service's name in its address.
    pub fn service_domain(&self) -> String {
        let domain = self
            .defaults
            .cluster_domain
            .as_deref()
            .unwrap_or("cluster.local");
        format!("{}.svc.{}.", self.namespace, domain.trim_end_matches('.'))
    }

    /// `<store>-<suffix>`: every child's name, so several Stores share a namespace.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Metadata of a child: name, namespace, labels and the controller owner reference.
    fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels(&self.name, component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn discovery(&self) -> DiscoveryMode {
        self.store.spec.discovery
    }
}

/// Labels of every child: the recommended `app.kubernetes.io` set and [`STORE_LABEL`].
pub fn labels(store: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(store, component);
    labels.insert("app.kubernetes.io/part-of".into(), "letsgo".into());
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        FIELD_MANAGER.to_owned(),
    );
    labels
}

/// The subset that selects a component's pods; it never changes for a running component.
pub fn selector_labels(store: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "letsgo".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), store.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        (STORE_LABEL.to_owned(), store.to_owned()),
    ])
}

/// One object the operator applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    ConfigMap(ConfigMap),
    Secret(Secret),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    PodDisruptionBudget(PodDisruptionBudget),
    Ingress(Ingress),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    NetworkPolicy(NetworkPolicy),
    PersistentVolumeClaim(PersistentVolumeClaim),
    CronJob(Box<CronJob>),
    Job(Box<Job>),
}

impl Child {
    pub fn kind(&self) -> &'static str {
        match self {
            Child::ConfigMap(_) => "ConfigMap",
            Child::Secret(_) => "Secret",
            Child::Service(_) => "Service",
            Child::StatefulSet(_) => "StatefulSet",
            Child::Deployment(_) => "Deployment",
            Child::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Child::Ingress(_) => "Ingress",
            Child::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Child::NetworkPolicy(_) => "NetworkPolicy",
            Child::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Child::CronJob(_) => "CronJob",
            Child::Job(_) => "Job",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Child::ConfigMap(o) => &o.metadata,
            Child::Secret(o) => &o.metadata,
            Child::Service(o) => &o.metadata,
            Child::StatefulSet(o) => &o.metadata,
            Child::Deployment(o) => &o.metadata,
            Child::PodDisruptionBudget(o) => &o.metadata,
            Child::Ingress(o) => &o.metadata,
            Child::HorizontalPodAutoscaler(o) => &o.metadata,
            Child::NetworkPolicy(o) => &o.metadata,
            Child::PersistentVolumeClaim(o) => &o.metadata,
            Child::CronJob(o) => &o.metadata,
            Child::Job(o) => &o.metadata,
        }
    }

    /// The `app.kubernetes.io/component` label: `cart`, `gateway`, `postgres`, ...
    pub fn component(&self) -> Option<&str> {
        self.metadata()
            .labels
            .as_ref()?
            .get("app.kubernetes.io/component")
            .map(String::as_str)
    }

    pub fn name(&self) -> String {
        match self {
            Child::ConfigMap(o) => o.name_any(),
            Child::Secret(o) => o.name_any(),
            Child::Service(o) => o.name_any(),
            Child::StatefulSet(o) => o.name_any(),
            Child::Deployment(o) => o.name_any(),
            Child::PodDisruptionBudget(o) => o.name_any(),
            Child::Ingress(o) => o.name_any(),
            Child::HorizontalPodAutoscaler(o) => o.name_any(),
            Child::NetworkPolicy(o) => o.name_any(),
            Child::PersistentVolumeClaim(o) => o.name_any(),
            Child::CronJob(o) => o.name_any(),
            Child::Job(o) => o.name_any(),
        }
    }
}

/// Whether the Store's Pods read the Secret `name`: the generated one, or an external
/// middleware's. The operator watches Secrets' metadata and reconciles the Stores they concern.
pub fn reads_secret(store: &Store, name: &str) -> bool {
    let generated = format!("{}-secrets", store.name_any());
    name == generated || external::external_secrets(&store.spec).contains_key(name)
}

/// Everything a Store should have, in the order it is applied.
#[derive(Clone, Debug)]
pub struct DesiredState {
    /// The settings ConfigMap, the generated Secret and the network policies: applied first,
    /// everything reads or passes them.
    pub settings: Vec<Child>,
    /// The managed middleware, each with what it needs.
    pub middleware: Vec<Child>,
    /// Which StatefulSets the services wait for.
    pub managed_middleware: Vec<MiddlewareKind>,
    /// The services and the gateway, applied once the managed middleware is ready.
    pub services: Vec<Child>,
    /// The Job restoring `spec.restoreFrom` before the services first start.
    pub restore: Option<Child>,
}

impl DesiredState {
    pub fn all(&self) -> impl Iterator<Item = &Child> {
        self.settings
            .iter()
            .chain(&self.middleware)
            .chain(&self.services)
    }
}

/// Builds every object of `store`. `existing_secret` is the Secret applied before, whose
/// generated values are kept, so secrets and passwords do not change between reconciles.
/// `external_digest` ([`external::check`]) joins the settings' hash on the pod templates, so a
/// rotated external Secret rolls the services.
pub fn desired_state(
    store: &StoreRef<'_>,
    existing_secret: Option<&Secret>,
    external_digest: &str,
) -> DesiredState {
    let config = settings::config_map(store);
    let secret = settings::secret(store, existing_secret);
    // Services read both at start: a change in either (a rotated or re-made credential too)
    // rolls them.
    let credentials_hash = settings::hash_of_secret(&secret);
    let mut config_hash = format!("{}-{credentials_hash}", settings::hash_of(&config));
    if !external_digest.is_empty() {
        config_hash = format!("{config_hash}-{external_digest}");
    }
    let mut settings = vec![Child::ConfigMap(config), Child::Secret(secret)];

    let managed_middleware = middleware::managed(store);
    let mut middleware = Vec::new();
    for kind in &managed_middleware {
        middleware.extend(middleware::objects(store, *kind, &credentials_hash));
    }
    if managed_middleware.contains(&MiddlewareKind::Postgres) {
        settings.push(Child::ConfigMap(middleware::postgres_init(store)));
    }
    settings.extend(network::policies(store, &managed_middleware));

    let mut restore = None;
    if let Some(backup) = &store.store.spec.backup
        && managed_middleware.contains(&MiddlewareKind::Postgres)
    {
        let image = middleware::image(store, MiddlewareKind::Postgres);
        middleware.extend(backup::objects(store, backup, image.clone()));
        restore = store
            .store
            .spec
            .restore_from
            .as_deref()
            .map(|name| backup::restore_job(store, backup, name, image));
    }

    let mut services = Vec::new();
    for kind in ServiceKind::ALL {
        services.extend(services::objects(store, kind, &config_hash));
    }
    DesiredState {
        settings,
        middleware,
        managed_middleware,
        services,
        restore,
    }
}

#[cfg(test)]
mod tests;
