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
const KAFKA_BROKERS: SecretKey = required("brokers");
const KAFKA_PASSWORD: SecretKey = required("password");
const ETCD: &[SecretKey] = &[required("endpoints")];

/// Each external Secret the Store names, with the keys read from it (a Secret named by two
/// middleware holds both sets).
pub fn external_secrets(spec: &StoreSpec) -> BTreeMap<String, Vec<SecretKey>> {
    let middleware = &spec.middleware;
    let kafka: Vec<SecretKey> = match &middleware.kafka.external {
        Some(external) => {
            let mut keys = Vec::new();
            if external.bootstrap_servers.is_none() {
                keys.push(KAFKA_BROKERS);
            }
            if external.sasl.is_some() {
                keys.push(KAFKA_PASSWORD);
            }
            keys
        }
        None => Vec::new(),
    };
    let mut sources: Vec<(&MiddlewareSource, &[SecretKey])> = vec![
        (&middleware.postgres, POSTGRES),
        (&middleware.redis, REDIS),
        (&middleware.kafka, kafka.as_slice()),
    ];
    if spec.discovery == DiscoveryMode::Etcd
        && let Some(etcd) = &middleware.etcd
    {
        sources.push((etcd, ETCD));
    }
    let mut secrets: BTreeMap<String, Vec<SecretKey>> = BTreeMap::new();
    // The CAs of the middleware's certificates, mounted into the services that use them.
    for source in [&middleware.postgres, &middleware.redis, &middleware.kafka] {
        if let Some(ca) = source
            .external
            .as_ref()
            .and_then(|external| external.ca_secret_name.clone())
        {
            let keys = secrets.entry(ca).or_default();
            if !keys.contains(&required("ca.crt")) {
                keys.push(required("ca.crt"));
            }
        }
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

/// An external middleware the status reports on, and where it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The status condition it gets: `PostgresReachable`, `RedisReachable`, ...
    pub condition: &'static str,
    /// `host:port` to try in turn (any one answering will do), or why none is known.
    pub addresses: Result<Vec<String>, String>,
}

/// The external middleware of `spec`, with the addresses their Secrets (as `found`) or the
/// Store give.
pub fn dependencies(spec: &StoreSpec, found: &BTreeMap<String, Option<Secret>>) -> Vec<Dependency> {
    let middleware = &spec.middleware;
    let read = |source: &MiddlewareSource, key: &str| -> Result<String, String> {
        let name = &source
            .external
            .as_ref()
            .expect("an external source")
            .secret_name;
        let secret = found
            .get(name)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("Secret {name} not found"))?;
        value(secret, key).ok_or_else(|| format!("Secret {name} has no key \"{key}\""))
    };
    let mut dependencies = Vec::new();
    if middleware.postgres.external.is_some() {
        let addresses = read(&middleware.postgres, "host").map(|host| {
            let port = read(&middleware.postgres, "port").unwrap_or_else(|_| "5432".into());
            vec![host_port(&host, &port)]
        });
        dependencies.push(Dependency {
            condition: "PostgresReachable",
            addresses,
        });
    }
    if middleware.redis.external.is_some() {
        let addresses = read(&middleware.redis, "url").and_then(|url| redis_address(&url));
        dependencies.push(Dependency {
            condition: "RedisReachable",
            addresses: addresses.map(|address| vec![address]),
        });
    }
    if let Some(external) = &middleware.kafka.external {
        let brokers = match &external.bootstrap_servers {
            Some(servers) => Ok(servers.clone()),
            None => read(&middleware.kafka, "brokers"),
        };
        dependencies.push(Dependency {
            condition: "KafkaReachable",
            addresses: brokers.map(|list| split_list(&list)),
        });
    }
    if spec.discovery == DiscoveryMode::Etcd
        && let Some(etcd) = middleware.etcd.as_ref().filter(|e| e.external.is_some())
    {
        dependencies.push(Dependency {
            condition: "EtcdReachable",
            addresses: read(etcd, "endpoints").map(|list| split_list(&list)),
        });
    }
    dependencies
}

/// A Secret's value for `key`, from `data` or `stringData`.
fn value(secret: &Secret, key: &str) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned());
    from_data
        .or_else(|| secret.string_data.as_ref()?.get(key).cloned())
        .map(|text| text.trim().to_owned())
}

fn host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}") // an IPv6 address
    } else {
        format!("{host}:{port}")
    }
}

/// `host:port` of a `redis://` or `rediss://` URL (port 6379 when absent).
fn redis_address(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or_else(|| "the Redis url is not redis:// or rediss://".to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // The password may hold an `@`: the host follows the last one.
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err("the Redis url names no host".to_owned());
    }
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    Ok(if has_port {
        host.to_owned()
    } else {
        format!("{host}:6379")
    })
}

/// `a:1, http://b:2` → `["a:1", "b:2"]`.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|entry| {
            let entry = entry.trim();
            entry
                .strip_prefix("http://")
                .or_else(|| entry.strip_prefix("https://"))
                .unwrap_or(entry)
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|entry| !entry.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::{check, dependencies, external_secrets, redis_address, split_list};
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

    #[test]
    fn each_external_middleware_is_reached_where_its_secret_says() {
        let mut spec = external_spec();
        spec.middleware.kafka = MiddlewareSource::external("events");
        let found = BTreeMap::from([
            (
                "pg".to_owned(),
                secret(&[("host", "db.example"), ("port", "6432")]),
            ),
            (
                "cache".to_owned(),
                secret(&[("url", "rediss://:p@ss@cache.example:6380/0")]),
            ),
        ]);
        let seen: Vec<_> = dependencies(&spec, &found)
            .into_iter()
            .map(|d| (d.condition, d.addresses))
            .collect();
        assert_eq!(
            seen,
            [
                ("PostgresReachable", Ok(vec!["db.example:6432".to_owned()])),
                ("RedisReachable", Ok(vec!["cache.example:6380".to_owned()])),
                ("KafkaReachable", Err("Secret events not found".to_owned())),
            ]
        );
        assert_eq!(redis_address("redis://cache/0").unwrap(), "cache:6379");
        assert_eq!(redis_address("redis://[::1]/0").unwrap(), "[::1]:6379");
        assert!(redis_address("unix:///tmp/redis.sock").is_err());
        assert_eq!(
            split_list(" a:1, http://b:2/ ,"),
            ["a:1".to_owned(), "b:2".to_owned()]
        );
    }
}
