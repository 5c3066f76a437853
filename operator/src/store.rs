//! The `Store` custom resource: one shop, declared.
//!
//! Ranges, enums and patterns live in the generated OpenAPI schema, and the cross-field rules
//! in CEL `x-kubernetes-validations`, so the API server refuses a bad Store at `kubectl apply`.
//! [`StoreSpec::problems`] restates the cross-field rules for the reconciler, which must not
//! trust that every Store it reads went through this CRD's schema (an older CRD, a dry run).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes resource quantity (`500m`, `256Mi`, `10Gi`), as the API server parses them.
const QUANTITY: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// One shop: the gateway, the five services and the middleware they need.
// Clippy reads each `printcolumn(type_ = "string", ...)` as a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "letsgo.dev",
    version = "v1alpha1",
    kind = "Store",
    namespaced,
    status = "StoreStatus",
    shortname = "shop",
    category = "letsgo",
    doc = "A letsgo shop: the gateway, the user, product, cart, order and payment services, and their middleware.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyComponents",
        description = "components ready / components"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.gatewayEndpoint"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "the image tag every service runs",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("oldSelf.hasValue() || self.metadata.name.size() <= 40").optional_old_self(true).message("metadata.name must be at most 40 characters: the Store's children are named <name>-<component>, and Kubernetes limits some of those names and labels to 63"))]
#[x_kube(validation = Rule::new("self.discovery != 'etcd' || has(self.middleware.etcd)").message("middleware.etcd must be set (managed or external) when discovery is etcd").reason(Reason::FieldValueRequired).field_path(".middleware.etcd"))]
#[serde(rename_all = "camelCase")]
pub struct StoreSpec {
    /// Where the images come from; each component's image is `<registry>/letsgo-<component>:<tag>`.
    #[serde(default)]
    pub image: ImageSpec,
    /// Replicas and resources of each service.
    #[serde(default)]
    pub services: Services,
    /// Each middleware is either run by the operator (`managed`) or reached through a Secret (`external`).
    #[serde(default)]
    pub middleware: Middleware,
    /// How services find each other: `kubernetes` (headless Services through cluster DNS) or `etcd`.
    #[serde(default)]
    pub discovery: DiscoveryMode,
    /// How the gateway is reached from outside the Store.
    #[serde(default)]
    pub gateway: GatewayExposure,
    /// Shop-wide settings passed to the services.
    #[serde(default)]
    pub shop: ShopSettings,
    /// What happens to the shop's data when the Store is deleted: `Retain` (the default) keeps
    /// the managed middleware's volumes and the generated Secret holding their credentials, so
    /// the Store applied again opens the same data; `Delete` removes them with the Store.
    #[serde(default)]
    pub data_retention: DataRetention,
    /// NetworkPolicies: only the gateway takes traffic from outside the Store, each service
    /// only from its callers, each managed middleware only from the services that use it.
    /// They need a NetworkPolicy controller to take effect (the internal token guards the
    /// services either way).
    #[serde(default = "enabled")]
    pub network_policies: bool,
    /// Scheduled backups of managed PostgreSQL: each service database dumped (pg_dump, custom
    /// format) onto a volume of their own, or into an S3-compatible bucket; absent, none are
    /// made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// A backup (its folder name on the backups volume or in the bucket, e.g.
    /// `20261130T030000Z`) to restore into PostgreSQL before the services first start. Acts
    /// only on a Store that has not run yet: it never overwrites a live shop's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{8}T[0-9]{6}Z$"))]
    pub restore_from: Option<String>,
    /// Where the services send their traces; none are exported when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<Observability>,
}

/// Distributed tracing of the shop's requests and events.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observability {
    /// An OpenTelemetry collector's OTLP endpoint, in plain HTTP: for gRPC its address, e.g.
    /// `http://otel-collector.observability.svc:4317`; for HTTP/protobuf its base, e.g.
    /// `http://otel-collector.observability.svc:4318` (the services post to `/v1/traces` below
    /// it). `OTEL_EXPORTER_OTLP_ENDPOINT`. A collector beside the shop forwards to a backend
    /// over TLS.
    #[schemars(length(min = 1, max = 2000), pattern(r"^http://[^/]"))]
    pub otlp_endpoint: String,
    /// How the spans are sent: `grpc` (the default, as this field has always meant) or
    /// `http/protobuf` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    #[serde(default)]
    pub otlp_protocol: OtlpProtocol,
    /// The share of traces kept, from 0 to 1, decided where a trace starts (the gateway, or
    /// the caller whose `traceparent` it continues); the default keeps every trace.
    #[serde(default = "default_sampling_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: f64,
}

