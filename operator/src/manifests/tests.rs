//! The builders' output for given Stores.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::fixtures::{UID, store};
use crate::store::{
    Autoscaling, DataRetention, GatewayServiceType, IngressSpec, Middleware, MiddlewareSource,
    ServiceSizing, StoreSpec,
};

fn build(spec: StoreSpec) -> DesiredState {
    let store = store(spec);
    let target = StoreRef::new(&store).unwrap();
    desired_state(&target, None, "")
}

fn deployment<'a>(state: &'a DesiredState, name: &str) -> &'a Deployment {
    state
        .all()
        .find_map(|c| match c {
            Child::Deployment(d) if d.metadata.name.as_deref() == Some(name) => Some(d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn container(deployment: &Deployment) -> &Container {
    &pod_spec(deployment).containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn names(state: &DesiredState, kind: &str) -> Vec<String> {
    state
        .all()
        .filter(|c| c.kind() == kind)
        .map(Child::name)
        .collect()
}

fn secret_of(state: &DesiredState) -> Secret {
    state
        .settings
        .iter()
        .find_map(|c| match c {
            Child::Secret(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap()
}

/// The shop's settings ConfigMap (not the PostgreSQL init script's).
fn config_map_of(state: &DesiredState) -> ConfigMap {
    state
        .settings
        .iter()
        .find_map(|c| match c {
            Child::ConfigMap(c) if c.metadata.name.as_deref() == Some("shop-config") => {
                Some(c.clone())
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_default_store_gets_every_service_and_managed_postgres_redis_and_kafka() {
    let state = build(StoreSpec::default());
    assert_eq!(
        names(&state, "Deployment"),
        [
            "shop-user",
            "shop-product",
            "shop-cart",
            "shop-order",
            "shop-payment",
            "shop-gateway"
        ]
    );
    assert_eq!(
        names(&state, "StatefulSet"),
        ["shop-postgres", "shop-redis", "shop-kafka"]
    );
    assert_eq!(
        names(&state, "ConfigMap"),
        ["shop-config", "shop-postgres-init"]
    );
    // One replica each: no PodDisruptionBudget, no Ingress.
    assert!(names(&state, "PodDisruptionBudget").is_empty());
    assert!(names(&state, "Ingress").is_empty());
}

#[test]
fn every_object_is_owned_by_the_store_and_labelled_with_it() {
    let state = build(StoreSpec {
        data_retention: DataRetention::Delete,
        ..StoreSpec::default()
    });
    for child in state.all() {
        let meta = child.metadata();
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, UID, "{}", child.name());
        assert_eq!(owner.kind, "Store");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        assert_eq!(
            meta.labels
                .as_ref()
                .unwrap()
                .get(STORE_LABEL)
                .map(String::as_str),
            Some("shop")
        );
    }
}

#[test]
fn headless_services_carry_the_names_discovery_resolves() {
    let state = build(StoreSpec::default());
    let data = config_map_of(&state).data.unwrap();
    assert_eq!(data["DISCOVERY"], "kubernetes");
    // Two shops on one external Redis or Kafka keep apart.
    assert_eq!(data["REDIS_KEY_PREFIX"], "letsgo:default:shop:");
    assert_eq!(data["KAFKA_TOPIC_PREFIX"], "letsgo.default.shop.");
    // Fully qualified, with the root's dot: never looked up through the resolver's search list.
    assert_eq!(
        data["DISCOVERY_DNS_NAME"],
        "shop-{service}.default.svc.cluster.local."
    );
    assert_eq!(
        data["DB_HOST"],
        "shop-postgres-client.default.svc.cluster.local."
    );
    assert_eq!(
        data["REDIS_HOST"],
        "shop-redis-client.default.svc.cluster.local."
    );
    assert_eq!(
        data["KAFKA_BROKERS"],
        "shop-kafka-client.default.svc.cluster.local.:9092"
    );
    for service in ["user", "product", "cart", "order", "payment"] {
        let address = data["DISCOVERY_DNS_NAME"].replace("{service}", service);
        let name = address.split('.').next().unwrap().to_owned();
        let headless = state.all().find_map(|c| match c {
            Child::Service(s) if s.metadata.name.as_deref() == Some(name.as_str()) => Some(s),
            _ => None,
        });
        let spec = headless.unwrap().spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "{name}");
        assert_eq!(
            spec.selector.as_ref().unwrap()["app.kubernetes.io/component"],
            service
        );
    }
}

#[test]
fn managed_middleware_is_reached_through_a_virtual_ip_and_its_set_keeps_its_headless_service() {
    let mut spec = StoreSpec {
        discovery: crate::store::DiscoveryMode::Etcd,
        ..StoreSpec::default()
    };
    spec.middleware.etcd = Some(MiddlewareSource::managed());
    let state = build(spec);
    let service = |name: &str| {
        state
            .all()
            .find_map(|c| match c {
                Child::Service(s) if s.metadata.name.as_deref() == Some(name) => s.spec.clone(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Service {name}"))
    };
    for middleware in ["postgres", "redis", "kafka", "etcd"] {
        let governing = service(&format!("shop-{middleware}"));
        assert_eq!(
            governing.cluster_ip.as_deref(),
            Some("None"),
            "{middleware}"
        );
        let set_name = format!("shop-{middleware}");
        let governs = state.all().find_map(|c| match c {
            Child::StatefulSet(s) if s.metadata.name.as_deref() == Some(set_name.as_str()) => {
                s.spec.as_ref()?.service_name.clone()
            }
            _ => None,
        });
        assert_eq!(
            governs.as_deref(),
            Some(set_name.as_str()),
            "the set's serviceName cannot change"
        );
        let client = service(&format!("shop-{middleware}-client"));
        // A virtual IP: kube-proxy follows the Pod, where a cached DNS answer would not.
        assert_eq!(client.cluster_ip, None, "{middleware}");
        assert_eq!(client.selector, governing.selector, "{middleware}");
        assert_eq!(client.ports, governing.ports, "{middleware}");
    }
}

#[test]
fn services_are_probed_on_their_admin_port_and_locked_down() {
    let state = build(StoreSpec::default());
    let cart = container(deployment(&state, "shop-cart"));
    let ready = cart
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    assert_eq!(ready.port, IntOrString::Int(9103));
    let live = cart
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    let security = cart.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let gateway = container(deployment(&state, "shop-gateway"));
    let port = &gateway
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap()
        .port;
    assert_eq!(port, &IntOrString::Int(9100));
    let strategy = deployment(&state, "shop-cart")
        .spec
        .as_ref()
        .unwrap()
        .strategy
        .clone()
        .unwrap();
    assert_eq!(
        strategy.rolling_update.unwrap().max_unavailable,
        Some(IntOrString::Int(0))
    );
}

#[test]
fn every_deployable_keeps_serving_until_callers_forget_it_and_has_time_to_finish() {
    use super::services::{PRE_STOP_SECONDS, TERMINATION_GRACE_SECONDS};
    let state = build(StoreSpec::default());
    for name in ["user", "product", "cart", "order", "payment", "gateway"] {
        let deployment = deployment(&state, &format!("shop-{name}"));
        let pre_stop = container(deployment)
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
            .and_then(|handler| handler.sleep.as_ref())
            .unwrap_or_else(|| panic!("{name} has no pre-stop sleep"));
        // CoreDNS's cached answer (30 s as kubeadm configures it) and the clients' 5 s
        // refresh, one after the other.
        assert!(pre_stop.seconds > 35, "{name}: {}", pre_stop.seconds);
        assert_eq!(pre_stop.seconds, PRE_STOP_SECONDS);
        assert_eq!(
            pod_spec(deployment).termination_grace_period_seconds,
            Some(TERMINATION_GRACE_SECONDS),
            "{name}"
        );
        // A rollout takes an old service Pod away only once callers can have learned the new
        // one through the same DNS cache and refresh; the gateway's callers use kube-proxy.
        let min_ready = deployment.spec.as_ref().unwrap().min_ready_seconds;
        let expected = if name == "gateway" { 5 } else { 35 };
        assert_eq!(min_ready, Some(expected), "{name}");
    }
}

#[test]
fn trusted_proxies_reach_the_gateway_and_bad_ones_are_refused() {
    let mut spec = StoreSpec::default();
    spec.gateway.trusted_proxies = vec!["10.42.0.0/16".into(), "fd00::1".into()];
    let state = build(spec.clone());
    let proxies = env(
        container(deployment(&state, "shop-gateway")),
        "TRUSTED_PROXIES",
    )
    .unwrap();
    assert_eq!(proxies.value.as_deref(), Some("10.42.0.0/16,fd00::1"));
    assert!(
        env(
            container(deployment(&state, "shop-user")),
            "TRUSTED_PROXIES"
        )
        .is_none()
    );
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    // What the gateway refuses at start is refused here first (it reads them with ipnet).
    spec.gateway.trusted_proxies = vec![
        "10.0.0.0/33".into(),
        "ingress-nginx".into(),
        "10.0.0.0/+8".into(),
        "10.0.0.0/".into(),
    ];
    let problems = spec.problems();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems[0].contains("gateway.trustedProxies"),
        "{problems:?}"
    );
}

#[test]
fn a_rate_limit_reaches_the_gateway_only_and_a_zero_budget_is_refused() {
    let mut spec = StoreSpec::default();
    let state = build(spec.clone());
    let gateway = container(deployment(&state, "shop-gateway"));
    // Absent: the gateway's own defaults, nothing set.
    assert!(env(gateway, "RATE_LIMIT_PER_SECOND").is_none());
    assert!(env(gateway, "RATE_LIMIT_BURST").is_none());

    spec.gateway.rate_limit =
        serde_json::from_value(serde_json::json!({"perSecond": 500})).unwrap();
    let state = build(spec.clone());
    let gateway = container(deployment(&state, "shop-gateway"));
    let value = |name| env(gateway, name).and_then(|e| e.value.clone());
    assert_eq!(value("RATE_LIMIT_PER_SECOND").as_deref(), Some("500"));
    assert_eq!(
        value("RATE_LIMIT_BURST").as_deref(),
        Some("1000"),
        "burst: twice the rate"
    );
    assert!(
        env(
            container(deployment(&state, "shop-product")),
            "RATE_LIMIT_PER_SECOND"
        )
        .is_none()
    );
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());

    spec.gateway.rate_limit =
        serde_json::from_value(serde_json::json!({"perSecond": 1000000000, "burst": 7})).unwrap();
    let state = build(spec.clone());
    let gateway = container(deployment(&state, "shop-gateway"));
    let value = |name| env(gateway, name).and_then(|e| e.value.clone());
    assert_eq!(
        value("RATE_LIMIT_PER_SECOND").as_deref(),
        Some("1000000000")
    );
    assert_eq!(value("RATE_LIMIT_BURST").as_deref(), Some("7"));

    // What the CRD's minimum refuses, a Store that skipped validation is refused here.
    for zero in [
        serde_json::json!({"perSecond": 0}),
        serde_json::json!({"perSecond": 10, "burst": 0}),
    ] {
        spec.gateway.rate_limit = serde_json::from_value(zero).unwrap();
        let problems = spec.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("gateway.rateLimit"), "{problems:?}");
    }
}

#[test]
fn backups_are_a_cron_job_of_pg_dump_onto_a_volume_that_outlives_the_store() {
    let spec: StoreSpec =
        serde_json::from_value(serde_json::json!({"backup": {"schedule": "0 3 * * *"}})).unwrap();
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    let state = build(spec.clone());
    let cron = state
        .all()
        .find_map(|c| match c {
            Child::CronJob(job) => Some((**job).clone()),
            _ => None,
        })
        .expect("a CronJob");
    let cron_spec = cron.spec.unwrap();
    assert_eq!(cron_spec.schedule, "0 3 * * *");
    assert_eq!(cron_spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = cron_spec.job_template.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("postgres:17.6"),
        "the same PostgreSQL"
    );
    assert_eq!(
        env(container, "PGHOST").unwrap().value.as_deref(),
        Some("shop-postgres-client.default.svc.cluster.local.")
    );
    assert_eq!(
        env(container, "BACKUP_KEEP").unwrap().value.as_deref(),
        Some("7")
    );
    let password = env(container, "PGPASSWORD")
        .unwrap()
        .value_from
        .clone()
        .unwrap();
    assert_eq!(password.secret_key_ref.unwrap().key, "postgres-password");
    let volume = state
        .all()
        .find_map(|c| match c {
            Child::PersistentVolumeClaim(claim) => Some(claim.clone()),
            _ => None,
        })
        .expect("the backups' volume");
    assert_eq!(volume.metadata.name.as_deref(), Some("shop-backups"));
    assert!(
        volume.metadata.owner_references.is_none(),
        "kept with the data (Retain)"
    );
    // PostgreSQL's policy lets the backup Pods in.
    let table = policy_table(&state);
    let postgres = table.iter().find(|(c, _, _)| c == "postgres").unwrap();
    assert!(
        postgres.1.as_ref().unwrap().contains(&"backup".to_owned()),
        "{postgres:?}"
    );

    // A restore: a Job per backup name, PostgreSQL lets it in.
    let restored = build(StoreSpec {
        restore_from: Some("20261130T030000Z".into()),
        ..spec.clone()
    });
    let Some(Child::Job(job)) = &restored.restore else {
        panic!("a restore Job");
    };
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("shop-restore-20261130t030000z")
    );
    assert!(
        postgres.1.as_ref().unwrap().contains(&"restore".to_owned()),
        "{postgres:?}"
    );
    assert!(
        StoreSpec {
            restore_from: Some("20261130T030000Z".into()),
            ..StoreSpec::default()
        }
        .problems()
        .iter()
        .any(|p| p.starts_with("restoreFrom"))
    );

    let mut external = spec;
    external.middleware.postgres =
        serde_json::from_value(serde_json::json!({"external": {"secretName": "pg"}})).unwrap();
    external.backup.as_mut().unwrap().schedule = "nightly".into();
    let problems = external.problems();
    assert!(
        problems.iter().any(|p| p.starts_with("backup:")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("backup.schedule")),
        "{problems:?}"
    );
}

#[test]
fn backups_to_a_bucket_are_dumped_by_an_init_container_and_uploaded_by_the_aws_cli() {
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({"backup": {
        "schedule": "0 3 * * *",
        "keep": 5,
        "storage": "20Gi",
        "s3": {
            "bucket": "shop-backups",
            "endpoint": "http://minio.storage:9000",
            "secretName": "backup-bucket"
        }
    }}))
    .unwrap();
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    let state = build(spec.clone());
    assert!(
        names(&state, "PersistentVolumeClaim").is_empty(),
        "no backups volume: the bucket keeps them"
    );
    let scripts = state
        .all()
        .find_map(|c| match c {
            Child::ConfigMap(map)
                if map.metadata.name.as_deref() == Some("shop-backup-scripts") =>
            {
                Some(map.clone())
            }
            _ => None,
        })
        .expect("the scripts");
    let data = scripts.data.unwrap();
    assert_eq!(data["s3-upload.sh"], backup::S3_UPLOAD_SCRIPT);
    for script in ["backup.sh", "restore.sh", "s3.sh", "s3-download.sh"] {
        assert!(data.contains_key(script), "{script}");
    }

    let cron = state
        .all()
        .find_map(|c| match c {
            Child::CronJob(job) => Some((**job).clone()),
            _ => None,
        })
        .expect("a CronJob");
    let pod = cron
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let dump = &pod.init_containers.as_ref().expect("the dump runs first")[0];
    assert_eq!(dump.image.as_deref(), Some("postgres:17.6"));
    assert_eq!(
        dump.command.as_deref(),
        Some(&["bash".to_owned(), "/scripts/backup.sh".to_owned()][..])
    );
    assert_eq!(
        env(dump, "PGHOST").unwrap().value.as_deref(),
        Some("shop-postgres-client.default.svc.cluster.local.")
    );
    // The Pod's one container uploads, and writes the termination message the status reads.
    let upload = &pod.containers[0];
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(upload.name, "backup");
    assert_eq!(upload.image.as_deref(), Some(backup::S3_CLIENT_IMAGE));
    assert_eq!(
        upload.command.as_deref(),
        Some(&["bash".to_owned(), "/scripts/s3-upload.sh".to_owned()][..])
    );
    let value = |name: &str| env(upload, name).and_then(|e| e.value.clone());
    assert_eq!(value("S3_BUCKET").as_deref(), Some("shop-backups"));
    assert_eq!(
        value("S3_PREFIX"),
        Some(format!("{}/shop", crate::fixtures::NAMESPACE)),
        "each Store its own folder"
    );
    assert_eq!(
        value("S3_ENDPOINT").as_deref(),
        Some("http://minio.storage:9000")
    );
    assert_eq!(value("AWS_DEFAULT_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(value("BACKUP_KEEP").as_deref(), Some("5"));
    assert!(env(upload, "PGPASSWORD").is_none(), "no database password");
    for (variable, optional) in [
        ("AWS_ACCESS_KEY_ID", None),
        ("AWS_SECRET_ACCESS_KEY", None),
        ("AWS_SESSION_TOKEN", Some(true)),
    ] {
        let key = env(upload, variable)
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.secret_key_ref)
            .unwrap_or_else(|| panic!("{variable} from the Secret"));
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("backup-bucket", variable)
        );
        assert_eq!(key.optional, optional, "{variable}");
    }
    // The dump is handed over on a scratch volume bounded by `storage`.
    let volumes = pod.volumes.as_ref().unwrap();
    let scratch = volumes.iter().find(|v| v.name == "backups").unwrap();
    assert_eq!(
        scratch.empty_dir.as_ref().unwrap().size_limit,
        Some(Quantity("20Gi".into()))
    );
    for container in [dump, upload] {
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(
            security.read_only_root_filesystem,
            Some(true),
            "{}",
            container.name
        );
        assert_eq!(security.allow_privilege_escalation, Some(false));
    }
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(999));

    // A restore downloads first, in the same client image, then restores with PostgreSQL's tools.
    let mut mirrored = spec.clone();
    mirrored.backup.as_mut().unwrap().s3.as_mut().unwrap().image =
        Some("registry.internal/aws-cli:2".into());
    let restored = build(StoreSpec {
        restore_from: Some("20261130T030000Z".into()),
        ..mirrored
    });
    let Some(Child::Job(job)) = &restored.restore else {
        panic!("a restore Job");
    };
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let download = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        download.image.as_deref(),
        Some("registry.internal/aws-cli:2")
    );
    assert_eq!(
        download.command.as_deref(),
        Some(&["bash".to_owned(), "/scripts/s3-download.sh".to_owned()][..])
    );
    assert_eq!(
        env(download, "RESTORE_FROM").unwrap().value.as_deref(),
        Some("20261130T030000Z")
    );
    let restore = &pod.containers[0];
    assert_eq!(restore.image.as_deref(), Some("postgres:17.6"));
    assert_eq!(
        restore.command.as_deref(),
        Some(&["bash".to_owned(), "/scripts/restore.sh".to_owned()][..])
    );
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(
        volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
        "{volumes:?}"
    );
    // The volume's class means nothing without the volume.
    let mut classed = spec;
    classed.backup.as_mut().unwrap().storage_class_name = Some("fast".into());
    let problems = classed.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("backup.storageClassName")),
        "{problems:?}"
    );
}

/// A CloudNativePG cluster's `<cluster>-app` Secret is read as it is, and its CA makes the
/// services verify the server.
#[test]
fn a_cloudnativepg_app_secret_and_ca_are_used_as_they_are() {
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "middleware": {"postgres": {"external": {"secretName": "shop-db-app", "caSecretName": "shop-db-ca"}}}
    }))
    .unwrap();
    // Exactly the keys CloudNativePG writes.
    let cnpg = Secret {
        data: Some(
            [
                "dbname", "host", "jdbc-uri", "password", "pgpass", "port", "uri", "user",
                "username",
            ]
            .into_iter()
            .map(|key| (key.to_owned(), k8s_openapi::ByteString(b"x".to_vec())))
            .collect(),
        ),
        ..Secret::default()
    };
    let ca = Secret {
        data: Some(
            [(
                "ca.crt".to_owned(),
                k8s_openapi::ByteString(b"PEM".to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    let wanted = external::external_secrets(&spec);
    let mut found = std::collections::BTreeMap::from([("shop-db-app".to_owned(), Some(cnpg))]);
    assert_eq!(
        external::check(&wanted, &found).missing,
        ["Secret shop-db-ca not found"],
        "the CA is checked for too"
    );
    found.insert("shop-db-ca".to_owned(), Some(ca));
    assert!(external::check(&wanted, &found).missing.is_empty());

    let state = build(spec);
    let order = container(deployment(&state, "shop-order"));
    assert_eq!(
        env(order, "DB_SSLMODE").unwrap().value.as_deref(),
        Some("verify-full")
    );
    assert_eq!(
        env(order, "DB_SSLROOTCERT").unwrap().value.as_deref(),
        Some("/etc/letsgo/postgres-ca/ca.crt")
    );
    let pod = deployment(&state, "shop-order")
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();
    let ca = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "postgres-ca")
        .expect("the CA volume");
    assert_eq!(
        ca.secret.unwrap().secret_name.as_deref(),
        Some("shop-db-ca")
    );
    // The cart has no database: no CA either.
    assert!(env(container(deployment(&state, "shop-cart")), "DB_SSLROOTCERT").is_none());
}

fn secret_with(keys: &[&str]) -> Secret {
    Secret {
        data: Some(
            keys.iter()
                .map(|key| ((*key).to_owned(), k8s_openapi::ByteString(b"x".to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn pod_volume(state: &DesiredState, deployment_name: &str, volume: &str) -> Option<String> {
    let pod = deployment(state, deployment_name)
        .spec
        .clone()
        .unwrap()
        .template
        .spec
        .unwrap();
    pod.volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == volume)
        .and_then(|v| v.secret?.secret_name)
}

fn value_of<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    env(container, name).and_then(|e| e.value.as_deref())
}

#[test]
fn a_strimzi_kafka_user_secret_and_cluster_ca_are_used_as_they_are() {
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "middleware": {
            "kafka": {"external": {
                "secretName": "shop",
                "caSecretName": "events-cluster-ca-cert",
                "bootstrapServers": "events-kafka-bootstrap.kafka.svc:9093",
                "sasl": {"mechanism": "SCRAM-SHA-512"}
            }},
            "kafkaTopics": {"partitions": 6, "replicationFactor": 3}
        }
    }))
    .unwrap();
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    // Exactly the keys Strimzi writes for a SCRAM-SHA-512 KafkaUser, and for the cluster CA.
    let user = secret_with(&["password", "sasl.jaas.config"]);
    let cluster_ca = secret_with(&["ca.crt", "ca.p12", "ca.password"]);
    let wanted = external::external_secrets(&spec);
    let found = std::collections::BTreeMap::from([
        ("shop".to_owned(), Some(user)),
        ("events-cluster-ca-cert".to_owned(), Some(cluster_ca)),
    ]);
    let check = external::check(&wanted, &found);
    assert!(check.missing.is_empty(), "{:?}", check.missing);
    let without_password =
        std::collections::BTreeMap::from([("shop".to_owned(), Some(secret_with(&["x"])))]);
    let check = external::check(&wanted, &without_password);
    assert!(
        check
            .missing
            .contains(&"Secret shop has no key \"password\"".to_owned()),
        "{:?}",
        check.missing
    );

    let state = build(spec);
    let order = container(deployment(&state, "shop-order"));
    assert_eq!(
        value_of(order, "KAFKA_BROKERS"),
        Some("events-kafka-bootstrap.kafka.svc:9093")
    );
    assert_eq!(value_of(order, "KAFKA_SECURITY_PROTOCOL"), Some("sasl_ssl"));
    assert_eq!(
        value_of(order, "KAFKA_SASL_MECHANISM"),
        Some("SCRAM-SHA-512")
    );
    // Strimzi names the Secret after the user.
    assert_eq!(value_of(order, "KAFKA_SASL_USERNAME"), Some("shop"));
    let password = env(order, "KAFKA_SASL_PASSWORD")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|from| from.secret_key_ref.as_ref())
        .expect("the password comes from the Secret");
    assert_eq!(
        (password.name.as_str(), password.key.as_str()),
        ("shop", "password")
    );
    assert_eq!(
        value_of(order, "KAFKA_CA_FILE"),
        Some("/etc/letsgo/kafka-ca/ca.crt")
    );
    assert_eq!(
        pod_volume(&state, "shop-order", "kafka-ca").as_deref(),
        Some("events-cluster-ca-cert")
    );
    // The cart uses no Kafka: neither credentials nor CA.
    let cart = container(deployment(&state, "shop-cart"));
    assert!(env(cart, "KAFKA_SASL_PASSWORD").is_none());
    assert!(pod_volume(&state, "shop-cart", "kafka-ca").is_none());
    let config = config_map_of(&state).data.unwrap();
    assert_eq!(config["KAFKA_TOPIC_PARTITIONS"], "6");
    assert_eq!(config["KAFKA_TOPIC_REPLICATION"], "3");
}

#[test]
fn kafka_security_follows_what_the_store_asks_for() {
    let protocol = |external: serde_json::Value| {
        let spec: StoreSpec = serde_json::from_value(serde_json::json!({
            "middleware": {"kafka": {"external": external}}
        }))
        .unwrap();
        let state = build(spec);
        let order = container(deployment(&state, "shop-order"));
        (
            value_of(order, "KAFKA_SECURITY_PROTOCOL").map(str::to_owned),
            env(order, "KAFKA_BROKERS")
                .and_then(|e| e.value_from.as_ref())
                .and_then(|from| from.secret_key_ref.as_ref())
                .map(|key| key.key.clone()),
        )
    };
    let from_secret = Some("brokers".to_owned());
    assert_eq!(
        protocol(serde_json::json!({"secretName": "k"})),
        (Some("plaintext".into()), from_secret.clone())
    );
    assert_eq!(
        protocol(serde_json::json!({"secretName": "k", "tls": true})),
        (Some("ssl".into()), from_secret.clone())
    );
    assert_eq!(
        protocol(
            serde_json::json!({"secretName": "k", "sasl": {"mechanism": "PLAIN", "username": "u"}})
        ),
        (Some("sasl_plaintext".into()), from_secret)
    );
}

#[test]
fn an_external_redis_over_tls_gets_its_ca() {
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "middleware": {"redis": {"external": {"secretName": "cache", "caSecretName": "cache-ca"}}}
    }))
    .unwrap();
    let wanted = external::external_secrets(&spec);
    assert_eq!(
        wanted["cache-ca"],
        [external::SecretKey {
            key: "ca.crt",
            optional: false
        }]
    );
    let state = build(spec);
    for name in ["shop-cart", "shop-product", "shop-gateway"] {
        assert_eq!(
            value_of(container(deployment(&state, name)), "REDIS_CA_FILE"),
            Some("/etc/letsgo/redis-ca/ca.crt"),
            "{name}"
        );
        assert_eq!(
            pod_volume(&state, name, "redis-ca").as_deref(),
            Some("cache-ca")
        );
    }
    assert!(env(container(deployment(&state, "shop-user")), "REDIS_CA_FILE").is_none());
}

#[test]
fn kafka_settings_on_other_middleware_and_replicas_on_one_broker_are_refused() {
    let problems = |value: serde_json::Value| {
        serde_json::from_value::<StoreSpec>(value)
            .unwrap()
            .problems()
    };
    let refused = problems(serde_json::json!({
        "middleware": {"redis": {"external": {"secretName": "r", "sasl": {}}}}
    }));
    assert!(
        refused
            .iter()
            .any(|p| p.contains("middleware.redis.external")),
        "{refused:?}"
    );
    let refused = problems(serde_json::json!({
        "middleware": {"kafkaTopics": {"replicationFactor": 3}}
    }));
    assert!(
        refused.iter().any(|p| p.contains("replicationFactor")),
        "{refused:?}"
    );
}

#[test]
fn traces_go_where_the_store_says_named_by_service_and_store() {
    let quiet = build(StoreSpec::default());
    assert!(
        !config_map_of(&quiet)
            .data
            .unwrap()
            .contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "no endpoint, no export"
    );
    assert!(
        env(
            container(deployment(&quiet, "shop-order")),
            "OTEL_SERVICE_NAME"
        )
        .is_none()
    );

    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "observability": {"otlpEndpoint": "http://collector.observability.svc:4317", "samplingRatio": 0.25}
    }))
    .unwrap();
    let state = build(spec);
    let config = config_map_of(&state).data.unwrap();
    assert_eq!(
        config["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://collector.observability.svc:4317"
    );
    assert_eq!(
        config["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc",
        "the field has always meant an OTLP/gRPC endpoint"
    );
    assert_eq!(config["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
    assert_eq!(config["OTEL_TRACES_SAMPLER_ARG"], "0.25");
    assert_eq!(
        config["OTEL_RESOURCE_ATTRIBUTES"],
        "k8s.namespace.name=default,letsgo.store=shop"
    );
    for service in ["user", "product", "cart", "order", "payment", "gateway"] {
        let name = format!("shop-{service}");
        assert_eq!(
            value_of(container(deployment(&state, &name)), "OTEL_SERVICE_NAME"),
            Some(format!("letsgo-{service}").as_str())
        );
    }
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "observability": {"otlpEndpoint": "http://collector:4318", "otlpProtocol": "http/protobuf"}
    }))
    .unwrap();
    let config = config_map_of(&build(spec)).data.unwrap();
    assert_eq!(config["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
    assert!(
        serde_json::from_value::<StoreSpec>(serde_json::json!({
            "observability": {"otlpEndpoint": "http://collector:4318", "otlpProtocol": "http/json"}
        }))
        .is_err(),
        "a protocol the services cannot speak is refused"
    );
}

#[test]
fn a_spec_of_nothing_is_the_default_spec() {
    let empty: StoreSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(empty, StoreSpec::default());
    assert!(empty.network_policies);
}

/// (component, who may reach its serving port) for a default Store.
fn policy_table(state: &DesiredState) -> Vec<(String, Option<Vec<String>>, i32)> {
    state
        .all()
        .filter_map(|child| match child {
            Child::NetworkPolicy(policy) => Some(policy.clone()),
            _ => None,
        })
        .map(|policy| {
            let spec = policy.spec.unwrap();
            let selected =
                spec.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/component"]
                    .clone();
            let first = &spec.ingress.unwrap()[0];
            let from = first.from.as_ref().map(|peers| {
                let selector = peers[0].pod_selector.clone().unwrap();
                assert_eq!(
                    selector.match_labels.unwrap()["letsgo.dev/store"],
                    "shop",
                    "only the Store's own Pods"
                );
                selector.match_expressions.unwrap()[0]
                    .values
                    .clone()
                    .unwrap()
            });
            let port = match first.ports.as_ref().unwrap()[0].port {
                Some(IntOrString::Int(port)) => port,
                ref other => panic!("{other:?}"),
            };
            (selected, from, port)
        })
        .collect()
}

#[test]
fn network_policies_let_each_component_be_reached_only_by_its_callers() {
    let names = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let table = policy_table(&build(StoreSpec::default()));
    assert_eq!(
        table,
        vec![
            ("user".to_owned(), names(&["gateway"]), 9001),
            (
                "product".to_owned(),
                names(&["gateway", "cart", "order"]),
                9002
            ),
            ("cart".to_owned(), names(&["gateway", "order"]), 9003),
            ("order".to_owned(), names(&["gateway", "payment"]), 9004),
            ("payment".to_owned(), names(&["gateway"]), 9005),
            ("gateway".to_owned(), None, 8888),
            (
                "postgres".to_owned(),
                names(&["user", "product", "order", "payment"]),
                5432
            ),
            (
                "redis".to_owned(),
                names(&["product", "cart", "gateway"]),
                6379
            ),
            (
                "kafka".to_owned(),
                names(&["user", "order", "payment"]),
                9092
            ),
        ]
    );
    let off = build(StoreSpec {
        network_policies: false,
        ..StoreSpec::default()
    });
    assert!(policy_table(&off).is_empty());
}

#[test]
fn secrets_reach_only_the_services_that_use_them() {
    let state = build(StoreSpec::default());
    let has = |name: &str, var: &str| env(container(deployment(&state, name)), var).is_some();
    assert!(has("shop-user", "JWT_SECRET"));
    assert!(has("shop-gateway", "JWT_SECRET"));
    assert!(!has("shop-cart", "JWT_SECRET"));
    assert!(has("shop-payment", "PAYMENT_WEBHOOK_SECRET"));
    assert!(!has("shop-order", "PAYMENT_WEBHOOK_SECRET"));
    // The initial admin's password reaches the user service only; its name is no secret.
    assert!(has("shop-user", "ADMIN_PASSWORD"));
    assert!(!has("shop-gateway", "ADMIN_PASSWORD"));
    assert!(!has("shop-product", "ADMIN_PASSWORD"));
    // Managed Redis has a password, and the services that use it have it too.
    for (component, uses) in [
        ("product", true),
        ("cart", true),
        ("gateway", true),
        ("order", false),
    ] {
        assert_eq!(
            has(&format!("shop-{component}"), "REDIS_PASSWORD"),
            uses,
            "{component}"
        );
    }
    // Every component carries the internal token, from the generated Secret.
    for component in ["user", "product", "cart", "order", "payment", "gateway"] {
        assert!(
            has(&format!("shop-{component}"), "INTERNAL_TOKEN"),
            "{component}"
        );
    }
    assert_eq!(
        config_map_of(&state).data.unwrap()["ADMIN_USERNAME"],
        "admin"
    );
    assert!(has("shop-order", "DB_PASSWORD"));
    assert!(!has("shop-cart", "DB_PASSWORD"));
    let password = env(container(deployment(&state, "shop-order")), "DB_PASSWORD").unwrap();
    let reference = password
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(reference.name, "shop-secrets");
    assert_eq!(reference.key, "postgres-password");
}

#[test]
fn generated_secrets_are_kept_across_reconciles() {
    let store = store(StoreSpec::default());
    let target = StoreRef::new(&store).unwrap();
    let first = secret_of(&desired_state(&target, None, ""));
    let second = secret_of(&desired_state(&target, Some(&first), ""));
    assert_eq!(first.data, second.data);
    let data = first.data.unwrap();
    assert_eq!(data.len(), SECRET_KEYS.len());
    assert!(data.values().all(|v| v.0.len() == 64));
    // Two Stores never share a generated secret.
    let other = secret_of(&desired_state(&target, None, "")).data.unwrap();
    assert_ne!(data["jwt-secret"], other["jwt-secret"]);
}

#[test]
fn a_missing_secret_key_is_generated_and_the_others_kept() {
    let store = store(StoreSpec::default());
    let target = StoreRef::new(&store).unwrap();
    let mut partial = secret_of(&desired_state(&target, None, ""));
    let kept = partial.data.as_mut().unwrap();
    let jwt = kept["jwt-secret"].clone();
    kept.remove("webhook-secret");
    // A Secret made by 0.1, before the initial admin, lacks its password.
    kept.remove("admin-password");
    let repaired = secret_of(&desired_state(&target, Some(&partial), ""))
        .data
        .unwrap();
    assert_eq!(repaired["jwt-secret"], jwt);
    assert_eq!(repaired["webhook-secret"].0.len(), 64);
    assert_eq!(repaired["admin-password"].0.len(), 64);
}

#[test]
fn more_than_one_replica_gets_a_disruption_budget() {
    let mut spec = StoreSpec::default();
    spec.services.product = ServiceSizing {
        replicas: 3,
        ..ServiceSizing::default()
    };
    let state = build(spec);
    assert_eq!(names(&state, "PodDisruptionBudget"), ["shop-product"]);
    assert_eq!(
        deployment(&state, "shop-product")
            .spec
            .as_ref()
            .unwrap()
            .replicas,
        Some(3)
    );
}

fn gateway_service(state: &DesiredState) -> &k8s_openapi::api::core::v1::Service {
    state
        .all()
        .find_map(|c| match c {
            Child::Service(s) if s.metadata.name.as_deref() == Some("shop-gateway") => Some(s),
            _ => None,
        })
        .expect("the gateway's Service")
}

#[test]
fn the_gateway_gets_a_load_balancer_and_an_ingress_when_asked() {
    let mut spec = StoreSpec::default();
    spec.gateway.service_type = GatewayServiceType::LoadBalancer;
    spec.gateway.ingress = Some(IngressSpec {
        host: "shop.example.com".into(),
        class_name: Some("nginx".into()),
        tls_secret_name: Some("shop-tls".into()),
    });
    let state = build(spec);
    let service = gateway_service(&state);
    let service_spec = service.spec.as_ref().unwrap();
    assert_eq!(service_spec.type_.as_deref(), Some("LoadBalancer"));
    let cluster_ip = build(StoreSpec::default());
    let inside = gateway_service(&cluster_ip);
    assert_eq!(
        inside.spec.as_ref().unwrap().external_traffic_policy,
        None,
        "a ClusterIP Service has no external policy"
    );
    assert_eq!(
        service_spec.external_traffic_policy.as_deref(),
        Some("Local"),
        "outside clients keep their own address"
    );
    assert_eq!(service_spec.ports.as_ref().unwrap()[0].port, 8888);
    let Some(Child::Ingress(ingress)) = state.all().find(|c| c.kind() == "Ingress") else {
        panic!("no Ingress");
    };
    let ingress = ingress.spec.as_ref().unwrap();
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        ingress.rules.as_ref().unwrap()[0].host.as_deref(),
        Some("shop.example.com")
    );
    assert_eq!(
        ingress.tls.as_ref().unwrap()[0].secret_name.as_deref(),
        Some("shop-tls")
    );
}

#[test]
fn external_middleware_is_read_from_the_named_secrets_and_not_run() {
    let spec = StoreSpec {
        middleware: Middleware {
            postgres: MiddlewareSource::external("pg"),
            redis: MiddlewareSource::external("cache"),
            kafka: MiddlewareSource::external("events"),
            etcd: None,
            ..Middleware::default()
        },
        ..StoreSpec::default()
    };
    let state = build(spec);
    assert!(names(&state, "StatefulSet").is_empty());
    let product = container(deployment(&state, "shop-product"));
    let key = |var: &str| {
        let selector = env(product, var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{var}"));
        (selector.name.clone(), selector.key.clone())
    };
    assert_eq!(key("DB_HOST"), ("pg".into(), "host".into()));
    assert_eq!(key("DB_PASSWORD"), ("pg".into(), "password".into()));
    assert_eq!(key("DB_SSLMODE"), ("pg".into(), "sslmode".into()));
    let sslmode = env(product, "DB_SSLMODE")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!(
        sslmode.optional,
        Some(true),
        "a Secret without sslmode is fine"
    );
    assert_eq!(key("REDIS_URL"), ("cache".into(), "url".into()));
    let order = container(deployment(&state, "shop-order"));
    assert!(env(order, "KAFKA_BROKERS").is_some());
    // The gateway's product cache follows the product service's announcements in Redis.
    let gateway = container(deployment(&state, "shop-gateway"));
    assert!(env(gateway, "REDIS_URL").is_some());
    assert!(env(order, "REDIS_URL").is_none());
}

#[test]
fn etcd_runs_only_when_discovery_uses_it() {
    let mut spec = StoreSpec::default();
    spec.middleware.etcd = Some(MiddlewareSource::managed());
    assert!(!names(&build(spec.clone()), "StatefulSet").contains(&"shop-etcd".to_owned()));

    spec.discovery = crate::store::DiscoveryMode::Etcd;
    let state = build(spec);
    assert!(names(&state, "StatefulSet").contains(&"shop-etcd".to_owned()));
    let user = container(deployment(&state, "shop-user"));
    let advertise = env(user, "ADVERTISE_HOST").unwrap();
    assert_eq!(
        advertise
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
}

#[test]
fn postgres_creates_the_service_databases_at_first_start() {
    let state = build(StoreSpec::default());
    let Some(Child::ConfigMap(init)) = state
        .settings
        .iter()
        .find(|c| c.name() == "shop-postgres-init")
    else {
        panic!("no init script");
    };
    let sql = &init.data.as_ref().unwrap()["create-databases.sql"];
    for db in ["user", "product", "order", "payment"] {
        assert!(sql.contains(&format!("CREATE DATABASE \"{db}\";")), "{sql}");
    }
    let Some(Child::StatefulSet(postgres)) = state
        .all()
        .find(|c| c.name() == "shop-postgres" && c.kind() == "StatefulSet")
    else {
        panic!("no postgres");
    };
    let spec = postgres.spec.as_ref().unwrap();
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .unwrap()
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some("postgres:17.6"));
}

#[test]
fn a_settings_change_rolls_the_services() {
    let secret = secret_of(&build(StoreSpec::default()));
    let config_hash = |state: &DesiredState| {
        let template = &deployment(state, "shop-user")
            .spec
            .as_ref()
            .unwrap()
            .template;
        template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let hash = |spec: StoreSpec| {
        let store = store(spec);
        config_hash(&desired_state(
            &StoreRef::new(&store).unwrap(),
            Some(&secret),
            "",
        ))
    };
    let mut changed = StoreSpec::default();
    changed.shop.admin_username = "root".into();
    assert_eq!(hash(StoreSpec::default()), hash(StoreSpec::default()));
    assert_ne!(hash(StoreSpec::default()), hash(changed));
    // New credentials (the Secret made again) roll the services too.
    let remade = desired_state(
        &StoreRef::new(&store(StoreSpec::default())).unwrap(),
        None,
        "",
    );
    let remade_hash = config_hash(&remade);
    assert_ne!(hash(StoreSpec::default()), remade_hash);
}

#[test]
fn the_examples_are_valid_stores() {
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../examples");
    for file in ["store.yaml", "store-external.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let store: crate::store::Store =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(store.spec.problems().is_empty(), "{file}");
    }
}

#[test]
fn retained_data_keeps_its_credentials_and_deleted_data_goes_with_the_store() {
    let retained = build(StoreSpec::default());
    let secret = retained
        .all()
        .find_map(|c| match c {
            Child::Secret(s) => Some(s),
            _ => None,
        })
        .unwrap();
    assert!(
        secret.metadata.owner_references.is_none(),
        "a retained shop's Secret must outlive the Store: {:?}",
        secret.metadata.owner_references
    );
    let policy = |state: &DesiredState| {
        state
            .all()
            .filter_map(|c| match c {
                Child::StatefulSet(s) => s
                    .spec
                    .as_ref()?
                    .persistent_volume_claim_retention_policy
                    .clone(),
                _ => None,
            })
            .map(|p| p.when_deleted.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(policy(&retained), ["Retain", "Retain", "Retain"]);
    let deleted = build(StoreSpec {
        data_retention: DataRetention::Delete,
        ..StoreSpec::default()
    });
    assert_eq!(policy(&deleted), ["Delete", "Delete", "Delete"]);
}

#[test]
fn an_autoscaled_service_gets_an_autoscaler_and_leaves_replicas_to_it() {
    let mut spec = StoreSpec::default();
    spec.services.cart.autoscaling = Some(Autoscaling {
        min_replicas: 2,
        max_replicas: 6,
        target_cpu_utilization_percentage: 60,
        scale_down_stabilization_seconds: Some(30),
    });
    let state = build(spec);
    let cart = deployment(&state, "shop-cart");
    assert_eq!(
        cart.spec.as_ref().unwrap().replicas,
        None,
        "the autoscaler owns replicas"
    );
    assert_eq!(
        deployment(&state, "shop-order")
            .spec
            .as_ref()
            .unwrap()
            .replicas,
        Some(1)
    );
    let autoscaler = state
        .all()
        .find_map(|c| match c {
            Child::HorizontalPodAutoscaler(h) => Some(h),
            _ => None,
        })
        .expect("an autoscaler");
    let hpa = autoscaler.spec.as_ref().unwrap();
    assert_eq!(hpa.scale_target_ref.name, "shop-cart");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 6));
    let target = &hpa.metrics.as_ref().unwrap()[0]
        .resource
        .as_ref()
        .unwrap()
        .target;
    assert_eq!(target.average_utilization, Some(60));
    let scale_down = hpa.behavior.as_ref().and_then(|b| b.scale_down.as_ref());
    assert_eq!(
        scale_down.and_then(|rules| rules.stabilization_window_seconds),
        Some(30)
    );
    assert!(
        state.all().any(|c| matches!(c, Child::PodDisruptionBudget(p) if p.metadata.name.as_deref() == Some("shop-cart"))),
        "an autoscaled service that may run several Pods keeps one through a drain"
    );
}

#[test]
fn database_pools_are_sized_so_every_pod_fits_in_postgres() {
    let env_of = |state: &DesiredState, name: &str, key: &str| {
        deployment(state, name)
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == key)
            .and_then(|e| e.value.clone())
    };
    // Four database services, one Pod each, 100 connections less 5: capped at 16.
    let state = build(StoreSpec::default());
    assert_eq!(
        env_of(&state, "shop-order", "DB_MAX_CONNECTIONS").as_deref(),
        Some("16")
    );
    assert_eq!(
        env_of(&state, "shop-cart", "DB_MAX_CONNECTIONS"),
        None,
        "the cart has no database"
    );
    let postgres = state
        .all()
        .find_map(|c| match c {
            Child::StatefulSet(s) if s.metadata.name.as_deref() == Some("shop-postgres") => Some(s),
            _ => None,
        })
        .unwrap();
    let args = postgres
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, ["postgres", "-c", "max_connections=100"]);

    // Up to 3 + 10 + 1 + 1 = 15 Pods share 95 connections: 6 each.
    let mut spec = StoreSpec::default();
    spec.services.user.replicas = 3;
    spec.services.product.autoscaling = Some(Autoscaling {
        min_replicas: 1,
        max_replicas: 10,
        target_cpu_utilization_percentage: 70,
        scale_down_stabilization_seconds: None,
    });
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    assert_eq!(
        env_of(&build(spec.clone()), "shop-user", "DB_MAX_CONNECTIONS").as_deref(),
        Some("6")
    );

    // 60 Pods cannot have 2 each out of 95: the spec is refused, saying what to change.
    spec.services.order.replicas = 45;
    let problems = spec.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("postgresMaxConnections"),
        "{problems:?}"
    );
    spec.middleware.postgres_max_connections = 200;
    assert!(spec.problems().is_empty());
}

