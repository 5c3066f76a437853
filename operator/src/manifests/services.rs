//! The gateway and the five gRPC services: a Deployment each, a headless Service for DNS
//! discovery, a PodDisruptionBudget when there is more than one replica, and the gateway's own
//! Service and optional Ingress.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::{
    ADMIN_PASSWORD_KEY, INTERNAL_TOKEN_KEY, JWT_SECRET_KEY, POSTGRES_PASSWORD_KEY,
    REDIS_PASSWORD_KEY, WEBHOOK_SECRET_KEY, config_map_name, env_from_secret, env_value,
    secret_name,
};
use super::{CONFIG_HASH_ANNOTATION, Child, StoreRef, selector_labels};
use crate::store::{
    Autoscaling, DiscoveryMode, ExternalMiddleware, GatewayServiceType, ImageSpec,
    MiddlewareSource, Resources, ServiceSizing,
};

/// How long the cluster's DNS may keep answering with a Pod that is gone: CoreDNS as kubeadm
/// and most distributions configure it (`kubernetes ... { ttl 30 }`, `cache 30`) serves a
/// headless Service's answer from its cache for up to 30 s.
const CLUSTER_DNS_CACHE_SECONDS: i64 = 30;

/// How often the services ask the DNS again (`DISCOVERY_REFRESH_MS`'s default, 5 s).
const CLIENT_REFRESH_SECONDS: i64 = 5;

/// How long a Pod that is going away keeps serving before it is sent SIGTERM. As soon as the
/// Pod is terminating, its endpoints turn not ready: kube-proxy stops sending it new
/// connections within about a second, but the headless Service's DNS name may still list it
/// until CoreDNS's cached answer and then the callers' own refresh have both run out. Until
/// then callers may still pick it, so it must still answer. Measured on the real node: with
/// 15 s (which counted CoreDNS's answer as 5 s) a rollout under load failed requests whenever
/// a caller's cached answer outlived the wait; the wait covers both with 5 s to spare.
pub(crate) const PRE_STOP_SECONDS: i64 = CLUSTER_DNS_CACHE_SECONDS + CLIENT_REFRESH_SECONDS + 5;

/// How long a new Pod must have been ready before a rollout counts it available and takes an
/// old Pod away (`minReadySeconds`). A caller learns of the new Pod through the same cached
/// DNS answer and refresh that keep the old one in its list, so a new service Pod waits both
/// out: callers know it before its predecessor even begins its pre-stop wait. Without it, a
/// one-replica rollout left callers that had not yet learned the new Pod only the old one,
/// 5 s before its SIGTERM; under the full test suite's load that margin ran out (one product
/// list answered 503 of 10 349 requests). The gateway is reached through kube-proxy, which
/// learns of a Pod within about a second.
pub(crate) const SERVICE_MIN_READY_SECONDS: i32 =
    (CLUSTER_DNS_CACHE_SECONDS + CLIENT_REFRESH_SECONDS) as i32;
pub(crate) const GATEWAY_MIN_READY_SECONDS: i32 = 5;

/// The whole of a Pod's stop: the pre-stop wait, then after SIGTERM the gateway's linger
/// (`SHUTDOWN_LINGER_MS`, 1 s), the requests in flight (at most `REQUEST_TIMEOUT_MS`, 10 s),
/// and the outbox and consumers' last round, with room to spare; only past it is the
/// process killed.
pub(crate) const TERMINATION_GRACE_SECONDS: i64 = PRE_STOP_SECONDS + 25;
// The wait, the gateway's 1 s linger and a request's 10 s deadline fit before the kill.
const _: () = assert!(TERMINATION_GRACE_SECONDS >= PRE_STOP_SECONDS + 1 + 10);

/// The six deployables, in the order they are applied (callees before callers): the shop's
/// components as `letsgo_facts` names them, with their ports and databases.
pub use letsgo_facts::Component as ServiceKind;

/// What the operator needs to know of a component beyond the shop's facts: which middleware
/// and secrets it gets, and how the Store sizes it.
pub(crate) trait Deployable: Copy {
    /// `http` for the gateway, `grpc` for a service: the name of its serving port.
    fn serving_port_name(self) -> &'static str;
    fn uses_database(self) -> bool;
    /// The gateway listens there for the product service's change announcements (its product
    /// detail cache).
    fn uses_redis(self) -> bool;
    fn uses_kafka(self) -> bool;
    fn signs_tokens(self) -> bool;
    fn spec(self, store: &StoreRef<'_>) -> ServiceSizing;
}

impl Deployable for ServiceKind {
    fn serving_port_name(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "http",
            _ => "grpc",
        }
    }