/// An OTLP transport, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

fn default_sampling_ratio() -> f64 {
    1.0
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.s3) || !has(self.storageClassName)").message("storageClassName is the backups volume's; with s3 the backups go to the bucket and there is no volume"))]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When, in cron syntax (UTC), e.g. `0 3 * * *` for every night at three.
    #[schemars(length(min = 9, max = 100))]
    pub schedule: String,
    /// How many backups are kept; older ones are deleted after each new one.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: u32,
    /// Size of the backups' volume; with `s3`, the most one backup's dumps may take on the node
    /// while they are uploaded or restored.
    #[serde(default = "default_backup_storage")]
    #[schemars(pattern(QUANTITY))]
    pub storage: String,
    /// StorageClass of the backups' volume; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// An S3-compatible bucket to keep the backups in instead of a volume (then none is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Bucket>,
}

/// Where backups go when they leave the cluster: each one a folder `<prefix>/<name>/` of an
/// S3-compatible bucket, written by the `aws` CLI.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Bucket {
    /// The bucket, which must exist.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// The folder the backups are kept in; `<namespace>/<store>` when absent. Two Stores must
    /// not share one: each prunes the backups it finds there to its own `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 200),
        pattern(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    )]
    pub prefix: Option<String>,
    /// The server's URL (`https://minio.example:9000`) when it is not AWS's S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300), pattern(r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
    /// The bucket's region; `us-east-1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// A Secret in the Store's namespace with the keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN` for temporary credentials).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The image whose `aws` CLI uploads and downloads the backups (a mirror, for a registry
    /// without Docker Hub); the operator's pinned `amazon/aws-cli` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
}

fn default_keep() -> u32 {
    7
}

fn default_backup_storage() -> String {
    "10Gi".to_owned()
}

/// What a spec of `{}` means.
impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec {
            image: ImageSpec::default(),
            services: Services::default(),
            middleware: Middleware::default(),
            discovery: DiscoveryMode::default(),
            gateway: GatewayExposure::default(),
            shop: ShopSettings::default(),
            data_retention: DataRetention::default(),
            network_policies: enabled(),
            backup: None,
            restore_from: None,
            observability: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DataRetention {
    #[default]
    Retain,
    Delete,
}

impl DataRetention {
    pub fn as_str(self) -> &'static str {
        match self {
            DataRetention::Retain => "Retain",
            DataRetention::Delete => "Delete",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Registry and repository prefix, e.g. `ghcr.io/letsgo` or `localhost:5000`.
    #[serde(default = "default_registry")]
    #[schemars(length(min = 1, max = 200))]
    pub registry: String,
    /// Image tag of every component; changing it rolls every service. Unset, the shop runs the
    /// operator's own version, so upgrading the operator upgrades the shops that pin none (the
    /// CRD has no default here: a default would be written into each Store at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"))]
    pub tag: Option<String>,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Secrets in the Store's namespace (type `kubernetes.io/dockerconfigjson`) every Pod of the
    /// shop pulls its images with, after those the operator's installation names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub pull_secrets: Vec<String>,
    /// Pins services' images to digests: each one named here runs
    /// `<registry>/letsgo-<component>:<tag>@<digest>`, so a tag moved in the registry changes
    /// nothing that runs (and the tag stays readable beside it).
    #[serde(default, skip_serializing_if = "Digests::is_empty")]
    pub digests: Digests,
}

/// An image digest (`sha256:` and 64 hex digits) per service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub cart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub payment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DIGEST))]
    pub gateway: Option<String>,
}

const DIGEST: &str = r"^sha256:[a-f0-9]{64}$";

impl Digests {
    pub fn is_empty(&self) -> bool {
        *self == Digests::default()
    }

    /// The digest of a service's image (`user` ... `gateway`), if pinned.
    pub fn of(&self, component: &str) -> Option<&str> {
        match component {
            "user" => self.user.as_deref(),
            "product" => self.product.as_deref(),
            "cart" => self.cart.as_deref(),
            "order" => self.order.as_deref(),
            "payment" => self.payment.as_deref(),
            "gateway" => self.gateway.as_deref(),
            _ => None,
        }
    }
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            registry: default_registry(),
            tag: None,
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
            digests: Digests::default(),
        }
    }
}

