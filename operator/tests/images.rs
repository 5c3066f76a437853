//! The images the operator's Pods run where no public registry is reachable, built the offline
//! way (`scripts/images.sh`: Debian bases from Debian's packages, the repository's Dockerfile
//! and Containerfiles, buildah) and run as the operator's manifests configure them.
//!
//! Each container runs under buildah (runc) as the kubelet would run the manifest's container:
//! the image's entrypoint unless the manifest gives a command, the manifest's arguments with
//! `$(NAME)` expanded from the environment, the environment with the Secret's keys the operator
//! generated, the Pod's user, and host directories in place of the Pod's volumes (a volume the
//! kubelet gives to the Pod's `fsGroup` is owned by that group, setgid). Servers run in a
//! network namespace this test makes, reached from the host through a veth pair, and are
//! stopped with the image's stop signal, as containerd stops them. What only a cluster supplies
//! is stood in for, and named: /etc/hosts names the Pod's host and the Services a Job reaches
//! (nothing here resolves `<store>-postgres`), and a Pod's DNS name in Kafka's advertised
//! listener becomes the namespace's address.
//! Needs root, `ip` (iproute2), `psql` (postgresql-client), moto's S3 server (as the backup
//! scripts' test does) and what `scripts/images.sh` installs (buildah, runc, mmdebstrap); a
//! missing one fails the test, naming it.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child as Process, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret};
use letsgo_operator::manifests::{self, Child, DesiredState, StoreRef};
use letsgo_operator::store::Store;
use serde_json::{Value, json};
use support::{repo, unique_name};

/// buildah on the images' store, as `scripts/images.sh` keeps it.
fn buildah() -> Command {
    let mut command = Command::new(repo().join("scripts/images.sh"));
    command.arg("buildah");
    command
}

// ------------------------------------------------------------------ what the operator asks for

/// The Store of examples/store.yaml with `spec` laid over its spec, as the operator builds it;
/// `secret` is the Store's Secret when it exists (else the operator generates new credentials).
fn desired(spec: Value, secret: Option<&Secret>) -> DesiredState {
    let mut full = json!({"image": {"registry": "ghcr.io/letsgo", "tag": "0.1.0"}});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    let mut store = Store::new("shop", serde_json::from_value(full).unwrap());
    store.metadata.namespace = Some("shop".into());
    store.metadata.uid = Some("0b5c3f9e-6d0a-4c57-9d1e-6a1f4f2f1a01".into());
    let target = StoreRef::new(&store).unwrap();
    manifests::desired_state(&target, secret, "")
}