/// Every Pod template a Store's objects carry, by the name of the object holding it.
fn pod_specs(state: &DesiredState) -> Vec<(String, PodSpec)> {
    let mut specs: Vec<_> = state
        .all()
        .chain(&state.restore)
        .filter_map(|child| {
            let spec = match child {
                Child::Deployment(d) => d.spec.as_ref()?.template.spec.clone(),
                Child::StatefulSet(s) => s.spec.as_ref()?.template.spec.clone(),
                Child::CronJob(c) => c
                    .spec
                    .as_ref()?
                    .job_template
                    .spec
                    .as_ref()?
                    .template
                    .spec
                    .clone(),
                Child::Job(j) => j.spec.as_ref()?.template.spec.clone(),
                _ => None,
            }?;
            Some((child.name(), spec))
        })
        .collect();
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    specs
}

fn images_of(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.clone())
        .collect()
}

#[test]
fn the_installations_images_and_pull_secrets_reach_every_pod_and_the_stores_own_win() {
    let spec: StoreSpec = serde_json::from_value(serde_json::json!({
        "image": {"registry": "mirror.local/letsgo", "tag": "0.1.0", "pullSecrets": ["shop-pull", "mirror"]},
        "discovery": "etcd",
        "middleware": {
            "etcd": {"managed": {}},
            "redis": {"managed": {"image": "registry.shop/redis:7"}}
        },
        "backup": {"schedule": "0 3 * * *", "s3": {"bucket": "b", "secretName": "s"}},
        "restoreFrom": "shop-20261201-030000.sql.gz"
    }))
    .unwrap();
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    let store = store(spec);
    let defaults = InstallDefaults {
        postgres_image: Some("mirror.local/debian-postgresql:15".into()),
        redis_image: Some("mirror.local/debian-redis:7.0".into()),
        kafka_image: Some("mirror.local/apache-kafka:4.1.1".into()),
        etcd_image: Some("mirror.local/etcd:v3.6.5".into()),
        backup_image: Some("mirror.local/debian-awscli:2".into()),
        image_pull_secrets: vec!["mirror".into()],
        cluster_domain: None,
    };
    let target = StoreRef::new(&store).unwrap().with_defaults(&defaults);
    let state = desired_state(&target, None, "");
    let pods = pod_specs(&state);
    let holders: Vec<&str> = pods.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "shop-backup",
        "shop-restore-",
        "shop-etcd",
        "shop-gateway",
        "shop-kafka",
    ] {
        assert!(
            holders.iter().any(|h| h.starts_with(expected)),
            "{expected} in {holders:?}"
        );
    }
    for (name, pod) in &pods {
        let secrets: Vec<&str> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        // The installation's first, the Store's after, each once.
        assert_eq!(secrets, ["mirror", "shop-pull"], "{name}");
        for image in images_of(pod) {
            assert!(
                image.starts_with("mirror.local/") || image == "registry.shop/redis:7",
                "{name} runs {image}: no official image where the installation names one"
            );
        }
    }
    let images = |holder: &str| images_of(&pods.iter().find(|(n, _)| n == holder).unwrap().1);
    assert_eq!(
        images("shop-redis"),
        ["registry.shop/redis:7"],
        "the Store's own wins"
    );
    assert_eq!(images("shop-etcd"), ["mirror.local/etcd:v3.6.5"]);
    assert_eq!(
        images("shop-backup"),
        [
            "mirror.local/debian-postgresql:15",
            "mirror.local/debian-awscli:2"
        ]
    );
    assert_eq!(
        images("shop-cart"),
        ["mirror.local/letsgo/letsgo-cart:0.1.0"]
    );

    // Without an installation's defaults: the official images and no pull secrets.
    let plain = desired_state(&StoreRef::new(&store).unwrap(), None, "");
    let pods = pod_specs(&plain);
    let etcd = &pods.iter().find(|(n, _)| n == "shop-etcd").unwrap().1;
    assert_eq!(
        images_of(etcd),
        [MiddlewareKind::Etcd.default_image().to_owned()]
    );
    assert_eq!(
        etcd.image_pull_secrets.iter().flatten().count(),
        2,
        "the Store's own pull secrets stay"
    );
}

