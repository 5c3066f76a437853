//! Scheduled backups of managed PostgreSQL: a CronJob that runs `scripts/backup.sh` in the
//! PostgreSQL image against the Store's PostgreSQL, and the ConfigMap holding the scripts
//! (`restore.sh` too, for a restore Job or a person).
//!
//! The backups go to one of two places. By default, a volume of the backups' own, which the
//! dump writes straight onto. With `backup.s3`, an S3-compatible bucket: the PostgreSQL image
//! has no S3 client, so the dump runs as an init container into a scratch volume and the Pod's
//! container, in an image with the `aws` CLI, uploads it (`s3-upload.sh`) and prunes the bucket;
//! a restore runs the other way round (`s3-download.sh`, then `restore.sh`). The Pod's container
//! is the one whose termination message the status reads, so in both cases it is the last step
//! that writes it.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::middleware::{MiddlewareKind, client_address};
use super::services::{restricted_container, restricted_pod};
use super::settings::{
    POSTGRES_PASSWORD_KEY, POSTGRES_USER, env_from_secret, env_value, secret_name,
};
use super::{Child, StoreRef};
use crate::store::{BackupSpec, DataRetention, S3Bucket};

/// What the backup Job runs.
pub const BACKUP_SCRIPT: &str = include_str!("scripts/backup.sh");
/// What restores a backup by name (`RESTORE_FROM`).
pub const RESTORE_SCRIPT: &str = include_str!("scripts/restore.sh");
/// What the two S3 scripts share (sourced by them as `s3.sh` beside them).
pub const S3_SCRIPT: &str = include_str!("scripts/s3.sh");
/// Uploads a backup to the bucket and prunes the bucket.
pub const S3_UPLOAD_SCRIPT: &str = include_str!("scripts/s3-upload.sh");
/// Downloads a backup from the bucket for `restore.sh`.
pub const S3_DOWNLOAD_SCRIPT: &str = include_str!("scripts/s3-download.sh");

/// The image with the `aws` CLI, unless `backup.s3.image` names another: AWS's own, pinned so
/// a backup does not change under a Store by itself.
pub const S3_CLIENT_IMAGE: &str = "amazon/aws-cli:2.37.4";

/// The keys of `backup.s3.secretName`, read as the `aws` CLI reads them from its environment.
pub const S3_ACCESS_KEY_ID_KEY: &str = "AWS_ACCESS_KEY_ID";
pub const S3_SECRET_ACCESS_KEY_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// Optional: for temporary credentials.
pub const S3_SESSION_TOKEN_KEY: &str = "AWS_SESSION_TOKEN";

/// The label value of the backup Job's Pods (`app.kubernetes.io/component`); PostgreSQL's
/// NetworkPolicy lets them in.
pub const COMPONENT: &str = "backup";
/// The label value of the restore Job's Pods.
pub const RESTORE_COMPONENT: &str = "restore";

/// The uid the PostgreSQL image's tools run as; the Pod runs the aws-cli container as it too.
const POSTGRES_UID: i64 = 999;

/// Where the backups are inside the Jobs' containers.
const BACKUP_DIR: &str = "/backups";

