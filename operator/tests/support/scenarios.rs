//! Scenarios that hold on any cluster with the Store CRD installed: what the API server itself
//! accepts and refuses. The local control-plane suite and the real-cluster suite both run them.

use super::{Kube, at, repo};

/// A Store named `bad` with `spec` (YAML, indented under `spec:`).
fn store_yaml(spec: &str) -> String {
    let spec: String = spec.lines().map(|line| format!("  {line}\n")).collect();
    format!("apiVersion: letsgo.dev/v1alpha1\nkind: Store\nmetadata:\n  name: bad\nspec:\n{spec}")
}

/// Every admission scenario, in a namespace of the test's own.
pub fn admission(kube: &Kube, namespace: &str) {
    examples_are_accepted(kube, namespace);
    bad_stores_are_refused(kube, namespace);
    unknown_fields_are_refused_or_pruned(kube, namespace);
    printer_columns_show(kube, namespace);
    names_and_volumes_are_guarded(kube, namespace);
}

/// Specs the API server must refuse, and a piece of the message it must give.
pub const BAD_STORES: &[(&str, &str, &str)] = &[
    (
        "managed and external together",
        "middleware:\n  postgres:\n    managed: {}\n    external: {secretName: pg}",
        "set exactly one of managed and external",
    ),
    (
        "neither managed nor external",
        "middleware:\n  redis: {}",
        "set exactly one of managed and external",
    ),
    (
        "SASL on Redis",
        "middleware:\n  redis:\n    external: {secretName: r, sasl: {mechanism: PLAIN}}",
        "bootstrapServers, tls and sasl are settings of external Kafka only",
    ),
    (
        "a CA for etcd",
        "discovery: etcd\nmiddleware:\n  etcd:\n    external: {secretName: e, caSecretName: ca}",
        "external etcd takes only secretName",
    ),
    (
        "three replicas on the one managed broker",
        "middleware:\n  kafkaTopics: {replicationFactor: 3}",
        "managed Kafka is one broker",
    ),
    (
        "an unknown SASL mechanism",
        "middleware:\n  kafka:\n    external: {secretName: k, sasl: {mechanism: GSSAPI}}",
        "Unsupported value: \"GSSAPI\"",
    ),
    (
        "etcd discovery without etcd",
        "discovery: etcd",
        "middleware.etcd must be set (managed or external) when discovery is etcd",
    ),
    (
        "replicas above the maximum",
        "services:\n  user:\n    replicas: 101",
        "should be less than or equal to 100",
    ),
    (
        "negative replicas",
        "services:\n  gateway:\n    replicas: -1",
        "should be greater than or equal to 0",
    ),
    (
        "a rate limit of nothing a second",
        "gateway:\n  rateLimit: {perSecond: 0}",
        "should be greater than or equal to 1",
    ),
    (
        "a rate limit without a burst",
        "gateway:\n  rateLimit: {perSecond: 10, burst: 0}",
        "should be greater than or equal to 1",
    ),
    (
        "a rate limit beyond a billion a second",
        "gateway:\n  rateLimit: {perSecond: 5000000000}",
        "should be less than or equal to 1000000000",
    ),
    (
        "an unknown discovery mode",
        "discovery: consul",
        "Unsupported value: \"consul\"",
    ),
    (
        "an unknown pull policy",
        "image:\n  pullPolicy: Sometimes",
        "Unsupported value: \"Sometimes\"",
    ),
    (
        "a tag with a space",
        "image:\n  tag: \"1.0 beta\"",
        "spec.image.tag: Invalid value",
    ),
    (
        "a storage size that is not a quantity",
        "middleware:\n  kafka:\n    managed: {storage: lots}",
        "spec.middleware.kafka.managed.storage: Invalid value",
    ),
    (
        "an empty external Secret name",
        "middleware:\n  postgres:\n    external: {secretName: \"\"}",
        "should be at least 1 chars long",
    ),
    (
        "an ingress host with capitals",
        "gateway:\n  ingress: {host: Shop.Example.com}",
        "spec.gateway.ingress.host: Invalid value",
    ),
    (
        "a service type the CRD does not offer",
        "gateway:\n  serviceType: NodePort",
        "Unsupported value: \"NodePort\"",
    ),
    (
        "a backups volume's class with the backups in a bucket",
        "backup:\n  schedule: \"0 3 * * *\"\n  storageClassName: fast\n  s3: {bucket: shop-backups, secretName: bucket}",
        "with s3 the backups go to the bucket and there is no volume",
    ),
    (
        "a bucket name S3 does not allow",
        "backup:\n  schedule: \"0 3 * * *\"\n  s3: {bucket: Shop_Backups, secretName: bucket}",
        "spec.backup.s3.bucket: Invalid value",
    ),
];

