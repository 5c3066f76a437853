//! End to end on a node that runs containers: the local control plane's real node
//! (`scripts/kube.sh`: kubelet, containerd, CoreDNS, local-path volumes, NetworkPolicies
//! enforced), the images built offline and loaded into it (`scripts/images.sh`), the operator
//! installed by Helm under the chart's RBAC in a namespace that enforces Pod Security
//! `restricted`, and the shop reached through `kubectl port-forward` to its gateway, as a user
//! reaches it. Every Pod here runs for real: its image is started, its probes called, its
//! volumes provisioned.
//!
//! Needs root and what the scripts install (they name anything missing). The first run builds
//! the images and the node's parts (minutes); later runs find them cached.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Helm, Kube, Namespace, at, chart, condition, repo, unique_name, wait_for};

/// How long a Store may take to be Ready on two cores (Kafka's JVM starts last).
const READY: Duration = Duration::from_secs(600);

/// The local cluster with its real node, and the images loaded into the node: once per run.
fn cluster() -> &'static (Kube, Images) {
    static CLUSTER: OnceLock<(Kube, Images)> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        remember_failures();
        let kube = Kube::local();
        kube.install_crd();
        (kube, Images::build_and_load())
    })
}

/// The message of the test's failure, for the file of what happened (CI shows only part of a
/// failing test's output, and the message may be in the part it cuts).
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Keeps every panic's message and place in [`FAILURE`] before printing it as usual.
fn remember_failures() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|place| format!("{}:{}", place.file(), place.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(a panic without a message)");
        if let Ok(mut failure) = FAILURE.lock() {
            failure.get_or_insert_with(|| format!("panicked at {place}:\n{message}\n"));
        }
        print(info);
    }));
}

/// The images `scripts/images.sh all` built, by what they hold.
struct Images {
    by_name: BTreeMap<String, String>,
    tag: String,
}

impl Images {
    fn build_and_load() -> Images {
        let script = repo().join("scripts/images.sh");
        let output = Command::new(&script)
            .arg("all")
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/images.sh runs");
        assert!(
            output.status.success(),
            "scripts/images.sh all failed (its messages are above)"
        );
        let load = Command::new(&script)
            .args(["load", "/run/letsgo-node/containerd.sock"])
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/images.sh runs");
        assert!(load.status.success(), "scripts/images.sh load failed");
        let by_name = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(|image| {
                let name = image.rsplit('/').next().unwrap();
                let name = name.split(':').next().unwrap().to_owned();
                (name, image.to_owned())
            })
            .collect();
        let chart = support::file(&repo().join("charts/letsgo/Chart.yaml"));
        let tag = chart
            .lines()
            .find_map(|line| line.strip_prefix("appVersion:"))
            .expect("the chart's appVersion")
            .trim()
            .trim_matches('"')
            .to_owned();
        Images { by_name, tag }
    }

    fn get(&self, name: &str) -> &str {
        self.by_name
            .get(name)
            .unwrap_or_else(|| panic!("scripts/images.sh built no {name}: {:?}", self.by_name))
    }
}

/// A namespace enforcing Pod Security `restricted`, with the operator installed in it by Helm
/// (watching only it), its middleware images the ones built here.
struct Scene {
    helm: Helm,
    release: String,
    namespace: Namespace,
}

