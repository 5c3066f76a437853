//! End to end on a real cluster (kind, k3d, ...) with the operator deployed and the images
//! reachable: the API server scenarios the local control-plane suite runs, then the example
//! Store in a fresh namespace until Ready, the gateway's /health through `kubectl
//! port-forward`, and the Store deleted with what it owned. `make test` does not run these
//! (they need images and a cluster it cannot make here; operator/tests/control_plane.rs is
//! their local counterpart): they are ignored unless asked for, and fail without KUBECONFIG.
//!
//! `make images`, load or push them, `helm install letsgo charts/letsgo` (or `tilt up`), then
//!
//!   KUBECONFIG=~/.kube/config cargo nextest run -p letsgo-operator --test cluster --run-ignored only
//!
//! LETSGO_E2E_REGISTRY and LETSGO_E2E_TAG override the Store's image registry and tag,
//! LETSGO_E2E_TIMEOUT (default 600s) how long it may take to become Ready, KUBECTL the kubectl
//! binary (default: `kubectl` on PATH).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{Kube, Namespace, repo, scenarios};

fn cluster() -> Kube {
    Kube::from_env().expect(
        "KUBECONFIG is not set: these tests need a real cluster with the operator installed (see README, \"On Kubernetes\")",
    )
}

/// A `kubectl port-forward` to the gateway Service, stopped on drop.
struct PortForward {
    child: Child,
    port: u16,
}

impl PortForward {
    fn start(kube: &Kube, namespace: &str, service: &str) -> PortForward {
        let mut child = kube
            .command()
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
#[ignore = "needs a real cluster with the operator and images: KUBECONFIG=... --run-ignored only"]
fn the_api_server_accepts_the_examples_and_refuses_bad_stores() {
    let kube = cluster();
    kube.install_crd();
    let namespace = Namespace::create(&kube, "letsgo-admission");
    scenarios::admission(&kube, &namespace.name);
}

#[test]
#[ignore = "needs a real cluster with the operator and images: KUBECONFIG=... --run-ignored only"]
fn a_store_becomes_a_running_shop_and_goes_away_with_its_children() {
    let kube = cluster();
    let kubectl = |args: &[&str]| kube.run(args);
    let timeout = std::env::var("LETSGO_E2E_TIMEOUT").unwrap_or_else(|_| "600s".into());
    kube.install_crd();
    let namespace = Namespace::create(&kube, "letsgo-e2e");
    let ns = namespace.name.as_str();
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
        support::patch_store(&kube, ns, &patch);
    }

    // Polled: `kubectl wait` fails at once while the Store has no conditions yet.
    let seconds: u64 = timeout
        .trim_end_matches('s')
        .parse()
        .expect("LETSGO_E2E_TIMEOUT in seconds, e.g. 600s");
    support::wait_for(
        "the Store to be Ready (is the operator running?)",
        Duration::from_secs(seconds),
        || {
            kube.get("store", "shop", ns)
                .filter(|store| support::condition(store, "Ready").as_deref() == Some("True"))
        },
        || {
            let status = kubectl(&["get", "store", "shop", "-n", ns, "-o", "jsonpath={.status}"]);
            let events = kubectl(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"]);
            format!("status: {status}\n{events}")
        },
    );
    let columns = kubectl(&["get", "stores", "-n", ns]);
    assert!(columns.contains("Ready"), "{columns}");
    assert!(columns.contains("9/9"), "{columns}");

    let forward = PortForward::start(&kube, ns, "svc/shop-gateway");
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
