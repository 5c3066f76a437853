//! The operator, the CRD and the chart against a real control plane on this machine:
//! kube-apiserver, kube-controller-manager and kube-scheduler built from source by
//! `scripts/kube.sh`, with a kwok node that reports every Pod scheduled to it Running and Ready
//! (no container runs). The first test to need it starts it (building it first on a fresh
//! machine); the others find it running. Each test works in its own namespace, and the operator
//! runs as a process of the test, with a kubeconfig for a ServiceAccount token bound to the
//! chart's own ClusterRole and Role, watching only that namespace.
//!
//! helm is HELM_BIN (scripts/test.sh installs one), else `helm` on PATH.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use letsgo_operator::manifests::backup;
use serde_json::Value;
use support::{
    Helm, Kube, Namespace, at, chart, condition, free_port, patch_store, repo, scenarios,
    unique_name, wait_for,
};

const WAIT: Duration = Duration::from_secs(120);

/// The six services and three managed middleware of examples/store.yaml.
const DEPLOYMENTS: [&str; 6] = ["user", "product", "cart", "order", "payment", "gateway"];
const STATEFUL_SETS: [&str; 3] = ["postgres", "redis", "kafka"];

#[test]
fn the_api_server_accepts_the_examples_and_refuses_bad_stores() {
    let kube = Kube::local();
    kube.install_crd();
    let namespace = Namespace::on_fake_node(&kube, "admission");
    scenarios::admission(&kube, &namespace.name);
}

#[test]
fn the_crd_upgrades_in_place_over_the_last_release_with_stores_present() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "upgrade");
    let ns = namespace.name.as_str();
    // Under a group and names of this test's own: the Store CRD the other tests share is not
    // touched, and `kubectl get stores` stays unambiguous for them.
    let group = format!("{}.upgrade.letsgo.test", unique_name("g"));
    let crd = |path: std::path::PathBuf| {
        support::file(&path)
            .replace(
                "name: stores.letsgo.dev",
                &format!("name: upgradestores.{group}"),
            )
            .replace("group: letsgo.dev", &format!("group: {group}"))
            .replace("kind: Store\n", "kind: UpgradeStore\n")
            .replace("plural: stores\n", "plural: upgradestores\n")
            .replace("singular: store\n", "singular: upgradestore\n")
            .replace("    - shop\n", "    - upgradeshop\n")
            .replace("    - letsgo\n", "    - letsgo-upgrade-test\n")
    };
    let crd_name = format!("crd/upgradestores.{group}");
    let _cleanup = DeleteOnDrop(kube.clone(), crd_name.clone());
    let store = |name: &str, spec: &str| {
        format!(
            "apiVersion: {group}/v1alpha1\nkind: UpgradeStore\nmetadata:\n  name: {name}\nspec: {spec}\n"
        )
    };
    let established = || kube.wait_established(crd_name.trim_start_matches("crd/"));

    // 0.1.0's CRD, and Stores made under it: one without a tag, one with a name the new CRD
    // no longer accepts for new Stores.
    kube.apply(
        &crd(repo().join("operator/tests/fixtures/store-crd-0.1.0.yaml")),
        &["--server-side"],
    );
    established();
    let long = "l".repeat(45);
    kube.apply(&store("old", "{shop: {demoCatalogue: true}}"), &["-n", ns]);
    kube.apply(&store(&long, "{}"), &["-n", ns]);
    let kind = format!("upgradestores.{group}");
    let old = kube.json(&["get", &kind, "old", "-n", ns]);
    // The old schema wrote its default tag into the Store: it will not follow the operator.
    assert_eq!(at(&old, "spec/image/tag"), "0.1.0", "{old}");

    // The new CRD applied over it, as the README's upgrade steps do.
    kube.apply(
        &crd(repo().join("crds/store.yaml")),
        &["--server-side", "--force-conflicts"],
    );
    established();
    // The old Stores are still read and still accept changes, the long name included.
    for name in ["old", long.as_str()] {
        kube.run(&[
            "patch",
            &kind,
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"services":{"cart":{"replicas":2}}}}"#,
        ]);
    }
    // The frozen tag can be removed, and then the Store follows the operator's version.
    kube.run(&[
        "patch",
        &kind,
        "old",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/image/tag"}]"#,
    ]);
    let old = kube.json(&["get", &kind, "old", "-n", ns]);
    assert!(at(&old, "spec/image/tag").is_null(), "{old}");
    // A new Store without a tag stays without one; a new long name is refused.
    kube.apply(&store("new", "{}"), &["-n", ns]);
    let new = kube.json(&["get", &kind, "new", "-n", ns]);
    assert!(
        at(&new, "spec/image/tag").is_null(),
        "the CRD froze a default tag: {new}"
    );
    assert_eq!(at(&new, "spec/image/registry"), "ghcr.io/letsgo", "{new}");
    let refused = kube.try_run(
        &["apply", "-n", ns, "-f", "-"],
        Some(&store(&"n".repeat(41), "{}")),
    );
    assert!(
        !refused.status.success(),
        "a new 41-character name was accepted"
    );
}

/// Deletes a cluster-scoped object (`kind/name`) however the test ends.
struct DeleteOnDrop(Kube, String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let _ = self.0.try_run(
            &["delete", &self.1, "--wait=false", "--ignore-not-found"],
            None,
        );
    }
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "chart");
    let ns = namespace.name.as_str();
    let helm = Helm::new(&kube);
    let release = unique_name("lg");
    let operator = format!("{release}-letsgo-operator");

    helm.run(&[
        "install",
        &release,
        &chart(),
        "-n",
        ns,
        "--wait",
        "--timeout=120s",
    ]);
    kube.wait_established("stores.letsgo.dev");
    for (kind, name, namespaced) in [
        ("clusterrole", operator.as_str(), false),
        ("clusterrolebinding", operator.as_str(), false),
        ("serviceaccount", operator.as_str(), true),
        ("role", &format!("{operator}-leader"), true),
        ("rolebinding", &format!("{operator}-leader"), true),
        ("service", &format!("{operator}-metrics"), true),
    ] {
        let mut args = vec!["get", kind, name, "-o", "name"];
        if namespaced {
            args.extend(["-n", ns]);
        }
        kube.run(&args);
    }
    let deployment = kube.json(&["get", "deployment", &operator, "-n", ns]);
    assert_eq!(
        at(&deployment, "status/availableReplicas"),
        1,
        "{deployment}"
    );

    helm.run(&[
        "upgrade",
        &release,
        &chart(),
        "-n",
        ns,
        "--wait",
        "--timeout=120s",
        "--set",
        "replicaCount=2",
        "--set",
        "logging.level=debug",
    ]);
    let deployment = kube.json(&["get", "deployment", &operator, "-n", ns]);
    assert_eq!(at(&deployment, "spec/replicas"), 2, "{deployment}");
    assert_eq!(
        at(&deployment, "status/availableReplicas"),
        2,
        "{deployment}"
    );
    let env = at(&deployment, "spec/template/spec/containers/0/env");
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "debug"),
        "{env}"
    );
    // A value the schema refuses is refused before anything changes.
    let refused = helm.try_run(&[
        "upgrade",
        &release,
        &chart(),
        "-n",
        ns,
        "--set",
        "replicaCount=9",
    ]);
    assert!(!refused.status.success(), "replicaCount=9 was accepted");

    helm.run(&["uninstall", &release, "-n", ns, "--wait", "--timeout=120s"]);
    for (kind, name) in [
        ("clusterrole", operator.as_str()),
        ("clusterrolebinding", &operator),
    ] {
        let left = kube.run(&["get", kind, name, "--ignore-not-found", "-o", "name"]);
        assert!(
            left.trim().is_empty(),
            "{kind}/{name} outlived helm uninstall"
        );
    }
    let left = kube.run(&[
        "get",
        "deployment,serviceaccount,role,service",
        "-n",
        ns,
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "outlived helm uninstall: {left}");
    // Helm never deletes a CRD it installed from crds/: the Stores (and the shops) stay.
    kube.run(&["get", "crd", "stores.letsgo.dev", "-o", "name"]);
}

