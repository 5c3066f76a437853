//! The backup scripts run as the Jobs run them (bash, pg_dump, pg_restore, psql, the `aws` CLI
//! and the environment the operator gives them) against the local PostgreSQL
//! (`DATABASE_URL_BASE`) and, for backups to a bucket, a local S3-compatible server: moto's
//! `moto_server`. The CronJob's client image runs the same `aws s3` commands (`amazon/aws-cli`
//! is the CLI's version 2; the test runs version 1 from PyPI).
//!
//! `aws` and `moto_server` are found in `S3_TOOLS_DIR`, else on PATH; `make test`
//! (scripts/test.sh, `ensure_s3_test_tools`) installs both. A missing tool fails the test: it
//! never passes by skipping.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use letsgo_operator::manifests::backup;
use support::{free_port, unique_name};

const HOW_TO_GET_THE_S3_TOOLS: &str = "`make test` installs them (scripts/test.sh, \
     ensure_s3_test_tools): `python3 -m venv target/tools/s3-venv && \
     target/tools/s3-venv/bin/pip install awscli 'moto[server]'`, then S3_TOOLS_DIR is that \
     venv's bin; or put your own `aws` and `moto_server` on PATH";

/// A shop's databases dumped, lost, and restored to what they held at the backup; only the
/// newest are kept on the volume.
#[test]
fn the_backup_and_restore_scripts_bring_a_shops_databases_back() {
    let work = WorkDir::new("letsgo-backups");
    let backups = work.path("backups");
    let shop = ShopDatabases::create();
    let run = |script: &str, extra: &[(&str, &str)]| {
        let mut env = vec![("BACKUP_DIR", backups.to_str().unwrap())];
        env.extend_from_slice(extra);
        shop.run_script(&work.script(script), &env)
    };
    let backup = |keep: &str| {
        let output = run("backup.sh", &[("BACKUP_KEEP", keep)]);
        assert!(output.status.success(), "{output:?}");
        reported_name(&output)
    };
    let first = backup("2");
    next_second();
    let second = backup("2");
    next_second();
    // Written after the second backup: lost by a restore of it.
    shop.sql(&shop.databases[0], "INSERT INTO orders VALUES (501, 1)");
    let third = backup("2");
    let mut names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [second.clone(), third],
        "the newest two are kept, {first} went"
    );
    let manifest = std::fs::read_to_string(backups.join(&second).join("MANIFEST")).unwrap();
    assert_eq!(manifest.lines().count(), 2, "{manifest}");

    shop.lose_data();
    let restored = run("restore.sh", &[("RESTORE_FROM", second.as_str())]);
    assert!(restored.status.success(), "{restored:?}");
    shop.assert_as_at_the_backup();

    let missing = run("restore.sh", &[("RESTORE_FROM", "19990101T000000Z")]);
    assert!(!missing.status.success());
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        said.contains("no backup named 19990101T000000Z") && said.contains(&second),
        "{said}"
    );
}

