//! The reconciler: applies what a Store should have, reports what it has.
//!
//! Every write is a server-side apply under [`FIELD_MANAGER`], so a reconcile is idempotent and
//! never fights with fields other managers own (an HPA's replicas, a mesh's annotations). The
//! services are applied only once the managed middleware they need is ready; until then the
//! Store is `Pending`. Children the Store no longer asks for (an Ingress removed, a PDB after
//! scaling to one, middleware switched to external) are deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::Instrument;
use tracing::{info, warn};

use crate::manifests::external::{self, ExternalCheck};
use crate::manifests::network;
use crate::manifests::{
    Child, FIELD_MANAGER, InstallDefaults, STORE_LABEL, ServiceKind, StoreRef, desired_state,
    reads_secret, secret_data_is_complete,
};
use crate::metrics::Metrics;
use crate::reachability;
use crate::status::{self, Observation};
use crate::store::{Store, StorePhase, StoreSpec, StoreStatus};
use crate::{Error, Result};

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failed reconciles per Store (`namespace/name`), for the retry backoff.
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// What the installation decides for every Store.
    defaults: Arc<InstallDefaults>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Arc::default(),
            defaults: Arc::default(),
        }
    }

    /// The installation's defaults for every Store (the operator's settings).
    pub fn with_defaults(self, defaults: InstallDefaults) -> Context {
        Context {
            defaults: Arc::new(defaults),
            ..self
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn backoff_key(store: &Store) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

/// The retry delay after `failures` failed reconciles in a row: 5 s, doubling, at most 5 min.
pub fn retry_delay(failures: u32) -> Duration {
    let seconds = 5u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_secs(seconds.min(300))
}

/// Where the operator looks for Stores: the whole cluster, or one namespace (`WATCH_NAMESPACE`,
/// for a shop per team or for tests that share a control plane).
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    Cluster,
    Namespace(String),
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::Cluster => Api::all(client.clone()),
            Scope::Namespace(namespace) => Api::namespaced(client.clone(), namespace),
        }
    }
}

/// Runs the controller until a shutdown signal: Stores in `scope`, and what they own.
pub async fn run(ctx: Arc<Context>, scope: Scope) {
    let client = ctx.client.clone();
    let stores = scope.api::<Store>(&client);
    if let Err(error) = stores.list(&ListParams::default().limit(1)).await {
        warn!(%error, "cannot list Stores; is the CRD installed (crds/store.yaml)?");
    }
    // Only what carries the Store label: the operator does not cache every Secret in the cluster.
    let children = watcher::Config::default().labels(STORE_LABEL);
    let controller = Controller::new(stores, watcher::Config::default().any_semantic());
    // External middleware's Secrets carry no label of ours, and a retained shop's generated
    // Secret is not owned by its Store: Secrets' metadata alone (never their data) is watched,
    // so a Secret created, fixed, rotated or deleted reaches its Stores at once.
    let known_stores = controller.store();
    let new_stores = known_stores.clone();
    // A deleted Store is not reconciled again: its metric series go once it has left the cache.
    let pruning = tokio::spawn(forget_deleted_stores_metrics(
        known_stores.clone(),
        ctx.clone(),
    ));
    let secret_changes = watcher(
        scope.api::<PartialObjectMeta<Secret>>(&client),
        watcher::Config::default(),
    )
    .touched_objects();
    controller
        .watches_stream(secret_changes, move |secret: PartialObjectMeta<Secret>| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            known_stores
                .state()
                .into_iter()
                .filter(|store| store.namespace() == namespace && reads_secret(store, &name))
                .map(|store| ObjectRef::from_obj(&*store))
                .collect::<Vec<_>>()
        })
        // A new shop's services start as the services they call get ready endpoints
        // (`first_start_waits_for`); a shop that has run is not woken by its endpoints.
        .watches(
            scope.api::<EndpointSlice>(&client),
            children.clone(),
            move |slice: EndpointSlice| {
                let namespace = slice.namespace()?;
                let store = new_stores
                    .get(&ObjectRef::new(slice.labels().get(STORE_LABEL)?).within(&namespace))?;
                store
                    .status
                    .as_ref()
                    .is_none_or(|status| status.version.is_none())
                    .then(|| ObjectRef::from_obj(&*store))
            },
        )
        .owns(scope.api::<Deployment>(&client), children.clone())
        .owns(scope.api::<StatefulSet>(&client), children.clone())
        .owns(scope.api::<Service>(&client), children.clone())
        .owns(scope.api::<ConfigMap>(&client), children.clone())
        .owns(scope.api::<Secret>(&client), children.clone())
        .owns(scope.api::<PodDisruptionBudget>(&client), children.clone())
        .owns(scope.api::<Ingress>(&client), children.clone())
        .owns(scope.api::<NetworkPolicy>(&client), children.clone())
        .owns(scope.api::<CronJob>(&client), children.clone())
        .owns(scope.api::<HorizontalPodAutoscaler>(&client), children)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures_util::future::ready(()))
        .await;
    pruning.abort();
}

