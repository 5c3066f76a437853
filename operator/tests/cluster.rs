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
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Helm, Kube, Namespace, at, chart, condition, repo, unique_name, wait_for};

/// How long a Store may take to be Ready on two cores (Kafka's JVM starts last).
const READY: Duration = Duration::from_secs(600);

/// The local cluster with its real node, and the images loaded into the node: once per run.
fn cluster() -> &'static (Kube, Images) {
    static CLUSTER: OnceLock<(Kube, Images)> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let kube = Kube::local();
        kube.install_crd();
        (kube, Images::build_and_load())
    })
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

impl Drop for Scene {
    fn drop(&mut self) {
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
        PortForward { child, port }
    }

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
            "the gateway's /health through the port-forward",
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

fn login(gateway: &PortForward, username: &str, password: &str) -> String {
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
fn buy_ship_and_receive(gateway: &PortForward, admin_password: &str, buyer: &str) -> i64 {
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

fn register(gateway: &PortForward, username: &str) {
    gateway.ok(
        "POST",
        "/api/v1/user/register",
        None,
        Some(json!({"username": username, "password": "password123", "email": format!("{username}@example.com"), "phone": "13800138000"})),
    );
}

fn order_status(gateway: &PortForward, token: &str, order_id: i64) -> Value {
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