#[test]
fn the_operator_runs_a_store_through_its_life_with_the_charts_rbac() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "life");
    let ns = namespace.name.as_str();
    let rbac = ChartRbac::install(&kube, ns);
    let _volumes = Volumes::for_store(&kube, ns, "shop");
    let operator = Operator::start(&kube, &rbac, ns, "operator-a");

    // The managed example becomes every child, and Ready once the fake node runs its Pods.
    let example = repo().join("examples/store.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    let store = wait_ready(&kube, ns, &operator);
    assert_eq!(at(&store, "status/readyComponents"), "9/9", "{store}");
    assert_eq!(at(&store, "status/version"), "0.1.0", "{store}");
    policies_select_exactly_their_pods(&kube, ns);
    assert_eq!(
        at(&store, "status/observedGeneration"),
        at(&store, "metadata/generation")
    );
    let uid = at(&store, "metadata/uid").as_str().unwrap().to_owned();
    for name in DEPLOYMENTS.iter().chain(&STATEFUL_SETS) {
        let kind = if DEPLOYMENTS.contains(name) {
            "deployment"
        } else {
            "statefulset"
        };
        let child = kube.json(&["get", kind, &format!("shop-{name}"), "-n", ns]);
        let owner = at(&child, "metadata/ownerReferences/0");
        assert_eq!(owner["uid"], uid.as_str(), "{kind} shop-{name}: {owner}");
        assert_eq!(owner["controller"], true, "{kind} shop-{name}: {owner}");
    }
    for name in ["shop-config", "shop-secrets"] {
        let kind = if name.ends_with("config") {
            "configmap"
        } else {
            "secret"
        };
        kube.run(&["get", kind, name, "-n", ns]);
    }

    // A second pass writes nothing: poke the Store, let a reconcile finish, compare versions.
    let before = settled_versions(&kube, ns);
    let poked = poke_and_wait_reconcile(&kube, ns, &operator);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        versions(&kube, ns),
        before,
        "a reconcile with nothing to change wrote children"
    );
    let after = kube.json(&["get", "store", "shop", "-n", ns]);
    assert_eq!(
        at(&after, "metadata/resourceVersion"),
        at(&poked, "metadata/resourceVersion"),
        "a reconcile with nothing to change wrote the Store's status"
    );

    // A deleted Deployment comes back.
    let cart = kube.json(&["get", "deployment", "shop-cart", "-n", ns]);
    kube.run(&["delete", "deployment", "shop-cart", "-n", ns, "--wait=true"]);
    wait_for(
        "shop-cart to be made again",
        WAIT,
        || {
            kube.get("deployment", "shop-cart", ns)
                .filter(|d| at(d, "metadata/uid") != at(&cart, "metadata/uid"))
        },
        || operator.log(),
    );
    wait_ready(&kube, ns, &operator);

    // A Pod that stops being ready makes the Store Degraded; ready again, the Store is Ready.
    let pod = first_pod(&kube, ns, "cart");
    set_pod_ready(&kube, ns, &pod, false);
    let degraded = wait_phase(&kube, ns, "Degraded", &operator);
    assert_eq!(
        condition(&degraded, "Degraded").as_deref(),
        Some("True"),
        "{degraded}"
    );
    assert_eq!(
        condition(&degraded, "Ready").as_deref(),
        Some("False"),
        "{degraded}"
    );
    let message = degraded["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()["message"]
        .to_string();
    assert!(message.contains("cart"), "{message}");
    set_pod_ready(&kube, ns, &pod, true);
    wait_ready(&kube, ns, &operator);

    // A Pod whose image cannot be pulled: Degraded with the reason a person can act on.
    let container = kube.json(&["get", "pod", &pod, "-n", ns])["spec"]["containers"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"False"}},{{"type":"ContainersReady","status":"False"}}],"containerStatuses":[{{"name":"{container}","ready":false,"state":{{"running":null,"waiting":{{"reason":"ImagePullBackOff","message":"Back-off pulling image"}}}}}}]}}}}"#
    );
    kube.run(&[
        "patch",
        "pod",
        &pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &waiting,
    ]);
    let failing = wait_status_contains(
        &kube,
        ns,
        "the Store to name the failing Pod",
        "ComponentsFailing",
        &operator,
    );
    assert_eq!(
        at(&failing, "status/phase"),
        "Degraded",
        "{}",
        failing["status"]
    );
    assert!(
        failing["status"]
            .to_string()
            .contains("cart: ImagePullBackOff (Back-off pulling image)"),
        "{}",
        failing["status"]
    );
    let running = format!(
        r#"{{"status":{{"containerStatuses":[{{"name":"{container}","ready":true,"state":{{"waiting":null,"running":{{"startedAt":"2026-01-01T00:00:00Z"}}}}}}]}}}}"#
    );
    kube.run(&[
        "patch",
        "pod",
        &pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &running,
    ]);
    set_pod_ready(&kube, ns, &pod, true);
    wait_ready(&kube, ns, &operator);

    // PostgreSQL restarting after the shop has run: Degraded (not Pending), and a change to the
    // services still goes through.
    set_pod_ready(&kube, ns, "shop-postgres-0", false);
    let degraded = wait_phase(&kube, ns, "Degraded", &operator);
    assert!(
        degraded.to_string().contains("not ready: postgres"),
        "{}",
        degraded["status"]
    );
    patch_store(
        &kube,
        ns,
        r#"{"spec":{"services":{"cart":{"replicas":2}}}}"#,
    );
    wait_for(
        "the cart's new replica count while PostgreSQL is down",
        WAIT,
        || {
            kube.get("deployment", "shop-cart", ns)
                .filter(|d| at(d, "status/readyReplicas") == 2)
        },
        || operator.log(),
    );
    set_pod_ready(&kube, ns, "shop-postgres-0", true);
    wait_ready(&kube, ns, &operator);

    // A new image tag is Progressing until the new ReplicaSets' Pods are ready. A quota holding
    // the namespace at its current Pod count keeps the new Pods from being made until lifted.
    hold_new_pods(&kube, ns);
    patch_store(&kube, ns, r#"{"spec":{"image":{"tag":"0.2.0"}}}"#);
    let generation =
        kube.json(&["get", "store", "shop", "-n", ns])["metadata"]["generation"].clone();
    let progressing = wait_for(
        "the Store to report the new generation as Progressing",
        WAIT,
        || {
            kube.get("store", "shop", ns).filter(|s| {
                at(s, "status/observedGeneration") == &generation
                    && at(s, "status/phase") == "Progressing"
            })
        },
        || operator.log(),
    );
    assert_eq!(
        condition(&progressing, "Progressing").as_deref(),
        Some("True"),
        "{progressing}"
    );
    assert_eq!(
        condition(&progressing, "Ready").as_deref(),
        Some("False"),
        "{progressing}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let held = kube.json(&["get", "store", "shop", "-n", ns]);
    assert_eq!(
        at(&held, "status/phase"),
        "Progressing",
        "Ready while no new Pod exists: {held}"
    );
    assert_eq!(at(&held, "status/version"), "0.1.0", "{held}");
    // Why it waits, once the Deployments say (the quota refuses their Pods).
    let why = wait_for(
        "the Store to say what holds its rollout back",
        WAIT,
        || {
            let store = kube.get("store", "shop", ns)?;
            let message = store["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?["message"]
                .as_str()?
                .to_owned();
            message.contains("held back: ").then_some(message)
        },
        || kube.run(&["get", "store", "shop", "-n", ns, "-o", "jsonpath={.status}"]),
    );
    assert!(
        why.contains("ReplicaFailure") && why.contains("exceeded quota"),
        "{why}"
    );
    // The gateway rolls last: the services it calls have the new tag, it keeps the old one.
    let image = |name: &str| {
        let deployment = kube.json(&["get", "deployment", name, "-n", ns]);
        at(&deployment, "spec/template/spec/containers/0/image")
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        image("shop-cart").ends_with(":0.2.0"),
        "{}",
        image("shop-cart")
    );
    assert!(
        image("shop-gateway").ends_with(":0.1.0"),
        "the gateway rolled before the services it calls: {}",
        image("shop-gateway")
    );
    kube.run(&["delete", "resourcequota", "hold", "-n", ns]);
    let store = wait_ready(&kube, ns, &operator);
    assert_eq!(at(&store, "status/readyComponents"), "9/9", "{store}");
    assert_eq!(at(&store, "status/version"), "0.2.0", "{store}");
    for name in DEPLOYMENTS {
        let deployment = kube.json(&["get", "deployment", &format!("shop-{name}"), "-n", ns]);
        let image = at(&deployment, "spec/template/spec/containers/0/image");
        assert!(
            image.as_str().unwrap().ends_with(":0.2.0"),
            "shop-{name}: {image}"
        );
        assert_eq!(
            at(&deployment, "status/updatedReplicas"),
            at(&deployment, "spec/replicas")
        );
    }

    // The generated Secret deleted by mistake: made again with new credentials, and PostgreSQL
    // restarts so its init container sets them on the data (the script is tested for real in
    // the_postgres_credentials_script_reopens_data_made_under_another_password).
    let secret = kube.json(&["get", "secret", "shop-secrets", "-n", ns]);
    let credentials = |set: &Value| {
        set["spec"]["template"]["metadata"]["annotations"]["letsgo.dev/credentials-hash"].clone()
    };
    let postgres = kube.json(&["get", "statefulset", "shop-postgres", "-n", ns]);
    let init = at(&postgres, "spec/template/spec/initContainers/0/name");
    assert_eq!(init, "credentials", "{postgres}");
    kube.run(&["delete", "secret", "shop-secrets", "-n", ns]);
    wait_for(
        "PostgreSQL to restart with the new credentials",
        WAIT,
        || {
            kube.get("statefulset", "shop-postgres", ns)
                .filter(|set| credentials(set) != credentials(&postgres))
        },
        || operator.log(),
    );
    let remade = kube.json(&["get", "secret", "shop-secrets", "-n", ns]);
    assert_ne!(
        remade["data"], secret["data"],
        "the same credentials were made again?"
    );
    wait_ready(&kube, ns, &operator);

    // Deleted, the Store takes its children with it (the garbage collector follows the owner
    // references); the data stays, as the README says: the volumes and the Secret holding their
    // credentials. Applied again, the Store finds both.
    let secret = kube.json(&["get", "secret", "shop-secrets", "-n", ns]);
    kube.run(&[
        "delete",
        "store",
        "shop",
        "-n",
        ns,
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(
        "the garbage collector to remove the Store's children",
        WAIT,
        || {
            let left = kube.run(&[
                "get",
                "deployments,statefulsets,services,configmaps",
                "-n",
                ns,
                "-l",
                "letsgo.dev/store=shop",
                "-o",
                "name",
            ]);
            left.trim().is_empty().then_some(())
        },
        || kube.run(&["get", "all", "-n", ns]),
    );
    // Its metric series go too: a deleted Store is not reconciled again, so the operator
    // prunes the series of Stores that left its cache.
    wait_for(
        "the deleted Store's metric series to go",
        WAIT,
        || {
            let text = http_get(operator.metrics, "/metrics")?;
            (!text.contains(&format!(r#"namespace="{ns}",store="shop""#))).then_some(())
        },
        || {
            let left: Vec<String> = http_get(operator.metrics, "/metrics")
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(r#"store="shop""#))
                .map(str::to_owned)
                .collect();
            format!("series left: {left:#?}\n{}", operator.log())
        },
    );
    let claims = kube.run(&["get", "pvc", "-n", ns, "-o", "name"]);
    for set in STATEFUL_SETS {
        assert!(
            claims.contains(&format!("data-shop-{set}-0")),
            "{set}'s volume went: {claims}"
        );
    }
    let kept = kube.json(&["get", "secret", "shop-secrets", "-n", ns]);
    assert_eq!(kept["data"], secret["data"], "the credentials changed");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    wait_ready(&kube, ns, &operator);
    let reopened = kube.json(&["get", "secret", "shop-secrets", "-n", ns]);
    assert_eq!(
        reopened["data"], secret["data"],
        "the re-applied Store made new credentials"
    );
    let claims = kube.json(&["get", "pvc", "data-shop-postgres-0", "-n", ns]);
    assert_eq!(at(&claims, "status/phase"), "Bound", "{claims}");
    operator.assert_never_forbidden();
}

#[test]
fn a_refused_child_is_reported_in_the_status_and_as_a_warning_event() {
    let scene = Scene::start("refused");
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    // A Deployment already named like the Store's cart, with another selector: the selector is
    // immutable, so the operator's apply is refused (422) on every try.
    kube.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop-cart\nspec:\n  selector:\n    matchLabels: {app: squatter}\n  template:\n    metadata:\n      labels: {app: squatter}\n    spec:\n      containers: [{name: c, image: squatter:1}]\n",
        &["-n", ns],
    );
    // External middleware, its Secrets in place: the services are applied on the first pass.
    apply_external_example(kube, ns);
    let failed = wait_for(
        "the failure in the Store's status",
        WAIT,
        || {
            kube.get("store", "shop", ns).filter(|s| {
                s["status"]["conditions"]
                    .as_array()
                    .is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c["type"] == "Degraded" && c["reason"] == "ReconcileFailed")
                    })
            })
        },
        || operator.log(),
    );
    assert_eq!(
        at(&failed, "status/phase"),
        "Degraded",
        "{}",
        failed["status"]
    );
    assert_eq!(condition(&failed, "Ready").as_deref(), Some("False"));
    let message = failed["status"].to_string();
    assert!(message.contains("field is immutable"), "{message}");
    assert!(message.contains("shop-cart"), "{message}");
    let events = kube.json(&[
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "--field-selector",
        "reason=ReconcileFailed",
    ]);
    let event = &events["items"][0];
    assert_eq!(event["type"], "Warning", "{events}");
    assert_eq!(event["regarding"]["name"], "shop", "{events}");

    // The squatter gone, the next retry succeeds and the Store says so.
    kube.run(&["delete", "deployment", "shop-cart", "-n", ns, "--wait=true"]);
    let store = wait_ready(kube, ns, operator);
    assert_eq!(
        condition(&store, "Degraded").as_deref(),
        Some("False"),
        "{store}"
    );
    operator.assert_never_forbidden();
}

#[test]
fn external_middleware_waits_for_its_secrets_and_rolls_when_they_change() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "external");
    let ns = namespace.name.as_str();
    // The chart's single-namespace mode: a Role in this namespace, no ClusterRole at all.
    let watch = format!("watchNamespace={ns}");
    let rbac = ChartRbac::install_with(&kube, ns, &["--set", &watch]);
    let cluster_roles = kube.run(&["get", "clusterroles", "-o", "name"]);
    assert!(
        !cluster_roles.contains(&rbac.lease),
        "a ClusterRole in single-namespace mode"
    );
    let operator = Operator::start(&kube, &rbac, ns, "operator-a");
    let example = repo().join("examples/store-external.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);

    // No Secret yet: the Store names them, and no Pod is left failing on a missing Secret.
    let waiting = wait_status_contains(
        &kube,
        ns,
        "the Store to name the missing Secrets",
        "ExternalSecretMissing",
        &operator,
    );
    assert_eq!(
        at(&waiting, "status/phase"),
        "Pending",
        "{}",
        waiting["status"]
    );
    let message = waiting["status"].to_string();
    for secret in ["shop-postgres", "shop-redis", "shop-kafka", "shop-etcd"] {
        assert!(
            message.contains(&format!("Secret {secret} not found")),
            "{message}"
        );
    }
    let deployments = kube.run(&[
        "get",
        "deployments",
        "-n",
        ns,
        "-l",
        "letsgo.dev/store=shop",
        "-o",
        "name",
    ]);
    assert!(
        deployments.trim().is_empty(),
        "services applied without their Secrets: {deployments}"
    );

    // Every Secret but a key: the Store names the key (the Secrets' watch brings it at once).
    create_external_secrets(&kube, ns, "");
    wait_for(
        "the Store to name the missing key",
        Duration::from_secs(20),
        || {
            kube.get("store", "shop", ns).filter(|s| {
                s["status"]
                    .to_string()
                    .contains(r#"Secret shop-postgres has no key \"password\""#)
            })
        },
        || {
            kube.get("store", "shop", ns)
                .map(|s| s["status"].to_string())
                .unwrap_or_default()
                + &operator.log()
        },
    );

    // The key added, the shop runs; the password rotated, the services that use it roll.
    kube.run(&[
        "patch",
        "secret",
        "shop-postgres",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"first"}}"#,
    ]);
    let store = wait_ready(&kube, ns, &operator);
    assert_eq!(at(&store, "status/readyComponents"), "6/6", "{store}");
    // The operator says which external middleware it reaches: the Redis running here, not
    // the made-up hosts of the others.
    let reachable = |condition: &str| {
        store["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == condition)
            .map(|c| {
                (
                    c["status"].as_str().unwrap().to_owned(),
                    c["message"].to_string(),
                )
            })
            .unwrap_or_else(|| panic!("no {condition} condition: {}", store["status"]))
    };
    let (redis, message) = reachable("RedisReachable");
    assert_eq!(redis, "True", "{message}");
    for (condition, address) in [
        ("PostgresReachable", "db.example:5432"),
        ("KafkaReachable", "kafka.example:9092"),
        ("EtcdReachable", "etcd.example:2379"),
    ] {
        let (status, message) = reachable(condition);
        assert_eq!(status, "False", "{condition}: {message}");
        assert!(message.contains(address), "{condition}: {message}");
    }
    let hash = |name: &str| {
        let deployment = kube.json(&["get", "deployment", name, "-n", ns]);
        deployment["spec"]["template"]["metadata"]["annotations"]["letsgo.dev/config-hash"].clone()
    };
    let order = hash("shop-order");
    assert!(order.is_string(), "no config hash on shop-order");
    kube.run(&[
        "patch",
        "secret",
        "shop-postgres",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"second"}}"#,
    ]);
    wait_for(
        "the order service to roll after the password changed",
        Duration::from_secs(20),
        || (hash("shop-order") != order).then_some(()),
        || operator.log(),
    );
    wait_ready(&kube, ns, &operator);
    assert_ne!(hash("shop-order"), order);
    operator.assert_never_forbidden();
}

#[test]
fn an_autoscaled_service_keeps_the_replicas_its_autoscaler_sets() {
    let scene = Scene::start("autoscale");
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    apply_external_example(kube, ns);
    patch_store(
        kube,
        ns,
        r#"{"spec":{"services":{"cart":{"autoscaling":{"minReplicas":1,"maxReplicas":4}}}}}"#,
    );
    wait_ready(kube, ns, operator);
    let hpa = kube.json(&["get", "horizontalpodautoscaler", "shop-cart", "-n", ns]);
    assert_eq!(at(&hpa, "spec/maxReplicas"), 4, "{hpa}");
    assert_eq!(at(&hpa, "spec/scaleTargetRef/name"), "shop-cart", "{hpa}");

    // Scaled through /scale by another field manager (as the autoscaler does), and the order
    // service, which is not autoscaled, too.
    kube.run(&["scale", "deployment", "shop-cart", "-n", ns, "--replicas=3"]);
    kube.run(&[
        "scale",
        "deployment",
        "shop-order",
        "-n",
        ns,
        "--replicas=3",
    ]);
    poke_and_wait_reconcile(kube, ns, operator);
    // The operator set the order service back to its spec; the autoscaler's choice stands.
    wait_for(
        "the order service back at one replica",
        WAIT,
        || {
            kube.get("deployment", "shop-order", ns)
                .filter(|d| at(d, "spec/replicas") == 1)
        },
        || operator.log(),
    );
    let cart = kube.json(&["get", "deployment", "shop-cart", "-n", ns]);
    assert_eq!(
        at(&cart, "spec/replicas"),
        3,
        "the operator took the autoscaler's replicas back"
    );

    // Autoscaling off: the operator owns the count again, and the autoscaler goes.
    kube.run(&[
        "patch",
        "store",
        "shop",
        "-n",
        ns,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/services/cart/autoscaling"}]"#,
    ]);
    wait_for(
        "the autoscaler removed and the cart back at one replica",
        WAIT,
        || {
            let gone = kube
                .get("horizontalpodautoscaler", "shop-cart", ns)
                .is_none();
            kube.get("deployment", "shop-cart", ns)
                .filter(|d| gone && at(d, "spec/replicas") == 1)
        },
        || operator.log(),
    );
    operator.assert_never_forbidden();
}

#[test]
fn a_rollout_past_its_progress_deadline_is_degraded_with_the_reason() {
    let scene = Scene::start("deadline");
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    apply_external_example(kube, ns);
    wait_ready(kube, ns, operator);

    // The cart's deadline shortened by another field manager (the operator sets none) to the
    // least the API server takes (past `minReadySeconds`), and a quota that keeps the new Pods
    // from being made: the rollout cannot progress.
    let cart = kube.json(&["get", "deployment", "shop-cart", "-n", ns]);
    let deadline = at(&cart, "spec/minReadySeconds").as_i64().unwrap_or(0) + 1;
    kube.run(&[
        "patch",
        "deployment",
        "shop-cart",
        "-n",
        ns,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"progressDeadlineSeconds":{deadline}}}}}"#),
    ]);
    hold_new_pods(kube, ns);
    patch_store(kube, ns, r#"{"spec":{"image":{"tag":"0.2.0"}}}"#);
    let stalled = wait_status_contains(
        kube,
        ns,
        "the stalled rollout named in the status",
        "cart: ProgressDeadlineExceeded",
        operator,
    );
    assert_eq!(
        at(&stalled, "status/phase"),
        "Degraded",
        "{}",
        stalled["status"]
    );
    assert_eq!(condition(&stalled, "Degraded").as_deref(), Some("True"));

    // Unblocked, the rollout completes and the Store is Ready at the new tag.
    kube.run(&["delete", "resourcequota", "hold", "-n", ns]);
    let store = wait_ready(kube, ns, operator);
    assert_eq!(at(&store, "status/version"), "0.2.0", "{}", store["status"]);
    operator.assert_never_forbidden();
}