impl Scene {
    fn new(prefix: &str) -> Scene {
        let (kube, images) = cluster();
        let namespace = Namespace::create(kube, prefix);
        let ns = namespace.name.clone();
        kube.run(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ]);
        let helm = Helm::new(kube);
        let release = unique_name("op");
        let set = |key: &str, value: &str| format!("{key}={value}");
        let values = [
            set("watchNamespace", &ns),
            set("image.registry", "localhost/letsgo"),
            set("image.tag", &images.tag),
            set("image.pullPolicy", "Never"),
            set("middlewareImages.postgres", images.get("debian-postgresql")),
            set("middlewareImages.redis", images.get("debian-redis")),
            set("middlewareImages.kafka", images.get("apache-kafka")),
            set("middlewareImages.etcd", images.get("etcd")),
            set("middlewareImages.backup", images.get("debian-awscli")),
            set("logging.format", "text"),
        ];
        let chart = chart();
        let mut args = vec![
            "install",
            &release,
            &chart,
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "3m",
        ];
        for value in &values {
            args.extend(["--set", value]);
        }
        helm.run(&args);
        Scene {
            helm,
            release,
            namespace,
        }
    }

    fn kube(&self) -> &Kube {
        &self.namespace.kube
    }

    fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Applies Store `name` with `spec` over examples/store-local.yaml's.
    fn apply_store(&self, name: &str, spec: Value) {
        let mut store: Value =
            serde_yaml_like(&support::file(&repo().join("examples/store-local.yaml")));
        store["metadata"] = json!({ "name": name });
        merge(&mut store["spec"], spec);
        self.kube()
            .apply(&store.to_string(), &["-n", self.ns(), "--server-side"]);
    }

    /// Waits for the Store to be Ready with every component, then checks each of its Pods is
    /// Running and Ready by its own probes; the components its Pods run.
    fn wait_ready(&self, name: &str) -> Vec<String> {
        let kube = self.kube();
        let ns = self.ns();
        wait_for(
            &format!("Store {name} to be Ready"),
            READY,
            || {
                kube.get("store", name, ns)
                    .filter(|store| condition(store, "Ready").as_deref() == Some("True"))
            },
            || self.describe(name),
        );
        let pods = kube.json(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            &format!("letsgo.dev/store={name}"),
        ]);
        let pods = pods["items"].as_array().unwrap();
        let mut components: Vec<String> = Vec::new();
        for pod in pods {
            if at(pod, "metadata/labels/job-name").is_string() {
                continue;
            }
            let pod_name = at(pod, "metadata/name").as_str().unwrap();
            assert_eq!(at(pod, "status/phase"), "Running", "{pod_name}");
            assert_eq!(
                condition(pod, "Ready").as_deref(),
                Some("True"),
                "{pod_name}"
            );
            assert_eq!(
                at(pod, "spec/nodeName"),
                "letsgo-node",
                "{pod_name} ran on the real node"
            );
            components.push(
                pod["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        for component in [
            "gateway", "user", "product", "cart", "order", "payment", "postgres",
        ] {
            assert!(
                components.iter().any(|c| c == component),
                "{component} in {components:?}"
            );
        }
        components
    }

    fn describe(&self, name: &str) -> String {
        let kube = self.kube();
        let ns = self.ns();
        let status = kube
            .try_run(
                &["get", "store", name, "-n", ns, "-o", "jsonpath={.status}"],
                None,
            )
            .stdout;
        let pods = kube
            .try_run(&["get", "pods,pvc", "-n", ns, "-o", "wide"], None)
            .stdout;
        let events = kube
            .try_run(
                &["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
                None,
            )
            .stdout;
        format!(
            "status: {}\n{}\n{}",
            String::from_utf8_lossy(&status),
            String::from_utf8_lossy(&pods),
            String::from_utf8_lossy(&events)
        )
    }

    /// The warnings and errors the Store's running containers have logged (the last 300 lines
    /// of each, and of the container before a restart): what a failed request left behind.
    fn warnings(&self, store: &str) -> String {
        let selector = format!("app.kubernetes.io/instance={store}");
        let mut lines = Vec::new();
        for previous in ["--previous=false", "--previous=true"] {
            let output = self.kube().try_run(
                &[
                    "logs",
                    "-n",
                    self.ns(),
                    "-l",
                    &selector,
                    "--all-containers",
                    "--prefix",
                    "--tail=300",
                    "--max-log-requests=30",
                    previous,
                ],
                None,
            );
            lines.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|line| line.contains("\"WARN\"") || line.contains("\"ERROR\""))
                    .map(str::to_owned),
            );
        }
        // The newest 40, each cut to 400 bytes: the rest is in the failure's log file.
        let skip = lines.len().saturating_sub(40);
        lines
            .iter()
            .skip(skip)
            .map(|line| match line.char_indices().nth(400) {
                Some((end, _)) => &line[..end],
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// On a failure, writes the namespace's Events, Pods and every container's log (and its
    /// previous one) to a file under `LETSGO_TEST_LOGS` (default `/var/log/letsgo-tests`, the
    /// 20 newest kept): the namespace goes with the test, and CI shows only part of the output.
    /// Follows every Pod's log from now until the value goes (see [`FollowedLogs`]).
    fn follow_logs(&self) -> FollowedLogs {
        FollowedLogs::start(self.kube(), self.ns())
    }

    fn keep_what_happened(&self) {
        let Some(dir) = test_logs_dir() else { return };
        let mut kept: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        kept.sort();
        for (_, old) in kept.iter().rev().skip(19) {
            let _ = std::fs::remove_file(old);
        }
        let ns = self.ns();
        let kube = self.kube();
        let mut text = String::new();
        if let Some(failure) = FAILURE.lock().ok().and_then(|failure| failure.clone()) {
            text.push_str(&format!("==== failure\n{failure}"));
        }
        let mut section = |title: &str, args: &[&str]| {
            let output = kube.try_run(args, None);
            text.push_str(&format!("==== {title}\n"));
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            text.push_str(&String::from_utf8_lossy(&output.stderr));
        };
        section(
            "events",
            &[
                "get",
                "events",
                "-n",
                ns,
                "--sort-by=.lastTimestamp",
                "-o",
                "wide",
            ],
        );
        section("pods", &["get", "pods", "-n", ns, "-o", "wide"]);
        let pods = kube.try_run(&["get", "pods", "-n", ns, "-o", "name"], None);
        for pod in String::from_utf8_lossy(&pods.stdout).lines() {
            for previous in ["--previous=false", "--previous=true"] {
                section(
                    &format!("logs {pod} {previous}"),
                    &[
                        "logs",
                        "-n",
                        ns,
                        pod,
                        "--all-containers",
                        "--prefix",
                        previous,
                    ],
                );
            }
        }
        // The orders' and payments' states and what waits to be sent, from the shop's own
        // PostgreSQL: what a count that did not add up was made of.
        for pod in String::from_utf8_lossy(&pods.stdout)
            .lines()
            .filter(|pod| pod.ends_with("-postgres-0"))
        {
            for (database, queries) in SHOP_STATE_QUERIES {
                let mut args = vec!["exec", "-n", ns, pod, "--", "psql", "-U", "letsgo"];
                args.extend(["-d", database]);
                for query in *queries {
                    args.extend(["-c", query]);
                }
                section(&format!("{database} data in {pod}"), &args);
            }
        }
        let path = dir.join(format!("{ns}.log"));
        if std::fs::write(&path, text).is_ok() {
            eprintln!(
                "the namespace's Events, Pods and logs are in {}",
                path.display()
            );
        }
    }

    /// Deletes the Store and waits until its Pods are gone (its volumes stay: retention Retain).
    fn delete_store(&self, name: &str) {
        let kube = self.kube();
        let ns = self.ns();
        kube.run(&[
            "delete",
            "store",
            name,
            "-n",
            ns,
            "--wait=true",
            "--timeout=180s",
        ]);
        let selector = format!("letsgo.dev/store={name}");
        wait_for(
            "the Store's Pods to go",
            Duration::from_secs(180),
            || {
                let pods = kube.run(&["get", "pods", "-n", ns, "-l", &selector, "-o", "name"]);
                pods.trim().is_empty().then_some(())
            },
            || kube.run(&["get", "pods", "-n", ns]),
        );
    }

    /// Runs the Store's backup CronJob now (`kubectl create job --from=cronjob/...`) and
    /// returns the backup's name, which its Pod leaves as its termination message.
    fn back_up_now(&self, store: &str) -> String {
        let kube = self.kube();
        let ns = self.ns();
        let job = unique_name("backup-now");
        kube.run(&[
            "create",
            "job",
            "-n",
            ns,
            &job,
            &format!("--from=cronjob/{store}-backup"),
        ]);
        wait_for(
            &format!("the backup Job {job} to succeed"),
            Duration::from_secs(180),
            || {
                let job = kube.get("job", &job, ns)?;
                (at(&job, "status/succeeded").as_i64() >= Some(1)).then_some(())
            },
            || kube.run(&["describe", "job", "-n", ns, &job]),
        );
        let pods = kube.json(&["get", "pods", "-n", ns, "-l", &format!("job-name={job}")]);
        let said = at(
            &pods,
            "items/0/status/containerStatuses/0/state/terminated/message",
        )
        .as_str()
        .unwrap_or_default()
        .to_owned();
        // "backup 20261205T031500Z: 81234 bytes, databases: user product order payment"
        said.strip_prefix("backup ")
            .and_then(|rest| rest.split(':').next())
            .filter(|name| name.len() == 16 && name.ends_with('Z'))
            .unwrap_or_else(|| panic!("the backup Pod said {said:?}: {pods}"))
            .to_owned()
    }

    fn forward(&self, service: &str) -> PortForward {
        PortForward::start(self.kube(), self.ns(), service)
    }

    /// The admin's password from the Store's generated Secret.
    fn admin_password(&self, store: &str) -> String {
        let secret = self.kube().json(&[
            "get",
            "secret",
            &format!("{store}-secrets"),
            "-n",
            self.ns(),
        ]);
        let encoded = secret["data"]["admin-password"].as_str().unwrap();
        let output = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(encoded.as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 runs");
        String::from_utf8(output.stdout).unwrap()
    }
}

/// Where failing tests leave what happened: `LETSGO_TEST_LOGS`, default
/// `/var/log/letsgo-tests` (made when missing; None when it cannot be).
fn test_logs_dir() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("LETSGO_TEST_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/log/letsgo-tests".into());
    std::fs::create_dir_all(&dir).ok().map(|()| dir)
}

/// The log of every Pod of a namespace, followed from when the Pod runs until it goes, into
/// `<namespace>.followed.log` beside the failure's file, kept only if the test fails: a Pod a
/// rollout or a kill replaces takes its log with it, and the failure's file has only the Pods
/// left at the end.
struct FollowedLogs {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: Option<std::path::PathBuf>,
}

impl FollowedLogs {
    fn start(kube: &Kube, ns: &str) -> FollowedLogs {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = test_logs_dir().map(|dir| dir.join(format!("{ns}.followed.log")));
        let Some(file) = path
            .as_ref()
            .and_then(|path| std::fs::File::create(path).ok())
        else {
            return FollowedLogs {
                stop,
                thread: None,
                path: None,
            };
        };
        let (kube, ns, stopped) = (kube.clone(), ns.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut followers: BTreeMap<String, Child> = BTreeMap::new();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let running = kube.try_run(
                    &[
                        "get",
                        "pods",
                        "-n",
                        &ns,
                        "--field-selector=status.phase=Running",
                        "-o",
                        "name",
                    ],
                    None,
                );
                for pod in String::from_utf8_lossy(&running.stdout).lines() {
                    if followers.contains_key(pod) {
                        continue;
                    }
                    let Ok(out) = file.try_clone() else { continue };
                    let follower = kube
                        .command()
                        .args(["logs", "-f", "-n", &ns, pod, "--all-containers"])
                        .args(["--prefix", "--timestamps", "--max-log-requests=10"])
                        .stdout(out)
                        .stderr(Stdio::null())
                        .spawn();
                    if let Ok(follower) = follower {
                        followers.insert(pod.to_owned(), follower);
                    }
                }
                std::thread::sleep(Duration::from_secs(2));
            }
            for follower in followers.values_mut() {
                let _ = follower.kill();
                let _ = follower.wait();
            }
        });
        FollowedLogs {
            stop,
            thread: Some(thread),
            path,
        }
    }
}

impl Drop for FollowedLogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = &self.path {
            if std::thread::panicking() {
                eprintln!("every Pod's log, followed: {}", path.display());
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// What [`Scene::keep_what_happened`] reads from a managed PostgreSQL, by database.
const SHOP_STATE_QUERIES: &[(&str, &[&str])] = &[
    (
        "order",
        &[
            "SELECT status, stock_committed, stock_released, sales_recorded, count(*) \
             FROM orders GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            "SELECT topic, count(*), min(created_at), max(created_at) FROM event_outbox \
             GROUP BY topic",
            "SELECT count(*) FROM handled_events",
        ],
    ),
    (
        "payment",
        &[
            "SELECT status, count(*) FROM payments GROUP BY 1 ORDER BY 1",
            "SELECT state, count(*) FROM mock_callbacks GROUP BY 1",
            "SELECT topic, count(*), min(created_at), max(created_at) FROM event_outbox \
             GROUP BY topic",
        ],
    ),
];

impl Drop for Scene {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_what_happened();
        }
        // The chart's cluster-scoped objects do not go with the namespace.
        let _ = self
            .helm
            .try_run(&["uninstall", &self.release, "-n", &self.namespace.name]);
    }
}