/// How often the metrics of deleted Stores are looked for.
const METRICS_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Every [`METRICS_PRUNE_EVERY`], removes the series of Stores no longer in the Store cache.
async fn forget_deleted_stores_metrics(
    stores: kube::runtime::reflector::Store<Store>,
    ctx: Arc<Context>,
) {
    // No wait for the cache's first list (the controller's cache never reports it ready): a
    // Store has series only once reconciled, which needs it in the cache, and a relist
    // replaces the cache's content at once, so an absent Store is a deleted one.
    let mut tick = tokio::time::interval(METRICS_PRUNE_EVERY);
    loop {
        tick.tick().await;
        let existing = stores
            .state()
            .iter()
            .map(|store| (store.namespace().unwrap_or_default(), store.name_any()))
            .collect();
        for (namespace, store) in ctx.metrics.stores.keep_only(&existing) {
            info!(%namespace, %store, "the Store is gone: its metric series removed");
        }
    }
}

/// Brings one Store's children to what its spec asks for and writes its status. A failure is
/// written to the status and published as a Warning Event before it is retried.
pub async fn reconcile(store: Arc<Store>, ctx: Arc<Context>) -> Result<Action> {
    let _measure = ctx.metrics.reconcile.count_and_measure();
    // One trace per reconcile when traces are exported (letsgo_traces), each apply a child.
    let span = tracing::info_span!(
        "reconcile",
        otel.name = "reconcile Store",
        store = %store.name_any(),
        namespace = store.metadata.namespace.as_deref().unwrap_or_default(),
        otel.status_code = tracing::field::Empty,
    );
    let outcome = apply_store(&store, &ctx).instrument(span.clone()).await;
    if outcome.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    match outcome {
        Ok(action) => Ok(action),
        Err(error) => {
            report_failure(&ctx, &store, &error).await;
            Err(error)
        }
    }
}

/// Best effort: the API server may be what failed.
async fn report_failure(ctx: &Context, store: &Store, error: &Error) {
    ctx.metrics.stores.failed(
        store.metadata.namespace.as_deref().unwrap_or_default(),
        &store.name_any(),
    );
    let message = error.to_string();
    let already = store.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.reason == "ReconcileFailed" && c.message == message)
    });
    if !already {
        publish(ctx, store, EventType::Warning, "ReconcileFailed", &message).await;
    }
    let status = status::failed(store, &message, &now());
    if let Err(error) = patch_status(&ctx.client, store, &status).await {
        warn!(%error, "could not write the failure to the Store's status");
    }
}