#[test]
fn of_two_operators_one_leads_and_the_other_takes_over_when_it_stops_or_dies() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "leader");
    let ns = namespace.name.as_str();
    let rbac = ChartRbac::install(&kube, ns);
    // A 10 s Lease: a successor that waited for it to expire would take more than that.
    let lease_secs = 10;
    let mut first = Operator::start_with_lease(&rbac, ns, "operator-a", lease_secs);
    wait_leader(&first, "operator-a");
    let mut second = Operator::start_with_lease(&rbac, ns, "operator-b", lease_secs);
    wait_for(
        "operator-b to serve metrics",
        WAIT,
        || second.try_metric("letsgo_operator_leader"),
        || second.log(),
    );

    // Only the leader reconciles: the Store is written by one operator.
    let example = repo().join("examples/store.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    wait_for(
        "operator-a to reconcile the Store",
        WAIT,
        || {
            kube.get("store", "shop", ns)
                .filter(|s| !at(s, "status/phase").is_null())
        },
        || first.log(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        second.metric("letsgo_operator_leader"),
        0.0,
        "two leaders\n{}",
        second.log()
    );
    assert_eq!(
        second.metric("letsgo_operator_reconciliations_total"),
        0.0,
        "{}",
        second.log()
    );
    assert_eq!(holder(&kube, &rbac, ns), "operator-a");

    // Stopped (SIGTERM), the leader gives the Lease up on its way out: the other takes it at
    // once, not after the Lease's 10 s.
    first.terminate();
    assert!(
        first.exited_cleanly(),
        "operator-a did not stop on SIGTERM\n{}",
        first.log()
    );
    wait_for(
        "operator-b to take the released Lease",
        Duration::from_secs(5),
        || (second.try_metric("letsgo_operator_leader") == Some(1.0)).then_some(()),
        || format!("{}\n{}", first.log(), second.log()),
    );
    assert_eq!(holder(&kube, &rbac, ns), "operator-b");
    kube.run(&["annotate", "store", "shop", "-n", ns, "letsgo.dev/poked=1"]);
    wait_for(
        "operator-b to reconcile",
        WAIT,
        || (second.try_metric("letsgo_operator_reconciliations_total") > Some(0.0)).then_some(()),
        || second.log(),
    );

    // Killed without a chance to let go, the leader's Lease expires and a third takes it.
    let third = Operator::start_with_lease(&rbac, ns, "operator-c", lease_secs);
    wait_for(
        "operator-c to serve metrics",
        WAIT,
        || third.try_metric("letsgo_operator_leader"),
        || third.log(),
    );
    second.kill();
    wait_leader(&third, "operator-c");
    assert_eq!(holder(&kube, &rbac, ns), "operator-c");
    for operator in [&first, &second, &third] {
        operator.assert_never_forbidden();
    }
}