/// examples/store-local.yaml is YAML kubectl turns into JSON for us.
fn serde_yaml_like(yaml: &str) -> Value {
    let (kube, _) = cluster();
    let output = kube.try_run(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(yaml),
    );
    serde_json::from_slice(&output.stdout).expect("kubectl turns the example into JSON")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

/// A `kubectl port-forward` to a Service on a free local port, stopped on drop.
struct PortForward {
    child: Child,
    gateway: Gateway,
}

impl std::ops::Deref for PortForward {
    type Target = Gateway;

    fn deref(&self) -> &Gateway {
        &self.gateway
    }
}

/// The shop's gateway on 127.0.0.1:`port` (a port-forward's, or kube-proxy's NodePort).
struct Gateway {
    port: u16,
}

impl PortForward {
    fn start(kube: &Kube, namespace: &str, service: &str) -> PortForward {
        let mut child = kube
            .command()
            .args([
                "port-forward",
                "-n",
                namespace,
                "--address",
                "127.0.0.1",
                service,
                ":8888",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward starts");
        // "Forwarding from 127.0.0.1:PORT -> 8888"
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // It writes a line for every connection: read on, or a closed pipe ends it.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let port = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
        PortForward {
            child,
            gateway: Gateway { port },
        }
    }
}

impl Gateway {
    /// One HTTP/1.1 exchange with the gateway: the status and the JSON answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call(method, path, token, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> std::io::Result<(u16, Value)> {
        call_at(self.port, method, path, token, body)
    }

    /// A call that must answer 200 with code 0; its `data`. A 503 (a service the gateway
    /// cannot reach yet: each Service's EndpointSlice may reach the cluster's DNS late, see
    /// buy_ship_and_receive) is asked again, as a client would, for up to 90 seconds.
    fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
        self.ok_within(Duration::from_secs(90), method, path, token, body)
    }

    fn ok_within(
        &self,
        patience: Duration,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let (status, answer) = self.call(method, path, token, body.clone());
            if status == 503 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            assert!(
                status == 200 && answer["code"] == 0,
                "{method} {path}: {status} {answer}"
            );
            return answer["data"].clone();
        }
    }

    /// Retries GET /health until the gateway answers through the forward (which resets
    /// connections until the gateway's Pod takes them).
    fn wait_healthy(&self) {
        let last = std::cell::RefCell::new(String::new());
        wait_for(
            "the gateway's /health on 127.0.0.1",
            Duration::from_secs(60),
            || match self.try_call("GET", "/health", None, None) {
                Ok((200, _)) => Some(()),
                other => {
                    *last.borrow_mut() = format!("{other:?}");
                    None
                }
            },
            || format!("the last answer: {}", last.borrow()),
        );
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange with the gateway on 127.0.0.1:`port`: the status and the JSON answer.
fn call_at(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {response:?}")))?;
    let json = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    Ok((status, json))
}

/// A username no run has taken: 3 to 20 characters, from the clock.
fn fresh_username() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("b{:x}", nanos % (1 << 60))
}

fn login(gateway: &Gateway, username: &str, password: &str) -> String {
    let data = gateway.ok(
        "POST",
        "/api/v1/user/login",
        None,
        Some(json!({"username": username, "password": password})),
    );
    data["token"].as_str().unwrap().to_owned()
}

/// Register, sign in, cart, order, pay; the mock provider's callback marks the order paid
/// through Kafka; the admin ships it; the buyer confirms receipt. The order's id.
fn buy_ship_and_receive(gateway: &Gateway, admin_password: &str, buyer: &str) -> i64 {
    // A shop just turned Ready may answer 503 for a while on this node (the note: the
    // first connections of a new gateway Pod are judged before the policy controller knows
    // its address, and the gateway's throttle then holds back): how long is printed.
    let started = std::time::Instant::now();
    register(gateway, buyer);
    eprintln!(
        "the shop's first answer came {:.1} s after the Store was Ready",
        started.elapsed().as_secs_f64()
    );
    let token = login(gateway, buyer, "password123");
    let products = gateway.ok("GET", "/api/v1/product/list?page=1&pageSize=5", None, None);
    let product = &products["products"][0];
    let product_id = product["id"]
        .as_i64()
        .expect("the demo catalogue has products");
    gateway.ok(
        "POST",
        "/api/v1/cart/add",
        Some(&token),
        Some(json!({"productId": product_id, "quantity": 2})),
    );
    let cart = gateway.ok("GET", "/api/v1/cart/", Some(&token), None);
    assert!(
        cart.to_string()
            .contains(&format!("\"productId\":{product_id}")),
        "{cart}"
    );
    let order = gateway.ok(
        "POST",
        "/api/v1/order/create",
        Some(&token),
        Some(json!({"items": [{"productId": product_id, "quantity": 2}], "address": "12 Harbour Road, Shanghai", "phone": "13800138000"})),
    );
    let order_id = order["orderId"].as_i64().unwrap();
    // Yuan on the wire (the contract's decimals); the services count in fen.
    let amount = order["totalAmount"].clone();
    let fen = |yuan: &Value| (yuan.as_f64().unwrap() * 100.0).round() as i64;
    assert_eq!(fen(&amount), fen(&product["price"]) * 2, "{order}");
    gateway.ok(
        "POST",
        "/api/v1/payment/create",
        Some(&token),
        Some(json!({"orderId": order_id, "paymentType": 1, "amount": amount})),
    );
    let detail = |token: &str| {
        gateway.ok(
            "GET",
            &format!("/api/v1/order/detail/{order_id}"),
            Some(token),
            None,
        )
    };
    wait_for(
        "the mock provider's callback to mark the order paid (payment -> Kafka -> order)",
        Duration::from_secs(60),
        || (detail(&token)["order"]["status"] == 2).then_some(()),
        || detail(&token).to_string(),
    );
    let admin = login(gateway, "admin", admin_password);
    gateway.ok(
        "PUT",
        &format!("/api/v1/admin/orders/{order_id}/ship"),
        Some(&admin),
        Some(json!({"carrier": "SF Express", "trackingNo": "SF1234567890"})),
    );
    assert_eq!(detail(&token)["order"]["status"], 3, "shipped");
    gateway.ok(
        "PUT",
        &format!("/api/v1/order/confirm/{order_id}"),
        Some(&token),
        None,
    );
    assert_eq!(detail(&token)["order"]["status"], 4, "completed");
    order_id
}

/// The Store of the DNS test: examples/store-local.yaml's with nightly backups to a volume.
fn backed_up(restore_from: Option<&str>) -> Value {
    let mut spec = json!({"backup": {"schedule": "0 3 * * *"}});
    if let Some(name) = restore_from {
        spec["restoreFrom"] = Value::from(name);
    }
    spec
}

#[test]
fn a_store_on_the_real_node_sells_ships_keeps_its_rows_and_comes_back_from_a_backup() {
    let scene = Scene::new("e2e-dns");
    scene.apply_store("shop", backed_up(None));
    scene.wait_ready("shop");
    let password = scene.admin_password("shop");
    // 3 to 20 characters.
    let buyer = fresh_username();
    let order_id = {
        let gateway = scene.forward("svc/shop-gateway");
        gateway.wait_healthy();
        buy_ship_and_receive(&gateway, &password, &buyer)
    };

    // Deleted and applied again: the data volumes outlive the Store (retention Retain), so the
    // new PostgreSQL opens the same rows under the Secret made anew.
    scene.delete_store("shop");
    scene.apply_store("shop", backed_up(None));
    scene.wait_ready("shop");
    {
        let gateway = scene.forward("svc/shop-gateway");
        gateway.wait_healthy();
        // Applied again, the shop is new to the cluster's DNS too (see buy_ship_and_receive).
        let token = login(&gateway, &buyer, "password123");
        assert_eq!(
            order_status(&gateway, &token, order_id),
            4,
            "the completed order is still there"
        );
    }

    // A backup run for real, as a person starts one between the nightly runs; then a user
    // who registers after it.
    let backup = scene.back_up_now("shop");
    let late = fresh_username();
    {
        let gateway = scene.forward("svc/shop-gateway");
        gateway.wait_healthy();
        register(&gateway, &late);
    }

    // The disaster: the Store and PostgreSQL's volume are gone. Applied with `restoreFrom`,
    // the new Store restores the backup before its services start: the buyer's completed
    // order is back, the later user is not.
    scene.delete_store("shop");
    let kube = scene.kube();
    kube.run(&[
        "delete",
        "pvc",
        "data-shop-postgres-0",
        "-n",
        scene.ns(),
        "--wait=true",
        "--timeout=120s",
    ]);
    scene.apply_store("shop", backed_up(Some(&backup)));
    scene.wait_ready("shop");
    let restore = kube.json(&[
        "get",
        "job",
        &format!("shop-restore-{}", backup.to_lowercase()),
        "-n",
        scene.ns(),
    ]);
    assert_eq!(at(&restore, "status/succeeded"), 1, "{restore}");
    let gateway = scene.forward("svc/shop-gateway");
    gateway.wait_healthy();
    let token = login(&gateway, &buyer, "password123");
    assert_eq!(
        order_status(&gateway, &token, order_id),
        4,
        "the completed order came back with the backup"
    );
    let (status, answer) = gateway.call(
        "POST",
        "/api/v1/user/login",
        None,
        Some(json!({"username": late, "password": "password123"})),
    );
    assert_eq!(
        answer["code"], 2002,
        "a user registered after the backup is gone with the lost volume: {status} {answer}"
    );
}

fn register(gateway: &Gateway, username: &str) {
    gateway.ok(
        "POST",
        "/api/v1/user/register",
        None,
        Some(json!({"username": username, "password": "password123", "email": format!("{username}@example.com"), "phone": "13800138000"})),
    );
}

fn order_status(gateway: &Gateway, token: &str, order_id: i64) -> Value {
    let order = gateway.ok(
        "GET",
        &format!("/api/v1/order/detail/{order_id}"),
        Some(token),
        None,
    );
    order["order"]["status"].clone()
}

/// Whether a scratch Pod with `labels` (Debian's busybox, as Pod Security `restricted` allows)
/// opens a TCP connection to `ip:port` within 3 seconds.
fn reachable(scene: &Scene, labels: &[(&str, &str)], ip: &str, port: u16) -> bool {
    let kube = scene.kube();
    let name = unique_name("probe");
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": "localhost/letsgo/busybox:bookworm",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", format!("if nc -w 3 {ip} {port} </dev/null >/dev/null; then echo open; else echo closed; fi")],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    });
    kube.apply(&pod.to_string(), &["-n", scene.ns()]);
    let said = wait_for(
        &format!("the probe Pod {name} to finish"),
        Duration::from_secs(60),
        || {
            let pod = kube.get("pod", &name, scene.ns())?;
            (at(&pod, "status/phase") == "Succeeded")
                .then(|| kube.run(&["logs", "-n", scene.ns(), &name]))
        },
        || kube.run(&["get", "pod", "-n", scene.ns(), &name, "-o", "yaml"]),
    );
    kube.run(&["delete", "pod", "-n", scene.ns(), &name, "--wait=false"]);
    // The log mixes the verdict with nc's own complaints ("nc: timed out"), in either order.
    let verdicts: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|line| matches!(*line, "open" | "closed"))
        .collect();
    match verdicts[..] {
        ["open"] => true,
        ["closed"] => false,
        _ => panic!("the probe said {said:?}"),
    }
}