fn default_registry() -> String {
    "ghcr.io/letsgo".to_owned()
}

impl ImageSpec {
    /// The tag the services run: the Store's, else the operator's own version.
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or(env!("CARGO_PKG_VERSION"))
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The six deployables of a shop.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Services {
    #[serde(default)]
    pub user: ServiceSizing,
    #[serde(default)]
    pub product: ServiceSizing,
    #[serde(default)]
    pub cart: ServiceSizing,
    #[serde(default)]
    pub order: ServiceSizing,
    #[serde(default)]
    pub payment: ServiceSizing,
    #[serde(default)]
    pub gateway: ServiceSizing,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSizing {
    /// Pods of this service; above 1 also gets a PodDisruptionBudget keeping one available.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Requests and limits of the service's container; the operator's defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A HorizontalPodAutoscaler for this service. `replicas` is then the autoscaler's: the
    /// operator stops setting it, so its choice stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

impl Default for ServiceSizing {
    fn default() -> Self {
        ServiceSizing {
            replicas: default_replicas(),
            resources: None,
            autoscaling: None,
        }
    }
}

impl ServiceSizing {
    /// The most Pods this service runs: what its connection budget is made for.
    pub fn max_replicas(&self) -> i32 {
        self.autoscaling
            .as_ref()
            .map_or(self.replicas, |a| a.max_replicas)
    }
}

/// Scales a service on CPU between `minReplicas` and `maxReplicas`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the container's CPU request, the autoscaler aims at.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// How long the autoscaler looks back before it removes replicas: it scales in only to the
    /// highest count it wanted over that window, so a dip in load does not take away Pods a
    /// returning peak needs. Unset: Kubernetes' default, 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_seconds: Option<i32>,
}

fn default_cpu_target() -> i32 {
    70
}

fn default_replicas() -> i32 {
    1
}

/// Container requests and limits, as Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(QUANTITY))]
    pub memory: Option<String>,
}

/// The middleware of a shop. PostgreSQL, Redis and Kafka are managed unless said otherwise;
/// etcd exists only when discovery is `etcd`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.postgres.external) || (!has(self.postgres.external.bootstrapServers) && !has(self.postgres.external.tls) && !has(self.postgres.external.sasl))").message("bootstrapServers, tls and sasl are settings of external Kafka only"))]
#[x_kube(validation = Rule::new("!has(self.redis.external) || (!has(self.redis.external.bootstrapServers) && !has(self.redis.external.tls) && !has(self.redis.external.sasl))").message("bootstrapServers, tls and sasl are settings of external Kafka only"))]
#[x_kube(validation = Rule::new("!has(self.etcd) || !has(self.etcd.external) || (!has(self.etcd.external.bootstrapServers) && !has(self.etcd.external.tls) && !has(self.etcd.external.sasl) && !has(self.etcd.external.caSecretName))").message("external etcd takes only secretName"))]
#[x_kube(validation = Rule::new("!has(self.kafka.managed) || self.kafkaTopics.replicationFactor == 1").message("managed Kafka is one broker: kafkaTopics.replicationFactor must be 1").reason(Reason::FieldValueInvalid).field_path(".kafkaTopics.replicationFactor"))]
#[serde(rename_all = "camelCase")]
pub struct Middleware {
    /// External Secret keys: `host`, `username`, `password`, and optionally `port` (5432) and
    /// `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`; default `prefer`).
    /// Each service uses its own database (`user`, `product`, `order`, `payment`), created by the
    /// service when missing, so the user needs CREATEDB or the databases must exist.
    #[serde(default = "MiddlewareSource::managed")]
    pub postgres: MiddlewareSource,
    /// External Secret key: `url` (`redis://[:password@]host:port/db`, or `rediss://` for TLS,
    /// checked against `caSecretName`'s CA when set, else the system's roots).
    #[serde(default = "MiddlewareSource::managed")]
    pub redis: MiddlewareSource,
    /// External Secret keys: `brokers` (comma-separated `host:port`; not needed when
    /// `bootstrapServers` is set) and `password` (when `sasl` is set). A Strimzi KafkaUser's
    /// Secret serves as it is.
    #[serde(default = "MiddlewareSource::managed")]
    pub kafka: MiddlewareSource,
    /// Partitions and replicas of the topics the services create (topics that exist are left
    /// as they are).
    #[serde(default)]
    pub kafka_topics: KafkaTopics,
    /// Needed only when discovery is `etcd`. External Secret key: `endpoints` (comma-separated
    /// `host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<MiddlewareSource>,
    /// PostgreSQL's `max_connections`: the managed server is started with it; for an external
    /// server, give its limit (or the share of it this shop may use). Each service's pool
    /// (`DB_MAX_CONNECTIONS`) is sized so that every Pod the Store may run fits in it.
    #[serde(default = "default_postgres_max_connections")]
    #[schemars(range(min = 10, max = 100000))]
    pub postgres_max_connections: i32,
}

fn default_postgres_max_connections() -> i32 {
    100
}

/// Connections PostgreSQL keeps for a person (superuser reserved slots, a psql session).
const RESERVED_CONNECTIONS: i32 = 5;
/// The most one Pod's pool takes, the services' own default.
const MAX_POOL: i32 = 16;
/// Fewer than this per Pod and a Pod's outbox relay starves its handlers.
const MIN_POOL: i32 = 2;

impl Default for Middleware {
    fn default() -> Self {
        Middleware {
            postgres: MiddlewareSource::managed(),
            redis: MiddlewareSource::managed(),
            kafka: MiddlewareSource::managed(),
            kafka_topics: KafkaTopics::default(),
            etcd: None,
            postgres_max_connections: default_postgres_max_connections(),
        }
    }
}

/// How the topics the services create are laid out. With three or more brokers, give 3
/// replicas and set the topics' (or the cluster's) `min.insync.replicas` to 2: the producers
/// write with `acks=all`, so an event is acknowledged once two brokers hold it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopics {
    /// Partitions per topic: the most consumers of one group that share its work.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: i32,
    /// Replicas of each partition; at most the number of brokers.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 7))]
    pub replication_factor: i32,
}