/// A Lease's time as its holder writes it: `skew_secs` off this machine's clock.
fn lease_time(skew_secs: i64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let stamp = k8s_openapi::jiff::Timestamp::from_second(now + skew_secs).unwrap();
    format!("{}.000000Z", stamp.strftime("%Y-%m-%dT%H:%M:%S"))
}

/// Renews the Lease as its holder would, writing `renewed` as its renewTime.
fn renew_lease(kube: &Kube, rbac: &ChartRbac, ns: &str, renewed: &str) {
    let patch = format!(r#"{{"spec":{{"renewTime":"{renewed}"}}}}"#);
    kube.run(&[
        "patch",
        "lease",
        &rbac.lease,
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        &patch,
    ]);
}

/// Leadership is judged by whether the Lease's record changes, timed by the operator's own
/// clock, never by comparing the holder's renewTime with it: a holder whose clock is five
/// minutes behind keeps its Lease while it renews (comparing clocks, the operator would take it
/// at once: two leaders), and one whose clock is five minutes ahead loses it within the
/// Lease's duration once it stops renewing (comparing clocks, only after five minutes).
#[test]
fn a_lease_holder_with_a_skewed_clock_is_judged_by_its_renewals() {
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "skew");
    let ns = namespace.name.as_str();
    let rbac = ChartRbac::install(&kube, ns);
    let lease_secs = 10;
    let behind = lease_time(-300);
    kube.apply(
        &format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {}\n  namespace: {ns}\n\
             spec:\n  holderIdentity: ghost\n  leaseDurationSeconds: {lease_secs}\n  acquireTime: {behind}\n  renewTime: {behind}\n",
            rbac.lease
        ),
        &[],
    );
    let operator = Operator::start_with_lease(&rbac, ns, "operator-a", lease_secs);
    wait_for(
        "operator-a to serve metrics",
        WAIT,
        || operator.try_metric("letsgo_operator_leader"),
        || operator.log(),
    );
    // The ghost renews every 2 s for twice the Lease's duration, its clock five minutes behind.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(2));
        renew_lease(&kube, &rbac, ns, &lease_time(-300));
        assert_eq!(
            operator.metric("letsgo_operator_leader"),
            0.0,
            "the operator took a Lease its holder keeps renewing\n{}",
            operator.log()
        );
        assert_eq!(holder(&kube, &rbac, ns), "ghost");
    }
    // Its last renewal, with its clock now five minutes ahead; then it is gone.
    renew_lease(&kube, &rbac, ns, &lease_time(300));
    let stopped = std::time::Instant::now();
    wait_leader(&operator, "operator-a");
    let taken = stopped.elapsed();
    assert!(
        taken >= Duration::from_secs(lease_secs.into()),
        "taken {taken:?} after the last renewal, before the Lease's {lease_secs} s"
    );
    assert_eq!(holder(&kube, &rbac, ns), "operator-a");
    operator.assert_never_forbidden();
}

