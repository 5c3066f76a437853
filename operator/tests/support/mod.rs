//! What the cluster suites share: a kubectl bound to one cluster, namespaces that clean up after
//! themselves, waiting, and the scenarios that hold on any cluster (the local control plane of
//! `scripts/kube.sh` or a user's kind/k3d).
#![allow(dead_code)] // each test binary uses its own part

pub mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The repository, found at run time (CI's shared target directory outlives its clones).
pub fn repo() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .expect("operator/ sits in the repository")
    .to_path_buf()
}

/// A kubectl bound to one cluster through one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kube {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kube {
    /// The local control plane: started (built first, on a fresh machine) by `scripts/kube.sh
    /// ensure`, or found running. Panics with what to install when a tool is missing.
    pub fn local() -> Kube {
        let script = repo().join("scripts/kube.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("ensure")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "scripts/kube.sh ensure failed (its message is above; it needs Go >= 1.24, openssl \
             and Debian's etcd-server):\n{stdout}"
        );
        let export = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .map(|value| PathBuf::from(value.trim_matches('\'')))
                .unwrap_or_else(|| panic!("scripts/kube.sh ensure printed no {name}: {stdout}"))
        };
        Kube {
            kubectl: export("LETSGO_KUBECTL"),
            kubeconfig: export("KUBECONFIG"),
        }
    }

    /// The user's cluster, when KUBECONFIG is set (kubectl from KUBECTL, else PATH).
    pub fn from_env() -> Option<Kube> {
        let kubeconfig = std::env::var_os("KUBECONFIG")?;
        Some(Kube {
            kubectl: std::env::var_os("KUBECTL")
                .unwrap_or_else(|| "kubectl".into())
                .into(),
            kubeconfig: kubeconfig.into(),
        })
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// kubectl ARGS, with `stdin` fed to it when given.
    pub fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_stdin(self.command().args(args), stdin)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()))
    }

    /// kubectl ARGS, which must succeed; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        expect_success(
            &format!("kubectl {}", args.join(" ")),
            self.try_run(args, None),
        )
    }

    /// `kubectl apply -f -` (more ARGS after it) of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str, args: &[&str]) -> String {
        let mut all = vec!["apply", "-f", "-"];
        all.extend_from_slice(args);
        expect_success(
            &format!("kubectl {} of\n{yaml}", all.join(" ")),
            self.try_run(&all, Some(yaml)),
        )
    }

    /// kubectl ARGS `-o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.run(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {all:?}: {e}: {text}"))
    }

    /// The object, or None when it does not exist.
    pub fn get(&self, kind: &str, name: &str, namespace: &str) -> Option<Value> {
        let output = self.try_run(
            &[
                "get",
                kind,
                name,
                "-n",
                namespace,
                "-o",
                "json",
                "--ignore-not-found",
            ],
            None,
        );
        let text = expect_success(&format!("kubectl get {kind} {name}"), output);
        (!text.trim().is_empty()).then(|| serde_json::from_str(&text).expect("kubectl's JSON"))
    }

    /// The Store CRD, applied and Established (idempotent; tests in parallel may all do it).
    pub fn install_crd(&self) {
        let crd = repo().join("crds/store.yaml");
        self.run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=letsgo-tests",
            "-f",
            crd.to_str().unwrap(),
        ]);
        self.wait_established("stores.letsgo.dev");
    }

    /// Waits until the CRD `name` is Established. Polled rather than `kubectl wait`, which fails
    /// at once on a CRD whose status has no conditions yet (just created, or a control plane
    /// just restarted).
    pub fn wait_established(&self, name: &str) {
        wait_for(
            &format!("the CRD {name} to be Established"),
            std::time::Duration::from_secs(60),
            || {
                let output = self.try_run(&["get", "crd", name, "-o", "json"], None);
                let crd: Value = serde_json::from_slice(&output.stdout).ok()?;
                (condition(&crd, "Established").as_deref() == Some("True")).then_some(())
            },
            || self.run(&["get", "crd", name, "-o", "yaml"]),
        );
    }
}

pub fn run_with_stdin(command: &mut Command, stdin: Option<&str>) -> std::io::Result<Output> {
    use std::io::Write;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(text.as_bytes())?;
    }
    child.wait_with_output()
}