#[test]
fn another_cluster_domain_names_every_address() {
    let store = store(StoreSpec {
        discovery: crate::store::DiscoveryMode::Etcd,
        middleware: Middleware {
            etcd: Some(MiddlewareSource::managed()),
            ..Middleware::default()
        },
        ..StoreSpec::default()
    });
    let defaults = InstallDefaults {
        cluster_domain: Some("corp.example.".into()),
        ..InstallDefaults::default()
    };
    let target = StoreRef::new(&store).unwrap().with_defaults(&defaults);
    let state = desired_state(&target, None, "");
    let data = config_map_of(&state).data.unwrap();
    assert_eq!(
        data["ETCD_HOSTS"],
        "shop-etcd-client.default.svc.corp.example.:2379"
    );
    assert_eq!(
        data["PAYMENT_CALLBACK_URL"],
        "http://shop-gateway.default.svc.corp.example.:8888/api/v1/payment/callback"
    );
    let kafka = pod_specs(&state)
        .into_iter()
        .find(|(name, _)| name == "shop-kafka")
        .unwrap()
        .1;
    assert_eq!(
        env(&kafka.containers[0], "KAFKA_ADVERTISED_LISTENERS").and_then(|e| e.value.as_deref()),
        Some("PLAINTEXT://shop-kafka-client.default.svc.corp.example.:9092")
    );
}