/// The IP of the first Pod of a Store's component.
fn pod_ip(scene: &Scene, store: &str, component: &str) -> String {
    let pods = scene.kube().json(&[
        "get",
        "pods",
        "-n",
        scene.ns(),
        "-l",
        &format!("letsgo.dev/store={store},app.kubernetes.io/component={component}"),
    ]);
    at(&pods, "items/0/status/podIP")
        .as_str()
        .unwrap_or_else(|| panic!("no {component} Pod: {pods}"))
        .to_owned()
}

#[test]
fn a_store_discovering_by_etcd_sells_while_its_network_policies_refuse_what_they_forbid() {
    let scene = Scene::new("e2e-etcd");
    scene.apply_store(
        "shop",
        json!({"discovery": "etcd", "middleware": {"etcd": {"managed": {}}}}),
    );
    let components = scene.wait_ready("shop");
    assert!(components.iter().any(|c| c == "etcd"), "{components:?}");

    // The policies: a stranger reaches no middleware; a Pod posing as the cart reaches the
    // product service (the cart calls it) but not the user service (only the gateway does);
    // the gateway's port is open to all.
    let postgres = pod_ip(&scene, "shop", "postgres");
    let stranger = [("app", "scratch")];
    assert!(
        !reachable(&scene, &stranger, &postgres, 5432),
        "a stranger reached PostgreSQL"
    );
    let cart = [
        ("letsgo.dev/store", "shop"),
        ("app.kubernetes.io/component", "cart"),
    ];
    assert!(reachable(
        &scene,
        &cart,
        &pod_ip(&scene, "shop", "product"),
        9002
    ));
    assert!(!reachable(
        &scene,
        &cart,
        &pod_ip(&scene, "shop", "user"),
        9001
    ));
    assert!(reachable(
        &scene,
        &stranger,
        &pod_ip(&scene, "shop", "gateway"),
        8888
    ));

    // And the shop works through all of it: every call between services found by etcd.
    let gateway = scene.forward("svc/shop-gateway");
    gateway.wait_healthy();
    buy_ship_and_receive(&gateway, &scene.admin_password("shop"), &fresh_username());
}

// ------------------------------------------------------------------ Tilt's loop

/// The local node's containerd, where the Tiltfile's `containerd` loader puts the images.
const NODE_CONTAINERD: &str = "/run/letsgo-node/containerd.sock";

/// The Tiltfile loaded for the local node's context (`local`, as `scripts/kube.sh` names it) by
/// operator/tests/fixtures/tiltfile.py, which stands in for Tilt (not served to this machine):
/// what it asked Tilt for. Loading runs the Tiltfile's own commands, as Tilt does.
fn tiltfile_on_the_local_node(kube: &Kube, namespace: &str) -> Value {
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let output = Command::new(&python)
        .arg(repo().join("operator/tests/fixtures/tiltfile.py"))
        .arg(repo())
        .arg("local")
        .env("KUBECONFIG", &kube.kubeconfig)
        .env("LETSGO_KUBECTL", &kube.kubectl)
        .env("LETSGO_TILT_NAMESPACE", namespace)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}): install python3"));
    assert!(
        output.status.success(),
        "loading the Tiltfile failed (its messages are above)"
    );
    serde_json::from_slice(&output.stdout).expect("tiltfile.py prints JSON")
}

