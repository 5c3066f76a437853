//! Managed middleware: one single-replica StatefulSet with a data volume and a headless Service
//! per middleware, from the projects' official images. This is a shop's own small middleware,
//! not a highly available one; a Store points at external middleware for that.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ExecAction, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    SecurityContext, Service, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::services::{DefaultResources, container_port, resources, restricted_pod, service_port};
use super::settings::{
    POSTGRES_PASSWORD_KEY, POSTGRES_USER, REDIS_PASSWORD_KEY, env_from_secret, env_value,
    secret_name,
};
use super::{CREDENTIALS_HASH_ANNOTATION, Child, StoreRef, selector_labels};
use crate::store::{DiscoveryMode, ManagedMiddleware, MiddlewareSource};

/// The databases of the services that own one; created at PostgreSQL's first start.
pub use letsgo_facts::DATABASES;

/// A KRaft cluster id (16 bytes, base64url); every managed Kafka is a cluster of its own.
const KAFKA_CLUSTER_ID: &str = "bGV0c2dvLWthZmthLTAxIQ";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MiddlewareKind {
    Postgres,
    Redis,
    Kafka,
    Etcd,
}

impl MiddlewareKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MiddlewareKind::Postgres => "postgres",
            MiddlewareKind::Redis => "redis",
            MiddlewareKind::Kafka => "kafka",
            MiddlewareKind::Etcd => "etcd",
        }
    }

    /// The official image used unless the Store names another.
    pub fn default_image(self) -> &'static str {
        match self {
            MiddlewareKind::Postgres => "postgres:17.6",
            MiddlewareKind::Redis => "redis:7.4.5",
            MiddlewareKind::Kafka => "apache/kafka:4.1.1",
            MiddlewareKind::Etcd => "quay.io/coreos/etcd:v3.5.21",
        }
    }

    pub(super) fn port(self) -> u16 {
        match self {
            MiddlewareKind::Postgres => 5432,
            MiddlewareKind::Redis => 6379,
            MiddlewareKind::Kafka => 9092,
            MiddlewareKind::Etcd => 2379,
        }
    }

    /// The user the official image runs its process as.
    fn uid(self) -> i64 {
        match self {
            MiddlewareKind::Postgres | MiddlewareKind::Redis => 999,
            MiddlewareKind::Kafka => 1000,
            MiddlewareKind::Etcd => 65532,
        }
    }

    fn data_path(self) -> &'static str {
        match self {
            MiddlewareKind::Postgres => "/var/lib/postgresql/data",
            MiddlewareKind::Redis => "/data",
            MiddlewareKind::Kafka => "/var/lib/kafka/data",
            MiddlewareKind::Etcd => "/var/lib/etcd",
        }
    }

    fn defaults(self) -> DefaultResources {
        match self {
            MiddlewareKind::Kafka => DefaultResources {
                cpu_request: "200m",
                memory_request: "768Mi",
                memory_limit: "1Gi",
            },
            MiddlewareKind::Postgres => DefaultResources {
                cpu_request: "100m",
                memory_request: "256Mi",
                memory_limit: "512Mi",
            },
            _ => DefaultResources {
                cpu_request: "50m",
                memory_request: "64Mi",
                memory_limit: "256Mi",
            },
        }
    }
}

/// The middleware the operator runs for this Store: etcd only when discovery uses it.
pub(super) fn managed(store: &StoreRef<'_>) -> Vec<MiddlewareKind> {
    let middleware = &store.store.spec.middleware;
    let is_managed = |source: &MiddlewareSource| source.managed.is_some();
    let mut kinds = Vec::new();
    if is_managed(&middleware.postgres) {
        kinds.push(MiddlewareKind::Postgres);
    }
    if is_managed(&middleware.redis) {
        kinds.push(MiddlewareKind::Redis);
    }
    if is_managed(&middleware.kafka) {
        kinds.push(MiddlewareKind::Kafka);
    }
    if store.discovery() == DiscoveryMode::Etcd && middleware.etcd.as_ref().is_some_and(is_managed)
    {
        kinds.push(MiddlewareKind::Etcd);
    }
    kinds
}