async fn apply_store(store: &Store, ctx: &Context) -> Result<Action> {
    let target = StoreRef::new(store)?.with_defaults(&ctx.defaults);
    let client = &ctx.client;
    let namespace = target.namespace.as_str();
    info!(store = %target.name, %namespace, "reconciling");

    let problems = store.spec.problems();
    if !problems.is_empty() {
        let status = status::invalid(store, &problems, &now());
        if store.status.as_ref().and_then(|s| s.phase) != Some(StorePhase::Invalid) {
            publish(
                ctx,
                store,
                EventType::Warning,
                "InvalidSpec",
                &problems.join("; "),
            )
            .await;
        }
        patch_status(client, store, &status).await?;
        ctx.metrics
            .stores
            .reconciled(namespace, &target.name, StorePhase::Invalid);
        // Nothing to retry: the next spec change triggers the next reconcile.
        return Ok(Action::await_change());
    }

    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let existing_secret = secrets.get_opt(&target.child_name("secrets")).await?;
    let (external, found_secrets) = read_external_secrets(&secrets, &store.spec).await?;
    let desired = desired_state(&target, existing_secret.as_ref(), &external.digest);

    let mut seen = Observation::default();
    for child in desired.settings.iter().chain(&desired.middleware) {
        seen.applied.push(apply(client, namespace, child).await?);
    }
    seen.middleware_ready = seen.applied.iter().all(|child| match child {
        Child::StatefulSet(set) => {
            let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            set.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= want
        }
        _ => true,
    });
    // Once the shop has run (a version is recorded), the services are applied whatever the
    // middleware's state: a PostgreSQL restart must not hold back a rollback.
    let has_run = store.status.as_ref().is_some_and(|s| s.version.is_some());
    // Pods would only wait in CreateContainerConfigError for a missing Secret or key: the
    // services are left as they are, and the status names what is missing.
    seen.missing_secrets = external.missing;
    seen.reachability =
        reachability::probe_all(&external::dependencies(&store.spec, &found_secrets)).await;
    // Services roll after the middleware they need: while a middleware StatefulSet is rolling
    // to a new spec they wait, but a middleware that is merely down does not hold them.
    let middleware_rolling = seen
        .applied
        .iter()
        .any(|child| matches!(child, Child::StatefulSet(_)) && !status::rolled_out(child));
    if let Some(job) = desired.restore.as_ref().filter(|_| !has_run) {
        // A restore runs before the first start only: it never overwrites a live shop.
        seen.restore = restore(client, namespace, job, seen.middleware_ready).await?;
    }
    seen.services_applied = (seen.middleware_ready || (has_run && !middleware_rolling))
        && seen.missing_secrets.is_empty()
        && seen.restore.is_none();
    // A new shop starts each service once the services it calls answer (see
    // `first_start_waits_for`); a shop that has run rolls as before.
    let answering = match (seen.services_applied, has_run) {
        (true, false) => Some(answering_services(client, namespace, &target.name).await?),
        _ => None,
    };
    if seen.services_applied {
        for child in &desired.services {
            if let (Some(answering), Child::Deployment(_), Some(kind)) =
                (&answering, child, child.component().and_then(service_kind))
                && !first_start_waits_for(kind, answering).is_empty()
            {
                continue;
            }
            // The gateway rolls last, once the services it calls run their new spec.
            if child.component() == Some(ServiceKind::Gateway.as_str())
                && matches!(child, Child::Deployment(_))
                && !seen
                    .applied
                    .iter()
                    .filter(|c| matches!(c, Child::Deployment(_)))
                    .all(status::rolled_out)
            {
                let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
                if let Some(current) = deployments.get_opt(&child.name()).await? {
                    seen.applied.push(Child::Deployment(current));
                }
                continue;
            }
            seen.applied.push(apply(client, namespace, child).await?);
        }
    } else if has_run {
        // Held back (a middleware rollout, a missing Secret): what runs is still counted.
        let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
        for child in desired
            .services
            .iter()
            .filter(|c| matches!(c, Child::Deployment(_)))
        {
            if let Some(current) = deployments.get_opt(&child.name()).await? {
                seen.applied.push(Child::Deployment(current));
            }
        }
    }
    prune(client, &target, &desired.all().collect::<Vec<_>>()).await?;
    if !status::all_ready(&seen) {
        // Why something is not ready, when waiting will not fix it (a bad image, a crash loop).
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&format!("{STORE_LABEL}={}", target.name)))
            .await?;
        seen.failing_pods = status::pod_failures(&pods.items, k8s_openapi::jiff::Timestamp::now());
        replace_stuck_pods(ctx, store, namespace, &seen.applied, &pods.items).await?;
    }
    if store.spec.backup.is_some() {
        // What the newest finished backup Pod reported: its name and size.
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels(&format!(
                "{STORE_LABEL}={},app.kubernetes.io/component={}",
                target.name,
                crate::manifests::backup::COMPONENT
            )))
            .await?;
        seen.last_backup_report = status::last_backup_report(&pods.items);
    }

    if !existing_secret
        .as_ref()
        .is_some_and(secret_data_is_complete)
    {
        publish(
            ctx,
            store,
            EventType::Normal,
            "SecretsGenerated",
            "generated the missing secrets (JWT and webhook keys, database, Redis and initial \
             admin passwords, internal token)",
        )
        .await;
    }
    let spec_is_new =
        store.status.as_ref().and_then(|s| s.observed_generation) != store.metadata.generation;
    if spec_is_new && !store.spec.shop.admin_usernames.is_empty() {
        publish(
            ctx,
            store,
            EventType::Warning,
            "AdminUsernamesIgnored",
            "shop.adminUsernames is no longer read: the initial admin is shop.adminUsername, \
             its password in the Secret's admin-password key; grant others with `letsgo-user \
             grant-admin NAME` in the user Deployment",
        )
        .await;
    }
    let status = status::summarise(store, &seen, &now());
    let phase = status.phase.unwrap_or(StorePhase::Progressing);
    ctx.metrics
        .stores
        .reconciled(&target.namespace, &target.name, phase);
    ctx.metrics
        .stores
        .conditions(&target.namespace, &target.name, &status.conditions);
    if store.status.as_ref().and_then(|s| s.phase) != Some(phase) {
        let (type_, note) = match phase {
            StorePhase::Degraded => (EventType::Warning, condition_message(&status, "Degraded")),
            _ => (EventType::Normal, condition_message(&status, "Ready")),
        };
        publish(ctx, store, type_, phase.as_str(), &note).await;
    }
    patch_status(client, store, &status).await?;
    ctx.failures().remove(&backoff_key(store));

    // Watches on the children bring changes sooner; this is the safety net.
    Ok(match phase {
        StorePhase::Ready => Action::requeue(Duration::from_secs(300)),
        _ => Action::requeue(Duration::from_secs(30)),
    })
}