fn default_partitions() -> i32 {
    3
}

fn default_replication_factor() -> i32 {
    1
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
        }
    }
}

/// Exactly one of `managed` and `external`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("set exactly one of managed and external"))]
#[serde(rename_all = "camelCase")]
pub struct MiddlewareSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedMiddleware>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMiddleware>,
}

impl MiddlewareSource {
    pub fn managed() -> Self {
        MiddlewareSource {
            managed: Some(ManagedMiddleware::default()),
            external: None,
        }
    }

    pub fn external(secret_name: &str) -> Self {
        MiddlewareSource {
            managed: None,
            external: Some(ExternalMiddleware {
                secret_name: secret_name.to_owned(),
                ca_secret_name: None,
                bootstrap_servers: None,
                tls: None,
                sasl: None,
            }),
        }
    }
}

/// Run by the operator: a single-replica StatefulSet with a PersistentVolumeClaim. The volume's
/// size and class are fixed once it exists (a StatefulSet's claim templates cannot change).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.storage == oldSelf.storage && has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage and storageClassName cannot change once the volume exists; resize its PersistentVolumeClaim where the StorageClass allows it"))]
#[serde(rename_all = "camelCase")]
pub struct ManagedMiddleware {
    /// Size of the data volume.
    #[serde(default = "default_storage")]
    #[schemars(pattern(QUANTITY))]
    pub storage: String,
    /// StorageClass of the data volume; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Replaces the official image the operator picks (same project, another version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Default for ManagedMiddleware {
    fn default() -> Self {
        ManagedMiddleware {
            storage: default_storage(),
            storage_class_name: None,
            image: None,
            resources: None,
        }
    }
}