fn managed_spec(store: &StoreRef<'_>, kind: MiddlewareKind) -> ManagedMiddleware {
    let middleware = &store.store.spec.middleware;
    let source = match kind {
        MiddlewareKind::Postgres => Some(&middleware.postgres),
        MiddlewareKind::Redis => Some(&middleware.redis),
        MiddlewareKind::Kafka => Some(&middleware.kafka),
        MiddlewareKind::Etcd => middleware.etcd.as_ref(),
    };
    source.and_then(|s| s.managed.clone()).unwrap_or_default()
}

/// The governing headless Service and the StatefulSet of one managed middleware.
/// Run before PostgreSQL at every start (an init container on the same volume). Data made under
/// another password (the generated Secret deleted by mistake and made again, a Store re-applied
/// without its Secret) then opens with the Secret's password: the role's password is set to it in
/// single-user mode. An empty data directory is left to the image's own initialisation.
pub const POSTGRES_CREDENTIALS_SCRIPT: &str = r#"set -eu
if [ -s "$PGDATA/PG_VERSION" ]; then
  # PostgreSQL refuses a data directory open to its group, as a kubelet applying the Pod's
  # fsGroup leaves it on volumes whose ownership it manages.
  chmod 0700 "$PGDATA"
  # An unclean stop leaves postmaster.pid behind. Nothing else runs on this volume while this
  # init container does (the StatefulSet's one Pod, its server not yet started), so it is stale.
  if [ -e "$PGDATA/postmaster.pid" ]; then
    echo "removing postmaster.pid left by an unclean stop"
    rm -f "$PGDATA/postmaster.pid"
  fi
  password=$(printf '%s' "$POSTGRES_PASSWORD" | sed "s/'/''/g")
  out=$(printf 'ALTER ROLE "%s" WITH PASSWORD '"'"'%s'"'"';\n' "$POSTGRES_USER" "$password" \
    | postgres --single -D "$PGDATA" postgres 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
  case "$out" in *ERROR*|*FATAL*) printf '%s\n' "$out" >&2; exit 1 ;; esac
  echo "the password of role $POSTGRES_USER is the Secret's"
fi
"#;

/// `credentials_hash` goes on the pod template, so new credentials restart the middleware (and
/// PostgreSQL's init container sets them on its data).
pub(super) fn objects(
    store: &StoreRef<'_>,
    kind: MiddlewareKind,
    credentials_hash: &str,
) -> Vec<Child> {
    vec![
        Child::Service(service(store, kind)),
        Child::Service(client_service(store, kind)),
        Child::StatefulSet(stateful_set(store, kind, credentials_hash)),
    ]
}

/// What the name of a middleware's client Service ends with: `<store>-postgres-client`.
const CLIENT_SUFFIX: &str = "client";

/// The address the services (and the backups) reach a managed middleware at: its client
/// Service's virtual IP, which kube-proxy points at whichever Pod is ready. Not the headless
/// Service's name: a Pod made again (a crash, a node restart) has a new address, and the
/// cluster's DNS may go on answering with the old one for as long as it caches (30 s as
/// kubeadm configures CoreDNS); a killed PostgreSQL was back in 8 s, and the services failed
/// for 30 s more.
pub(super) fn client_address(store: &StoreRef<'_>, kind: MiddlewareKind) -> String {
    store.address(&format!("{}-{CLIENT_SUFFIX}", kind.as_str()))
}

/// `<store>-postgres-init`: SQL run by the postgres image on an empty data directory.
pub(super) fn postgres_init(store: &StoreRef<'_>) -> ConfigMap {
    // `user` and `order` are reserved words, hence the quotes.
    let sql: String = DATABASES
        .iter()
        .map(|db| format!("CREATE DATABASE \"{db}\";\n"))
        .collect();
    ConfigMap {
        metadata: store.meta(store.child_name("postgres-init"), "postgres"),
        data: Some(BTreeMap::from([("create-databases.sql".to_owned(), sql)])),
        ..ConfigMap::default()
    }
}