    fn uses_database(self) -> bool {
        self.database().is_some()
    }

    fn uses_redis(self) -> bool {
        matches!(
            self,
            ServiceKind::Product | ServiceKind::Cart | ServiceKind::Gateway
        )
    }

    fn uses_kafka(self) -> bool {
        matches!(
            self,
            ServiceKind::User | ServiceKind::Order | ServiceKind::Payment
        )
    }

    fn signs_tokens(self) -> bool {
        matches!(self, ServiceKind::User | ServiceKind::Gateway)
    }

    fn spec(self, store: &StoreRef<'_>) -> ServiceSizing {
        let services = &store.store.spec.services;
        match self {
            ServiceKind::User => services.user.clone(),
            ServiceKind::Product => services.product.clone(),
            ServiceKind::Cart => services.cart.clone(),
            ServiceKind::Order => services.order.clone(),
            ServiceKind::Payment => services.payment.clone(),
            ServiceKind::Gateway => services.gateway.clone(),
        }
    }
}

/// The objects of one service; `config_hash` goes on the pod template.
pub(super) fn objects(store: &StoreRef<'_>, kind: ServiceKind, config_hash: &str) -> Vec<Child> {
    let spec = kind.spec(store);
    let mut objects = Vec::new();
    if kind == ServiceKind::Gateway {
        objects.push(Child::Service(gateway_service(store)));
    } else {
        objects.push(Child::Service(headless_service(store, kind)));
    }
    objects.push(Child::Deployment(deployment(
        store,
        kind,
        &spec,
        config_hash,
    )));
    if spec.max_replicas() > 1 {
        objects.push(Child::PodDisruptionBudget(disruption_budget(store, kind)));
    }
    if let Some(autoscaling) = &spec.autoscaling {
        objects.push(Child::HorizontalPodAutoscaler(autoscaler(
            store,
            kind,
            autoscaling,
        )));
    }
    if kind == ServiceKind::Gateway
        && let Some(ingress) = gateway_ingress(store)
    {
        objects.push(Child::Ingress(ingress));
    }
    objects
}

fn deployment(
    store: &StoreRef<'_>,
    kind: ServiceKind,
    spec: &ServiceSizing,
    config_hash: &str,
) -> Deployment {
    let name = kind.as_str();
    let image = &store.store.spec.image;
    let mut template_labels = super::labels(&store.name, name);
    // A tag may be longer than a label value (63) or start or end with '.', '_' or '-': the
    // label holds what a label can of it, and none when nothing is left.
    if let Some(version) = label_value(image.tag()) {
        template_labels.insert("app.kubernetes.io/version".into(), version);
    }
    let annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned()),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        (
            "prometheus.io/port".to_owned(),
            kind.admin_port().to_string(),
        ),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    let mut volume_mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let middleware = &store.store.spec.middleware;
    let cas = [
        (
            kind.uses_database(),
            &middleware.postgres,
            "postgres-ca",
            POSTGRES_CA_DIR,
        ),
        (
            kind.uses_redis(),
            &middleware.redis,
            "redis-ca",
            REDIS_CA_DIR,
        ),
        (
            kind.uses_kafka(),
            &middleware.kafka,
            "kafka-ca",
            KAFKA_CA_DIR,
        ),
    ];
    for (uses, source, volume, dir) in cas {
        if let Some(ca) = ca_secret(source).filter(|_| uses) {
            let (mount, volume) = ca_volume(volume, ca, dir);
            volume_mounts.push(mount);
            volumes.push(volume);
        }
    }
    let container = Container {
        name: name.to_owned(),
        image: Some(image_reference(image, name)),
        image_pull_policy: Some(image.pull_policy.as_str().to_owned()),
        ports: Some(vec![
            container_port(kind.serving_port_name(), kind.serving_port()),
            container_port("admin", kind.admin_port()),
        ]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(store),
                optional: None,
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(service_env(store, kind)),
        resources: Some(resources(spec.resources.as_ref(), &SERVICE_DEFAULTS)),
        // Started once the process answers; migrations may take a while on first start.
        startup_probe: Some(http_probe("/healthz", kind.admin_port(), 2, 90)),
        liveness_probe: Some(http_probe("/healthz", kind.admin_port(), 10, 3)),
        readiness_probe: Some(http_probe("/readyz", kind.admin_port(), 5, 2)),
        security_context: Some(restricted_container()),
        volume_mounts: Some(volume_mounts),
        // The kubelet's own sleep: the images need no shell for it.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(DeploymentSpec {
            // Autoscaled, the field is left out of the apply: the autoscaler owns it.
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&store.name, name)),
                ..LabelSelector::default()
            },
            // Surge first: a rollout never takes a ready pod away before its successor is ready,
            // and known to its callers.
            min_ready_seconds: Some(match kind {
                ServiceKind::Gateway => GATEWAY_MIN_READY_SECONDS,
                _ => SERVICE_MIN_READY_SECONDS,
            }),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The services never call the Kubernetes API (discovery is DNS).
                    automount_service_account_token: Some(false),
                    // Service links would add `<NAME>_PORT=tcp://...` variables that can shadow
                    // settings such as REDIS_PORT.
                    enable_service_links: Some(false),
                    image_pull_secrets: store.image_pull_secrets(),
                    security_context: Some(restricted_pod(65532)),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Where an external PostgreSQL's CA certificate is mounted.