fn wait_leader(operator: &Operator, name: &str) {
    wait_for(
        &format!("{name} to lead"),
        Duration::from_secs(30),
        || (operator.try_metric("letsgo_operator_leader") == Some(1.0)).then_some(()),
        || operator.log(),
    );
}

fn holder(kube: &Kube, rbac: &ChartRbac, ns: &str) -> String {
    let lease = kube.json(&["get", "lease", &rbac.lease, "-n", ns]);
    at(&lease, "spec/holderIdentity")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The managed PostgreSQL's init container, run for real (Debian's PostgreSQL binaries, as the
/// `postgres` user): data made under one password opens with the Secret's new one, and an empty
/// data directory is left alone. This is what keeps a shop whose generated Secret was deleted
/// and made again from being locked out of its retained volume.
#[test]
fn the_postgres_credentials_script_reopens_data_made_under_another_password() {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| versions.filter_map(Result::ok).map(|v| v.path().join("bin")).max())
        .filter(|bin| bin.join("initdb").exists())
        .expect("PostgreSQL's server binaries (/usr/lib/postgresql/*/bin): `make test` installs them (scripts/middleware.sh), or apt-get install postgresql");
    let dir = std::env::temp_dir().join(unique_name("letsgo-pg-credentials"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let as_postgres = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "env", &format!("PATH={path}")]);
        for (key, value) in env {
            command.arg(format!("{key}={value}"));
        }
        command.args(args);
        support::run_with_stdin(&mut command, None).expect("runuser runs")
    };
    assert!(
        Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let data = dir.join("pgdata");
    let data = data.to_str().unwrap();
    let script = letsgo_operator::manifests::POSTGRES_CREDENTIALS_SCRIPT;
    let env = |password: &'static str| {
        [
            ("PGDATA", data),
            ("POSTGRES_USER", "letsgo"),
            ("POSTGRES_PASSWORD", password),
        ]
    };

    // A first start: no data yet, nothing to do.
    let first = as_postgres(&["sh", "-c", script], &env("unused"));
    assert!(first.status.success(), "{first:?}");
    assert!(!std::path::Path::new(data).exists());

    // Data made under the first password, then the script with another (a quote in it too).
    let pwfile = dir.join("pw");
    std::fs::write(&pwfile, "first-password\n").unwrap();
    assert!(
        Command::new("chown")
            .args(["postgres:postgres", pwfile.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let init = as_postgres(
        &[
            "initdb",
            "-D",
            data,
            "-U",
            "letsgo",
            "--auth=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
        ],
        &[],
    );
    assert!(init.status.success(), "{init:?}");
    let reset = as_postgres(&["sh", "-c", script], &env("new'password"));
    assert!(reset.status.success(), "{reset:?}");

    let port = free_port();
    let started = as_postgres(
        &[
            "pg_ctl",
            "-D",
            data,
            "-w",
            "-l",
            &format!("{data}.log"),
            "-o",
            &format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                dir.display()
            ),
            "start",
        ],
        &[],
    );
    assert!(started.status.success(), "{started:?}");
    let stop = || as_postgres(&["pg_ctl", "-D", data, "-m", "fast", "stop"], &[]);
    let login = |password: &str| {
        Command::new(bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "letsgo",
                "-d",
                "postgres",
                "-tAc",
                "select 1",
            ])
            .env("PGPASSWORD", password)
            .output()
            .unwrap()
    };
    let new = login("new'password");
    let old = login("first-password");
    stop();
    assert!(
        new.status.success(),
        "the Secret's password does not open the data: {new:?}"
    );
    assert!(
        !old.status.success(),
        "the old password still opens the data"
    );
}