fn default_storage() -> String {
    "1Gi".to_owned()
}

/// Reached through a Secret in the Store's namespace; the keys are listed per middleware.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMiddleware {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// A Secret whose `ca.crt` signs the server's certificate. PostgreSQL (CloudNativePG's
    /// `<cluster>-ca`): the services check the server against it and its name
    /// (`sslmode=verify-full`) whatever the Secret's `sslmode` says. Redis: the CA of a
    /// `rediss://` URL. Kafka (Strimzi's `<cluster>-cluster-ca-cert`): implies `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_secret_name: Option<String>,
    /// Kafka only: the bootstrap servers (comma-separated `host:port`) when the Secret has no
    /// `brokers` key, e.g. Strimzi's `<cluster>-kafka-bootstrap.<namespace>.svc:9093`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub bootstrap_servers: Option<String>,
    /// Kafka only: connect over TLS, checked against `caSecretName`'s CA, or else the system's
    /// roots (a managed cloud Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// Kafka only: authenticate with SASL; the password is the Secret's `password` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

impl ExternalMiddleware {
    /// Whether a Kafka connection is made over TLS.
    pub fn kafka_tls(&self) -> bool {
        self.tls.unwrap_or(false) || self.ca_secret_name.is_some()
    }
}

/// SASL credentials of an external Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// The user; the Secret's name when absent (Strimzi names a KafkaUser's Secret after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    #[default]
    Kubernetes,
    Etcd,
}

impl DiscoveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMode::Kubernetes => "kubernetes",
            DiscoveryMode::Etcd => "etcd",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayExposure {
    #[serde(default)]
    pub service_type: GatewayServiceType,
    /// An Ingress for the gateway when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Addresses or CIDRs of the proxies in front of the gateway (the Ingress controller's
    /// Pods, a load balancer), whose `X-Forwarded-For` the gateway believes when it tells
    /// anonymous clients apart (`TRUSTED_PROXIES`); empty when clients connect directly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 2, max = 49)))]
    pub trusted_proxies: Vec<String>,
    /// With a LoadBalancer: `Local` (the default) sends outside clients only to nodes that run
    /// a gateway Pod and keeps their own source address, so the rate limit and the sign-in
    /// throttle tell them apart; `Cluster` spreads them over every node but shows the gateway
    /// a node's address instead of the client's (kube-proxy's SNAT) unless the load balancer
    /// forwards `X-Forwarded-For` from a trusted proxy.
    #[serde(default)]
    pub external_traffic_policy: ExternalTrafficPolicy,
    /// Each client's request budget at each gateway Pod (`RATE_LIMIT_PER_SECOND`,
    /// `RATE_LIMIT_BURST`; a client is a signed-in user, or an address when signed out);
    /// absent, the gateway's own: 100 a second, bursts of 200. Raise it for a load test, or
    /// for clients that share an address (a company's NAT) without a trusted proxy to tell
    /// them apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Requests one client may send to one gateway Pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests a second.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub per_second: u32,
    /// Requests a client may send at once before the sustained rate holds it back; absent,
    /// twice `perSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_000_000_000))]
    pub burst: Option<u32>,
}

impl RateLimit {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_second.saturating_mul(2))
    }
}

/// `spec.externalTrafficPolicy` of the gateway's LoadBalancer Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExternalTrafficPolicy {
    #[default]
    Local,
    Cluster,
}

impl ExternalTrafficPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalTrafficPolicy::Local => "Local",
            ExternalTrafficPolicy::Cluster => "Cluster",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum GatewayServiceType {
    #[default]
    ClusterIP,
    LoadBalancer,
}