pub fn expect_success(what: &str, output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A merge patch of the Store `shop`.
pub fn patch_store(kube: &Kube, ns: &str, patch: &str) {
    kube.run(&[
        "patch",
        "store",
        "shop",
        "-n",
        ns,
        "--type=merge",
        "-p",
        patch,
    ]);
}

/// A namespace of this test's own, deleted (with everything in it) when dropped.
pub struct Namespace {
    pub kube: Kube,
    pub name: String,
}

impl Namespace {
    pub fn create(kube: &Kube, prefix: &str) -> Namespace {
        delete_namespaces_of_ended_runs(kube);
        let name = unique_name(prefix);
        kube.apply(
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    {TEST_PID_LABEL}: \"{}\"\n",
                std::process::id()
            ),
            &[],
        );
        Namespace {
            kube: kube.clone(),
            name,
        }
    }

    /// A namespace whose Pods all go to the local control plane's fake node (kwok: reported
    /// Running and Ready as soon as scheduled, no container started), for the suites that
    /// check what the operator asks of the API server. The API server's PodNodeSelector and
    /// PodTolerationRestriction admission give every Pod of the namespace the node selector
    /// and the toleration of the fake node's taint; other namespaces' Pods run on the real node.
    pub fn on_fake_node(kube: &Kube, prefix: &str) -> Namespace {
        delete_namespaces_of_ended_runs(kube);
        let name = unique_name(prefix);
        kube.apply(
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    {TEST_PID_LABEL}: \"{}\"\n  annotations:\n    scheduler.alpha.kubernetes.io/node-selector: type=kwok\n    scheduler.alpha.kubernetes.io/defaultTolerations: '[{{\"key\": \"{FAKE_NODE_TAINT}\", \"operator\": \"Exists\", \"effect\": \"NoSchedule\"}}]'\n",
                std::process::id()
            ),
            &[],
        );
        Namespace {
            kube: kube.clone(),
            name,
        }
    }
}

/// The label of every namespace a test makes: the id of the test process that made it.
const TEST_PID_LABEL: &str = "letsgo.dev/test-pid";

/// Deletes the namespaces tests made (labelled [`TEST_PID_LABEL`]) whose test process has
/// ended without deleting them, once per test process: a run killed half-way leaves its shops
/// on the real node, and their Pods' CPU requests would keep the next run's Pods from being
/// scheduled. A namespace without the label (anyone else's) is never touched.
fn delete_namespaces_of_ended_runs(kube: &Kube) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (name, pid) in test_namespaces(kube) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("deleting namespace {name}: the test process {pid} that made it ended");
                let _ = kube.try_run(&["delete", "namespace", &name, "--wait=false"], None);
            }
        }
    });
}

/// Every namespace labelled [`TEST_PID_LABEL`], with the process id the label holds.
fn test_namespaces(kube: &Kube) -> Vec<(String, u32)> {
    let label = TEST_PID_LABEL.replace('.', "\\.");
    let template = format!(
        "jsonpath={{range .items[*]}}{{.metadata.name}} {{.metadata.labels.{label}}}{{\"\\n\"}}{{end}}"
    );
    let listed = kube.try_run(
        &["get", "namespaces", "-l", TEST_PID_LABEL, "-o", &template],
        None,
    );
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            Some((name.to_owned(), pid.parse().ok()?))
        })
        .collect()
}

/// The taint that keeps Pods off the local control plane's fake node (scripts/kube.sh).
pub const FAKE_NODE_TAINT: &str = "letsgo.dev/fake-node";

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .kube
            .try_run(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// A port nobody listens on at the moment (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `prefix-<pid>-<seconds>-<n>`: unique across parallel test processes and reruns.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 100_000;
    format!(
        "{prefix}-{}-{seconds}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 250 ms until it returns Some, or panics after `timeout` with `what` and
/// the last thing `describe` says about the state.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The JSON at a `/`-separated path (`status/phase`), or Null.
pub fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('/').fold(value, |v, key| match v {
        Value::Array(items) => key
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .unwrap_or(&Value::Null),
        _ => v.get(key).unwrap_or(&Value::Null),
    })
}

/// The status (`"True"`, `"False"`) of a condition of an object.
pub fn condition(object: &Value, type_: &str) -> Option<String> {
    at(object, "status/conditions")
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

pub fn file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The chart of the repository, for `helm install`.
pub fn chart() -> String {
    repo().join("charts/letsgo").to_str().unwrap().to_owned()
}

pub struct Helm {
    bin: PathBuf,
    kube: Kube,
}

impl Helm {
    pub fn new(kube: &Kube) -> Helm {
        let bin = std::env::var_os("HELM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| "helm".into());
        let works = Command::new(&bin)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            works,
            "helm not found: set HELM_BIN or put helm on PATH (scripts/test.sh installs one under target/tools)"
        );
        Helm {
            bin,
            kube: kube.clone(),
        }
    }

    pub fn try_run(&self, args: &[&str]) -> std::process::Output {
        run_with_stdin(
            Command::new(&self.bin)
                .env("KUBECONFIG", &self.kube.kubeconfig)
                .args(args),
            None,
        )
        .expect("helm runs")
    }

    pub fn run(&self, args: &[&str]) -> String {
        expect_success(&format!("helm {}", args.join(" ")), self.try_run(args))
    }
}