/// Backups to a bucket, as the S3 Jobs make and read them: backup.sh dumps into a scratch
/// folder, s3-upload.sh uploads it and keeps the newest whole ones (another Store's folder
/// untouched), the status reads its name and size, and s3-download.sh then restore.sh bring
/// the data back; a missing or half-uploaded backup is refused, naming the ones there are.
#[test]
fn backups_in_a_bucket_are_pruned_to_keep_and_restore_the_shop() {
    let work = WorkDir::new("letsgo-s3-backups");
    let shop = ShopDatabases::create();
    let server = S3Server::start(&work);
    let bucket = "letsgo-backups";
    server.aws(&["s3", "mb", &format!("s3://{bucket}")]);
    // What another Store keeps beside this one, and an upload that broke off long ago.
    let stray = work.path("stray.dump");
    std::fs::write(&stray, "half a dump").unwrap();
    for key in [
        "shops/other/20000101T000000Z/MANIFEST",
        "shops/shop/20000101T000000Z/user.dump",
    ] {
        server.aws(&[
            "s3",
            "cp",
            stray.to_str().unwrap(),
            &format!("s3://{bucket}/{key}"),
        ]);
    }
    let mut s3_env = server.env();
    s3_env.extend([
        ("S3_BUCKET", bucket.to_owned()),
        ("S3_PREFIX", "shops/shop".to_owned()),
    ]);
    // Each Job Pod's scratch volume is new.
    let scratch = |what: &str| {
        let dir = work.path(&unique_name(what));
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_str().unwrap().to_owned()
    };
    let run = |script: &str, extra: &[(&str, &str)]| {
        let mut env: Vec<(&str, &str)> = s3_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        shop.run_script(&work.script(script), &env)
    };
    let backup = || {
        let dir = scratch("dump");
        let dumped = run("backup.sh", &[("BACKUP_DIR", &dir)]);
        assert!(dumped.status.success(), "{dumped:?}");
        let uploaded = run(
            "s3-upload.sh",
            &[("BACKUP_DIR", &dir), ("BACKUP_KEEP", "2")],
        );
        assert!(uploaded.status.success(), "{uploaded:?}");
        assert_eq!(reported_name(&uploaded), reported_name(&dumped));
        uploaded
    };
    let first = reported_name(&backup());
    next_second();
    let second = reported_name(&backup());
    next_second();
    // Written after the second backup: lost by a restore of it.
    shop.sql(&shop.databases[0], "INSERT INTO orders VALUES (501, 1)");
    let third = backup();
    let third_name = reported_name(&third);

    let objects = server.objects(bucket);
    let keys: Vec<&str> = objects.iter().map(|(key, _)| key.as_str()).collect();
    let expected: Vec<String> = [&second, &third_name]
        .into_iter()
        .flat_map(|name| {
            let mut files: Vec<String> = shop
                .databases
                .iter()
                .map(|db| format!("shops/shop/{name}/{db}.dump"))
                .collect();
            files.push(format!("shops/shop/{name}/MANIFEST"));
            files.sort();
            files
        })
        .chain(["shops/other/20000101T000000Z/MANIFEST".to_owned()])
        .collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(
        keys, expected,
        "the newest two whole backups are kept; {first} and the broken-off upload went, the \
         other Store's folder stayed"
    );

    // The status reads the upload's report (the Pod's termination message) as the bucket has it.
    let uploaded_bytes: i64 = objects
        .iter()
        .filter(|(key, _)| key.contains(&third_name))
        .map(|(_, size)| size)
        .sum();
    let said = report(&third);
    assert_eq!(
        letsgo_operator::status::last_backup_report(&[succeeded_pod(&said)]),
        Some((third_name.clone(), uploaded_bytes)),
        "{said}"
    );

    shop.lose_data();
    let downloaded = scratch("restore");
    let download = run(
        "s3-download.sh",
        &[("BACKUP_DIR", &downloaded), ("RESTORE_FROM", &second)],
    );
    assert!(download.status.success(), "{download:?}");
    let restored = run(
        "restore.sh",
        &[("BACKUP_DIR", &downloaded), ("RESTORE_FROM", &second)],
    );
    assert!(restored.status.success(), "{restored:?}");
    shop.assert_as_at_the_backup();

    // A newer upload that broke off is not a backup to restore.
    server.aws(&[
        "s3",
        "cp",
        stray.to_str().unwrap(),
        &format!("s3://{bucket}/shops/shop/20991231T000000Z/user.dump"),
    ]);
    for name in ["19990101T000000Z", "20991231T000000Z"] {
        let refused = run(
            "s3-download.sh",
            &[("BACKUP_DIR", &scratch("refused")), ("RESTORE_FROM", name)],
        );
        assert!(!refused.status.success(), "{name}: {refused:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            said.contains(&format!("no backup named {name}"))
                && said.contains(&second)
                && said.contains(&third_name)
                && said.contains("20991231T000000Z (its upload did not finish)"),
            "{said}"
        );
    }
}

// ------------------------------------------------------------------ helpers

/// The line a backup script reports its backup in (and writes to its termination log):
/// `backup <name>: <bytes> bytes, ...`.
fn report(output: &Output) -> String {
    let printed = String::from_utf8_lossy(&output.stdout);
    printed
        .lines()
        .find(|line| line.starts_with("backup "))
        .unwrap_or_else(|| panic!("no report in {printed:?}"))
        .to_owned()
}

/// The backup's name in its report.
fn reported_name(output: &Output) -> String {
    let line = report(output);
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned()
}

/// Backups are named by the second they start in.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// A backup Pod that succeeded, its container's termination message the script's report.
fn succeeded_pod(report: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "backup", "image": "aws-cli", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": report}}
        }]}
    }))
    .unwrap()
}