impl GatewayServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayServiceType::ClusterIP => "ClusterIP",
            GatewayServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The shop's host name, e.g. `shop.example.com`.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub host: String,
    /// IngressClass to use; the cluster's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A TLS Secret for the host; plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShopSettings {
    /// The initial admin's username (`ADMIN_USERNAME`): the user service makes this account
    /// at start, with the password in the Store's Secret (key `admin-password`), and nobody
    /// can register it. More admins: `kubectl exec deploy/<store>-user -- letsgo-user
    /// grant-admin NAME`.
    #[serde(default = "default_admin_username")]
    #[schemars(length(min = 3, max = 20), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub admin_username: String,
    /// No longer read (0.1 promoted these usernames to admin at sign-up, which let anyone
    /// who registered one first take the catalogue). Accepted so older manifests apply; a
    /// Store that sets it gets a Warning Event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_usernames: Vec<String>,
    /// Load the demo catalogue into an empty shop (`DEMO_CATALOGUE`).
    #[serde(default)]
    pub demo_catalogue: bool,
    /// The mock payment provider approves every payment by itself, a second later
    /// (`MOCK_PROVIDER_AUTOCOMPLETE`): for a demo only, never for a shop taking real orders.
    #[serde(default)]
    pub mock_payments_autocomplete: bool,
}