/// Retries a failed reconcile after a delay that doubles with each failure in a row, so a
/// Store that cannot be applied (a quota, a webhook refusing it) does not hammer the API server.
pub fn error_policy(store: Arc<Store>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile.set_failure(error);
    let failures = {
        let mut failures = ctx.failures();
        let count = failures.entry(backoff_key(&store)).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = retry_delay(failures);
    warn!(store = %store.name_any(), %error, failures, retry_in_secs = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Reads the external middleware's Secrets and checks them against the keys the services
/// read; the Secrets as found come back too.
async fn read_external_secrets(
    secrets: &Api<Secret>,
    spec: &StoreSpec,
) -> Result<(ExternalCheck, BTreeMap<String, Option<Secret>>)> {
    let wanted = external::external_secrets(spec);
    let mut found = BTreeMap::new();
    for name in wanted.keys() {
        found.insert(name.clone(), secrets.get_opt(name).await?);
    }
    Ok((external::check(&wanted, &found), found))
}

#[tracing::instrument(level = "info", name = "apply", skip_all, fields(otel.name = %format!("apply {}", child.kind()), name = %child.name()))]
async fn apply(client: &Client, namespace: &str, child: &Child) -> Result<Child> {
    Ok(match child {
        Child::ConfigMap(o) => Child::ConfigMap(apply_one(client, namespace, o).await?),
        Child::Secret(o) => Child::Secret(apply_one(client, namespace, o).await?),
        Child::Service(o) => Child::Service(apply_one(client, namespace, o).await?),
        Child::StatefulSet(o) => Child::StatefulSet(apply_one(client, namespace, o).await?),
        Child::Deployment(o) => Child::Deployment(apply_one(client, namespace, o).await?),
        Child::PodDisruptionBudget(o) => {
            Child::PodDisruptionBudget(apply_one(client, namespace, o).await?)
        }
        Child::Ingress(o) => Child::Ingress(apply_one(client, namespace, o).await?),
        Child::NetworkPolicy(o) => Child::NetworkPolicy(apply_one(client, namespace, o).await?),
        Child::PersistentVolumeClaim(o) => {
            Child::PersistentVolumeClaim(apply_one(client, namespace, o).await?)
        }
        Child::CronJob(o) => {
            Child::CronJob(Box::new(apply_one(client, namespace, o.as_ref()).await?))
        }
        Child::Job(o) => Child::Job(Box::new(apply_one(client, namespace, o.as_ref()).await?)),
        Child::HorizontalPodAutoscaler(o) => {
            Child::HorizontalPodAutoscaler(apply_one(client, namespace, o).await?)
        }
    })
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&object.name_any(), &params, &Patch::Apply(object))
        .await?)
}

fn service_kind(component: &str) -> Option<ServiceKind> {
    ServiceKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == component)
}

/// The services `kind` calls that do not answer yet, which a new shop's `kind` waits for.
///
/// A caller started with its callees resolves their names before their Pods are ready. The
/// cluster's DNS answers "no such records" then, and caches that answer (CoreDNS as kubeadm
/// and most distributions configure it: `cache 30`, `ttl 30`), so the caller keeps hearing
/// it for up to half a minute after the callee is ready: a new Store went Ready and then
/// answered 503 for 20-30 s on the real node. Started only once each callee's Service has a
/// ready endpoint, the first question already gets the answer. The gateway calls every service,
/// so it starts last.
fn first_start_waits_for(kind: ServiceKind, answering: &HashSet<ServiceKind>) -> Vec<ServiceKind> {
    network::callees(kind)
        .filter(|callee| !answering.contains(callee))
        .collect()
}