/// A Store with backups gets the scripts, a volume and a CronJob the API server accepts.
/// The chart's `tracing.otlpEndpoint` reaches the operator as OTEL_EXPORTER_OTLP_ENDPOINT
/// (the chart test checks that); here the operator so configured sends each reconcile as a
/// trace: a `reconcile Store` span naming the Store, the objects it applied as its children.
#[test]
fn the_operator_sends_each_reconcile_as_a_trace() {
    use letsgo_traces::receiver::Receiver;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (receiver, collector) = runtime.block_on(Receiver::start());
    let kube = Kube::local();
    let namespace = Namespace::on_fake_node(&kube, "traced");
    let ns = namespace.name.as_str();
    let rbac = ChartRbac::install(&kube, ns);
    let endpoint = format!("http://{collector}");
    let operator = Operator::start_with_env(
        &rbac,
        ns,
        "operator-a",
        4,
        // As the chart sets them (tracing.otlpEndpoint, tracing.otlpProtocol).
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let example = repo().join("examples/store.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    // Spans go out in batches (every few seconds): wait for a reconcile with its children.
    let (reconcile, children) = wait_for(
        "a reconcile trace with the objects it applied",
        WAIT,
        || {
            let spans = receiver.spans();
            spans
                .iter()
                .filter(|span| span.name == "reconcile Store")
                .find_map(|reconcile| {
                    let children: Vec<_> = spans
                        .iter()
                        .filter(|span| {
                            span.trace_id == reconcile.trace_id
                                && span.parent_span_id == reconcile.span_id
                        })
                        .cloned()
                        .collect();
                    (!children.is_empty()).then(|| (reconcile.clone(), children))
                })
        },
        || format!("{:?}\n{}", receiver.spans(), operator.log()),
    );
    assert_eq!(reconcile.attribute("store"), "shop", "{reconcile:?}");
    assert_eq!(reconcile.attribute("namespace"), ns, "{reconcile:?}");
    assert!(
        children.iter().any(|span| span.name == "apply ConfigMap"),
        "{children:?}"
    );
    assert!(
        children.iter().all(|span| span.name.starts_with("apply ")),
        "{children:?}"
    );
    drop(operator);
    drop(runtime);
}

#[test]
fn a_store_with_backups_gets_its_cron_job_volume_and_scripts() {
    let scene = Scene::start("backup");
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    let example = repo().join("examples/store.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
    patch_store(
        kube,
        ns,
        r#"{"spec":{"backup":{"schedule":"30 2 * * *","keep":3,"storage":"1Gi"}}}"#,
    );
    let cron = wait_for(
        "the backup CronJob",
        WAIT,
        || kube.get("cronjob", "shop-backup", ns),
        || operator.log(),
    );
    assert_eq!(at(&cron, "spec/schedule"), "30 2 * * *", "{cron}");
    assert_eq!(at(&cron, "spec/timeZone"), "Etc/UTC", "{cron}");
    let container = at(&cron, "spec/jobTemplate/spec/template/spec/containers/0");
    assert_eq!(
        container["command"],
        serde_json::json!(["bash", "/scripts/backup.sh"])
    );
    let volume = kube.json(&["get", "pvc", "shop-backups", "-n", ns]);
    assert_eq!(
        at(&volume, "spec/resources/requests/storage"),
        "1Gi",
        "{volume}"
    );
    let scripts = kube.json(&["get", "configmap", "shop-backup-scripts", "-n", ns]);
    assert_eq!(
        at(&scripts, "data/backup.sh").as_str(),
        Some(backup::BACKUP_SCRIPT)
    );
    assert_eq!(
        at(&scripts, "data/s3-upload.sh").as_str(),
        Some(backup::S3_UPLOAD_SCRIPT)
    );

    // To a bucket: PostgreSQL's tools dump in an init container, the aws CLI uploads, and the
    // volume stays with the backups already on it.
    patch_store(
        kube,
        ns,
        r#"{"spec":{"backup":{"s3":{"bucket":"shop-backups","region":"eu-west-1","secretName":"backup-bucket"}}}}"#,
    );
    let cron = wait_for(
        "the backup CronJob to upload to the bucket",
        WAIT,
        || {
            kube.get("cronjob", "shop-backup", ns).filter(|cron| {
                at(cron, "spec/jobTemplate/spec/template/spec/initContainers").is_array()
            })
        },
        || operator.log(),
    );
    let pod = at(&cron, "spec/jobTemplate/spec/template/spec");
    assert_eq!(
        at(pod, "initContainers/0/command"),
        &serde_json::json!(["bash", "/scripts/backup.sh"]),
        "{cron}"
    );
    let upload = at(pod, "containers/0");
    assert_eq!(upload["image"], backup::S3_CLIENT_IMAGE, "{cron}");
    assert_eq!(
        upload["command"],
        serde_json::json!(["bash", "/scripts/s3-upload.sh"])
    );
    let env = |name: &str| {
        upload["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {upload}"))
    };
    assert_eq!(env("S3_PREFIX")["value"], format!("{ns}/shop"));
    assert_eq!(env("AWS_DEFAULT_REGION")["value"], "eu-west-1");
    assert_eq!(
        env("AWS_SECRET_ACCESS_KEY")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "backup-bucket", "key": "AWS_SECRET_ACCESS_KEY"})
    );
    let scratch = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "backups")
        .unwrap();
    assert_eq!(scratch["emptyDir"]["sizeLimit"], "1Gi", "{cron}");
    assert!(
        kube.get("pvc", "shop-backups", ns).is_some(),
        "the volume's backups are kept"
    );
    operator.assert_never_forbidden();
}

/// A Store created `restoreFrom` a backup in a bucket: the restore Job downloads it in the
/// aws-cli image, then restores it with PostgreSQL's tools, and the services start after it.
#[test]
fn a_store_restored_from_a_bucket_downloads_the_backup_before_restoring_it() {
    let mut volumes = Vec::new();
    let scene = Scene::start_with("restore-s3", |kube, ns| {
        volumes.push(Volumes::for_store(kube, ns, "shop"));
    });
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    let mut store = support::file(&repo().join("examples/store.yaml"));
    store.push_str(
        "  backup:\n    schedule: \"0 3 * * *\"\n    s3: {bucket: shop-backups, secretName: backup-bucket, image: registry.internal/aws-cli:2}\n  restoreFrom: \"20261130T030000Z\"\n",
    );
    kube.apply(&store, &["-n", ns]);
    let ready = wait_ready(kube, ns, operator);
    assert_eq!(at(&ready, "status/readyComponents"), "9/9", "{ready}");
    assert!(
        kube.get("pvc", "shop-backups", ns).is_none(),
        "no backups volume"
    );
    let job = kube.json(&["get", "job", "shop-restore-20261130t030000z", "-n", ns]);
    assert!(at(&job, "status/succeeded").as_i64() >= Some(1), "{job}");
    let pod = at(&job, "spec/template/spec");
    let download = at(pod, "initContainers/0");
    assert_eq!(download["image"], "registry.internal/aws-cli:2", "{job}");
    assert_eq!(
        download["command"],
        serde_json::json!(["bash", "/scripts/s3-download.sh"])
    );
    assert_eq!(
        at(pod, "containers/0/command"),
        &serde_json::json!(["bash", "/scripts/restore.sh"])
    );
    operator.assert_never_forbidden();
}