pub(super) fn objects(
    store: &StoreRef<'_>,
    backup: &BackupSpec,
    postgres_image: String,
) -> Vec<Child> {
    let scripts = ConfigMap {
        metadata: store.meta(store.child_name("backup-scripts"), COMPONENT),
        data: Some(BTreeMap::from(
            [
                ("backup.sh", BACKUP_SCRIPT),
                ("restore.sh", RESTORE_SCRIPT),
                ("s3.sh", S3_SCRIPT),
                ("s3-upload.sh", S3_UPLOAD_SCRIPT),
                ("s3-download.sh", S3_DOWNLOAD_SCRIPT),
            ]
            .map(|(name, script)| (name.to_owned(), script.to_owned())),
        )),
        ..ConfigMap::default()
    };
    let keep = env_value("BACKUP_KEEP", &backup.keep.to_string());
    let job = match &backup.s3 {
        None => job_spec(
            store,
            COMPONENT,
            Vec::new(),
            postgres_container(store, postgres_image, COMPONENT, "backup.sh", vec![keep]),
            backups_volume(store),
        ),
        Some(bucket) => job_spec(
            store,
            COMPONENT,
            vec![postgres_container(
                store,
                postgres_image,
                "dump",
                "backup.sh",
                Vec::new(),
            )],
            s3_container(store, bucket, COMPONENT, "s3-upload.sh", vec![keep]),
            scratch_volume(backup),
        ),
    };
    let cron_job = CronJob {
        metadata: store.meta(store.child_name("backup"), COMPONENT),
        spec: Some(CronJobSpec {
            schedule: backup.schedule.clone(),
            time_zone: Some("Etc/UTC".into()),
            // One at a time: a slow dump is not raced by the next.
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(job),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    };
    let mut objects = vec![
        Child::ConfigMap(scripts),
        Child::CronJob(Box::new(cron_job)),
    ];
    if backup.s3.is_none() {
        objects.push(Child::PersistentVolumeClaim(backups_claim(store, backup)));
    }
    objects
}

/// The Job that restores `name` before the services first start (`spec.restoreFrom`), named
/// after the backup: Jobs cannot change, and another backup is another Job.
pub(super) fn restore_job(
    store: &StoreRef<'_>,
    backup: &BackupSpec,
    name: &str,
    postgres_image: String,
) -> Child {
    let restore = postgres_container(
        store,
        postgres_image,
        RESTORE_COMPONENT,
        "restore.sh",
        vec![env_value("RESTORE_FROM", name)],
    );
    let spec = match &backup.s3 {
        None => job_spec(
            store,
            RESTORE_COMPONENT,
            Vec::new(),
            restore,
            backups_volume(store),
        ),
        Some(bucket) => job_spec(
            store,
            RESTORE_COMPONENT,
            vec![s3_container(
                store,
                bucket,
                "download",
                "s3-download.sh",
                vec![env_value("RESTORE_FROM", name)],
            )],
            restore,
            scratch_volume(backup),
        ),
    };
    Child::Job(Box::new(Job {
        metadata: store.meta(
            store.child_name(&format!("restore-{}", name.to_lowercase())),
            RESTORE_COMPONENT,
        ),
        spec: Some(spec),
        ..Job::default()
    }))
}

/// The backups' own volume (no `backup.s3`).
fn backups_claim(store: &StoreRef<'_>, backup: &BackupSpec) -> PersistentVolumeClaim {
    let mut metadata = store.meta(store.child_name("backups"), COMPONENT);
    if store.store.spec.data_retention == DataRetention::Retain {
        // The backups outlive the Store, like the data they copy.
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: backup.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(backup.storage.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The Pod's `backups` volume on the backups' own claim.
fn backups_volume(store: &StoreRef<'_>) -> Volume {
    Volume {
        name: "backups".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: store.child_name("backups"),
            read_only: None,
        }),
        ..Volume::default()
    }
}

/// The Pod's `backups` volume as scratch space between the PostgreSQL tools and the S3 client,
/// gone with the Pod; `backup.storage` bounds it, as it bounds the backups' own volume.
fn scratch_volume(backup: &BackupSpec) -> Volume {
    Volume {
        name: "backups".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(backup.storage.clone())),
        }),
        ..Volume::default()
    }
}