/// A folder of this test's own, holding the scripts as the ConfigMap mounts them; removed when
/// dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(prefix: &str) -> WorkDir {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        let scripts = dir.join("scripts");
        std::fs::create_dir_all(&scripts).unwrap();
        for (name, text) in [
            ("backup.sh", backup::BACKUP_SCRIPT),
            ("restore.sh", backup::RESTORE_SCRIPT),
            ("s3.sh", backup::S3_SCRIPT),
            ("s3-upload.sh", backup::S3_UPLOAD_SCRIPT),
            ("s3-download.sh", backup::S3_DOWNLOAD_SCRIPT),
        ] {
            std::fs::write(scripts.join(name), text).unwrap();
        }
        WorkDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn script(&self, name: &str) -> PathBuf {
        self.0.join("scripts").join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two service databases of a shop on the local PostgreSQL, with rows; dropped when dropped.
struct ShopDatabases {
    /// PGHOST, PGPORT, PGUSER and PGPASSWORD, as the Jobs get them.
    pg_env: Vec<(&'static str, String)>,
    databases: [String; 2],
}

impl ShopDatabases {
    fn create() -> ShopDatabases {
        let base = std::env::var("DATABASE_URL_BASE")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        // postgres://user[:password]@host:port/db
        let rest = base
            .strip_prefix("postgres://")
            .expect("DATABASE_URL_BASE is a postgres:// URL");
        let (credentials, address) = rest.split_once('@').unwrap();
        let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
        let address = address.split('/').next().unwrap();
        let (host, port) = address.rsplit_once(':').unwrap_or((address, "5432"));
        let name = unique_name("letsgo_backup").replace('-', "_");
        let shop = ShopDatabases {
            pg_env: vec![
                ("PGHOST", host.to_owned()),
                ("PGPORT", port.to_owned()),
                ("PGUSER", user.to_owned()),
                ("PGPASSWORD", password.to_owned()),
            ],
            databases: [format!("{name}_order"), format!("{name}_user")],
        };
        for db in &shop.databases {
            shop.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
        }
        shop.sql(
            &shop.databases[0],
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, total_cents BIGINT NOT NULL); \
            INSERT INTO orders SELECT n, n * 199 FROM generate_series(1, 500) AS n",
        );
        shop.sql(
            &shop.databases[1],
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL); \
            INSERT INTO users VALUES (1, 'alice'), (2, 'bob')",
        );
        shop
    }

    /// Runs `script` with bash, the PG* variables, `DATABASES` and `env`.
    fn run_script(&self, script: &Path, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("bash");
        command
            .arg(script)
            .envs(self.pg_env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("DATABASES", self.databases.join(" "))
            .envs(env.iter().copied());
        support::run_with_stdin(&mut command, None).expect("bash runs")
    }

    fn sql(&self, database: &str, statement: &str) -> String {
        let mut command = Command::new("psql");
        command
            .args([
                "--no-psqlrc",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-d",
                database,
            ])
            .args(["-c", statement])
            .envs(self.pg_env.iter().map(|(k, v)| (*k, v.as_str())));
        let output = support::run_with_stdin(&mut command, None).expect("psql runs");
        assert!(output.status.success(), "{statement}: {output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// One database dropped, the other changed.
    fn lose_data(&self) {
        self.sql(
            "postgres",
            &format!("DROP DATABASE \"{}\" WITH (FORCE)", self.databases[1]),
        );
        self.sql(&self.databases[0], "DELETE FROM orders WHERE id > 10");
    }

    /// What both databases held when the backup restored was made (before order 501).
    fn assert_as_at_the_backup(&self) {
        assert_eq!(
            self.sql(
                &self.databases[0],
                "SELECT count(*), sum(total_cents) FROM orders"
            ),
            "500|24924750"
        );
        assert_eq!(
            self.sql(
                &self.databases[1],
                "SELECT string_agg(name, ',' ORDER BY id) FROM users"
            ),
            "alice,bob"
        );
    }
}

impl Drop for ShopDatabases {
    fn drop(&mut self) {
        for db in &self.databases {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.sql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                )
            }));
        }
    }
}

/// `name` in S3_TOOLS_DIR, else on PATH; a missing tool fails the test, saying how to get it.
fn s3_tool(name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = match std::env::var_os("S3_TOOLS_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect(),
    };
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no `{name}` found; {HOW_TO_GET_THE_S3_TOOLS}"))
}

/// moto's S3-compatible server on a port of its own, with nothing in it; stopped when dropped.
struct S3Server {
    process: Child,
    endpoint: String,
    aws: PathBuf,
    /// Where the CLI would otherwise read a person's own configuration and credentials.
    no_config: PathBuf,
}

impl S3Server {
    fn start(work: &WorkDir) -> S3Server {
        let port = free_port();
        let process = Command::new(s3_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let server = S3Server {
            process,
            endpoint: format!("http://127.0.0.1:{port}"),
            aws: s3_tool("aws"),
            no_config: work.path("no-aws-config"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// What the Jobs give the CLI (the Secret's keys, the region, the endpoint), and a PATH
    /// whose `aws` is this one.
    fn env(&self) -> Vec<(&'static str, String)> {
        let path = std::env::join_paths(
            std::iter::once(self.aws.parent().unwrap().to_path_buf()).chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
        )
        .unwrap();
        let no_config = self.no_config.to_str().unwrap().to_owned();
        vec![
            ("PATH", path.into_string().unwrap()),
            ("S3_ENDPOINT", self.endpoint.clone()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "letsgo-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "letsgo-test-secret".to_owned()),
            ("AWS_CONFIG_FILE", no_config.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", no_config),
        ]
    }

    /// Runs the CLI against the server; it must succeed.
    fn aws(&self, args: &[&str]) -> String {
        let mut command = Command::new(&self.aws);
        command
            .args(["--endpoint-url", &self.endpoint])
            .args(args)
            .envs(self.env().into_iter().filter(|(k, _)| *k != "S3_ENDPOINT"));
        let output = support::run_with_stdin(&mut command, None).expect("aws runs");
        support::expect_success(&format!("aws {}", args.join(" ")), output)
    }

    /// Every object in `bucket`, by key, with its size.
    fn objects(&self, bucket: &str) -> Vec<(String, i64)> {
        let listing = self.aws(&["s3", "ls", "--recursive", &format!("s3://{bucket}/")]);
        let mut objects: Vec<(String, i64)> = listing
            .lines()
            .map(|line| {
                // <date> <time> <size> <key>
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields[3].to_owned(), fields[2].parse().unwrap())
            })
            .collect();
        objects.sort();
        objects
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