/// A Store created `restoreFrom` a backup runs the restore Job once PostgreSQL is ready and
/// starts its services only after the Job succeeded (kwok completes Job Pods on the fake node).
#[test]
fn a_restored_store_starts_its_services_after_the_restore_job() {
    let mut volumes = Vec::new();
    let scene = Scene::start_with("restore", |kube, ns| {
        volumes.push(Volumes::for_store(kube, ns, "shop"));
        volumes.push(Volumes::for_claims(kube, ns, &["shop-backups".to_owned()]));
    });
    let (kube, ns, operator) = (&scene.kube, scene.ns(), &scene.operator);
    let mut store = support::file(&repo().join("examples/store.yaml"));
    store.push_str("  backup:\n    schedule: \"0 3 * * *\"\n  restoreFrom: \"20261130T030000Z\"\n");
    kube.apply(&store, &["-n", ns]);
    let ready = wait_ready(kube, ns, operator);
    assert_eq!(at(&ready, "status/readyComponents"), "9/9", "{ready}");
    let job = kube.json(&["get", "job", "shop-restore-20261130t030000z", "-n", ns]);
    assert!(at(&job, "status/succeeded").as_i64() >= Some(1), "{job}");
    let env = &at(&job, "spec/template/spec/containers/0")["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "RESTORE_FROM" && e["value"] == "20261130T030000Z"),
        "{env}"
    );
    // The services were made after the restore finished.
    let finished = at(&job, "status/completionTime")
        .as_str()
        .unwrap()
        .to_owned();
    for service in DEPLOYMENTS {
        let deployment = kube.json(&["get", "deployment", &format!("shop-{service}"), "-n", ns]);
        let created = at(&deployment, "metadata/creationTimestamp")
            .as_str()
            .unwrap();
        assert!(
            created >= finished.as_str(),
            "shop-{service} made at {created}, the restore finished at {finished}"
        );
    }
    operator.assert_never_forbidden();
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------ helpers

/// A ResourceQuota holding the namespace at its current Pod count, counted before it returns:
/// a rollout's new Pods cannot be made until `kubectl delete resourcequota hold`.
fn hold_new_pods(kube: &Kube, ns: &str) {
    let pods = kube.json(&["get", "pods", "-n", ns]);
    let count = pods["items"].as_array().unwrap().len();
    kube.apply(
        &format!(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: hold\nspec:\n  hard:\n    pods: \"{count}\"\n"
        ),
        &["-n", ns],
    );
    wait_for(
        "the quota to be counted",
        WAIT,
        || {
            kube.get("resourcequota", "hold", ns)
                .filter(|q| !at(q, "status/used/pods").is_null())
        },
        String::new,
    );
}

/// Waits until the Store's status mentions `text` (a reason, a message); returns the Store.
fn wait_status_contains(
    kube: &Kube,
    ns: &str,
    what: &str,
    text: &str,
    operator: &Operator,
) -> Value {
    wait_for(
        what,
        WAIT,
        || {
            kube.get("store", "shop", ns)
                .filter(|s| s["status"].to_string().contains(text))
        },
        || operator.log(),
    )
}

/// Annotates the Store (which starts a reconcile) and waits for that reconcile to finish;
/// returns the Store as annotated.
fn poke_and_wait_reconcile(kube: &Kube, ns: &str, operator: &Operator) -> Value {
    let reconciles = operator.metric("letsgo_operator_reconcile_duration_seconds_count");
    let stamp = unique_name("poke");
    kube.run(&[
        "annotate",
        "store",
        "shop",
        "-n",
        ns,
        "--overwrite",
        &format!("letsgo.dev/poked={stamp}"),
    ]);
    let poked = kube.json(&["get", "store", "shop", "-n", ns]);
    wait_for(
        "a reconcile after the annotation",
        WAIT,
        || {
            let done = operator.try_metric("letsgo_operator_reconcile_duration_seconds_count");
            (done > Some(reconciles)).then_some(())
        },
        || operator.log(),
    );
    poked
}

/// examples/store-external.yaml with every Secret it names in place.
fn apply_external_example(kube: &Kube, ns: &str) {
    create_external_secrets(kube, ns, "password=secret");
    let example = repo().join("examples/store-external.yaml");
    kube.run(&["apply", "-n", ns, "-f", example.to_str().unwrap()]);
}

/// The Secrets examples/store-external.yaml names; the PostgreSQL one with `password` (a
/// `key=value`, or nothing to leave the key out).
fn create_external_secrets(kube: &Kube, ns: &str, password: &str) {
    let mut postgres = vec!["host=db.example", "username=shop"];
    if !password.is_empty() {
        postgres.push(password);
    }
    // Redis is the one running here (the operator checks that it reaches it).
    let redis = format!(
        "url={}",
        std::env::var("REDIS_URL_BASE").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
    );
    for (name, pairs) in [
        ("shop-redis", vec![redis.as_str()]),
        ("shop-kafka", vec!["brokers=kafka.example:9092"]),
        ("shop-etcd", vec!["endpoints=etcd.example:2379"]),
        ("shop-postgres", postgres),
    ] {
        let mut args = vec!["create", "secret", "generic", name, "-n", ns];
        let literals: Vec<String> = pairs
            .iter()
            .map(|p| format!("--from-literal={p}"))
            .collect();
        args.extend(literals.iter().map(String::as_str));
        kube.run(&args);
    }
}

/// The chart's RBAC, installed for real (no operator Pod: replicaCount=0), and a kubeconfig
/// holding a token of its ServiceAccount: what the operator may do is what the chart grants.
struct ChartRbac {
    kubeconfig: PathBuf,
    lease: String,
    helm: Helm,
    release: String,
    namespace: String,
}

impl ChartRbac {
    fn install(kube: &Kube, namespace: &str) -> ChartRbac {
        ChartRbac::install_with(kube, namespace, &[])
    }

    /// With more `helm install` arguments (`--set watchNamespace=...`).
    fn install_with(kube: &Kube, namespace: &str, values: &[&str]) -> ChartRbac {
        kube.install_crd();
        let helm = Helm::new(kube);
        let release = unique_name("lg");
        let chart = chart();
        let mut args = vec![
            "install",
            &release,
            &chart,
            "-n",
            namespace,
            "--set",
            "replicaCount=0",
            "--set",
            "metrics.service.enabled=false",
        ];
        args.extend_from_slice(values);
        helm.run(&args);
        let account = format!("{release}-letsgo-operator");
        let token = kube.run(&[
            "create",
            "token",
            &account,
            "-n",
            namespace,
            "--duration=2h",
        ]);
        let cluster = kube.json(&["config", "view", "--raw", "--minify"]);
        let server = at(&cluster, "clusters/0/cluster/server")
            .as_str()
            .unwrap()
            .to_owned();
        let ca = at(&cluster, "clusters/0/cluster/certificate-authority-data")
            .as_str()
            .unwrap()
            .to_owned();
        let kubeconfig = std::env::temp_dir().join(format!("{release}.kubeconfig"));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: operator\n  user:\n    token: {}\ncontexts:\n- name: operator\n  context: {{cluster: local, user: operator, namespace: {namespace}}}\ncurrent-context: operator\n",
                token.trim()
            ),
        )
        .unwrap();
        ChartRbac {
            kubeconfig,
            lease: account,
            helm,
            release,
            namespace: namespace.to_owned(),
        }
    }
}