/// A container running `script` from the scripts ConfigMap in the PostgreSQL image, connected
/// to the Store's PostgreSQL, with the backups at /backups.
fn postgres_container(
    store: &StoreRef<'_>,
    image: String,
    name: &str,
    script: &str,
    extra_env: Vec<EnvVar>,
) -> Container {
    let mut env = vec![
        env_value("PGHOST", &client_address(store, MiddlewareKind::Postgres)),
        env_value("PGPORT", "5432"),
        env_value("PGUSER", POSTGRES_USER),
        env_from_secret(
            "PGPASSWORD",
            &secret_name(store),
            POSTGRES_PASSWORD_KEY,
            false,
        ),
        env_value("BACKUP_DIR", BACKUP_DIR),
        // Which databases to dump or restore: the services' own, from the shop's facts.
        env_value("DATABASES", &letsgo_facts::DATABASES.join(" ")),
    ];
    env.extend(extra_env);
    script_container(name, image, script, env)
}

/// A container running `script` from the scripts ConfigMap with the `aws` CLI, given the
/// bucket and the Secret's credentials, with the backups at /backups.
fn s3_container(
    store: &StoreRef<'_>,
    bucket: &S3Bucket,
    name: &str,
    script: &str,
    extra_env: Vec<EnvVar>,
) -> Container {
    let prefix = bucket
        .prefix
        .clone()
        .unwrap_or_else(|| format!("{}/{}", store.namespace, store.name));
    let mut env = vec![
        env_value("BACKUP_DIR", BACKUP_DIR),
        env_value("S3_BUCKET", &bucket.bucket),
        env_value("S3_PREFIX", &prefix),
        env_value(
            "AWS_DEFAULT_REGION",
            bucket.region.as_deref().unwrap_or("us-east-1"),
        ),
        env_from_secret(
            S3_ACCESS_KEY_ID_KEY,
            &bucket.secret_name,
            S3_ACCESS_KEY_ID_KEY,
            false,
        ),
        env_from_secret(
            S3_SECRET_ACCESS_KEY_KEY,
            &bucket.secret_name,
            S3_SECRET_ACCESS_KEY_KEY,
            false,
        ),
        env_from_secret(
            S3_SESSION_TOKEN_KEY,
            &bucket.secret_name,
            S3_SESSION_TOKEN_KEY,
            true,
        ),
        // The image has no home for this uid.
        env_value("HOME", "/tmp"),
    ];
    if let Some(endpoint) = &bucket.endpoint {
        env.push(env_value("S3_ENDPOINT", endpoint));
    }
    env.extend(extra_env);
    let image = bucket
        .image
        .clone()
        .or_else(|| store.defaults.backup_image.clone())
        .unwrap_or_else(|| S3_CLIENT_IMAGE.to_owned());
    script_container(name, image, script, env)
}

/// The root filesystem is read-only: the backups and /tmp (where bash 4 writes here-strings)
/// are the volumes the script may write to.
fn script_container(name: &str, image: String, script: &str, env: Vec<EnvVar>) -> Container {
    let volume_mounts = vec![
        VolumeMount {
            name: "scripts".into(),
            mount_path: "/scripts".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "backups".into(),
            mount_path: BACKUP_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    Container {
        name: name.to_owned(),
        image: Some(image),
        command: Some(vec!["bash".into(), format!("/scripts/{script}")]),
        env: Some(env),
        volume_mounts: Some(volume_mounts),
        security_context: Some(restricted_container()),
        ..Container::default()
    }
}

/// A Job of `init_containers` then `container`, with the scripts, `backups` and a scratch /tmp
/// as volumes.
fn job_spec(
    store: &StoreRef<'_>,
    component: &str,
    init_containers: Vec<Container>,
    container: Container,
    backups: Volume,
) -> JobSpec {
    let volumes = vec![
        Volume {
            name: "scripts".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: store.child_name("backup-scripts"),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        backups,
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    JobSpec {
        backoff_limit: Some(2),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(super::labels(&store.name, component)),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                init_containers: (!init_containers.is_empty()).then_some(init_containers),
                containers: vec![container],
                restart_policy: Some("Never".into()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                image_pull_secrets: store.image_pull_secrets(),
                security_context: Some(restricted_pod(POSTGRES_UID)),
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    }
}
