//! End to end on a real cluster (kind, k3d, ...), run only when KUBECONFIG is set: applies the
//! CRD and examples/store.yaml in a fresh namespace, waits for the Store to be Ready, GETs the
//! gateway's /health through `kubectl port-forward`, deletes the Store (checking that what it
//! owned goes with it) and the namespace.
//!
//! The operator must already run in the cluster and the images must be reachable by it:
//! `make images`, load or push them, `helm install letsgo charts/letsgo` (or `tilt up`).
//! LETSGO_E2E_REGISTRY and LETSGO_E2E_TAG override the Store's image registry and tag,
//! LETSGO_E2E_TIMEOUT (default 600s) how long it may take to become Ready, KUBECTL the kubectl
//! binary (default: `kubectl` on PATH).
//!
//!   KUBECONFIG=~/.kube/config cargo nextest run -p letsgo-operator --test cluster

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn repo() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

fn kubectl(args: &[&str]) -> String {
    let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (set KUBECTL): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubectl {} failed: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Deletes the namespace however the test ends.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .args([
                "delete",
                "namespace",
                &self.0,
                "--ignore-not-found",
                "--wait=false",
            ])
            .status();
    }
}

/// A `kubectl port-forward` to the gateway Service, stopped on drop.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn start(namespace: &str, service: &str) -> PortForward {
        let program = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut child = Command::new(program)
            .args(["port-forward", "-n", namespace, service, ":8888"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // "Forwarding from 127.0.0.1:43567 -> 8888"
        let port = lines
            .find_map(|line| {
                let line = line.ok()?;
                let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .expect("kubectl port-forward reports its local port");
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        PortForward { child, port }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn a_store_becomes_a_running_shop_and_goes_away_with_its_children() {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!(
            "KUBECONFIG is not set: the real-cluster suite does not run (see README, \"On Kubernetes\")"
        );
        return;
    }
    let timeout = std::env::var("LETSGO_E2E_TIMEOUT").unwrap_or_else(|_| "600s".into());
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let namespace = Namespace(format!("letsgo-e2e-{}-{stamp}", std::process::id()));
    let ns = namespace.0.as_str();

    let crd = repo().join("crds/store.yaml");
    kubectl(&["apply", "--server-side", "-f", crd.to_str().unwrap()]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/stores.letsgo.dev",
        "--timeout=60s",
    ]);
    kubectl(&["create", "namespace", ns]);
    let example = repo().join("examples/store.yaml");
    kubectl(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    let mut image = serde_json::Map::new();
    if let Ok(registry) = std::env::var("LETSGO_E2E_REGISTRY") {
        image.insert("registry".into(), registry.into());
    }
    if let Ok(tag) = std::env::var("LETSGO_E2E_TAG") {
        image.insert("tag".into(), tag.into());
    }
    if !image.is_empty() {
        let patch = serde_json::json!({"spec": {"image": image}}).to_string();
        kubectl(&[
            "patch",
            "store",
            "shop",
            "-n",
            ns,
            "--type=merge",
            "-p",
            &patch,
        ]);
    }

    let ready = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
        .args(["wait", "-n", ns, "store/shop", "--for=condition=Ready"])
        .arg(format!("--timeout={timeout}"))
        .status()
        .unwrap();
    if !ready.success() {
        let status = kubectl(&["get", "store", "shop", "-n", ns, "-o", "jsonpath={.status}"]);
        let events = kubectl(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
        panic!(
            "the Store did not become Ready within {timeout} (is the operator running?)\nstatus: {status}\n{events}"
        );
    }
    let columns = kubectl(&["get", "stores", "-n", ns]);
    assert!(columns.contains("Ready"), "{columns}");
    assert!(columns.contains("9/9"), "{columns}");

    let forward = PortForward::start(ns, "svc/shop-gateway");
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        match http_get(forward.port, "/health") {
            Ok(response) if response.starts_with("HTTP/1.1 200") => break response,
            other if Instant::now() > deadline => panic!("GET /health: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    drop(forward);

    kubectl(&[
        "delete",
        "store",
        "shop",
        "-n",
        ns,
        "--wait=true",
        "--timeout=120s",
    ]);
    // Owner references: the garbage collector removes what the Store made.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = kubectl(&[
            "get",
            "deployments,statefulsets,services,configmaps,secrets",
            "-l",
            "letsgo.dev/store=shop",
            "-n",
            ns,
            "-o",
            "name",
        ]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there after the Store was deleted:\n{left}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(namespace);
}