/// Rules that need a name or an earlier version of the Store: a name too long for its
/// children's names, and a managed volume's size or class changed after creation.
pub fn names_and_volumes_are_guarded(kube: &Kube, namespace: &str) {
    let long = "s".repeat(41);
    let yaml =
        store_yaml("shop: {demoCatalogue: true}").replace("name: bad", &format!("name: {long}"));
    let output = kube.try_run(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        Some(&yaml),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 41-character name was accepted");
    assert!(
        stderr.contains("metadata.name must be at most 40 characters"),
        "{stderr}"
    );
    let fits = yaml.replace(&long, &"s".repeat(40));
    kube.apply(&fits, &["--dry-run=server", "-n", namespace]);

    let volume = |size: &str, class: &str| {
        store_yaml(&format!(
            "middleware:\n  postgres:\n    managed: {{storage: {size}{class}}}"
        ))
        .replace("name: bad", "name: volumes")
    };
    kube.apply(&volume("1Gi", ""), &["-n", namespace]);
    for (what, changed) in [
        ("a new size", volume("2Gi", "")),
        ("a new class", volume("1Gi", ", storageClassName: fast")),
    ] {
        let output = kube.try_run(&["apply", "-n", namespace, "-f", "-"], Some(&changed));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{what} for an existing volume was accepted"
        );
        assert!(
            stderr.contains("storage and storageClassName cannot change"),
            "{what}: {stderr}"
        );
    }
    // Everything else about the middleware may change.
    let image = volume("1Gi", ", image: \"postgres:17.7\"");
    kube.apply(&image, &["-n", namespace]);
    kube.run(&[
        "delete",
        "store",
        "volumes",
        "-n",
        namespace,
        "--wait=false",
    ]);
}

/// Every file in examples/ passes the API server's validation (schema and CEL), unchanged.
pub fn examples_are_accepted(kube: &Kube, namespace: &str) {
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("examples")).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let path = path.to_str().unwrap();
        let applied = kube.json(&["apply", "--dry-run=server", "-n", namespace, "-f", path]);
        assert_eq!(at(&applied, "kind"), "Store", "{path}: {applied}");
        if path.ends_with("store-production.yaml") {
            // Stored as written, not pruned: the operator reads it for the gateway.
            assert_eq!(
                at(&applied, "spec/gateway/rateLimit/perSecond"),
                100,
                "{applied}"
            );
            assert_eq!(
                at(&applied, "spec/gateway/rateLimit/burst"),
                200,
                "{applied}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 2, "examples/ holds the Store examples");
}

/// Each bad Store is refused at `kubectl apply`, with the schema's or the CEL rule's message.
pub fn bad_stores_are_refused(kube: &Kube, namespace: &str) {
    let mut failures = Vec::new();
    for (what, spec, message) in BAD_STORES {
        let yaml = store_yaml(spec);
        let output = kube.try_run(
            &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
            Some(&yaml),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{what}: accepted\n{yaml}"));
        } else if !stderr.contains(message) {
            failures.push(format!("{what}: refused without {message:?}: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A field the CRD does not declare: kubectl (strict field validation, its default) refuses
/// it; a client that does not ask for validation has it pruned, never stored.
pub fn unknown_fields_are_refused_or_pruned(kube: &Kube, namespace: &str) {
    let yaml = store_yaml("colour: red\nshop:\n  demoCatalogue: true");
    let output = kube.try_run(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        Some(&yaml),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "an unknown field was accepted under strict validation"
    );
    assert!(stderr.contains("unknown field \"spec.colour\""), "{stderr}");

    let output = kube.try_run(
        &[
            "apply",
            "--dry-run=server",
            "--validate=false",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "json",
        ],
        Some(&yaml),
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
    assert!(at(&stored, "spec/colour").is_null(), "not pruned: {stored}");
    assert_eq!(at(&stored, "spec/shop/demoCatalogue"), true, "{stored}");
    // Defaults come from the schema: one replica of each service.
    assert_eq!(at(&stored, "spec/services/user/replicas"), 1, "{stored}");
}

/// `kubectl get stores` shows the printer columns (and `-o wide` the version).
pub fn printer_columns_show(kube: &Kube, namespace: &str) {
    let example = repo().join("examples/store.yaml");
    kube.run(&["apply", "-n", namespace, "-f", example.to_str().unwrap()]);
    let table = kube.run(&["get", "stores", "-n", namespace]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "PHASE", "READY", "ENDPOINT", "AGE"],
        "{table}"
    );
    let wide = kube.run(&["get", "stores", "-n", namespace, "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or("").contains("VERSION"),
        "{wide}"
    );
    kube.run(&["delete", "store", "shop", "-n", namespace, "--wait=false"]);
}
