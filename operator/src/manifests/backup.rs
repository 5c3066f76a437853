//! Scheduled backups of managed PostgreSQL: a CronJob that runs `scripts/backup.sh` in the
//! PostgreSQL image against the Store's PostgreSQL, onto a volume of the backups' own, and the
//! ConfigMap holding the scripts (`restore.sh` too, for a restore Job or a person).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::middleware::MiddlewareKind;
use super::services::restricted_pod;
use super::settings::{
    POSTGRES_PASSWORD_KEY, POSTGRES_USER, env_from_secret, env_value, secret_name,
};
use super::{Child, StoreRef};
use crate::store::{BackupSpec, DataRetention};

/// What the backup Job runs.
pub const BACKUP_SCRIPT: &str = include_str!("scripts/backup.sh");
/// What restores a backup by name (`RESTORE_FROM`).
pub const RESTORE_SCRIPT: &str = include_str!("scripts/restore.sh");

/// The label value of the backup Job's Pods (`app.kubernetes.io/component`); PostgreSQL's
/// NetworkPolicy lets them in.
pub const COMPONENT: &str = "backup";
/// The label value of the restore Job's Pods.
pub const RESTORE_COMPONENT: &str = "restore";

/// The uid the PostgreSQL image's tools run as.
const POSTGRES_UID: i64 = 999;

pub(super) fn objects(
    store: &StoreRef<'_>,
    backup: &BackupSpec,
    postgres_image: String,
) -> Vec<Child> {
    let scripts = ConfigMap {
        metadata: store.meta(store.child_name("backup-scripts"), COMPONENT),
        data: Some(BTreeMap::from([
            ("backup.sh".to_owned(), BACKUP_SCRIPT.to_owned()),
            ("restore.sh".to_owned(), RESTORE_SCRIPT.to_owned()),
        ])),
        ..ConfigMap::default()
    };
    let mut volume_meta = store.meta(store.child_name("backups"), COMPONENT);
    if store.store.spec.data_retention == DataRetention::Retain {
        // The backups outlive the Store, like the data they copy.
        volume_meta.owner_references = None;
    }
    let volume = PersistentVolumeClaim {
        metadata: volume_meta,
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
                spec: Some(job_spec(
                    store,
                    postgres_image,
                    COMPONENT,
                    "backup.sh",
                    vec![env_value("BACKUP_KEEP", &backup.keep.to_string())],
                )),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    };
    vec![
        Child::ConfigMap(scripts),
        Child::PersistentVolumeClaim(volume),
        Child::CronJob(Box::new(cron_job)),
    ]
}

/// The Job that restores `name` before the services first start (`spec.restoreFrom`), named
/// after the backup: Jobs cannot change, and another backup is another Job.
pub(super) fn restore_job(store: &StoreRef<'_>, name: &str, postgres_image: String) -> Child {
    Child::Job(Box::new(Job {
        metadata: store.meta(
            store.child_name(&format!("restore-{}", name.to_lowercase())),
            RESTORE_COMPONENT,
        ),
        spec: Some(job_spec(
            store,
            postgres_image,
            RESTORE_COMPONENT,
            "restore.sh",
            vec![env_value("RESTORE_FROM", name)],
        )),
        ..Job::default()
    }))
}

/// A Job running `script` from the scripts ConfigMap in the PostgreSQL image, connected to the
/// Store's PostgreSQL, with the backups volume at /backups.
fn job_spec(
    store: &StoreRef<'_>,
    postgres_image: String,
    component: &str,
    script: &str,
    extra_env: Vec<k8s_openapi::api::core::v1::EnvVar>,
) -> JobSpec {
    let mut env = vec![
        env_value(
            "PGHOST",
            &store.child_name(MiddlewareKind::Postgres.as_str()),
        ),
        env_value("PGPORT", "5432"),
        env_value("PGUSER", POSTGRES_USER),
        env_from_secret(
            "PGPASSWORD",
            &secret_name(store),
            POSTGRES_PASSWORD_KEY,
            false,
        ),
        env_value("BACKUP_DIR", "/backups"),
    ];
    env.extend(extra_env);
    let container = Container {
        name: component.to_owned(),
        image: Some(postgres_image),
        command: Some(vec!["bash".into(), format!("/scripts/{script}")]),
        env: Some(env),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "scripts".into(),
                mount_path: "/scripts".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "backups".into(),
                mount_path: "/backups".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    JobSpec {
        backoff_limit: Some(2),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(super::labels(&store.name, component)),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                restart_policy: Some("Never".into()),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                security_context: Some(restricted_pod(POSTGRES_UID)),
                volumes: Some(vec![
                    Volume {
                        name: "scripts".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: store.child_name("backup-scripts"),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "backups".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: store.child_name("backups"),
                            read_only: None,
                        }),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    }
}