const POSTGRES_CA_DIR: &str = "/etc/letsgo/postgres-ca";
const POSTGRES_CA_FILE: &str = "/etc/letsgo/postgres-ca/ca.crt";
const REDIS_CA_DIR: &str = "/etc/letsgo/redis-ca";
const REDIS_CA_FILE: &str = "/etc/letsgo/redis-ca/ca.crt";
const KAFKA_CA_DIR: &str = "/etc/letsgo/kafka-ca";
const KAFKA_CA_FILE: &str = "/etc/letsgo/kafka-ca/ca.crt";

/// The Secret holding the CA of an external middleware's certificate, if one is named.
fn ca_secret(source: &MiddlewareSource) -> Option<&str> {
    source.external.as_ref()?.ca_secret_name.as_deref()
}

/// The `ca.crt` of `secret`, mounted read-only in `dir`.
fn ca_volume(name: &str, secret: &str, dir: &str) -> (VolumeMount, Volume) {
    let mount = VolumeMount {
        name: name.into(),
        mount_path: dir.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let volume = Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: "ca.crt".into(),
                path: "ca.crt".into(),
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    (mount, volume)
}

/// Secrets and per-pod values: what the ConfigMap must not or cannot hold.
/// `<registry>/letsgo-<component>:<tag>`, and `@<digest>` when the Store pins one.
fn image_reference(image: &ImageSpec, component: &str) -> String {
    let registry = image.registry.trim_end_matches('/');
    let tag = image.tag();
    match image.digests.of(component) {
        Some(digest) => format!("{registry}/letsgo-{component}:{tag}@{digest}"),
        None => format!("{registry}/letsgo-{component}:{tag}"),
    }
}

/// `value` as a label value: at most 63 characters, beginning and ending with a letter or digit.
pub(super) fn label_value(value: &str) -> Option<String> {
    let cut: String = value.chars().take(63).collect();
    let trimmed = cut.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn service_env(store: &StoreRef<'_>, kind: ServiceKind) -> Vec<EnvVar> {
    let spec = &store.store.spec;
    let generated = secret_name(store);
    // Every component calls or is called over gRPC: all carry and require the shop's token.
    let mut env = vec![env_from_secret(
        "INTERNAL_TOKEN",
        &generated,
        INTERNAL_TOKEN_KEY,
        false,
    )];
    if spec.observability.is_some() {
        env.push(env_value(
            "OTEL_SERVICE_NAME",
            &format!("letsgo-{}", kind.as_str()),
        ));
    }
    if kind.signs_tokens() {
        env.push(env_from_secret(
            "JWT_SECRET",
            &generated,
            JWT_SECRET_KEY,
            false,
        ));
    }
    if kind == ServiceKind::Gateway && !spec.gateway.trusted_proxies.is_empty() {
        env.push(EnvVar {
            name: "TRUSTED_PROXIES".into(),
            value: Some(spec.gateway.trusted_proxies.join(",")),
            ..EnvVar::default()
        });
    }
    if kind == ServiceKind::Gateway
        && let Some(limit) = &spec.gateway.rate_limit
    {
        env.push(env_value(
            "RATE_LIMIT_PER_SECOND",
            &limit.per_second.to_string(),
        ));
        env.push(env_value("RATE_LIMIT_BURST", &limit.burst().to_string()));
    }
    if kind.uses_redis() && spec.middleware.redis.managed.is_some() {
        env.push(env_from_secret(
            "REDIS_PASSWORD",
            &generated,
            REDIS_PASSWORD_KEY,
            false,
        ));
    }
    if kind == ServiceKind::User {
        env.push(env_from_secret(
            "ADMIN_PASSWORD",
            &generated,
            ADMIN_PASSWORD_KEY,
            false,
        ));
    }
    if kind == ServiceKind::Payment {
        env.push(env_from_secret(
            "PAYMENT_WEBHOOK_SECRET",
            &generated,
            WEBHOOK_SECRET_KEY,
            false,
        ));
    }
    if kind.uses_database() {
        env.push(EnvVar {
            name: "DB_MAX_CONNECTIONS".into(),
            value: Some(spec.database_pool().to_string()),
            ..EnvVar::default()
        });
        match external_secret(&spec.middleware.postgres) {
            None => env.push(env_from_secret(
                "DB_PASSWORD",
                &generated,
                POSTGRES_PASSWORD_KEY,
                false,
            )),
            Some(secret) => {
                env.push(env_from_secret("DB_HOST", secret, "host", false));
                env.push(env_from_secret("DB_PORT", secret, "port", true));
                env.push(env_from_secret("DB_USER", secret, "username", false));
                env.push(env_from_secret("DB_PASSWORD", secret, "password", false));
                if ca_secret(&spec.middleware.postgres).is_some() {
                    env.push(env_value("DB_SSLMODE", "verify-full"));
                    env.push(env_value("DB_SSLROOTCERT", POSTGRES_CA_FILE));
                } else {
                    env.push(env_from_secret("DB_SSLMODE", secret, "sslmode", true));
                }
            }
        }
    }
    if kind.uses_redis()
        && let Some(secret) = external_secret(&spec.middleware.redis)
    {
        env.push(env_from_secret("REDIS_URL", secret, "url", false));
        if ca_secret(&spec.middleware.redis).is_some() {
            env.push(env_value("REDIS_CA_FILE", REDIS_CA_FILE));
        }
    }
    if kind.uses_kafka()
        && let Some(external) = &spec.middleware.kafka.external
    {
        env.extend(kafka_env(external));
    }
    if spec.discovery == DiscoveryMode::Etcd {
        if let Some(secret) = spec.middleware.etcd.as_ref().and_then(external_secret) {
            env.push(env_from_secret("ETCD_HOSTS", secret, "endpoints", false));
        }
        // Instances register under the address other pods reach them at.
        env.push(EnvVar {
            name: "ADVERTISE_HOST".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}

/// How the services reach an external Kafka: brokers, TLS and SASL.
fn kafka_env(external: &ExternalMiddleware) -> Vec<EnvVar> {
    let secret = external.secret_name.as_str();
    let mut env = vec![match &external.bootstrap_servers {
        Some(servers) => env_value("KAFKA_BROKERS", servers),
        None => env_from_secret("KAFKA_BROKERS", secret, "brokers", false),
    }];
    let tls = external.kafka_tls();
    let protocol = match (&external.sasl, tls) {
        (None, false) => "plaintext",
        (None, true) => "ssl",
        (Some(_), false) => "sasl_plaintext",
        (Some(_), true) => "sasl_ssl",
    };
    env.push(env_value("KAFKA_SECURITY_PROTOCOL", protocol));
    if let Some(sasl) = &external.sasl {
        env.push(env_value("KAFKA_SASL_MECHANISM", sasl.mechanism.as_str()));
        env.push(env_value(
            "KAFKA_SASL_USERNAME",
            sasl.username.as_deref().unwrap_or(secret),
        ));
        env.push(env_from_secret(
            "KAFKA_SASL_PASSWORD",
            secret,
            "password",
            false,
        ));
    }
    if external.ca_secret_name.is_some() {
        env.push(env_value("KAFKA_CA_FILE", KAFKA_CA_FILE));
    }
    env
}

fn external_secret(source: &MiddlewareSource) -> Option<&str> {
    source
        .external
        .as_ref()
        .map(|external| external.secret_name.as_str())
}

/// Named `<store>-<service>`, the name `DISCOVERY_DNS_NAME` resolves: its DNS answer is the
/// addresses of the ready pods.
fn headless_service(store: &StoreRef<'_>, kind: ServiceKind) -> Service {
    let name = kind.as_str();
    Service {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&store.name, name)),
            ports: Some(vec![
                service_port(kind.serving_port_name(), kind.serving_port()),
                service_port("admin", kind.admin_port()),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The gateway's address for clients; its admin port stays inside the pod network.
fn gateway_service(store: &StoreRef<'_>) -> Service {
    let kind = ServiceKind::Gateway;
    let name = kind.as_str();
    let exposure = &store.store.spec.gateway;
    // Only a Service that takes outside traffic has the policy (the API server refuses it on
    // a ClusterIP Service).
    let external_traffic_policy = (exposure.service_type == GatewayServiceType::LoadBalancer)
        .then(|| exposure.external_traffic_policy.as_str().to_owned());
    Service {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(ServiceSpec {
            type_: Some(exposure.service_type.as_str().to_owned()),
            external_traffic_policy,
            selector: Some(selector_labels(&store.name, name)),
            ports: Some(vec![service_port("http", kind.serving_port())]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn gateway_ingress(store: &StoreRef<'_>) -> Option<Ingress> {
    let ingress = store.store.spec.gateway.ingress.as_ref()?;
    let name = ServiceKind::Gateway.as_str();
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: store.child_name(name),
            port: Some(ServiceBackendPort {
                name: Some("http".into()),
                number: None,
            }),
        }),
        ..IngressBackend::default()
    };
    Some(Ingress {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(IngressSpec {
            ingress_class_name: ingress.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ingress.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend,
                    }],
                }),
            }]),
            tls: ingress.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![ingress.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// Voluntary disruptions (node drains) take one pod at a time.
/// Scales the service's Deployment on CPU use, relative to its CPU request.
fn autoscaler(
    store: &StoreRef<'_>,
    kind: ServiceKind,
    autoscaling: &Autoscaling,
) -> HorizontalPodAutoscaler {
    let name = kind.as_str();
    HorizontalPodAutoscaler {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: store.child_name(name),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: autoscaling.scale_down_stabilization_seconds.map(|seconds| {
                HorizontalPodAutoscalerBehavior {
                    scale_down: Some(HPAScalingRules {
                        stabilization_window_seconds: Some(seconds),
                        ..HPAScalingRules::default()
                    }),
                    ..HorizontalPodAutoscalerBehavior::default()
                }
            }),
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

fn disruption_budget(store: &StoreRef<'_>, kind: ServiceKind) -> PodDisruptionBudget {
    let name = kind.as_str();
    PodDisruptionBudget {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&store.name, name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

pub(super) fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

pub(super) fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn http_probe(path: &str, port: u16, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

/// The `restricted` Pod Security Standard, for a process that needs nothing of its image's
/// filesystem but `/tmp`.
pub(super) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

pub(super) fn restricted_pod(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Requests and memory limit the operator gives a container the Store says nothing about.
pub(super) struct DefaultResources {
    pub cpu_request: &'static str,
    pub memory_request: &'static str,
    pub memory_limit: &'static str,
}

const SERVICE_DEFAULTS: DefaultResources = DefaultResources {
    cpu_request: "50m",
    memory_request: "64Mi",
    memory_limit: "256Mi",
};

/// The Store's resources when given (taken as they are), else the defaults. No CPU limit by
/// default: throttling a latency-sensitive server hurts more than it protects.
pub(super) fn resources(
    given: Option<&Resources>,
    defaults: &DefaultResources,
) -> ResourceRequirements {
    let Some(given) = given else {
        return ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity(defaults.cpu_request.into())),
                ("memory".into(), Quantity(defaults.memory_request.into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity(defaults.memory_limit.into()),
            )])),
            ..ResourceRequirements::default()
        };
    };
    let to_map = |values: &crate::store::CpuMemory| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = &values.cpu {
            map.insert("cpu".to_owned(), Quantity(cpu.clone()));
        }
        if let Some(memory) = &values.memory {
            map.insert("memory".to_owned(), Quantity(memory.clone()));
        }
        map
    };
    ResourceRequirements {
        requests: given.requests.as_ref().map(to_map),
        limits: given.limits.as_ref().map(to_map),
        ..ResourceRequirements::default()
    }
}
