//! The shop's settings: a ConfigMap of what is not secret, and a Secret of what the operator
//! generates (token key, webhook key, database and initial admin passwords) once per Store.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, Secret, SecretKeySelector};
use sha2::{Digest, Sha256};

use super::StoreRef;
use super::middleware::{MiddlewareKind, client_address};
use super::services::ServiceKind;
use crate::store::{DataRetention, DiscoveryMode, MiddlewareSource};

/// Keys of the generated Secret `<store>-secrets`.
pub const SECRET_KEYS: [&str; 6] = [
    JWT_SECRET_KEY,
    WEBHOOK_SECRET_KEY,
    POSTGRES_PASSWORD_KEY,
    ADMIN_PASSWORD_KEY,
    INTERNAL_TOKEN_KEY,
    REDIS_PASSWORD_KEY,
];
pub(super) const JWT_SECRET_KEY: &str = "jwt-secret";
pub(super) const WEBHOOK_SECRET_KEY: &str = "webhook-secret";
pub(super) const POSTGRES_PASSWORD_KEY: &str = "postgres-password";
/// The initial admin's password; the user service reads it only when it makes the account.
pub(super) const ADMIN_PASSWORD_KEY: &str = "admin-password";
/// The token every internal gRPC call carries and every service requires.
pub(super) const INTERNAL_TOKEN_KEY: &str = "internal-token";
/// Managed Redis's `requirepass`.
pub(super) const REDIS_PASSWORD_KEY: &str = "redis-password";
/// The database role of managed PostgreSQL.
pub(super) const POSTGRES_USER: &str = "letsgo";

pub(super) fn config_map_name(store: &StoreRef<'_>) -> String {
    store.child_name("config")
}

pub(super) fn secret_name(store: &StoreRef<'_>) -> String {
    // reads_secret (manifests/mod.rs) knows this name too.
    store.child_name("secrets")
}

/// Settings shared by every component, read with `envFrom`; secrets are never in here.
pub(super) fn config_map(store: &StoreRef<'_>) -> ConfigMap {
    let spec = &store.store.spec;
    let mut data = BTreeMap::from([
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("DISCOVERY".to_owned(), spec.discovery.as_str().to_owned()),
        (
            "DISCOVERY_DNS_NAME".to_owned(),
            format!("{}-{{service}}.{}", store.name, store.service_domain()),
        ),
        (
            "PAYMENT_CALLBACK_URL".to_owned(),
            format!(
                "http://{}:{}/api/v1/payment/callback",
                store.address("gateway"),
                ServiceKind::Gateway.serving_port()
            ),
        ),
        (
            "DEMO_CATALOGUE".to_owned(),
            spec.shop.demo_catalogue.to_string(),
        ),
        (
            "MOCK_PROVIDER_AUTOCOMPLETE".to_owned(),
            spec.shop.mock_payments_autocomplete.to_string(),
        ),
    ]);
    data.insert(
        "ADMIN_USERNAME".to_owned(),
        spec.shop.admin_username.clone(),
    );
    // Shops sharing an external Redis or Kafka must not see each other's carts, cached
    // products, change announcements, topics or consumer groups.
    data.insert(
        "REDIS_KEY_PREFIX".to_owned(),
        format!("letsgo:{}:{}:", store.namespace, store.name),
    );
    data.insert(
        "KAFKA_TOPIC_PREFIX".to_owned(),
        format!("letsgo.{}.{}.", store.namespace, store.name),
    );
    if let Some(observability) = &spec.observability {
        // The standard OpenTelemetry variables; each service names itself
        // (OTEL_SERVICE_NAME, in its own environment).
        data.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            observability.otlp_endpoint.clone(),
        );
        data.insert(
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
            observability.otlp_protocol.as_str().to_owned(),
        );
        data.insert(
            "OTEL_TRACES_SAMPLER".to_owned(),
            "parentbased_traceidratio".to_owned(),
        );
        data.insert(
            "OTEL_TRACES_SAMPLER_ARG".to_owned(),
            observability.sampling_ratio.to_string(),
        );
        data.insert(
            "OTEL_RESOURCE_ATTRIBUTES".to_owned(),
            format!(
                "k8s.namespace.name={},letsgo.store={}",
                store.namespace, store.name
            ),
        );
    }
    let topics = &spec.middleware.kafka_topics;
    data.insert(
        "KAFKA_TOPIC_PARTITIONS".to_owned(),
        topics.partitions.to_string(),
    );
    data.insert(
        "KAFKA_TOPIC_REPLICATION".to_owned(),
        topics.replication_factor.to_string(),
    );
    if spec.discovery == DiscoveryMode::Etcd {
        // Shops sharing an etcd must not see each other's instances.
        data.insert(
            "ETCD_PREFIX".to_owned(),
            format!("/letsgo/{}/{}/services/", store.namespace, store.name),
        );
    }
    let middleware = &spec.middleware;
    if is_managed(&middleware.postgres) {
        data.insert(
            "DB_HOST".into(),
            client_address(store, MiddlewareKind::Postgres),
        );
        data.insert("DB_PORT".into(), "5432".into());
        data.insert("DB_USER".into(), POSTGRES_USER.into());
    }
    if is_managed(&middleware.redis) {
        data.insert(
            "REDIS_HOST".into(),
            client_address(store, MiddlewareKind::Redis),
        );
        data.insert("REDIS_PORT".into(), "6379".into());
    }
    if is_managed(&middleware.kafka) {
        data.insert(
            "KAFKA_BROKERS".into(),
            format!("{}:9092", client_address(store, MiddlewareKind::Kafka)),
        );
    }
    if spec.discovery == DiscoveryMode::Etcd && middleware.etcd.as_ref().is_some_and(is_managed) {
        data.insert(
            "ETCD_HOSTS".into(),
            format!("{}:2379", client_address(store, MiddlewareKind::Etcd)),
        );
    }
    ConfigMap {
        metadata: store.meta(config_map_name(store), "config"),
        data: Some(data),
        ..ConfigMap::default()
    }
}

