//! External middleware's Secrets: which keys the services read from them, what is missing, and
//! a digest of what they hold, so a rotated Secret rolls the Pods that read it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

use crate::store::{DiscoveryMode, MiddlewareSource, StoreSpec};

/// A key a service reads, and whether the service starts without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretKey {
    pub key: &'static str,
    pub optional: bool,
}

const fn required(key: &'static str) -> SecretKey {
    SecretKey {
        key,
        optional: false,
    }
}

const fn optional(key: &'static str) -> SecretKey {
    SecretKey {
        key,
        optional: true,
    }
}

const POSTGRES: &[SecretKey] = &[
    required("host"),
    optional("port"),
    required("username"),
    required("password"),
    optional("sslmode"),
];
const REDIS: &[SecretKey] = &[required("url")];
const KAFKA: &[SecretKey] = &[required("brokers")];
const ETCD: &[SecretKey] = &[required("endpoints")];

/// Each external Secret the Store names, with the keys read from it (a Secret named by two
/// middleware holds both sets).
pub fn external_secrets(spec: &StoreSpec) -> BTreeMap<String, Vec<SecretKey>> {
    let middleware = &spec.middleware;
    let mut sources: Vec<(&MiddlewareSource, &[SecretKey])> = vec![
        (&middleware.postgres, POSTGRES),
        (&middleware.redis, REDIS),
        (&middleware.kafka, KAFKA),
    ];
    if spec.discovery == DiscoveryMode::Etcd
        && let Some(etcd) = &middleware.etcd
    {
        sources.push((etcd, ETCD));
    }
    let mut secrets: BTreeMap<String, Vec<SecretKey>> = BTreeMap::new();
    // PostgreSQL's CA, mounted into the services that use the database.
    if let Some(ca) = middleware
        .postgres
        .external
        .as_ref()
        .and_then(|external| external.ca_secret_name.clone())
    {
        secrets.entry(ca).or_default().push(required("ca.crt"));
    }
    for (source, keys) in sources {
        if let Some(external) = &source.external {
            secrets
                .entry(external.secret_name.clone())
                .or_default()
                .extend_from_slice(keys);
        }
    }
    secrets
}

/// What the external Secrets, as read, mean for the services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalCheck {
    /// `Secret shop-redis not found`, `Secret shop-postgres has no key "password"`.
    pub missing: Vec<String>,
    /// A short hash of every key the services read, empty when no middleware is external.
    pub digest: String,
}

/// Checks the Secrets (`None`: not found) against the keys the services read.
pub fn check(
    wanted: &BTreeMap<String, Vec<SecretKey>>,
    found: &BTreeMap<String, Option<Secret>>,
) -> ExternalCheck {
    let mut missing = Vec::new();
    let mut hasher = Sha256::new();
    for (name, keys) in wanted {
        let Some(Some(secret)) = found.get(name) else {
            missing.push(format!("Secret {name} not found"));
            continue;
        };
        let data = secret.data.clone().unwrap_or_default();
        let strings = secret.string_data.clone().unwrap_or_default();
        for key in keys {
            let value = data
                .get(key.key)
                .map(|bytes| bytes.0.clone())
                .or_else(|| strings.get(key.key).map(|s| s.clone().into_bytes()));
            match value {
                Some(value) => {
                    hasher.update(name.as_bytes());
                    hasher.update([0]);
                    hasher.update(key.key.as_bytes());
                    hasher.update([0]);
                    hasher.update(&value);
                    hasher.update([0]);
                }
                None if key.optional => {}
                None => missing.push(format!("Secret {name} has no key \"{}\"", key.key)),
            }
        }
    }
    ExternalCheck {
        missing,
        digest: if wanted.is_empty() {
            String::new()
        } else {
            hex::encode(&hasher.finalize()[..8])
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::{check, external_secrets};
    use crate::store::{DiscoveryMode, MiddlewareSource, StoreSpec};

    fn secret(pairs: &[(&str, &str)]) -> Option<Secret> {
        Some(Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        })
    }

    fn external_spec() -> StoreSpec {
        let mut spec = StoreSpec::default();
        spec.middleware.postgres = MiddlewareSource::external("pg");
        spec.middleware.redis = MiddlewareSource::external("cache");
        spec
    }

    #[test]
    fn a_missing_secret_and_a_missing_key_are_named() {
        let wanted = external_secrets(&external_spec());
        assert_eq!(wanted.keys().collect::<Vec<_>>(), ["cache", "pg"]);
        let found = BTreeMap::from([
            (
                "pg".to_owned(),
                secret(&[("host", "db"), ("username", "shop")]),
            ),
            ("cache".to_owned(), None),
        ]);
        let result = check(&wanted, &found);
        assert_eq!(
            result.missing,
            [
                "Secret cache not found",
                "Secret pg has no key \"password\"",
            ]
        );
    }

    #[test]
    fn a_rotated_value_changes_the_digest_and_an_optional_key_may_be_absent() {
        let wanted = external_secrets(&external_spec());
        let with = |password: &str| {
            BTreeMap::from([
                (
                    "pg".to_owned(),
                    secret(&[("host", "db"), ("username", "shop"), ("password", password)]),
                ),
                (
                    "cache".to_owned(),
                    secret(&[("url", "redis://cache:6379/0")]),
                ),
            ])
        };
        let before = check(&wanted, &with("one"));
        assert!(before.missing.is_empty(), "{:?}", before.missing);
        assert_eq!(check(&wanted, &with("one")), before);
        assert_ne!(check(&wanted, &with("two")).digest, before.digest);
    }

    #[test]
    fn managed_middleware_reads_no_secret_and_etcd_counts_only_for_etcd_discovery() {
        assert!(external_secrets(&StoreSpec::default()).is_empty());
        assert_eq!(check(&BTreeMap::new(), &BTreeMap::new()).digest, "");
        let mut spec = StoreSpec::default();
        spec.middleware.etcd = Some(MiddlewareSource::external("registry"));
        assert!(external_secrets(&spec).is_empty());
        spec.discovery = DiscoveryMode::Etcd;
        assert_eq!(external_secrets(&spec)["registry"][0].key, "endpoints");
    }
}