fn stateful_set(state: &DesiredState, name: &str) -> StatefulSet {
    state
        .all()
        .find_map(|child| match child {
            Child::StatefulSet(set) if set.metadata.name.as_deref() == Some(name) => {
                Some(set.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the operator makes the StatefulSet {name}"))
}

fn pod_of(set: &StatefulSet) -> PodSpec {
    set.spec.clone().unwrap().template.spec.unwrap()
}

/// The Store's Secret, as the operator generated it.
fn store_secret(state: &DesiredState) -> Secret {
    state
        .all()
        .find_map(|child| match child {
            Child::Secret(secret) => Some(secret.clone()),
            _ => None,
        })
        .expect("the operator makes the Store's Secret")
}

fn config_map(state: &DesiredState, name: &str) -> ConfigMap {
    state
        .all()
        .find_map(|child| match child {
            Child::ConfigMap(map) if map.metadata.name.as_deref() == Some(name) => {
                Some(map.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("the operator makes the ConfigMap {name}"))
}

/// The Pod of the backup CronJob's Jobs.
fn backup_pod(state: &DesiredState) -> PodSpec {
    state
        .all()
        .find_map(|child| match child {
            Child::CronJob(job) => job.spec.clone()?.job_template.spec?.template.spec,
            _ => None,
        })
        .expect("the operator makes the backup CronJob")
}

/// The Pod of the restore Job (`spec.restoreFrom`).
fn restore_pod(state: &DesiredState) -> PodSpec {
    match &state.restore {
        Some(Child::Job(job)) => job.spec.clone().unwrap().template.spec.unwrap(),
        other => panic!("the operator makes a restore Job, not {other:?}"),
    }
}

/// A secret value as a string.
fn secret_value(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("the Secret has data");
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// The container's environment as the kubelet gives it: plain values, and keys of `secrets`
/// (an optional key that none of them has is left out).
fn environment(container: &Container, secrets: &[&Secret]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            env.push((var.name.clone(), value.clone()));
            continue;
        }
        let key = var
            .value_from
            .as_ref()
            .and_then(|from| from.secret_key_ref.as_ref())
            .unwrap_or_else(|| panic!("{} is a value or a Secret's key", var.name));
        let value = secrets
            .iter()
            .find(|secret| secret.metadata.name.as_deref() == Some(key.name.as_str()))
            .and_then(|secret| secret.data.as_ref()?.get(&key.key));
        match value {
            Some(value) => env.push((
                var.name.clone(),
                String::from_utf8(value.0.clone()).unwrap(),
            )),
            None if key.optional == Some(true) => {}
            None => panic!("no key {} in the Secret {}", key.key, key.name),
        }
    }
    env
}

/// `$(NAME)` replaced by NAME's value, as the kubelet expands a container's command and args.
fn expand(text: &str, env: &[(String, String)]) -> String {
    env.iter().fold(text.to_owned(), |text, (name, value)| {
        text.replace(&format!("$({name})"), value)
    })
}

// ------------------------------------------------------------------ images

/// `scripts/images.sh ARGS`: the `IMAGE ARCHIVE` lines it printed (built once, then found).
fn images_sh(args: &[&str]) -> Vec<(String, PathBuf)> {
    let output = Command::new(repo().join("scripts/images.sh"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/images.sh runs");
    assert!(
        output.status.success(),
        "scripts/images.sh {args:?} failed (its messages are above)"
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    printed
        .lines()
        .map(|line| {
            let (image, archive) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("scripts/images.sh printed {printed:?}"));
            let archive = PathBuf::from(archive);
            assert!(
                archive.is_file(),
                "{} is {image}'s archive",
                archive.display()
            );
            (image.to_owned(), archive)
        })
        .collect()
}

/// The one image `scripts/images.sh NAME` builds.
fn image_of(name: &str) -> String {
    let mut built = images_sh(&[name]);
    assert_eq!(built.len(), 1, "{built:?}");
    built.remove(0).0
}

/// What the runtime reads from an image's configuration.
struct ImageConfig {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
    stop_signal: String,
}

fn image_config(image: &str) -> ImageConfig {
    let output = buildah()
        .args(["inspect", "--type", "image", image])
        .output()
        .expect("buildah runs (scripts/images.sh installs it)");
    assert!(
        output.status.success(),
        "buildah inspect {image}: {output:?}"
    );
    let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
    let config = &inspected["OCIv1"]["config"];
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    ImageConfig {
        entrypoint: strings(&config["Entrypoint"]),
        cmd: strings(&config["Cmd"]),
        user: config["User"].as_str().unwrap_or_default().to_owned(),
        stop_signal: config["StopSignal"]
            .as_str()
            .unwrap_or("SIGTERM")
            .to_owned(),
    }
}

// ------------------------------------------------------------------ running containers

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{program} cannot run ({error}): apt-get install iproute2"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace of the test's own, with a veth pair: the host at `.1`, the namespace at
/// `.2` of a /30 in 10.213.0.0/16. Deleted (with the pair) when dropped.
struct NetworkNamespace {
    name: String,
    address: String,
    host_address: String,
}

impl NetworkNamespace {
    fn create() -> NetworkNamespace {
        let id = &random_hex()[..6];
        // The test's process id in the name: a later run removes what a killed one left.
        let name = format!("letsgo-image-{}-{id}", std::process::id());
        let (host, inside) = (format!("lgi{id}h"), format!("lgi{id}c"));
        let third = u8::from_str_radix(&id[..2], 16).unwrap();
        let fourth = u8::from_str_radix(&id[2..4], 16).unwrap() & 0xfc;
        let prefix = format!("10.213.{third}");
        let namespace = NetworkNamespace {
            name: name.clone(),
            address: format!("{prefix}.{}", fourth + 2),
            host_address: format!("{prefix}.{}", fourth + 1),
        };
        run("ip", &["netns", "add", &name]);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", &name]);
        let host_address = format!("{}/30", namespace.host_address);
        run("ip", &["addr", "add", &host_address, "dev", &host]);
        run("ip", &["link", "set", &host, "up"]);
        let address = format!("{}/30", namespace.address);
        run(
            "ip",
            &["-n", &name, "addr", "add", &address, "dev", &inside],
        );
        run("ip", &["-n", &name, "link", "set", &inside, "up"]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        namespace
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn at(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.address).parse().unwrap()
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Twelve random hexadecimal digits.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// Whether the process that made a `letsgo-image-<pid>-...` name (or the Kafka test's former
/// `letsgo-kafka-<pid>-...`) has ended.
fn left_by_an_ended_run(name: &str) -> bool {
    name.strip_prefix("letsgo-image-")
        .or_else(|| name.strip_prefix("letsgo-kafka-"))
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the containers and network namespaces a killed run of this test left behind.
fn remove_what_ended_runs_left() {
    let listed = buildah()
        .args([
            "containers",
            "--noheading",
            "--format",
            "{{.ContainerName}}",
        ])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    for name in listed.lines().filter(|name| left_by_an_ended_run(name)) {
        let _ = buildah().args(["rm", name]).output();
    }
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    for line in namespaces.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if left_by_an_ended_run(name) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The test's files (volumes, /etc/hosts, the containers' logs): removed when dropped, a
/// failed run's too.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(prefix: &str) -> WorkDir {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        WorkDir(dir)
    }

    /// An empty volume as the kubelet gives it to a Pod with `fsGroup`: the group's, setgid and
    /// group-writable.
    fn volume(&self, name: &str, fs_group: i64) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        run("chown", &[&format!("0:{fs_group}"), dir.to_str().unwrap()]);
        run("chmod", &["2775", dir.to_str().unwrap()]);
        dir
    }

    /// A ConfigMap volume: a file per key.
    fn config_map_volume(&self, name: &str, map: &ConfigMap) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (key, value) in map.data.iter().flatten() {
            std::fs::write(dir.join(key), value).unwrap();
        }
        run("chmod", &["-R", "a+rX", dir.to_str().unwrap()]);
        dir
    }

    /// The kubelet's /etc/hosts for a Pod named `host`, with `services` (a Service's address
    /// as the operator writes it, fully qualified with the root's dot) standing in for the
    /// cluster's DNS names of the namespace's address.
    fn hosts(&self, namespace: &NetworkNamespace, host: &str, services: &[&str]) -> PathBuf {
        let path = self.0.join(format!("hosts-{host}"));
        let mut text = format!("127.0.0.1 localhost\n{} {host}\n", namespace.address);
        for service in services {
            let name = service.trim_end_matches('.');
            text.push_str(&format!("{} {name} {name}.\n", namespace.address));
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A buildah working container of an image (its own root filesystem), removed when dropped.
struct WorkingContainer(String);

impl WorkingContainer {
    fn of(image: &str) -> WorkingContainer {
        let made = buildah()
            .args([
                "from",
                "--pull-never",
                "--name",
                &unique_name("letsgo-image"),
                image,
            ])
            .output()
            .expect("buildah runs (scripts/images.sh installs it)");
        assert!(
            made.status.success(),
            "buildah from {image}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        WorkingContainer(String::from_utf8(made.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for WorkingContainer {
    fn drop(&mut self) {
        let _ = buildah().args(["rm", &self.0]).output();
    }
}

/// A Pod's container as the kubelet would run it, in a network namespace.
#[derive(Clone)]
struct Run {
    image: String,
    argv: Vec<String>,
    user: String,
    env: Vec<(String, String)>,
    /// buildah's `-v` values: the Pod's volumes and /etc/hosts.
    mounts: Vec<String>,
    network: String,
    hostname: String,
    stop_signal: String,
}

impl Run {
    /// `container` of `pod` in `image`: the image's entrypoint unless the container gives a
    /// command, the container's args (else, without a command, the image's), the Pod's user,
    /// the environment from `secrets`, and `volumes` (the Pod's volume names to host paths).
    fn of(
        image: &str,
        pod: &PodSpec,
        container: &Container,
        secrets: &[&Secret],
        volumes: &BTreeMap<&str, PathBuf>,
        namespace: &NetworkNamespace,
        hosts: &Path,
    ) -> Run {
        let config = image_config(image);
        let env = environment(container, secrets);
        let expanded = |list: &Vec<String>| -> Vec<String> {
            list.iter().map(|item| expand(item, &env)).collect()
        };
        let argv = match (&container.command, &container.args) {
            (Some(command), args) => [
                expanded(command),
                expanded(args.as_ref().unwrap_or(&vec![])),
            ]
            .concat(),
            (None, Some(args)) => [config.entrypoint.clone(), expanded(args)].concat(),
            (None, None) => [config.entrypoint.clone(), config.cmd.clone()].concat(),
        };
        let context = pod
            .security_context
            .as_ref()
            .expect("a Pod security context");
        let container_context = container.security_context.as_ref();
        let uid = container_context
            .and_then(|c| c.run_as_user)
            .or(context.run_as_user)
            .expect("the Pod names its user");
        let gid = container_context
            .and_then(|c| c.run_as_group)
            .or(context.run_as_group)
            .unwrap_or(uid);
        let mut mounts = vec![format!("{}:/etc/hosts:ro", hosts.display())];
        for mount in container.volume_mounts.iter().flatten() {
            let source = volumes
                .get(mount.name.as_str())
                .unwrap_or_else(|| panic!("the test gives the volume {}", mount.name));
            let options = if mount.read_only == Some(true) {
                ":ro"
            } else {
                ""
            };
            mounts.push(format!(
                "{}:{}{options}",
                source.display(),
                mount.mount_path
            ));
        }
        Run {
            image: image.to_owned(),
            argv,
            user: format!("{uid}:{gid}"),
            env,
            mounts,
            network: format!("ns:{}", namespace.path()),
            hostname: pod_host(container),
            stop_signal: config.stop_signal,
        }
    }

    /// `argv` in `container` with this run's user, environment, volumes and network.
    fn command(&self, container: &WorkingContainer, argv: &[String]) -> Command {
        let mut command = buildah();
        command.args([
            "run",
            // The kubelet's /etc/hosts, not buildah's (which would take the place of the mount).
            "--no-hosts",
            "--network",
            &self.network,
            "--hostname",
            &self.hostname,
            "--user",
            &self.user,
        ]);
        for mount in &self.mounts {
            command.args(["-v", mount]);
        }
        for (name, value) in &self.env {
            command.args(["--env", &format!("{name}={value}")]);
        }
        command.arg(&container.0).arg("--").args(argv);
        command
    }

    /// Runs to its end in a container of its own, as an init container or a Job's does.
    fn run_to_end(&self) -> Output {
        let container = WorkingContainer::of(&self.image);
        self.command(&container, &self.argv)
            .output()
            .expect("buildah runs")
    }

    /// `argv` in the running container, as an exec probe runs.
    fn exec(&self, running: &Running, argv: &[&str]) -> Output {
        let argv: Vec<String> = argv.iter().map(|arg| (*arg).to_owned()).collect();
        self.command(&running.container, &argv)
            .output()
            .expect("buildah runs")
    }

    /// Started in a container of its own, its output in `work`.
    fn start(&self, work: &WorkDir, namespace: &NetworkNamespace) -> Running {
        let container = WorkingContainer::of(&self.image);
        let log = work.0.join(format!("{}.log", container.0));
        let file = std::fs::File::create(&log).unwrap();
        let process = self
            .command(&container, &self.argv)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("buildah runs");
        Running {
            process,
            log,
            namespace: namespace.name.clone(),
            stop_signal: self.stop_signal.clone(),
            stopped: false,
            container,
        }
    }
}

/// The Pod's host name (`<statefulset>-0`): the container's name stands in for the Pod's.
fn pod_host(container: &Container) -> String {
    format!("shop-{}-0", container.name)
}

/// A running container. Stopped as containerd stops it (the image's stop signal to its first
/// process; buildah itself would kill the container on a signal) and removed when dropped.
struct Running {
    process: Process,
    log: PathBuf,
    namespace: String,
    stop_signal: String,
    stopped: bool,
    container: WorkingContainer,
}

impl Running {
    /// Answers how the run ended, `None` once stopped.
    fn stop(&mut self) -> Option<ExitStatus> {
        let signal = self.stop_signal.clone();
        self.end_with(&signal)
    }

    /// SIGKILL, as an out-of-memory kill or a node's crash ends it: nothing is cleaned up.
    fn kill(&mut self) -> Option<ExitStatus> {
        self.end_with("SIGKILL")
    }

    fn end_with(&mut self, signal: &str) -> Option<ExitStatus> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.namespace])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        // The container's first process: the one whose parent is outside the namespace.
        let pids: Vec<&str> = pids.split_whitespace().collect();
        let parent = |pid: &str| -> String {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))
                .map(|ppid| ppid.trim().to_owned())
                .unwrap_or_default()
        };
        let signal = format!("-{}", signal.trim_start_matches("SIG"));
        for pid in pids
            .iter()
            .filter(|pid| !pids.contains(&parent(pid).as_str()))
        {
            let _ = Command::new("kill")
                .args([signal.as_str(), pid])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.process.kill();
                return Some(self.process.wait().unwrap());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `ready` until it holds; panics with the log if the container exits or 120 s pass.
    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Running) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if ready(self) {
                return;
            }
            if let Some(status) = self.process.try_wait().unwrap() {
                panic!(
                    "the container exited ({status}) before {what}; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not {what} after 120 s; the container's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The exec probe of `container` (readiness), as the kubelet runs it.
fn exec_probe(container: &Container) -> Vec<String> {
    container
        .readiness_probe
        .as_ref()
        .and_then(|probe| probe.exec.as_ref())
        .and_then(|exec| exec.command.clone())
        .expect("an exec readiness probe")
}

fn succeeded(output: &Output) -> bool {
    output.status.success()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ------------------------------------------------------------------ PostgreSQL

/// `psql` from the host to the server at `address`, signing in as `user` with `password`.
fn psql(address: &str, user: &str, password: &str, database: &str, sql: &str) -> Output {
    Command::new("psql")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .args(["--no-psqlrc", "-At", "-v", "ON_ERROR_STOP=1"])
        .args([
            "-h", address, "-p", "5432", "-U", user, "-d", database, "-c", sql,
        ])
        .output()
        .unwrap_or_else(|error| {
            panic!("psql cannot run ({error}): apt-get install postgresql-client")
        })
}

/// The image of `scripts/images.sh postgresql` in the operator's PostgreSQL StatefulSet: the
/// credentials init container leaves an empty volume alone; the server initialises it with
/// the Secret's password and the databases of the init ConfigMap, passes its readiness probe
/// (`pg_isready`) and takes the StatefulSet's max_connections; the backup Job's container dumps
/// the databases with the image's tools and the restore Job's brings a dropped row back. After
/// a stop, with a new Secret (made again after a loss), the init container sets the new
/// password on the existing data (which the kubelet's fsGroup opened to the group), and the
/// server opens it with that password only; after an unclean stop both start again.
#[test]
fn the_postgresql_image_runs_as_the_operators_stateful_set_and_backup_jobs_configure_it() {
    let image = image_of("postgresql");
    remove_what_ended_runs_left();
    let spec = json!({"backup": {"schedule": "0 3 * * *", "keep": 2}});
    let state = desired(spec.clone(), None);
    let set = stateful_set(&state, "shop-postgres");
    let pod = pod_of(&set);
    let server_container = &pod.containers[0];
    let credentials_container = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(credentials_container.name, "credentials");
    let fs_group = pod.security_context.as_ref().unwrap().fs_group.unwrap();

    let work = WorkDir::new("letsgo-postgresql-image");
    let namespace = NetworkNamespace::create();
    let secret = store_secret(&state);
    // The backup Jobs reach the server by its Service's address.
    let backup_pod = backup_pod(&state);
    let service = environment(&backup_pod.containers[0], &[&secret])
        .into_iter()
        .find_map(|(name, value)| (name == "PGHOST").then_some(value))
        .expect("the backup Job names its server");
    let hosts = work.hosts(&namespace, "shop-postgres-0", &[&service]);
    let volumes = BTreeMap::from([
        ("data", work.volume("data", fs_group)),
        (
            "init",
            work.config_map_volume("init", &config_map(&state, "shop-postgres-init")),
        ),
        ("backups", work.volume("backups", fs_group)),
        ("tmp", work.volume("tmp", fs_group)),
        (
            "scripts",
            work.config_map_volume("scripts", &config_map(&state, "shop-backup-scripts")),
        ),
    ]);
    let of = |container: &Container, pod: &PodSpec, secret: &Secret| {
        Run::of(
            &image,
            pod,
            container,
            &[secret],
            &volumes,
            &namespace,
            &hosts,
        )
    };
    let user = "letsgo";
    let password = secret_value(&secret, "postgres-password");
    let address = namespace.address.clone();

    let said = of(credentials_container, &pod, &secret).run_to_end();
    assert!(succeeded(&said), "credentials on an empty volume: {said:?}");
    assert!(
        text(&said).trim().is_empty(),
        "an empty volume is left to the server: {}",
        text(&said)
    );
    let server = of(server_container, &pod, &secret);
    let probe = exec_probe(server_container);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let mut running = server.start(&work, &namespace);
    running.wait_until("ready (pg_isready, the readiness probe)", |running| {
        succeeded(&server.exec(running, &probe))
    });
    let log = running.log();
    assert!(
        log.contains("initialising") && log.contains("create-databases.sql"),
        "the empty volume was initialised with the init ConfigMap's SQL:\n{log}"
    );

    let databases = psql(
        &address,
        user,
        &password,
        "postgres",
        "SELECT datname FROM pg_database",
    );
    assert!(
        succeeded(&databases),
        "the Secret's password signs in: {databases:?}"
    );
    let listed = String::from_utf8_lossy(&databases.stdout).into_owned();
    for database in letsgo_facts::DATABASES {
        assert!(
            listed.lines().any(|line| line == database),
            "the database {database} exists: {listed}"
        );
    }
    let limit = psql(
        &address,
        user,
        &password,
        "postgres",
        "SHOW max_connections",
    );
    assert_eq!(
        String::from_utf8_lossy(&limit.stdout).trim(),
        "100",
        "the StatefulSet's max_connections: {limit:?}"
    );
    let wrong = psql(&address, user, "not-the-password", "postgres", "SELECT 1");
    assert!(
        !succeeded(&wrong) && text(&wrong).contains("password authentication failed"),
        "another password is refused: {wrong:?}"
    );
    let written = psql(
        &address,
        user,
        &password,
        "order",
        "CREATE TABLE image_check (note text); INSERT INTO image_check VALUES ('kept')",
    );
    assert!(succeeded(&written), "{written:?}");

    // The backup Job's container (the Store's PostgreSQL image, run as the Job runs it) dumps
    // every database; the restore Job's brings back what was lost since.
    let backup = of(&backup_pod.containers[0], &backup_pod, &secret).run_to_end();
    assert!(
        succeeded(&backup),
        "the backup Job in the image: {backup:?}"
    );
    let summary = String::from_utf8_lossy(&backup.stdout).into_owned();
    let name = summary
        .strip_prefix("backup ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("the backup names itself: {summary}"))
        .to_owned();
    let dropped = psql(
        &address,
        user,
        &password,
        "order",
        "DELETE FROM image_check",
    );
    assert!(succeeded(&dropped), "{dropped:?}");
    let mut with_restore = spec.clone();
    with_restore["restoreFrom"] = json!(name);
    let restore_state = desired(with_restore, Some(&secret));
    let restore_pod = restore_pod(&restore_state);
    let restored = of(&restore_pod.containers[0], &restore_pod, &secret).run_to_end();
    assert!(
        succeeded(&restored),
        "the restore Job in the image: {restored:?}"
    );
    let rows = psql(
        &address,
        user,
        &password,
        "order",
        "SELECT note FROM image_check",
    );
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "kept",
        "{rows:?}"
    );

    // Stopped as containerd stops it: the image's stop signal, a clean shutdown.
    let status = running.stop().unwrap();
    assert!(
        running.log().contains("database system is shut down"),
        "a clean stop ({status}); log:\n{}",
        running.log()
    );
    drop(running);

    // The kubelet applies the Pod's fsGroup again as it mounts the volume for the next Pod:
    // group-owned, group-writable, directories setgid.
    let data = volumes["data"].to_str().unwrap();
    run("chgrp", &["-R", &fs_group.to_string(), data]);
    run(
        "find",
        &[data, "-type", "f", "-exec", "chmod", "ug+rw", "{}", "+"],
    );
    run(
        "find",
        &[
            data,
            "-type",
            "d",
            "-exec",
            "chmod",
            "ug+rwx,g+s",
            "{}",
            "+",
        ],
    );

    // The Secret made again: new credentials, the same volume.
    let renewed = store_secret(&desired(spec, None));
    let new_password = secret_value(&renewed, "postgres-password");
    assert_ne!(new_password, password);
    let said = of(credentials_container, &pod, &renewed).run_to_end();
    assert!(
        succeeded(&said),
        "credentials on the existing data: {said:?}"
    );
    assert!(
        text(&said).contains("the password of role letsgo is the Secret's"),
        "{}",
        text(&said)
    );
    let server = of(server_container, &pod, &renewed);
    let mut again = server.start(&work, &namespace);
    again.wait_until("ready again", |running| {
        succeeded(&server.exec(running, &probe))
    });
    assert!(
        !again.log().contains("initialising"),
        "existing data is not initialised again:\n{}",
        again.log()
    );
    let rows = psql(
        &address,
        user,
        &new_password,
        "order",
        "SELECT note FROM image_check",
    );
    assert!(succeeded(&rows), "the new password signs in: {rows:?}");
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "kept");
    let old = psql(&address, user, &password, "postgres", "SELECT 1");
    assert!(!succeeded(&old), "the old password no longer does: {old:?}");

    // An unclean stop leaves postmaster.pid: the next Pod's init container and server start
    // all the same, the server after crash recovery.
    again.kill();
    drop(again);
    assert!(volumes["data"].join("pgdata/postmaster.pid").exists());
    let said = of(credentials_container, &pod, &renewed).run_to_end();
    assert!(
        succeeded(&said) && text(&said).contains("postmaster.pid"),
        "credentials after an unclean stop: {said:?}"
    );
    let mut recovered = server.start(&work, &namespace);
    recovered.wait_until("ready after an unclean stop", |running| {
        succeeded(&server.exec(running, &probe))
    });
    let rows = psql(
        &address,
        user,
        &new_password,
        "order",
        "SELECT note FROM image_check",
    );
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "kept",
        "{rows:?}"
    );
}

// ------------------------------------------------------------------ Redis

/// A Redis connection speaking RESP: each call answers the reply's first line (a bulk string's
/// value in place of its length).
struct Redis(BufReader<TcpStream>);

impl Redis {
    fn connect(address: SocketAddr) -> Redis {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Redis(BufReader::new(stream))
    }

    fn call(&mut self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.0.get_mut().write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        if line.starts_with('$') && !line.starts_with("$-1") {
            line.clear();
            self.0.read_line(&mut line).unwrap();
        }
        line.trim_end().to_owned()
    }
}

/// The image of `scripts/images.sh redis` in the operator's Redis StatefulSet: its arguments
/// (the password expanded from the Secret) start the server; the readiness probe's
/// `redis-cli ping` answers with REDISCLI_AUTH; a client is refused until it signs in with the
/// Secret's password; what it wrote is on the volume (appendonly) and served again after a
/// stop and a start.
#[test]
fn the_redis_image_runs_as_the_operators_stateful_set_configures_it() {
    let image = image_of("redis");
    remove_what_ended_runs_left();
    let state = desired(json!({}), None);
    let set = stateful_set(&state, "shop-redis");
    let pod = pod_of(&set);
    let container = &pod.containers[0];
    let fs_group = pod.security_context.as_ref().unwrap().fs_group.unwrap();
    let work = WorkDir::new("letsgo-redis-image");
    let namespace = NetworkNamespace::create();
    let hosts = work.hosts(&namespace, "shop-redis-0", &[]);
    let volume = work.volume("data", fs_group);
    let volumes = BTreeMap::from([("data", volume.clone())]);
    let secret = store_secret(&state);
    let password = secret_value(&secret, "redis-password");
    let server = Run::of(
        &image,
        &pod,
        container,
        &[&secret],
        &volumes,
        &namespace,
        &hosts,
    );
    assert!(
        server.argv.contains(&password),
        "the kubelet expands $(REDIS_PASSWORD): {:?}",
        container.args
    );
    let probe = exec_probe(container);
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let address = namespace.at(6379);

    let mut running = server.start(&work, &namespace);
    running.wait_until("ready (redis-cli ping, the readiness probe)", |running| {
        let answer = server.exec(running, &probe);
        succeeded(&answer) && String::from_utf8_lossy(&answer.stdout).contains("PONG")
    });
    let mut client = Redis::connect(address);
    assert!(
        client.call(&["PING"]).starts_with("-NOAUTH"),
        "a password is required"
    );
    assert!(
        client
            .call(&["AUTH", "not-the-password"])
            .starts_with("-WRONGPASS")
    );
    assert_eq!(client.call(&["AUTH", &password]), "+OK");
    assert_eq!(client.call(&["SET", "image-check", "kept"]), "+OK");
    drop(client);
    let status = running.stop().unwrap();
    assert!(
        running.log().contains("ready to exit"),
        "a clean stop ({status}); log:\n{}",
        running.log()
    );
    drop(running);
    assert!(
        volume.join("appendonlydir").is_dir(),
        "the append-only file is on the volume"
    );

    let mut again = server.start(&work, &namespace);
    again.wait_until("ready again", |running| {
        succeeded(&server.exec(running, &probe))
    });
    let mut client = Redis::connect(address);
    assert_eq!(client.call(&["AUTH", &password]), "+OK");
    assert_eq!(client.call(&["GET", "image-check"]), "kept");
}

// ------------------------------------------------------------------ etcd

/// One HTTP/1.1 request; answers the status code and the body.
fn http(address: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

fn base64(bytes: &[u8]) -> String {
    serde_json::to_value(ByteString(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The image of `scripts/images.sh etcd` in the operator's etcd StatefulSet (a Store with etcd
/// discovery): the StatefulSet's command and arguments start it on the volume, its readiness
/// path (`/health`) answers healthy, and a key put through the v3 API is read back after a stop
/// and a start.
#[test]
fn the_etcd_image_runs_as_the_operators_stateful_set_configures_it() {
    let image = image_of("etcd");
    remove_what_ended_runs_left();
    let state = desired(
        json!({"discovery": "etcd", "middleware": {"etcd": {"managed": {}}}}),
        None,
    );
    let set = stateful_set(&state, "shop-etcd");
    let pod = pod_of(&set);
    let container = &pod.containers[0];
    let fs_group = pod.security_context.as_ref().unwrap().fs_group.unwrap();
    let health = container
        .readiness_probe
        .as_ref()
        .and_then(|probe| probe.http_get.as_ref())
        .and_then(|get| get.path.clone())
        .expect("an HTTP readiness probe");
    let work = WorkDir::new("letsgo-etcd-image");
    let namespace = NetworkNamespace::create();
    let hosts = work.hosts(&namespace, "shop-etcd-0", &[]);
    let volumes = BTreeMap::from([("data", work.volume("data", fs_group))]);
    let secret = store_secret(&state);
    let server = Run::of(
        &image,
        &pod,
        container,
        &[&secret],
        &volumes,
        &namespace,
        &hosts,
    );
    let address = namespace.at(2379);
    let healthy = |_: &Running| {
        http(address, "GET", &health, "")
            .is_some_and(|(status, body)| status == 200 && body.contains("\"health\":\"true\""))
    };
    let key = base64(b"letsgo/image-check");

    let mut running = server.start(&work, &namespace);
    running.wait_until("healthy (the readiness probe's path)", healthy);
    let put = http(
        address,
        "POST",
        "/v3/kv/put",
        &json!({"key": key, "value": base64(b"kept")}).to_string(),
    );
    assert!(
        put.as_ref().is_some_and(|(status, _)| *status == 200),
        "{put:?}"
    );
    let status = running.stop().unwrap();
    assert!(
        status.success(),
        "a clean stop ({status}); log:\n{}",
        running.log()
    );
    drop(running);

    let mut again = server.start(&work, &namespace);
    again.wait_until("healthy again", healthy);
    let (status, body) = http(
        address,
        "POST",
        "/v3/kv/range",
        &json!({"key": key}).to_string(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&base64(b"kept")), "the key is kept: {body}");
}

// ------------------------------------------------------------------ the backups' S3 client

/// moto's S3 server, as the backup scripts' test runs it: from `S3_TOOLS_DIR`, else the venv
/// `make test` makes, else PATH.
fn moto_server() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    [
        std::env::var_os("S3_TOOLS_DIR").map(PathBuf::from),
        Some(target.join("tools/s3-venv/bin")),
    ]
    .into_iter()
    .flatten()
    .map(|dir| dir.join("moto_server"))
    .find(|path| path.is_file())
    .unwrap_or_else(|| PathBuf::from("moto_server"))
}

/// A process killed when dropped.
struct Killed(Process);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The image of `scripts/images.sh awscli` as the S3 client of the operator's backup Jobs (a
/// Store whose backups go to a bucket): the upload container's `bash /scripts/s3-upload.sh`
/// puts a backup in the bucket as the Job's user and environment (HOME, the bucket's Secret),
/// and the restore Job's download container gets it back whole.
#[test]
fn the_awscli_image_runs_the_backup_jobs_s3_scripts() {
    let image = image_of("awscli");
    remove_what_ended_runs_left();
    let work = WorkDir::new("letsgo-awscli-image");
    let namespace = NetworkNamespace::create();
    let moto = moto_server();
    let port = support::free_port();
    let log = std::fs::File::create(work.0.join("moto.log")).unwrap();
    let _moto = Killed(
        Command::new(&moto)
            .args(["-H", &namespace.host_address, "-p", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "{} cannot run ({error}): `make test` installs it (scripts/test.sh, \
                     ensure_s3_test_tools), or `python3 -m venv target/tools/s3-venv && \
                     target/tools/s3-venv/bin/pip install 'moto[server]'`",
                    moto.display()
                )
            }),
    );
    let endpoint = format!("http://{}:{port}", namespace.host_address);
    let spec = json!({"backup": {"schedule": "0 3 * * *", "s3": {
        "bucket": "letsgo-backups", "endpoint": endpoint, "secretName": "backup-bucket"}}});
    let state = desired(spec.clone(), None);
    let bucket_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "backup-bucket"},
        "data": {
            "AWS_ACCESS_KEY_ID": base64(b"testing"),
            "AWS_SECRET_ACCESS_KEY": base64(b"testing"),
        }
    }))
    .unwrap();
    let secret = store_secret(&state);
    let backup_pod = backup_pod(&state);
    let upload = &backup_pod.containers[0];
    let fs_group = backup_pod
        .security_context
        .as_ref()
        .unwrap()
        .fs_group
        .unwrap();
    let backups = work.volume("backups", fs_group);
    let hosts = work.hosts(&namespace, "shop-backup", &[]);
    let mut volumes = BTreeMap::from([
        ("backups", backups.clone()),
        ("tmp", work.volume("tmp", fs_group)),
        (
            "scripts",
            work.config_map_volume("scripts", &config_map(&state, "shop-backup-scripts")),
        ),
    ]);
    let secrets = [&secret, &bucket_secret];

    let version = Run {
        argv: vec!["aws".into(), "--version".into()],
        ..Run::of(
            &image,
            &backup_pod,
            upload,
            &secrets,
            &volumes,
            &namespace,
            &hosts,
        )
    }
    .run_to_end();
    assert!(
        succeeded(&version) && text(&version).starts_with("aws-cli/2."),
        "{version:?}"
    );
    let make_bucket = Run {
        argv: [
            "aws",
            "--endpoint-url",
            &endpoint,
            "s3",
            "mb",
            "s3://letsgo-backups",
        ]
        .map(String::from)
        .to_vec(),
        ..Run::of(
            &image,
            &backup_pod,
            upload,
            &secrets,
            &volumes,
            &namespace,
            &hosts,
        )
    };
    let started = Instant::now();
    loop {
        let made = make_bucket.run_to_end();
        if succeeded(&made) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the bucket cannot be made at {endpoint}: {made:?}; moto's log:\n{}",
            std::fs::read_to_string(work.0.join("moto.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A backup as backup.sh leaves it in the scratch volume.
    let name = "20250101T030000Z";
    let made = backups.join(name);
    std::fs::create_dir_all(&made).unwrap();
    std::fs::write(made.join("user.dump"), "a dump of the user database").unwrap();
    std::fs::write(made.join("MANIFEST"), "27 user\n").unwrap();
    run(
        "chown",
        &[
            "-R",
            &format!("{fs_group}:{fs_group}"),
            backups.to_str().unwrap(),
        ],
    );
    let uploaded = Run::of(
        &image,
        &backup_pod,
        upload,
        &secrets,
        &volumes,
        &namespace,
        &hosts,
    )
    .run_to_end();
    assert!(
        succeeded(&uploaded),
        "the upload Job's container: {uploaded:?}"
    );
    assert!(
        // Its dump and its MANIFEST.
        text(&uploaded).contains(&format!("backup {name}: {} bytes", 27 + 8)),
        "{}",
        text(&uploaded)
    );

    let mut with_restore = spec;
    with_restore["restoreFrom"] = json!(name);
    let restore_pod = restore_pod(&desired(with_restore, Some(&secret)));
    let download = &restore_pod.init_containers.as_ref().unwrap()[0];
    let fresh = work.volume("restore-backups", fs_group);
    volumes.insert("backups", fresh.clone());
    let downloaded = Run::of(
        &image,
        &restore_pod,
        download,
        &secrets,
        &volumes,
        &namespace,
        &hosts,
    )
    .run_to_end();
    assert!(
        succeeded(&downloaded),
        "the restore Job's download: {downloaded:?}"
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join(name).join("user.dump")).unwrap(),
        "a dump of the user database"
    );
}

// ------------------------------------------------------------------ the shop's images

/// The gateway's image of `scripts/images.sh shop` (the Dockerfile's runtime target, from the
/// binary built on the host) is the one the operator's Deployment names for a Store whose
/// registry is `localhost/letsgo`; it runs as uid 65532, the Deployment's user, and its
/// entrypoint answers `--help`.
#[test]
fn the_gateway_image_runs_its_binary_as_the_deployments_user() {
    let built = images_sh(&["shop", "gateway"]);
    assert_eq!(built.len(), 1, "{built:?}");
    let image = &built[0].0;
    remove_what_ended_runs_left();
    let state = desired(
        json!({"image": {"registry": "localhost/letsgo", "tag": "0.1.0"}}),
        None,
    );
    let deployment = state
        .all()
        .find_map(|child| match child {
            Child::Deployment(d) if d.metadata.name.as_deref() == Some("shop-gateway") => {
                Some(d.clone())
            }
            _ => None,
        })
        .expect("the operator makes the gateway's Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let tag = std::fs::read_to_string(repo().join("charts/letsgo/Chart.yaml"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("appVersion: "))
        .map(|version| version.trim_matches('"').to_owned())
        .unwrap();
    assert_eq!(image, &format!("localhost/letsgo/letsgo-gateway:{tag}"));
    if tag == "0.1.0" {
        assert_eq!(container.image.as_deref(), Some(image.as_str()));
    }
    let uid = pod.security_context.as_ref().unwrap().run_as_user.unwrap();
    let config = image_config(image);
    assert_eq!(
        config.user,
        format!("{uid}:{uid}"),
        "the image's user is the Deployment's"
    );

    // The image's own user and entrypoint, no override.
    let working = WorkingContainer::of(image);
    let in_image = |argv: &[&str]| -> Output {
        buildah()
            .args(["run", "--network", "none", &working.0, "--"])
            .args(argv)
            .output()
            .expect("buildah runs")
    };
    let id = in_image(&["id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout).trim(),
        uid.to_string(),
        "{id:?}"
    );
    let argv: Vec<&str> = config
        .entrypoint
        .iter()
        .map(String::as_str)
        .chain(["--help"])
        .collect();
    let help = in_image(&argv);
    assert!(
        succeeded(&help) && String::from_utf8_lossy(&help.stdout).contains("Usage"),
        "{help:?}"
    );
}

// ------------------------------------------------------------------ Apache Kafka

/// The image of `scripts/images.sh kafka` runs with exactly the environment, user and data
/// path of the operator's Kafka StatefulSet: it formats the empty volume with the Store's
/// cluster id, passes the readiness probe (a TCP connection to 9092), takes a topic, an event
/// and a consumer group, stops cleanly on SIGTERM, and starts again on the same volume with
/// the event still there.
#[test]
fn the_kafka_image_runs_as_the_operators_stateful_set_configures_it() {
    let image = image_of("kafka");
    remove_what_ended_runs_left();
    let state = desired(json!({}), None);
    let set = stateful_set(&state, "shop-kafka");
    let pod = pod_of(&set);
    let container = &pod.containers[0];
    // The image is the Kafka the operator's default names, at the same version.
    let default = container.image.as_deref().unwrap();
    let version = image.rsplit(':').next().unwrap();
    assert_eq!(
        default,
        format!("apache/kafka:{version}"),
        "the operator's default Kafka"
    );
    let fs_group = pod.security_context.as_ref().unwrap().fs_group.unwrap();
    let port = container.ports.as_ref().unwrap()[0].container_port;
    let work = WorkDir::new("letsgo-kafka-image");
    let namespace = NetworkNamespace::create();
    let hosts = work.hosts(&namespace, "shop-kafka-0", &[]);
    let volumes = BTreeMap::from([("data", work.volume("data", fs_group))]);
    let secret = store_secret(&state);
    let mut broker = Run::of(
        &image,
        &pod,
        container,
        &[&secret],
        &volumes,
        &namespace,
        &hosts,
    );
    // The Pod's DNS name in the advertised listener is the namespace's address here.
    let advertised = format!("PLAINTEXT://{}:{port}", namespace.address);
    for (name, value) in &mut broker.env {
        if name == "KAFKA_ADVERTISED_LISTENERS" {
            assert!(value.contains("shop-kafka-client.shop.svc"), "{value}");
            value.clone_from(&advertised);
        }
    }

    let bootstrap = format!("{}:{port}", namespace.address);
    let address: SocketAddr = bootstrap.parse().unwrap();
    let ready = |running: &Running| {
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
            && running.log().contains("Kafka Server started")
    };
    let mut running = broker.start(&work, &namespace);
    running.wait_until(
        "ready (a TCP connection to 9092, the readiness probe)",
        ready,
    );
    let topic = unique_name("image-check");
    produce(&bootstrap, &topic, "the first event");
    assert_eq!(consume(&bootstrap, &topic), "the first event");
    assert!(
        running.log().contains("Formatting metadata directory"),
        "the empty volume was formatted with CLUSTER_ID"
    );

    // The image's stop signal (SIGTERM), as the kubelet stops the Pod: the broker shuts down
    // cleanly, and a new container on the same volume serves what the old one held.
    let status = running.stop().unwrap();
    assert!(
        running.log().contains("shut down completed"),
        "a clean stop on SIGTERM ({status}); log:\n{}",
        running.log()
    );
    drop(running);
    let mut again = broker.start(&work, &namespace);
    again.wait_until("ready again", ready);
    assert_eq!(consume(&bootstrap, &topic), "the first event");
    assert!(
        !again.log().contains("Formatting metadata directory"),
        "a formatted volume is not formatted again"
    );
}

fn produce(bootstrap: &str, topic: &str, payload: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    producer
        .send(BaseRecord::to(topic).key("k").payload(payload))
        .map_err(|(error, _)| error)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn consume(bootstrap: &str, topic: &str) -> String {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("image-readers"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message.unwrap();
            return String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        }
    }
    panic!("no event read back from {topic} within 60 s");
}