impl Default for ShopSettings {
    fn default() -> Self {
        ShopSettings {
            admin_username: default_admin_username(),
            admin_usernames: Vec::new(),
            demo_catalogue: false,
            mock_payments_autocomplete: false,
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_admin_username() -> String {
    "admin".to_owned()
}

impl StoreSpec {
    /// Pods of the services with a database, at most (autoscaled ones at their maximum).
    pub fn database_pods(&self) -> i32 {
        let services = &self.services;
        [
            &services.user,
            &services.product,
            &services.order,
            &services.payment,
        ]
        .iter()
        .map(|s| s.max_replicas())
        .sum()
    }

    /// Each database Pod's pool (`DB_MAX_CONNECTIONS`): an even share of PostgreSQL's
    /// connections, less a few kept for a person, at most the services' default of 16.
    pub fn database_pool(&self) -> i32 {
        let available = self.middleware.postgres_max_connections - RESERVED_CONNECTIONS;
        (available / self.database_pods().max(1)).min(MAX_POOL)
    }

    /// The cross-field rules of the CRD's CEL validations, for Stores that skipped them.
    /// Empty when the spec can be reconciled.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let middleware = &self.middleware;
        let named = [
            ("postgres", Some(&middleware.postgres)),
            ("redis", Some(&middleware.redis)),
            ("kafka", Some(&middleware.kafka)),
            ("etcd", middleware.etcd.as_ref()),
        ];
        for (name, source) in named {
            if let Some(source) = source
                && source.managed.is_some() == source.external.is_some()
            {
                problems.push(format!(
                    "middleware.{name}: set exactly one of managed and external"
                ));
            }
        }
        for (name, source) in [
            ("postgres", &middleware.postgres),
            ("redis", &middleware.redis),
        ] {
            if let Some(external) = &source.external
                && (external.bootstrap_servers.is_some()
                    || external.tls.is_some()
                    || external.sasl.is_some())
            {
                problems.push(format!(
                    "middleware.{name}.external: bootstrapServers, tls and sasl are settings of \
                     external Kafka only"
                ));
            }
        }
        if let Some(external) = middleware.etcd.as_ref().and_then(|e| e.external.as_ref())
            && (external.bootstrap_servers.is_some()
                || external.tls.is_some()
                || external.sasl.is_some()
                || external.ca_secret_name.is_some())
        {
            problems.push("middleware.etcd.external: external etcd takes only secretName".into());
        }
        if middleware.kafka.managed.is_some() && middleware.kafka_topics.replication_factor != 1 {
            problems.push(
                "middleware.kafkaTopics.replicationFactor: managed Kafka is one broker: it must \
                 be 1"
                    .into(),
            );
        }
        if self.backup.is_some() && self.middleware.postgres.managed.is_none() {
            problems.push(
                "backup: backups are made of managed PostgreSQL only (back up an external one \
                 where it runs)"
                    .to_owned(),
            );
        }
        if self.restore_from.is_some() && self.backup.is_none() {
            problems.push(
                "restoreFrom: a restore reads the backups (volume or bucket), so backup must be set too"
                    .to_owned(),
            );
        }
        if let Some(backup) = &self.backup
            && backup.schedule.split_whitespace().count() != 5
        {
            problems.push(format!(
                "backup.schedule: {:?} is not a cron schedule of five fields",
                backup.schedule
            ));
        }
        if let Some(backup) = &self.backup
            && backup.s3.is_some()
            && backup.storage_class_name.is_some()
        {
            problems.push(
                "backup.storageClassName: the backups volume's; with s3 there is no volume"
                    .to_owned(),
            );
        }
        for proxy in &self.gateway.trusted_proxies {
            if !is_address_or_cidr(proxy) {
                problems.push(format!(
                    "gateway.trustedProxies: {proxy:?} is not an IP address or CIDR"
                ));
            }
        }
        if let Some(limit) = &self.gateway.rate_limit
            && (limit.per_second == 0 || limit.burst == Some(0))
        {
            problems.push(
                "gateway.rateLimit: perSecond and burst must be at least 1 (a budget of 0 \
                 would refuse every request)"
                    .to_owned(),
            );
        }
        if self.database_pool() < MIN_POOL {
            problems.push(format!(
                "up to {} Pods use the database and each needs {MIN_POOL} connections, but \
                 middleware.postgresMaxConnections is {} ({RESERVED_CONNECTIONS} kept for a \
                 person): raise it, or lower the replicas (maxReplicas) of user, product, order \
                 and payment",
                self.database_pods(),
                middleware.postgres_max_connections
            ));
        }
        if self.discovery == DiscoveryMode::Etcd && middleware.etcd.is_none() {
            problems.push(
                "middleware.etcd must be set (managed or external) when discovery is etcd"
                    .to_owned(),
            );
        }
        problems
    }
}

/// What the operator last saw of the shop.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<StorePhase>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason; one of each type.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<StoreCondition>,
    /// The image tag every service runs: set when a rollout completes, so during one it is
    /// still the version being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Ready replicas of each component the operator runs.
    #[serde(default)]
    pub components: Vec<ComponentStatus>,
    /// `ready/total` components, for `kubectl get stores`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_components: Option<String>,
    /// Where the gateway answers: the Ingress URL, the LoadBalancer address, or the in-cluster URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// When the last backup succeeded (RFC 3339), when backups are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The newest backup's name (its folder on the backups volume or in the bucket, what
    /// `restoreFrom` takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
    /// The newest backup's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_bytes: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum StorePhase {
    /// Middleware is starting; the services wait for it.
    Pending,
    /// Children applied, not all ready yet.
    Progressing,
    Ready,
    /// Something that was ready is not, or cannot be applied.
    Degraded,
    /// The spec breaks a rule; nothing is applied until it is fixed.
    Invalid,
}

impl StorePhase {
    pub const ALL: [StorePhase; 5] = [
        StorePhase::Pending,
        StorePhase::Progressing,
        StorePhase::Ready,
        StorePhase::Degraded,
        StorePhase::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StorePhase::Pending => "Pending",
            StorePhase::Progressing => "Progressing",
            StorePhase::Ready => "Ready",
            StorePhase::Degraded => "Degraded",
            StorePhase::Invalid => "Invalid",
        }
    }
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreCondition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason, e.g. `AllComponentsReady`, `WaitingForMiddleware`, `InvalidSpec`.
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `user`, ..., `gateway`, `postgres`, `redis`, `kafka`, `etcd`.
    pub name: String,
    pub ready_replicas: i32,
    pub desired_replicas: i32,
    /// The workload's controller has seen the current spec and every replica runs it: no
    /// rollout is under way. A component is ready when it is up to date and all its replicas
    /// are ready.
    #[serde(default)]
    pub up_to_date: bool,
}

impl ComponentStatus {
    pub fn is_ready(&self) -> bool {
        self.up_to_date && self.ready_replicas >= self.desired_replicas
    }
}

/// `10.0.0.0/8`, `fd00::/8`, `192.168.1.7`: what the gateway's TRUSTED_PROXIES accepts, read
/// with the same crate (ipnet) so that a Store the operator takes never stops its gateway.
fn is_address_or_cidr(text: &str) -> bool {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().is_ok() || text.parse::<std::net::IpAddr>().is_ok()
}