fn is_managed(source: &MiddlewareSource) -> bool {
    source.managed.is_some()
}

/// The generated Secret. Values already in `existing` are kept byte for byte; only missing
/// keys get fresh random values, so a reconcile never rotates a secret by accident.
pub(super) fn secret(store: &StoreRef<'_>, existing: Option<&Secret>) -> Secret {
    let existing = existing.and_then(|secret| secret.data.as_ref());
    let data = SECRET_KEYS
        .iter()
        .map(|key| {
            let value = existing
                .and_then(|data| data.get(*key))
                .filter(|value| !value.0.is_empty())
                .cloned()
                .unwrap_or_else(|| ByteString(random_secret().into_bytes()));
            ((*key).to_owned(), value)
        })
        .collect();
    let mut metadata = store.meta(secret_name(store), "config");
    if store.store.spec.data_retention == DataRetention::Retain {
        // The credentials live as long as the data they open: not owned, so the garbage
        // collector leaves the Secret with the retained volumes when the Store goes.
        metadata.owner_references = None;
    }
    Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Whether a Secret read from the cluster holds every generated key (a Secret someone
/// emptied by hand gets its missing keys back, and those only).
pub fn secret_data_is_complete(secret: &Secret) -> bool {
    let data = secret.data.as_ref();
    SECRET_KEYS.iter().all(|key| {
        data.and_then(|d| d.get(*key))
            .is_some_and(|v| !v.0.is_empty())
    })
}

/// 32 random bytes, hex: a valid `JWT_SECRET`, webhook secret and password alike.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// A short hash of the ConfigMap's data, put on pod templates so a settings change rolls them.
pub(super) fn hash_of(config: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// A short hash of the generated Secret's values, put on pod templates so new credentials
/// restart what reads them.
pub(super) fn hash_of_secret(secret: &Secret) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in secret.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(&value.0);
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// An environment variable read from a Secret's key.
pub(super) fn env_from_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub(super) fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}