impl Drop for ChartRbac {
    fn drop(&mut self) {
        // The cluster-scoped ClusterRole and binding do not go with the namespace.
        let _ = self
            .helm
            .try_run(&["uninstall", &self.release, "-n", &self.namespace]);
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

/// PersistentVolumes bound in advance to the claims a Store's StatefulSets make (this cluster
/// has no volume provisioner), removed on drop.
struct Volumes {
    kube: Kube,
    label: String,
}

impl Volumes {
    /// A pre-bound volume for each managed middleware's data claim of `store`.
    fn for_store(kube: &Kube, namespace: &str, store: &str) -> Volumes {
        let claims: Vec<String> = STATEFUL_SETS
            .iter()
            .map(|set| format!("data-{store}-{set}-0"))
            .collect();
        Volumes::for_claims(kube, namespace, &claims)
    }

    /// A pre-bound hostPath volume for each claim, of the cluster's default StorageClass (the
    /// class the claims get when the Store names none; the real node's provisioner has one).
    fn for_claims(kube: &Kube, namespace: &str, claims: &[String]) -> Volumes {
        let class = default_storage_class(kube).unwrap_or_default();
        for claim in claims {
            kube.apply(
                &format!(
                    "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {namespace}-{claim}\n  labels: {{letsgo.dev/test-namespace: {namespace}}}\nspec:\n  storageClassName: \"{class}\"\n  capacity: {{storage: 10Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  hostPath: {{path: /tmp/letsgo-kube-volumes/{namespace}/{claim}}}\n  claimRef: {{namespace: {namespace}, name: {claim}}}\n"
                ),
                &[],
            );
        }
        Volumes {
            kube: kube.clone(),
            label: format!("letsgo.dev/test-namespace={namespace}"),
        }
    }
}

/// The StorageClass marked default, if the cluster has one.
fn default_storage_class(kube: &Kube) -> Option<String> {
    let classes = kube.json(&["get", "storageclass"]);
    classes["items"]
        .as_array()?
        .iter()
        .find(|class| {
            class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true"
        })
        .and_then(|class| class["metadata"]["name"].as_str().map(str::to_owned))
}

impl Drop for Volumes {
    fn drop(&mut self) {
        let _ = self
            .kube
            .try_run(&["delete", "pv", "-l", &self.label, "--wait=false"], None);
    }
}

/// A namespace of its own, the chart's RBAC in it, and an operator watching it: what most
/// tests start from. Dropped in field order: the operator stops first.
struct Scene {
    operator: Operator,
    _rbac: ChartRbac,
    namespace: Namespace,
    kube: Kube,
}

impl Scene {
    fn start(prefix: &str) -> Scene {
        Scene::start_with(prefix, |_, _| {})
    }

    /// `before` runs once the namespace and RBAC exist, before the operator starts (volumes).
    fn start_with(prefix: &str, before: impl FnOnce(&Kube, &str)) -> Scene {
        let kube = Kube::local();
        let namespace = Namespace::on_fake_node(&kube, prefix);
        let rbac = ChartRbac::install(&kube, &namespace.name);
        before(&kube, &namespace.name);
        let operator = Operator::start(&kube, &rbac, &namespace.name, "operator-a");
        Scene {
            operator,
            _rbac: rbac,
            namespace,
            kube,
        }
    }

    fn ns(&self) -> &str {
        &self.namespace.name
    }
}

/// The operator binary, run as a process of the test for one namespace; killed on drop.
struct Operator {
    child: Option<Child>,
    metrics: u16,
    log: PathBuf,
}

impl Operator {
    fn start(_kube: &Kube, rbac: &ChartRbac, namespace: &str, identity: &str) -> Operator {
        Operator::start_with_lease(rbac, namespace, identity, 4)
    }

    fn start_with_lease(
        rbac: &ChartRbac,
        namespace: &str,
        identity: &str,
        lease_secs: u32,
    ) -> Operator {
        Operator::start_with_env(rbac, namespace, identity, lease_secs, &[])
    }

    /// Started with `extra` in its environment too.
    fn start_with_env(
        rbac: &ChartRbac,
        namespace: &str,
        identity: &str,
        lease_secs: u32,
        extra: &[(&str, &str)],
    ) -> Operator {
        let metrics = free_port();
        let log = std::env::temp_dir().join(format!("{namespace}-{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_letsgo-operator"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &rbac.kubeconfig)
            .env("WATCH_NAMESPACE", namespace)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", identity)
            .env("LEASE_NAME", &rbac.lease)
            .env("LEASE_DURATION_SECS", lease_secs.to_string())
            .env("METRICS_LISTEN", format!("127.0.0.1:{metrics}"))
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info,kube=warn")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the operator binary starts");
        Operator {
            child: Some(child),
            metrics,
            log,
        }
    }

    /// The chart's RBAC was enough: no request of the whole run was refused (a refused Event is
    /// only logged, so the log is where it shows).
    fn assert_never_forbidden(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !text.contains("forbidden") && !text.contains("Forbidden"),
            "the operator was refused something the chart should grant\n{text}"
        );
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "operator log ({}):\n{}",
            self.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// A sample of the operator's /metrics, when it answers.
    fn try_metric(&self, name: &str) -> Option<f64> {
        let text = http_get(self.metrics, "/metrics")?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    fn metric(&self, name: &str) -> f64 {
        self.try_metric(name)
            .unwrap_or_else(|| panic!("no {name} in the operator's /metrics\n{}", self.log()))
    }

    /// SIGTERM, as Kubernetes stops a Pod.
    fn terminate(&self) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
    }

    /// Waits (10 s at most) for the process to end; whether it ended with status 0.
    fn exited_cleanly(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        for _ in 0..40 {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}

fn wait_phase(kube: &Kube, ns: &str, phase: &str, operator: &Operator) -> Value {
    wait_for(
        &format!("the Store to be {phase}"),
        WAIT,
        || {
            kube.get("store", "shop", ns)
                .filter(|s| at(s, "status/phase") == phase)
        },
        || {
            let store = kube
                .get("store", "shop", ns)
                .map(|s| s["status"].to_string())
                .unwrap_or_default();
            format!(
                "status: {store}\n{}\n{}",
                kube.run(&["get", "all", "-n", ns]),
                operator.log()
            )
        },
    )
}

/// Every NetworkPolicy of the Store selects exactly its component's Pods and lets in, on its
/// serving port, exactly the Pods of the components that call it (anyone for the gateway).
fn policies_select_exactly_their_pods(kube: &Kube, ns: &str) {
    let expected: [(&str, Option<&[&str]>); 9] = [
        ("user", Some(&["gateway"])),
        ("product", Some(&["cart", "gateway", "order"])),
        ("cart", Some(&["gateway", "order"])),
        ("order", Some(&["gateway", "payment"])),
        ("payment", Some(&["gateway"])),
        ("gateway", None),
        ("postgres", Some(&["order", "payment", "product", "user"])),
        ("redis", Some(&["cart", "gateway", "product"])),
        ("kafka", Some(&["order", "payment", "user"])),
    ];
    let all = kube.json(&[
        "get",
        "networkpolicies",
        "-n",
        ns,
        "-l",
        "letsgo.dev/store=shop",
    ]);
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        expected.len(),
        "{all}"
    );
    let components_of = |selector: &Value| -> Vec<String> {
        let mut terms: Vec<String> = selector["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap()))
            .collect();
        for expression in selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(expression["operator"], "In");
            let values: Vec<&str> = expression["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            terms.push(format!(
                "{} in ({})",
                expression["key"].as_str().unwrap(),
                values.join(",")
            ));
        }
        let pods = kube.json(&["get", "pods", "-n", ns, "-l", &terms.join(",")]);
        let mut components: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pod| {
                pod["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        components.sort();
        components.dedup();
        components
    };
    for (component, callers) in expected {
        let policy = kube.json(&[
            "get",
            "networkpolicy",
            &format!("shop-{component}"),
            "-n",
            ns,
        ]);
        assert_eq!(
            components_of(&policy["spec"]["podSelector"]),
            [component],
            "{policy}"
        );
        let from = &policy["spec"]["ingress"][0]["from"];
        match callers {
            None => assert!(from.is_null(), "{policy}"),
            Some(callers) => {
                assert_eq!(components_of(&from[0]["podSelector"]), callers, "{policy}");
            }
        }
    }
}

fn wait_ready(kube: &Kube, ns: &str, operator: &Operator) -> Value {
    let store = wait_phase(kube, ns, "Ready", operator);
    assert_eq!(
        condition(&store, "Ready").as_deref(),
        Some("True"),
        "{store}"
    );
    store
}

/// name -> resourceVersion of everything the Store labels, and of the Store.
fn versions(kube: &Kube, ns: &str) -> Vec<(String, String)> {
    let list = kube.json(&[
        "get",
        "deployments,statefulsets,services,configmaps,secrets",
        "-n",
        ns,
        "-l",
        "letsgo.dev/store=shop",
    ]);
    let mut versions: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    versions.sort();
    assert!(
        versions.len() >= 15,
        "fewer children than a managed Store has: {versions:?}"
    );
    versions
}

/// [`versions`], once neither they nor the Store have changed for a few seconds. The Store
/// reads Ready as soon as its children's Pods are; the controllers still write the children's
/// status after that (a Deployment's conditions once its Pods count as available), and the
/// operator follows with a reconcile of its own. Those writes are no reconcile's doing.
fn settled_versions(kube: &Kube, ns: &str) -> Vec<(String, String)> {
    let read = || {
        let store = kube.json(&["get", "store", "shop", "-n", ns]);
        let store_version = at(&store, "metadata/resourceVersion").clone();
        (versions(kube, ns), store_version)
    };
    let mut last = read();
    wait_for(
        "the Store and its children to stop changing",
        WAIT,
        || {
            std::thread::sleep(Duration::from_secs(3));
            let now = read();
            let settled = now == last;
            last = now;
            settled.then(|| last.0.clone())
        },
        || "something kept writing the Store or its children".to_owned(),
    )
}

fn first_pod(kube: &Kube, ns: &str, component: &str) -> String {
    let pods = kube.json(&[
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        &format!("letsgo.dev/store=shop,app.kubernetes.io/component={component}"),
    ]);
    pods["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no {component} pod: {pods}"))
        .to_owned()
}

/// What a kubelet reports when a readiness probe starts failing, or passes again.
fn set_pod_ready(kube: &Kube, ns: &str, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}"}},{{"type":"ContainersReady","status":"{status}"}}]}}}}"#
    );
    kube.run(&[
        "patch",
        "pod",
        pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=strategic",
        "-p",
        &patch,
    ]);
}