/// `<store>-<middleware>-client`: a Service with a virtual IP for the middleware's clients.
fn client_service(store: &StoreRef<'_>, kind: MiddlewareKind) -> Service {
    let name = kind.as_str();
    Service {
        metadata: store.meta(store.child_name(&format!("{name}-{CLIENT_SUFFIX}")), name),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&store.name, name)),
            ports: Some(vec![service_port(name, kind.port())]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `<store>-<middleware>`: the headless Service that governs the StatefulSet (its Pods' own
/// DNS names). Clients use [`client_address`].
fn service(store: &StoreRef<'_>, kind: MiddlewareKind) -> Service {
    let name = kind.as_str();
    Service {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&store.name, name)),
            ports: Some(vec![service_port(name, kind.port())]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The image a managed middleware runs: the Store's choice, else the installation's, else the
/// official one.
pub(super) fn image(store: &StoreRef<'_>, kind: MiddlewareKind) -> String {
    let defaults = store.defaults;
    let installed = match kind {
        MiddlewareKind::Postgres => &defaults.postgres_image,
        MiddlewareKind::Redis => &defaults.redis_image,
        MiddlewareKind::Kafka => &defaults.kafka_image,
        MiddlewareKind::Etcd => &defaults.etcd_image,
    };
    managed_spec(store, kind)
        .image
        .or_else(|| installed.clone())
        .unwrap_or_else(|| kind.default_image().to_owned())
}

fn stateful_set(store: &StoreRef<'_>, kind: MiddlewareKind, credentials_hash: &str) -> StatefulSet {
    let name = kind.as_str();
    let spec = managed_spec(store, kind);
    let mut container = Container {
        name: name.to_owned(),
        image: Some(image(store, kind)),
        ports: Some(vec![container_port(name, kind.port())]),
        resources: Some(resources(spec.resources.as_ref(), &kind.defaults())),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: kind.data_path().into(),
            ..VolumeMount::default()
        }]),
        // The official images write outside their data directory (sockets, generated
        // configuration), so the root filesystem stays writable; everything else is locked.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let mut volumes = Vec::new();
    let mut init_containers = Vec::new();
    match kind {
        MiddlewareKind::Postgres => {
            container.env = Some(vec![
                env_value("POSTGRES_USER", POSTGRES_USER),
                env_from_secret(
                    "POSTGRES_PASSWORD",
                    &secret_name(store),
                    POSTGRES_PASSWORD_KEY,
                    false,
                ),
                // A subdirectory: the volume's root may hold lost+found.
                env_value("PGDATA", "/var/lib/postgresql/data/pgdata"),
            ]);
            // Started with the limit the services' pools are sized for.
            container.args = Some(vec![
                "postgres".into(),
                "-c".into(),
                format!(
                    "max_connections={}",
                    store.store.spec.middleware.postgres_max_connections
                ),
            ]);
            init_containers.push(Container {
                name: "credentials".into(),
                command: Some(strings(&["sh", "-c", POSTGRES_CREDENTIALS_SCRIPT])),
                // Init containers take no ports and no probes.
                ports: None,
                readiness_probe: None,
                liveness_probe: None,
                startup_probe: None,
                ..container.clone()
            });
            let ready = exec_probe(&["pg_isready", "-U", POSTGRES_USER, "-h", "127.0.0.1"]);
            container.readiness_probe = Some(ready.clone());
            container.liveness_probe = Some(Probe {
                period_seconds: Some(10),
                failure_threshold: Some(6),
                ..ready
            });
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: "init".into(),
                    mount_path: "/docker-entrypoint-initdb.d".into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
            volumes.push(Volume {
                name: "init".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: store.child_name("postgres-init"),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        MiddlewareKind::Redis => {
            // Kubernetes expands $(REDIS_PASSWORD) from the container's env; redis-cli (the
            // probes) reads REDISCLI_AUTH.
            container.args = Some(strings(&[
                "--appendonly",
                "yes",
                "--dir",
                "/data",
                "--requirepass",
                "$(REDIS_PASSWORD)",
            ]));
            container.env = Some(vec![
                env_from_secret(
                    "REDIS_PASSWORD",
                    &secret_name(store),
                    REDIS_PASSWORD_KEY,
                    false,
                ),
                env_from_secret(
                    "REDISCLI_AUTH",
                    &secret_name(store),
                    REDIS_PASSWORD_KEY,
                    false,
                ),
            ]);
            let ready = exec_probe(&["redis-cli", "-h", "127.0.0.1", "ping"]);
            container.readiness_probe = Some(ready.clone());
            container.liveness_probe = Some(Probe {
                period_seconds: Some(10),
                failure_threshold: Some(6),
                ..ready
            });
        }
        MiddlewareKind::Kafka => {
            // Clients reconnect to the address the broker advertises: its client Service's.
            let advertised = format!("PLAINTEXT://{}:9092", client_address(store, kind));
            // A single KRaft node that is both broker and controller: no ZooKeeper.
            container.env = Some(vec![
                env_value("CLUSTER_ID", KAFKA_CLUSTER_ID),
                env_value("KAFKA_NODE_ID", "1"),
                env_value("KAFKA_PROCESS_ROLES", "broker,controller"),
                env_value("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                env_value("KAFKA_ADVERTISED_LISTENERS", &advertised),
                env_value("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
                env_value(
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                ),
                env_value("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093"),
                env_value("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
                env_value("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
                env_value("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
                env_value("KAFKA_LOG_DIRS", "/var/lib/kafka/data/logs"),
                env_value("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m"),
            ]);
            let ready = Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::Int(i32::from(kind.port())),
                    host: None,
                }),
                period_seconds: Some(5),
                failure_threshold: Some(3),
                ..Probe::default()
            };
            container.readiness_probe = Some(ready.clone());
            container.liveness_probe = Some(Probe {
                period_seconds: Some(10),
                failure_threshold: Some(6),
                ..ready
            });
        }
        MiddlewareKind::Etcd => {
            let advertised = format!("http://{}:2379", client_address(store, kind));
            container.command = Some(strings(&["etcd"]));
            container.args = Some(vec![
                "--name=etcd-0".into(),
                "--data-dir=/var/lib/etcd/data".into(),
                "--listen-client-urls=http://[::]:2379".into(),
                format!("--advertise-client-urls={advertised}"),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=etcd-0=http://127.0.0.1:2380".into(),
            ]);
            let ready = Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/health".into()),
                    port: IntOrString::Int(i32::from(kind.port())),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(5),
                failure_threshold: Some(3),
                ..Probe::default()
            };
            container.readiness_probe = Some(ready.clone());
            container.liveness_probe = Some(Probe {
                period_seconds: Some(10),
                failure_threshold: Some(6),
                ..ready
            });
        }
    }
    // Liveness waits for the first readiness: initdb, crash recovery, a log replay or a slow
    // first start on a busy node take what they take (up to 10 minutes) without a restart
    // cutting them short, while a middleware that stops answering later is restarted soon.
    container.startup_probe = container.readiness_probe.clone().map(|ready| Probe {
        period_seconds: Some(5),
        failure_threshold: Some(120),
        ..ready
    });
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(spec.storage.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: store.meta(store.child_name(name), name),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(store.child_name(name)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&store.name, name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(super::labels(&store.name, name)),
                    annotations: Some(BTreeMap::from([(
                        CREDENTIALS_HASH_ANNOTATION.to_owned(),
                        credentials_hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    image_pull_secrets: store.image_pull_secrets(),
                    security_context: Some(restricted_pod(kind.uid())),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            // By default the shop's data outlives its Store: deleting a Store by mistake loses
            // no orders (spec.dataRetention).
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(store.store.spec.data_retention.as_str().into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn exec_probe(command: &[&str]) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(strings(command)),
        }),
        period_seconds: Some(5),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}