#[test]
fn a_tag_no_label_can_hold_is_cut_to_one_and_digests_pin_the_images() {
    let long = format!("v1.2.3-{}", "a".repeat(100));
    for (tag, label) in [
        ("0.1.0", Some("0.1.0")),
        ("_build.7_", Some("build.7")),
        ("1.0.0-", Some("1.0.0")),
        (long.as_str(), Some(&long[..63])),
        ("___", None),
    ] {
        let spec: StoreSpec =
            serde_json::from_value(serde_json::json!({"image": {"tag": tag}})).unwrap();
        let state = build(spec);
        let labels = deployment(&state, "shop-cart")
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(
            labels.get("app.kubernetes.io/version").map(String::as_str),
            label,
            "{tag}"
        );
        assert_eq!(
            container(deployment(&state, "shop-cart")).image.as_deref(),
            Some(format!("ghcr.io/letsgo/letsgo-cart:{tag}").as_str())
        );
    }
    let digest = format!("sha256:{}", "0f".repeat(32));
    let spec: StoreSpec = serde_json::from_value(
        serde_json::json!({"image": {"tag": "0.1.0", "digests": {"cart": digest}}}),
    )
    .unwrap();
    let state = build(spec);
    assert_eq!(
        container(deployment(&state, "shop-cart")).image.as_deref(),
        Some(format!("ghcr.io/letsgo/letsgo-cart:0.1.0@{digest}").as_str())
    );
    assert_eq!(
        container(deployment(&state, "shop-user")).image.as_deref(),
        Some("ghcr.io/letsgo/letsgo-user:0.1.0"),
        "only the pinned service"
    );
    let unknown = serde_json::from_value::<StoreSpec>(
        serde_json::json!({"image": {"digests": {"inventory": digest}}}),
    );
    assert!(unknown.is_err(), "a digest for no service is refused");
}