/// A command as Tilt runs it (`sh -c` in the repository, with the KUBECONFIG Tilt was started
/// with, its `env` added, and `more`): its standard output.
fn run_as_tilt(kube: &Kube, command: &Value, env: &Value, more: &[(&str, &str)]) -> String {
    let command = command.as_str().expect("a command string");
    let mut sh = Command::new("sh");
    sh.args(["-c", command])
        .current_dir(repo())
        .env("KUBECONFIG", &kube.kubeconfig);
    for (name, value) in env.as_object().expect("an env object") {
        sh.env(name, value.as_str().unwrap());
    }
    let output = sh
        .envs(more.iter().copied())
        .stderr(Stdio::inherit())
        .output()
        .expect("sh runs");
    assert!(
        output.status.success(),
        "`{command}` failed (its messages are above)"
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The images in the node's containerd, in the kubelet's namespace.
fn node_images() -> Vec<String> {
    let output = Command::new("ctr")
        .args(["--address", NODE_CONTAINERD, "--namespace", "k8s.io"])
        .args(["images", "ls", "--quiet"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ctr ({e}): install containerd, which ships it (apt-get install containerd)")
        });
    support::expect_success("ctr images ls", output)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `tilt up` on the local node without Tilt: the Tiltfile loaded for its context, then what Tilt
/// would run, in its order: the operator's custom_build with an EXPECTED_REF of Tilt's kind, the
/// chart with the Tiltfile's values and that image, the `shop-images` resource. Everything is
/// built by buildah and loaded into the node's containerd (nothing pulled), the Store is applied
/// at the sources' tag with pullPolicy Never, and the shop it makes goes Ready.
#[test]
fn tilt_up_on_the_local_node_builds_with_buildah_loads_into_its_containerd_and_the_store_goes_ready()
 {
    let kube = Kube::local();
    kube.install_crd();
    let namespace = Namespace::create(&kube, "tilt");
    let ns = namespace.name.as_str();

    let asked = tiltfile_on_the_local_node(&kube, ns);
    let allowed = asked["allowed_contexts"].as_array().unwrap();
    assert!(allowed.iter().any(|c| c == "local"), "{asked}");
    let build = &asked["custom_build"][0];
    let env = &build["env"];
    assert_eq!(env["LETSGO_BUILDER"], "buildah", "{env}");
    assert_eq!(env["LETSGO_LOADER"], "containerd", "{env}");
    let shop = asked["local_resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["name"] == "shop-images")
        .expect("the shop-images resource");
    assert_eq!(&shop["env"], env, "one set of settings for both");

    // Loading built the middleware's images offline and loaded them: the chart names them.
    let helm_call = &asked["helm"][0];
    let values: Vec<&str> = helm_call["set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let on_node = node_images();
    for key in ["postgres", "redis", "kafka", "etcd", "backup"] {
        let prefix = format!("middlewareImages.{key}=");
        let image = values
            .iter()
            .find_map(|v| v.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the chart's values {values:?}"));
        assert!(
            on_node.iter().any(|listed| listed == image),
            "{image} is not on the node"
        );
    }
    for value in ["image.pullPolicy=Never", &format!("watchNamespace={ns}")] {
        assert!(values.contains(&value), "{value} not in {values:?}");
    }

    // The operator's image, as Tilt's custom_build makes it: the ref and a tag of Tilt's.
    let tilt_tag = unique_name("tilt");
    let expected_ref = format!("{}:{tilt_tag}", build["ref"].as_str().unwrap());
    run_as_tilt(
        &kube,
        &build["command"],
        env,
        &[("EXPECTED_REF", &expected_ref)],
    );
    assert!(
        node_images().contains(&expected_ref),
        "{expected_ref} is not in the node's containerd"
    );

    // The chart as Tilt applies it: its values, the operator's image replaced by that ref.
    let helm = Helm::new(&kube);
    let mut args = vec![
        "install".to_owned(),
        helm_call["name"].as_str().unwrap().to_owned(),
        repo()
            .join(helm_call["path"].as_str().unwrap())
            .display()
            .to_string(),
        "-n".to_owned(),
        ns.to_owned(),
        "--set".to_owned(),
        format!("image.tag={tilt_tag}"),
        "--wait".to_owned(),
        "--timeout".to_owned(),
        "5m".to_owned(),
    ];
    for value in &values {
        args.extend(["--set".to_owned(), (*value).to_owned()]);
    }
    helm.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let operator = kube.json(&["get", "deployment", "letsgo-operator", "-n", ns]);
    assert_eq!(
        at(&operator, "spec/template/spec/containers/0/image"),
        expected_ref.as_str()
    );

    // The shop-images resource: the six services at the sources' tag, and the Store at it.
    let printed = run_as_tilt(&kube, &shop["cmd"], env, &[]);
    let tag = printed.lines().last().unwrap_or_default().to_owned();
    assert!(tag.starts_with("dev-") && tag.len() == 16, "{printed:?}");
    let on_node = node_images();
    for service in ["user", "product", "cart", "order", "payment", "gateway"] {
        let image = format!("localhost/letsgo/letsgo-{service}:{tag}");
        assert!(on_node.contains(&image), "{image} is not on the node");
    }
    let store = kube.get("store", "shop", ns).expect("the Store applied");
    assert_eq!(at(&store, "spec/image/tag"), tag.as_str(), "{store}");
    assert_eq!(at(&store, "spec/image/pullPolicy"), "Never", "{store}");
    assert_eq!(at(&store, "spec/image/registry"), "localhost/letsgo");
    // What the script prints for that tag is what it applied.
    let yaml = run_as_tilt(
        &kube,
        &Value::from(format!("scripts/tilt-images.sh print-store {tag}")),
        env,
        &[],
    );
    let printed = kube.try_run(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(&yaml),
    );
    let printed: Value = serde_json::from_slice(&printed.stdout)
        .unwrap_or_else(|e| panic!("kubectl reads the printed Store ({e}):\n{yaml}"));
    assert_eq!(at(&printed, "spec/image"), at(&store, "spec/image"));

    wait_for(
        "the Tilt loop's Store to be Ready",
        READY,
        || {
            let store = kube.get("store", "shop", ns)?;
            (condition(&store, "Ready").as_deref() == Some("True")).then_some(())
        },
        || kube.run(&["get", "store,pods", "-n", ns, "-o", "wide"]),
    );

    // The namespace takes the release and the shop with it. The node keeps the content under
    // images.sh's staging tag; the names this run gave go.
    let mut remove = vec!["images".to_owned(), "rm".to_owned(), expected_ref];
    remove.extend(
        ["user", "product", "cart", "order", "payment", "gateway"]
            .map(|service| format!("localhost/letsgo/letsgo-{service}:{tag}")),
    );
    let _ = Command::new("ctr")
        .args(["--address", NODE_CONTAINERD, "--namespace", "k8s.io"])
        .args(&remove)
        .output();
}

// ------------------------------------------------------------------ Day two: rollouts

/// The gateway's port on 127.0.0.1: a LoadBalancer Service's NodePort, which the node's
/// kube-proxy serves on loopback (`nodePortAddresses: [127.0.0.0/8]`), so clients reach the
/// gateway through kube-proxy and the Service's endpoints, as outside traffic does.
fn gateway_node_port(scene: &Scene, store: &str) -> u16 {
    let service = scene.kube().json(&[
        "get",
        "service",
        &format!("{store}-gateway"),
        "-n",
        scene.ns(),
    ]);
    at(&service, "spec/ports/0/nodePort")
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("the gateway Service has no nodePort: {service}"))
}

/// Tags the six shop images of `images` as `tag` too in the node's containerd: the same
/// code under another version, which is what a rollout to a new release looks like to the
/// cluster. The tags are removed on drop.
struct RetaggedImages {
    tagged: Vec<String>,
}

impl RetaggedImages {
    fn new(images: &Images, tag: &str) -> RetaggedImages {
        let mut tagged = Vec::new();
        for name in ["user", "product", "cart", "order", "payment", "gateway"] {
            let source = images.get(&format!("letsgo-{name}"));
            let (repository, _) = source.rsplit_once(':').expect("an image with a tag");
            let target = format!("{repository}:{tag}");
            let output = Command::new("ctr")
                .args([
                    "--address",
                    NODE_CONTAINERD,
                    "-n",
                    "k8s.io",
                    "images",
                    "tag",
                ])
                .args(["--force", source, &target])
                .output()
                .expect("ctr (Debian's containerd package) runs");
            assert!(
                output.status.success(),
                "ctr images tag {source} {target}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            tagged.push(target);
        }
        RetaggedImages { tagged }
    }
}

impl Drop for RetaggedImages {
    fn drop(&mut self) {
        let _ = Command::new("ctr")
            .args(["--address", NODE_CONTAINERD, "-n", "k8s.io", "images", "rm"])
            .args(&self.tagged)
            .output();
    }
}

/// Changes the Store's image tag and waits until it has gone Progressing and come back Ready
/// with every component on `tag` (its `status.version`); how long that took.
fn roll_to(scene: &Scene, store: &str, tag: &str) -> Duration {
    let kube = scene.kube();
    let started = std::time::Instant::now();
    support::patch_store(
        kube,
        scene.ns(),
        &json!({"spec": {"image": {"tag": tag}}}).to_string(),
    );
    let mut progressing = false;
    wait_for(
        &format!("Store {store} to roll to {tag} and be Ready"),
        READY,
        || {
            let store = kube.get("store", store, scene.ns())?;
            if at(&store, "status/phase") == "Progressing" {
                progressing = true;
            }
            let done = condition(&store, "Ready").as_deref() == Some("True")
                && at(&store, "status/version") == tag;
            done.then_some(())
        },
        || scene.describe(store),
    );
    assert!(
        progressing,
        "the Store never showed the rollout as Progressing"
    );
    started.elapsed()
}

/// A Store with its gateway a LoadBalancer Service, Ready and answering through kube-proxy's
/// NodePort on 127.0.0.1; that port.
fn shop_behind_kube_proxy(scene: &Scene, store: &str, services: Value) -> u16 {
    scene.apply_store(
        store,
        json!({"gateway": {"serviceType": "LoadBalancer"}, "services": services}),
    );
    scene.wait_ready(store);
    let port = gateway_node_port(scene, store);
    wait_for(
        "the gateway's /health through kube-proxy's NodePort on 127.0.0.1",
        Duration::from_secs(120),
        || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        },
        || scene.describe(store),
    );
    port
}

/// `letsgo-loadgen` shopping through the gateway's port on 127.0.0.1: browsing, searching,
/// carting and checking out at 30 requests a second, under the gateway's default per-client
/// limits (every request here comes from one address). Its per-second lines are echoed and
/// kept, to tell when requests failed.
struct ShopLoad {
    child: Child,
    report_file: std::path::PathBuf,
    /// Each per-second line, with when it arrived (since the load started).
    lines: std::thread::JoinHandle<Vec<(u64, String)>>,
    started: std::time::Instant,
    duration: Duration,
}

/// What a [`ShopLoad`] measured.
struct LoadReport {
    report: Value,
    table: String,
    /// The seconds (since the load started) that ended with at least one request failed in them.
    failing_seconds: Vec<u64>,
}

impl ShopLoad {
    fn start(port: u16, admin_password: &str, duration: Duration) -> ShopLoad {
        ShopLoad::start_with(
            port,
            admin_password,
            duration,
            30,
            "browse=40,search=10,detail=20,cart=15,checkout=15",
        )
    }

    /// Requests at `rate` a second in the `mix` letsgo-loadgen's `--mix` takes.
    fn start_with(
        port: u16,
        admin_password: &str,
        duration: Duration,
        rate: u32,
        mix: &str,
    ) -> ShopLoad {
        let loadgen = std::env::current_exe()
            .ok()
            .and_then(|test| Some(test.parent()?.parent()?.join("letsgo-loadgen")))
            .filter(|path| path.exists())
            .expect(
                "letsgo-loadgen built beside this test (`make test` builds it; by hand: cargo build -p letsgo-loadgen)",
            );
        let report_file = std::env::temp_dir().join(format!("{}.json", unique_name("load")));
        let mut child = Command::new(&loadgen)
            .args(["--target-url", &format!("http://127.0.0.1:{port}")])
            .args(["--rate", &rate.to_string(), "-c", "16"])
            .args(["--warmup", "5s", "-d", &format!("{}s", duration.as_secs())])
            .args(["--mix", mix])
            .arg("--json")
            .arg(&report_file)
            .env("ADMIN_PASSWORD", admin_password)
            .env("LOADGEN_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("letsgo-loadgen starts");
        let stderr = child.stderr.take().expect("loadgen's stderr");
        let started = std::time::Instant::now();
        let lines = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .map(|line| {
                    // Every 30th second and every second with errors: CI shows only the head
                    // and tail of a failing test's output, and the failure must fit in it.
                    let second = started.elapsed().as_secs();
                    if second.is_multiple_of(30) || !line.contains(" 0 errors/s") {
                        eprintln!("{line}");
                    }
                    (second, line)
                })
                .collect()
        });
        ShopLoad {
            child,
            report_file,
            lines,
            started,
            duration,
        }
    }

    /// Waits until the load has run `at` since it started.
    fn wait_until(&self, at: Duration) {
        assert!(
            self.started.elapsed() < self.duration,
            "what the test does under load took longer than the load ran ({} s): raise it",
            self.duration.as_secs()
        );
        std::thread::sleep(at.saturating_sub(self.started.elapsed()));
    }

    fn finish(self) -> LoadReport {
        let output = self.child.wait_with_output().expect("letsgo-loadgen ends");
        let table = String::from_utf8_lossy(&output.stdout).into_owned();
        eprintln!("{table}");
        assert!(output.status.success(), "letsgo-loadgen failed: {table}");
        let report: Value = serde_json::from_str(&support::file(&self.report_file))
            .expect("letsgo-loadgen's JSON report");
        let _ = std::fs::remove_file(&self.report_file);
        // "[  84s measure]      32 ok/s      1 errors/s  mean 17.04 ms"
        let failing_seconds = self
            .lines
            .join()
            .expect("loadgen's lines")
            .into_iter()
            .filter_map(|(second, line)| {
                let fields: Vec<&str> = line.trim_start_matches('[').split_whitespace().collect();
                let errors: u64 = fields.get(4)?.parse().ok()?;
                (fields.get(5) == Some(&"errors/s") && errors > 0).then_some(second)
            })
            .collect();
        let report = LoadReport {
            report,
            table,
            failing_seconds,
        };
        assert!(
            report.total("ok") > 2_000,
            "the load hardly ran: {}",
            report.table
        );
        report
    }
}

impl LoadReport {
    fn operation(&self, name: &str) -> Option<&Value> {
        self.report["operations"]
            .as_array()?
            .iter()
            .find(|operation| operation["name"] == name)
    }

    /// `ok` or `errors` of one operation (0 when it never ran).
    fn count(&self, name: &str, field: &str) -> u64 {
        self.operation(name)
            .and_then(|operation| operation[field].as_u64())
            .unwrap_or(0)
    }

    fn total(&self, field: &str) -> u64 {
        self.report["totals"][field].as_u64().unwrap_or(0)
    }

    /// Fails the test if any request failed while `what` happened, with the seconds and the
    /// shop's logged warnings.
    fn assert_no_failure(&self, what: &str, scene: &Scene) {
        assert!(
            self.failures().is_empty(),
            "requests failed while {what} (seconds {:?}): {:?}\n{}",
            self.failing_seconds,
            self.failures(),
            scene.warnings("shop")
        );
    }

    /// The operations that had errors, with their kinds.
    fn failures(&self) -> Vec<&Value> {
        self.report["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|operation| operation["errors"].as_u64() != Some(0))
            .collect()
    }
}

/// The shop's orders as its admin sees them, through the gateway.
struct AdminOrders {
    port: u16,
    token: String,
}

impl AdminOrders {
    /// Signs the admin in (a 503 asked again, for up to 90 s).
    fn sign_in(port: u16, password: &str) -> AdminOrders {
        let token = login(&Gateway { port }, "admin", password);
        AdminOrders { port, token }
    }

    /// How many orders have `status` (0: all, 1: pending, 2: paid, 5: cancelled).
    fn count(&self, status: u8) -> u64 {
        let data = Gateway { port: self.port }.ok(
            "GET",
            &format!("/api/v1/admin/orders?status={status}&pageSize=1"),
            Some(&self.token),
            None,
        );
        data["total"].as_u64().unwrap()
    }

    /// All, pending, paid and cancelled, read again until two readings agree: late callbacks
    /// still turn pending orders paid, and counts read at different moments would not add up.
    fn settled(&self) -> [u64; 4] {
        let read = || [0, 1, 2, 5].map(|status| self.count(status));
        wait_for(
            "the order counts to stop moving",
            Duration::from_secs(120),
            || {
                let first = read();
                (read() == first).then_some(first)
            },
            || format!("{:?}", read()),
        )
    }

    /// Waits until at most `pending` orders are left unpaid.
    fn wait_paid(&self, pending: u64) {
        wait_for(
            "the orders the load created to be paid",
            Duration::from_secs(120),
            || (self.count(1) <= pending).then_some(()),
            || format!("pending: {}, paid: {}", self.count(1), self.count(2)),
        );
    }
}

#[test]
fn a_store_rolls_every_component_to_a_new_tag_and_back_under_load_failing_no_request() {
    let (_, images) = cluster();
    let scene = Scene::new("e2e-roll");
    let _logs = scene.follow_logs();
    let port = shop_behind_kube_proxy(&scene, "shop", json!({}));
    let password = scene.admin_password("shop");
    let next = format!("{}-next", images.tag);
    let _retagged = RetaggedImages::new(images, &next);

    // Shoppers for the whole of both rollouts: their set-up (products, shoppers) and warm-up,
    // then some steady load before the first.
    let load = ShopLoad::start(port, &password, Duration::from_secs(300));
    load.wait_until(Duration::from_secs(40));
    let forward = roll_to(&scene, "shop", &next);
    eprintln!("rolled to {next} in {:.0} s", forward.as_secs_f64());
    std::thread::sleep(Duration::from_secs(15));
    let back = roll_to(&scene, "shop", &images.tag);
    eprintln!(
        "rolled back to {} in {:.0} s",
        images.tag,
        back.as_secs_f64()
    );
    // Every old Pod's stop (its pre-stop wait, then SIGTERM) happens while the load runs.
    load.wait_until(Duration::from_secs(
        40 + forward.as_secs() + 15 + back.as_secs() + 60,
    ));
    let report = load.finish();
    report.assert_no_failure("the shop rolled", &scene);
    assert!(
        report.count("checkout", "ok") > 100,
        "checkouts ran through both rollouts: {}",
        report.table
    );
    // Every order created was paid (each checkout's payment was accepted, and the mock
    // provider's callback pays it through Kafka): none lost, none left pending.
    let created = report.count("order_create", "ok");
    let orders = AdminOrders::sign_in(port, &password);
    orders.wait_paid(0);
    // The load's set-up and warm-up made orders too, so at least as many as it counted.
    let paid = orders.count(2);
    assert!(paid >= created, "{created} created, {paid} paid");
    assert_eq!(orders.count(0), paid, "every order is paid, none cancelled");
    eprintln!("{created} orders created under measurement, {paid} paid in all, 0 pending");

    a_stuck_middleware_pod_is_replaced_once_its_template_is_fixed(&scene, "shop");
}

const SHOP_SERVICES: [&str; 5] = ["user", "product", "cart", "order", "payment"];

/// The Pods of `store`'s `component`, as the API lists them.
fn component_pods(scene: &Scene, store: &str, component: &str) -> Vec<Value> {
    let pods = scene.kube().json(&[
        "get",
        "pods",
        "-n",
        scene.ns(),
        "-l",
        &format!("app.kubernetes.io/instance={store},app.kubernetes.io/component={component}"),
    ]);
    pods["items"].as_array().cloned().unwrap_or_default()
}

/// The name of one running Pod of `component`, and its container's id in containerd.
fn one_pod(scene: &Scene, store: &str, component: &str) -> (String, String) {
    let pods = component_pods(scene, store, component);
    pods.iter()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .find_map(|pod| {
            let id = pod["status"]["containerStatuses"][0]["containerID"].as_str()?;
            Some((
                pod["metadata"]["name"].as_str()?.to_owned(),
                id.strip_prefix("containerd://")?.to_owned(),
            ))
        })
        .unwrap_or_else(|| panic!("no running {component} Pod: {pods:?}"))
}

/// SIGKILLs the process of `container` in the node's containerd: a crash, which the kubelet
/// answers by restarting the container in the same Pod.
fn kill_container(container: &str) {
    let output = Command::new("ctr")
        .args([
            "--address",
            NODE_CONTAINERD,
            "-n",
            "k8s.io",
            "tasks",
            "kill",
        ])
        .args(["--signal", "SIGKILL", container])
        .output()
        .expect("ctr (Debian's containerd package) runs");
    assert!(
        output.status.success(),
        "ctr tasks kill {container}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The number of times `component`'s Pods' containers have restarted.
fn restarts(scene: &Scene, store: &str, component: &str) -> u64 {
    component_pods(scene, store, component)
        .iter()
        .filter_map(|pod| pod["status"]["containerStatuses"][0]["restartCount"].as_u64())
        .sum()
}

#[test]
fn service_pods_deleted_or_killed_under_load_lose_no_order() {
    cluster();
    let scene = Scene::new("e2e-kill");
    let _logs = scene.follow_logs();
    let two = json!({"replicas": 2});
    let services: serde_json::Map<String, Value> = SHOP_SERVICES
        .iter()
        .map(|service| (service.to_string(), two.clone()))
        .collect();
    let port = shop_behind_kube_proxy(&scene, "shop", Value::Object(services));
    let password = scene.admin_password("shop");

    // Two replicas of each service: one Pod of each deleted as a rollout or a drain deletes
    // it, then one of each crashing (its process SIGKILLed; the kubelet restarts it).
    let load = ShopLoad::start(port, &password, Duration::from_secs(150));
    load.wait_until(Duration::from_secs(30));
    for service in SHOP_SERVICES {
        let (pod, _) = one_pod(&scene, "shop", service);
        scene
            .kube()
            .run(&["delete", "pod", &pod, "-n", scene.ns(), "--wait=false"]);
    }
    // Past the deleted Pods' pre-stop wait and stop.
    load.wait_until(Duration::from_secs(90));
    for service in SHOP_SERVICES {
        let (_, container) = one_pod(&scene, "shop", service);
        kill_container(&container);
    }
    wait_for(
        "every killed container to be restarted",
        Duration::from_secs(120),
        || {
            SHOP_SERVICES
                .iter()
                .all(|service| restarts(&scene, "shop", service) >= 1)
                .then_some(())
        },
        || scene.describe("shop"),
    );
    let report = load.finish();
    eprintln!(
        "two replicas: seconds with a failed request: {:?}",
        report.failing_seconds
    );
    // Reads are retried on the other replica; so is any call that never reached a server.
    for read in ["browse", "search", "detail"] {
        assert_eq!(
            report.count(read, "errors"),
            0,
            "{read} failed: {:?}\n{}",
            report.failures(),
            scene.warnings("shop")
        );
    }
    // An order whose creation was under way in the Pod that crashed may have been made while
    // its answer was lost: the buyer saw an error and did not pay, and the order waits for
    // its expiry (which gives its stock back). Every other order is paid.
    let orders = AdminOrders::sign_in(port, &password);
    let unanswered =
        report.count("order_create", "errors") + report.count("payment_create", "errors");
    orders.wait_paid(unanswered);
    let [all, pending, paid, cancelled] = orders.settled();
    assert!(
        paid >= report.count("payment_create", "ok"),
        "every accepted payment was paid: {} accepted, {paid} paid",
        report.count("payment_create", "ok")
    );
    assert_eq!(
        (all - paid, cancelled),
        (pending, 0),
        "no order was cancelled: the rest are pending"
    );
    eprintln!(
        "two replicas: {} requests, {} failed ({:?}); {paid} orders paid, {pending} pending",
        report.total("ok") + report.total("errors"),
        report.total("errors"),
        report.failures(),
    );

    // One replica of order: its Pod deleted loses nothing (the successor is ready before it
    // stops); its process killed makes checkouts fail until the kubelet has restarted it.
    support::patch_store(
        scene.kube(),
        scene.ns(),
        &json!({"spec": {"services": {"order": {"replicas": 1}}}}).to_string(),
    );
    wait_for(
        "the order service at one replica",
        READY,
        || {
            let ready = scene.kube().run(&[
                "get",
                "deployment",
                "shop-order",
                "-n",
                scene.ns(),
                "-o",
                "jsonpath={.status.replicas}/{.status.readyReplicas}",
            ]);
            (ready == "1/1").then_some(())
        },
        || scene.describe("shop"),
    );
    // The change of replicas changed every service's share of PostgreSQL's connections, so
    // all of them rolled: let that finish, and the old Pods' stops, before measuring.
    for component in SHOP_SERVICES.into_iter().chain(["gateway"]) {
        scene.kube().run(&[
            "rollout",
            "status",
            &format!("deployment/shop-{component}"),
            "-n",
            scene.ns(),
            "--timeout=300s",
        ]);
    }
    std::thread::sleep(Duration::from_secs(45));
    let pending_before = orders.count(1);
    let load = ShopLoad::start(port, &password, Duration::from_secs(150));
    load.wait_until(Duration::from_secs(30));
    let (pod, _) = one_pod(&scene, "shop", "order");
    scene
        .kube()
        .run(&["delete", "pod", &pod, "-n", scene.ns(), "--wait=false"]);
    load.wait_until(Duration::from_secs(90));
    let (_, container) = one_pod(&scene, "shop", "order");
    let killed_at = load.started.elapsed().as_secs();
    kill_container(&container);
    let report = load.finish();
    let after_delete: Vec<u64> = report
        .failing_seconds
        .iter()
        .copied()
        .filter(|second| *second < killed_at)
        .collect();
    assert!(
        after_delete.is_empty(),
        "requests failed when the only order Pod was deleted (seconds {after_delete:?}): {:?}\n{}",
        report.failures(),
        scene.warnings("shop")
    );
    for read in ["browse", "search", "detail"] {
        assert_eq!(
            report.count(read, "errors"),
            0,
            "{read} does not need order"
        );
    }
    let unanswered =
        report.count("order_create", "errors") + report.count("payment_create", "errors");
    orders.wait_paid(pending_before + unanswered);
    eprintln!(
        "one replica: {} requests, {} failed, in seconds {:?} after the kill (at about {killed_at} s); {} orders pending",
        report.total("ok") + report.total("errors"),
        report.total("errors"),
        report.failing_seconds,
        orders.count(1)
    );
}

/// Redis given an image that does not exist: its StatefulSet replaces the ready Pod with one
/// that can never start, and the Store turns Degraded naming it. A service change made
/// meanwhile waits behind the middleware's rollout. Then the image is put back: the operator
/// deletes the Pod the StatefulSet would wait on for ever, Redis comes back, and the held
/// service change goes through.
fn a_stuck_middleware_pod_is_replaced_once_its_template_is_fixed(scene: &Scene, store: &str) {
    let kube = scene.kube();
    let ns = scene.ns();
    support::patch_store(
        kube,
        ns,
        &json!({"spec": {"middleware": {"redis": {"managed": {
            "image": "localhost/letsgo/no-such-redis:0"
        }}}}})
        .to_string(),
    );
    wait_for(
        "the Store to be Degraded naming redis",
        READY,
        || {
            let store = kube.get("store", store, ns)?;
            let message = at(&store, "status/conditions")
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Degraded" && c["status"] == "True")?["message"]
                .as_str()?
                .to_owned();
            message.contains("redis").then_some(())
        },
        || scene.describe(store),
    );
    // Held behind the middleware's rollout.
    support::patch_store(
        kube,
        ns,
        &json!({"spec": {"services": {"cart": {"replicas": 2}}}}).to_string(),
    );
    std::thread::sleep(Duration::from_secs(10));
    let cart = |field: &str| {
        kube.run(&[
            "get",
            "deployment",
            &format!("{store}-cart"),
            "-n",
            ns,
            "-o",
            &format!("jsonpath={{{field}}}"),
        ])
    };
    assert_eq!(cart(".spec.replicas"), "1", "the service change waits");

    support::patch_store(
        kube,
        ns,
        &json!({"spec": {"middleware": {"redis": {"managed": {"image": null}}}}}).to_string(),
    );
    wait_for(
        &format!("Store {store} to be Ready with two cart replicas"),
        READY,
        || {
            let store = kube.get("store", store, ns)?;
            (condition(&store, "Ready").as_deref() == Some("True")
                && cart(".status.readyReplicas") == "2")
                .then_some(())
        },
        || scene.describe(store),
    );
    let events = kube.run(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=ReplacedStuckPod",
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "the operator said it replaced the stuck Pod"
    );
}

/// Every phase the Store's status goes through, with its Degraded condition's message, as a
/// `kubectl get --watch` sees them: a turn to Degraded lasting a few seconds is not missed
/// between two polls.
struct PhaseWatch {
    child: Child,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl PhaseWatch {
    fn start(scene: &Scene, store: &str) -> PhaseWatch {
        let mut child = scene
            .kube()
            .command()
            .args(["get", "store", store, "-n", scene.ns(), "--watch", "-o"])
            .arg(
                "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Degraded\")].message}{\"\\n\"}",
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get --watch starts");
        let stdout = child.stdout.take().expect("kubectl's stdout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                record.lock().unwrap().push(line);
            }
        });
        PhaseWatch { child, seen }
    }

    /// Whether the Store has been Degraded naming `component` since the watch started.
    fn said_degraded(&self, component: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.starts_with("Degraded") && line.contains(component))
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn middleware_pods_killed_under_load_come_back_and_every_payment_is_applied() {
    cluster();
    let scene = Scene::new("e2e-mwkill");
    let _logs = scene.follow_logs();
    let port = shop_behind_kube_proxy(&scene, "shop", json!({}));
    let password = scene.admin_password("shop");

    // Each middleware Pod killed in turn (deleted at once, without its grace period: its
    // processes are SIGKILLed and the StatefulSet makes it again on the same volume).
    let load = ShopLoad::start(port, &password, Duration::from_secs(330));
    let mut back_after = Vec::new();
    for (turn, middleware) in ["postgres", "kafka", "redis"].into_iter().enumerate() {
        load.wait_until(Duration::from_secs(30 + 100 * turn as u64));
        let (pod, _) = one_pod(&scene, "shop", middleware);
        let phases = PhaseWatch::start(&scene, "shop");
        let killed = std::time::Instant::now();
        let killed_at = load.started.elapsed().as_secs();
        scene.kube().run(&[
            "delete",
            "pod",
            &pod,
            "-n",
            scene.ns(),
            "--grace-period=0",
            "--force",
        ]);
        wait_for(
            &format!("the Store to turn Degraded naming {middleware}, then Ready"),
            Duration::from_secs(90),
            || {
                let store = scene.kube().get("store", "shop", scene.ns())?;
                (phases.said_degraded(middleware)
                    && condition(&store, "Ready").as_deref() == Some("True"))
                .then_some(())
            },
            || {
                format!(
                    "phases seen: {:?}\n{}",
                    phases.seen.lock().unwrap(),
                    scene.describe("shop")
                )
            },
        );
        eprintln!(
            "{middleware} killed at {killed_at} s; the Store Ready again after {:.0} s",
            killed.elapsed().as_secs_f64()
        );
        back_after.push((middleware, killed_at, killed.elapsed().as_secs()));
    }
    let report = load.finish();
    eprintln!(
        "seconds with a failed request: {:?}; killed (at, Ready after): {back_after:?}",
        report.failing_seconds
    );
    // Every payment the shop accepted reaches its order through Kafka once the broker is back
    // (the outboxes held the events): each order is paid.
    let orders = AdminOrders::sign_in(port, &password);
    let unanswered =
        report.count("order_create", "errors") + report.count("payment_create", "errors");
    orders.wait_paid(unanswered);
    let [all, pending, paid, cancelled] = orders.settled();
    assert!(
        paid >= report.count("payment_create", "ok"),
        "every accepted payment was applied: {} accepted, {paid} paid",
        report.count("payment_create", "ok")
    );
    // An order creation cut off by PostgreSQL's death after its row was written is cancelled
    // (its stock given back) and answered 503: only a failed creation may leave one.
    assert_eq!(
        all,
        paid + pending + cancelled,
        "every order is paid, pending or cancelled"
    );
    assert!(
        cancelled <= report.count("order_create", "errors"),
        "{cancelled} orders cancelled, more than the {} creations that failed",
        report.count("order_create", "errors")
    );
    eprintln!(
        "{} requests, {} failed ({:?}); {paid} orders paid, {pending} pending, {cancelled} cancelled",
        report.total("ok") + report.total("errors"),
        report.total("errors"),
        report.failures(),
    );
}

/// Each container of the namespace's Pods (`pod/container`) and its id in containerd.
fn container_ids(scene: &Scene) -> BTreeMap<String, String> {
    let pods = scene.kube().json(&["get", "pods", "-n", scene.ns()]);
    let mut ids = BTreeMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        if pod["metadata"]["labels"]["job-name"].is_string() {
            continue;
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        for container in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = container["containerID"].as_str().unwrap_or_default();
            ids.insert(
                format!("{name}/{}", container["name"].as_str().unwrap_or_default()),
                id.to_owned(),
            );
        }
    }
    ids
}

/// Whether every container of `before` runs again under a new id and is ready.
fn all_replaced_and_ready(scene: &Scene, before: &BTreeMap<String, String>) -> bool {
    let pods = scene.kube().json(&["get", "pods", "-n", scene.ns()]);
    let mut ready = BTreeMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        for container in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if container["ready"] == true && container["state"]["running"].is_object() {
                ready.insert(
                    format!("{name}/{}", container["name"].as_str().unwrap_or_default()),
                    container["containerID"].as_str().unwrap_or_default(),
                );
            }
        }
    }
    before
        .iter()
        .all(|(key, old)| ready.get(key).is_some_and(|new| new != old))
}

/// What a shopper and the admin can see of the shop's data: orders by status, a buyer's cart,
/// every product's stock and sales.
fn shop_data(gateway: &Gateway, orders: &AdminOrders, buyer_token: &str) -> Value {
    let by_status: Vec<u64> = (0..=5).map(|status| orders.count(status)).collect();
    let cart = gateway.ok("GET", "/api/v1/cart/", Some(buyer_token), None);
    let products = gateway.ok(
        "GET",
        "/api/v1/product/list?page=1&pageSize=100",
        None,
        None,
    );
    let stock: BTreeMap<String, Value> = products["products"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|product| {
            let id = product["id"].to_string();
            (id, json!([product["stock"], product["sales"]]))
        })
        .collect();
    json!({"orders": by_status, "cart": cart, "stock": stock})
}

/// A node's reboot: the kubelet, kube-proxy, containerd and every container killed at once,
/// /run's state gone (`scripts/kube.sh restart-node`). The shop comes back without anyone's
/// help: same accounts, carts, orders and stock, and it sells again. Runs alone (every other
/// test's Pods would go down with it): `threads-required` in .config/nextest.toml.
#[test]
fn a_node_restart_brings_the_shop_back_by_itself_with_all_its_data() {
    cluster();
    let scene = Scene::new("e2e-reboot");
    let port = shop_behind_kube_proxy(&scene, "shop", json!({}));
    let password = scene.admin_password("shop");
    let gateway = Gateway { port };

    // Data in every store: paid orders (PostgreSQL, through Kafka), a completed one, a cart
    // (Redis), stock sold.
    let mix = "browse=40,search=10,detail=20,cart=15,checkout=15";
    let report = ShopLoad::start_with(port, &password, Duration::from_secs(40), 60, mix).finish();
    report.assert_no_failure("the shop sold before the restart", &scene);
    let orders = AdminOrders::sign_in(port, &password);
    orders.wait_paid(0);
    let buyer = fresh_username();
    buy_ship_and_receive(&gateway, &password, &buyer);
    let token = login(&gateway, &buyer, "password123");
    let products = gateway.ok("GET", "/api/v1/product/list?page=1&pageSize=5", None, None);
    for (product, quantity) in products["products"].as_array().unwrap().iter().zip(1..=3) {
        gateway.ok(
            "POST",
            "/api/v1/cart/add",
            Some(&token),
            Some(json!({"productId": product["id"], "quantity": quantity})),
        );
    }
    let before = shop_data(&gateway, &orders, &token);
    let containers = container_ids(&scene);

    let restarted = std::time::Instant::now();
    let script = repo().join("scripts/kube.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("restart-node")
        .status()
        .expect("scripts/kube.sh runs");
    assert!(status.success(), "scripts/kube.sh restart-node failed");
    eprintln!(
        "the node restarted in {:.0} s",
        restarted.elapsed().as_secs_f64()
    );
    // What a shopper sees first: the catalogue answering (only new containers can answer).
    let answered = wait_for(
        "the shop to answer a product list through kube-proxy",
        READY,
        || {
            let (status, answer) = gateway
                .try_call("GET", "/api/v1/product/list?page=1&pageSize=5", None, None)
                .ok()?;
            (status == 200 && answer["code"] == 0).then(|| restarted.elapsed())
        },
        || scene.describe("shop"),
    );
    wait_for(
        "every container of the namespace to run again, ready",
        READY,
        || all_replaced_and_ready(&scene, &containers).then_some(()),
        || scene.describe("shop"),
    );
    let pods_ready = restarted.elapsed();
    // The Store's own status comes from the operator, itself one of the Pods that restarted.
    scene.wait_ready("shop");
    eprintln!(
        "after the restart: every Pod ready in {:.0} s, the shop answering in {:.0} s",
        pods_ready.as_secs_f64(),
        answered.as_secs_f64()
    );

    // The same data, seen by the same people: the buyer and the admin sign in again (answered
    // 503 until the gateway learns the user service's new address).
    let orders = AdminOrders::sign_in(port, &password);
    let signed_in = restarted.elapsed();
    let token = login(&gateway, &buyer, "password123");
    let after = shop_data(&gateway, &orders, &token);
    eprintln!(
        "signing in answered again {:.0} s after the restart",
        signed_in.as_secs_f64()
    );
    assert_eq!(before, after, "the shop's data after the node's restart");
    // And it sells: a new buyer's order is paid through Kafka, shipped and received.
    buy_ship_and_receive(&gateway, &password, &fresh_username());
    eprintln!(
        "the shop sold again {:.0} s after the restart; before and after: {}",
        restarted.elapsed().as_secs_f64(),
        before["orders"]
    );
}

/// The replicas `store`'s `component` Deployment has ready.
fn ready_replicas(scene: &Scene, store: &str, component: &str) -> u64 {
    scene
        .kube()
        .run(&[
            "get",
            "deployment",
            &format!("{store}-{component}"),
            "-n",
            scene.ns(),
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn an_autoscaled_service_scales_out_under_load_and_back_in_after_failing_no_request() {
    cluster();
    let scene = Scene::new("e2e-hpa");
    // The product service between one and three replicas, aiming at half of its CPU request;
    // removing replicas once the load has been gone 30 s (Kubernetes' default waits 300 s).
    let autoscaling = json!({"autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCpuUtilizationPercentage": 50,
        "scaleDownStabilizationSeconds": 30,
    }});
    let port = shop_behind_kube_proxy(&scene, "shop", json!({"product": autoscaling}));
    let password = scene.admin_password("shop");
    // Before the load: the autoscaler has measured the idle service and wants one replica (a
    // Pod's start-up alone can cross the target).
    wait_for(
        "the autoscaler to measure the idle product service and want one replica",
        Duration::from_secs(240),
        || {
            let hpa = scene
                .kube()
                .json(&["get", "hpa", "shop-product", "-n", scene.ns()]);
            let measured =
                hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
                    .as_u64()?;
            (measured < 50
                && hpa["status"]["desiredReplicas"] == 1
                && ready_replicas(&scene, "shop", "product") == 1)
                .then_some(())
        },
        || scene.kube().run(&["describe", "hpa", "-n", scene.ns()]),
    );

    // Shoppers browsing and searching (what the product service answers) until it has scaled
    // out; the load then runs on over the new Pods.
    let load = ShopLoad::start_with(
        port,
        &password,
        Duration::from_secs(240),
        80,
        "browse=60,search=40",
    );
    let started = std::time::Instant::now();
    wait_for(
        "the product service to scale out under load",
        Duration::from_secs(200),
        || (ready_replicas(&scene, "shop", "product") >= 2).then_some(()),
        || scene.kube().run(&["describe", "hpa", "-n", scene.ns()]),
    );
    let scaled_out_after = started.elapsed().as_secs();
    let report = load.finish();
    let most = ready_replicas(&scene, "shop", "product");
    let load_ended = std::time::Instant::now();
    wait_for(
        "the product service to scale back in once the load is gone",
        Duration::from_secs(240),
        || (ready_replicas(&scene, "shop", "product") == 1).then_some(()),
        || scene.kube().run(&["describe", "hpa", "-n", scene.ns()]),
    );
    eprintln!(
        "scaled out after {scaled_out_after} s of load (to {most} ready); back to one {} s after the load ended; {} requests, {} failed",
        load_ended.elapsed().as_secs(),
        report.total("ok") + report.total("errors"),
        report.total("errors"),
    );
    // New Pods joining, and none failing for want of a database connection: each replica's
    // pool is its share of PostgreSQL's connections at maxReplicas.
    report.assert_no_failure("the service scaled", &scene);
}
