//! The images the operator's Pods run where no public registry is reachable, built the offline
//! way (`scripts/images.sh`: a Debian base from Debian's packages, the repository's
//! Containerfile, buildah) and run as the operator's manifests configure them.
//!
//! The container runs under buildah (runc) in a network namespace this test makes, reached from
//! the host through a veth pair, with the environment, user and data volume the operator's
//! StatefulSet gives it. What only a cluster supplies is stood in for, and named: the Pod's
//! DNS name in the advertised listener becomes the namespace's address (nothing here resolves
//! `<store>-kafka.<ns>.svc`), and /etc/hosts names the Pod's host, as the kubelet writes it.
//! Needs root, `ip` (iproute2) and what `scripts/images.sh` installs (buildah, runc,
//! mmdebstrap); a missing one fails the test, naming it.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use letsgo_operator::manifests::{self, StoreRef};
use letsgo_operator::store::Store;
use support::{repo, unique_name};

const BUILDAH: [&str; 3] = ["buildah", "--storage-driver", "vfs"];

/// The Store of examples/store.yaml (its Kafka managed by the operator), as the operator builds
/// it: the Kafka StatefulSet.
fn kafka_stateful_set() -> StatefulSet {
    let spec = serde_json::from_value(serde_json::json!({
        "image": {"registry": "ghcr.io/letsgo", "tag": "0.1.0"}
    }))
    .unwrap();
    let mut store = Store::new("shop", spec);
    store.metadata.namespace = Some("shop".into());
    store.metadata.uid = Some("0b5c3f9e-6d0a-4c57-9d1e-6a1f4f2f1a01".into());
    let target = StoreRef::new(&store).unwrap();
    manifests::desired_state(&target, None, "")
        .middleware
        .into_iter()
        .find_map(|child| match child {
            manifests::Child::StatefulSet(set)
                if set.metadata.name.as_deref() == Some("shop-kafka") =>
            {
                Some(set)
            }
            _ => None,
        })
        .expect("the operator manages the Store's Kafka")
}

/// `scripts/images.sh kafka`: the image's name and its archive (built once, then found).
fn build_kafka_image() -> (String, PathBuf) {
    let output = Command::new(repo().join("scripts/images.sh"))
        .arg("kafka")
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/images.sh runs");
    assert!(
        output.status.success(),
        "scripts/images.sh kafka failed (its messages are above)"
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let (image, archive) = printed
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("scripts/images.sh printed {printed:?}"));
    (image.to_owned(), PathBuf::from(archive))
}

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
}