/// The Store's services whose Service has at least one ready endpoint (an endpoint whose
/// readiness is unknown counts, as the EndpointSlice API says it should). EndpointSlices carry
/// their Service's labels.
async fn answering_services(
    client: &Client,
    namespace: &str,
    store: &str,
) -> Result<HashSet<ServiceKind>> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{STORE_LABEL}={store}")))
        .await?;
    Ok(slices
        .items
        .iter()
        .filter(|slice| {
            slice
                .endpoints
                .iter()
                .any(|endpoint| endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        })
        .filter_map(|slice| {
            slice
                .labels()
                .get("app.kubernetes.io/component")
                .and_then(|component| service_kind(component))
        })
        .collect())
}

/// Runs the restore Job once PostgreSQL is ready; `None` once it has succeeded, so the services
/// may start on the restored data.
async fn restore(
    client: &Client,
    namespace: &str,
    job: &Child,
    postgres_ready: bool,
) -> Result<Option<status::Restore>> {
    let name = job.name();
    if !postgres_ready {
        return Ok(Some(status::Restore::Running(format!(
            "{name} waits for PostgreSQL"
        ))));
    }
    let Child::Job(wanted) = job else {
        return Ok(None);
    };
    let applied = apply_one(client, namespace, wanted.as_ref()).await?;
    let state = applied.status.unwrap_or_default();
    let failed = state
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Failed" && c.status == "True");
    Ok(if state.succeeded.unwrap_or(0) > 0 {
        None
    } else if failed {
        Some(status::Restore::Failed(format!(
            "{name} failed; `kubectl logs job/{name}` says why (a missing backup lists the ones there are)"
        )))
    } else {
        Some(status::Restore::Running(format!(
            "{name} restores the backup before the services start"
        )))
    })
}

/// Deletes the kinds of children that come and go with the spec when the spec no longer has
/// them. Only objects carrying this Store's label and owned by it are considered.
async fn prune(client: &Client, store: &StoreRef<'_>, desired: &[&Child]) -> Result<()> {
    let wanted: HashSet<(&str, String)> = desired.iter().map(|c| (c.kind(), c.name())).collect();
    let namespace = store.namespace.as_str();
    let uid = store.store.metadata.uid.as_deref();
    let selector = format!("{STORE_LABEL}={}", store.name);
    prune_kind::<PodDisruptionBudget>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<Ingress>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<StatefulSet>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<Service>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<HorizontalPodAutoscaler>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<NetworkPolicy>(client, namespace, &selector, uid, &wanted).await?;
    prune_kind::<CronJob>(client, namespace, &selector, uid, &wanted).await?;
    Ok(())
}

async fn prune_kind<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: Option<&str>,
    wanted: &HashSet<(&str, String)>,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let kind = K::kind(&());
    for object in api.list(&ListParams::default().labels(selector)).await? {
        let owned = object
            .owner_references()
            .iter()
            .any(|owner| Some(owner.uid.as_str()) == owner_uid);
        let name = object.name_any();
        if owned && !wanted.contains(&(kind.as_ref(), name.clone())) {
            info!(%kind, %name, "deleting what the Store no longer asks for");
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

async fn patch_status(client: &Client, store: &Store, status: &StoreStatus) -> Result<()> {
    let namespace = store.namespace().unwrap_or_default();
    let api = Api::<Store>::namespaced(client.clone(), &namespace);
    let patch = json!({
        "apiVersion": Store::api_version(&()),
        "kind": Store::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&store.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Deletes the middleware Pods a StatefulSet rollout would wait on for ever (see
/// [`stuck_pods`](crate::stuck_pods)); their StatefulSet makes them again from its current
/// template. Each replacement is an Event on the Store.
async fn replace_stuck_pods(
    ctx: &Context,
    store: &Store,
    namespace: &str,
    applied: &[Child],
    pods: &[Pod],
) -> Result<()> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    for name in crate::stuck_pods::stuck_pods(applied, pods) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Gone meanwhile: what was wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error.into()),
        }
        info!(pod = %name, "replaced a middleware Pod its StatefulSet's rollout was waiting on");
        publish(
            ctx,
            store,
            EventType::Normal,
            "ReplacedStuckPod",
            &format!(
                "deleted Pod {name}: it never turned ready on a template that has since \
                 changed, and its StatefulSet would wait on it for ever; it is made again \
                 from the current template"
            ),
        )
        .await;
    }
    Ok(())
}

/// Events are a courtesy to whoever runs `kubectl describe`: failing to publish one is logged,
/// never a failed reconcile.
async fn publish(ctx: &Context, store: &Store, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &store.object_ref(&())).await {
        warn!(%error, reason, "could not publish an event");
    }
}

fn condition_message(status: &StoreStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The current time as Kubernetes writes it (RFC 3339, whole seconds, UTC).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests;