impl NetworkNamespace {
    fn create() -> NetworkNamespace {
        let id = &uuid_like()[..6];
        // The test's process id in the name: a later run removes what a killed one left.
        let name = format!("letsgo-kafka-{}-{id}", std::process::id());
        let (host, inside) = (format!("lgk{id}h"), format!("lgk{id}c"));
        let third = u8::from_str_radix(&id[..2], 16).unwrap();
        let fourth = u8::from_str_radix(&id[2..4], 16).unwrap() & 0xfc;
        let prefix = format!("10.213.{third}");
        let namespace = NetworkNamespace {
            name: name.clone(),
            address: format!("{prefix}.{}", fourth + 2),
        };
        run("ip", &["netns", "add", &name]);
        run(
            "ip",
            &[
                "link", "add", &host, "type", "veth", "peer", "name", &inside,
            ],
        );
        run("ip", &["link", "set", &inside, "netns", &name]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{prefix}.{}/30", fourth + 1),
                "dev",
                &host,
            ],
        );
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
fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

/// A container of the image, run by buildah as the StatefulSet runs it. Stopped (SIGTERM, as
/// the kubelet stops a Pod) and removed when dropped.
struct RunningContainer {
    name: String,
    process: Child,
    work: PathBuf,
    namespace: String,
    stopped: bool,
}

impl RunningContainer {
    /// SIGTERM to the container's processes, as the kubelet stops a Pod (buildah itself would
    /// kill the container on a signal); answers how the run ended, `None` once stopped.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.namespace])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
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
        std::fs::read_to_string(self.work.join("container.log")).unwrap_or_default()
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        self.stop();
        let mut rm = Command::new(BUILDAH[0]);
        let _ = rm.args(&BUILDAH[1..]).args(["rm", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Whether the process that made a `letsgo-kafka-<pid>-...` name has ended.
fn left_by_an_ended_run(name: &str) -> bool {
    name.strip_prefix("letsgo-kafka-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes the containers and network namespaces a killed run of this test left behind (a
/// container is a whole root filesystem under buildah's vfs storage).
fn remove_what_ended_runs_left() {
    let listed = Command::new(BUILDAH[0])
        .args(&BUILDAH[1..])
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
        let _ = Command::new(BUILDAH[0])
            .args(&BUILDAH[1..])
            .args(["rm", name])
            .output();
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

/// The image of `scripts/images.sh kafka` runs with exactly the environment, user and data
/// path of the operator's Kafka StatefulSet: it formats the empty volume with the Store's
/// cluster id, passes the readiness probe (a TCP connection to 9092), takes a topic, an event
/// and a consumer group, stops cleanly on SIGTERM, and starts again on the same volume with
/// the event still there.
#[test]
fn the_kafka_image_runs_as_the_operators_stateful_set_configures_it() {
    let set = kafka_stateful_set();
    let pod = set.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let (image, archive) = build_kafka_image();
    remove_what_ended_runs_left();
    assert!(
        archive.is_file(),
        "{} is the image's archive",
        archive.display()
    );
    // The image is the Kafka the operator's default names, at the same version.
    let default = container.image.as_deref().unwrap();
    let version = image.rsplit(':').next().unwrap();
    assert_eq!(
        default,
        format!("apache/kafka:{version}"),
        "the operator's default Kafka"
    );

    // The Pod's user, and the group the kubelet gives the volume (fsGroup).
    let context = pod
        .security_context
        .as_ref()
        .expect("a Pod security context");
    let user = context.run_as_user.expect("the StatefulSet names its user");
    let group = context
        .fs_group
        .expect("the StatefulSet gives the volume a group");
    let mount = &container.volume_mounts.as_ref().unwrap()[0].mount_path;
    let port = container.ports.as_ref().unwrap()[0].container_port;
    let namespace = NetworkNamespace::create();
    let work_dir = WorkDir(std::env::temp_dir().join(unique_name("letsgo-kafka-image")));
    let work = &work_dir.0;
    let volume = work.join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    run(
        "chown",
        &[&format!("{user}:{group}"), volume.to_str().unwrap()],
    );
    std::fs::write(
        work.join("hosts"),
        format!("127.0.0.1 localhost\n{} shop-kafka-0\n", namespace.address),
    )
    .unwrap();
    let advertised = format!("PLAINTEXT://{}:{port}", namespace.address);
    let mut env: Vec<String> = Vec::new();
    for var in container.env.as_ref().unwrap() {
        let value = var
            .value
            .clone()
            .expect("the Kafka settings are plain values");
        let value = if var.name == "KAFKA_ADVERTISED_LISTENERS" {
            assert!(value.contains(".svc:9092"), "{value}");
            advertised.clone()
        } else {
            value
        };
        env.push(format!("{}={value}", var.name));
    }

    let start = || -> RunningContainer {
        let logs = work.join(unique_name("run"));
        std::fs::create_dir_all(&logs).unwrap();
        let mut from = Command::new(BUILDAH[0]);
        let made = from
            .args(&BUILDAH[1..])
            .args([
                "from",
                "--pull-never",
                "--name",
                &unique_name("letsgo-kafka"),
                &image,
            ])
            .output()
            .expect("buildah runs (scripts/images.sh installs it)");
        assert!(
            made.status.success(),
            "buildah from: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let name = String::from_utf8(made.stdout).unwrap().trim().to_owned();
        let mut command = Command::new(BUILDAH[0]);
        command.args(&BUILDAH[1..]).args([
            "run",
            // The kubelet's /etc/hosts, not buildah's (which would take the place of the mount).
            "--no-hosts",
            "--network",
            &format!("ns:{}", namespace.path()),
            "--hostname",
            "shop-kafka-0",
            "--user",
            &format!("{user}:{group}"),
            "-v",
            &format!("{}:/etc/hosts:ro", work.join("hosts").display()),
            "-v",
            &format!("{}:{mount}", volume.display()),
        ]);
        for pair in &env {
            command.args(["--env", pair]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("container.log"))
            .unwrap();
        command.args([&name, "--", "/opt/kafka/entrypoint.sh"]);
        let process = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("buildah runs");
        RunningContainer {
            name,
            process,
            work: logs,
            namespace: namespace.name.clone(),
            stopped: false,
        }
    };

    let bootstrap = format!("{}:{port}", namespace.address);
    let mut running = start();
    wait_ready(&mut running, &bootstrap);
    let topic = unique_name("image-check");
    produce(&bootstrap, &topic, "the first event");
    assert_eq!(consume(&bootstrap, &topic), "the first event");
    assert!(
        running.log().contains("Formatting metadata directory"),
        "the empty volume was formatted with CLUSTER_ID"
    );

    // SIGTERM, as the kubelet stops the Pod: the broker shuts down cleanly, and a new
    // container on the same volume serves what the old one held.
    let status = running.stop().unwrap();
    assert!(
        running.log().contains("shut down completed"),
        "a clean stop on SIGTERM ({status}); log:\n{}",
        running.log()
    );
    drop(running);
    let mut again = start();
    wait_ready(&mut again, &bootstrap);
    assert_eq!(consume(&bootstrap, &topic), "the first event");
    assert!(
        !again.log().contains("Formatting metadata directory"),
        "a formatted volume is not formatted again"
    );
    drop(again);
}

/// The test's files (the volume, /etc/hosts, the containers' logs): removed when dropped, a
/// failed run's too.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The readiness probe's check (a TCP connection to the port) and then a Kafka answer.
fn wait_ready(container: &mut RunningContainer, bootstrap: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let address: std::net::SocketAddr = bootstrap.parse().unwrap();
    loop {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
            && container.log().contains("Kafka Server started")
        {
            return;
        }
        if let Some(status) = container.process.try_wait().unwrap() {
            panic!(
                "the container exited ({status}) while starting; its log:\n{}",
                container.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the container is not ready after 120 s; its log:\n{}",
            container.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
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
