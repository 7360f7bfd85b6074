//! The dry run of a descriptor change (`POST /api/dry-run`, `meshplane diff`) against a
//! running mesh: a real `orders` sidecar calling `payments`. Adding a dependency, removing
//! one and tightening `incoming` each name exactly their changes; nothing live changes; an
//! invalid descriptor gets the sidecar's own field error.

mod support;

use std::collections::BTreeSet;

use meshplane_test_support::docs::fenced_blocks;
use serde_json::Value;
use support::{Mesh, caller, free_port, poll, upstream};

/// `(type, name, change)` of every resource a dry run reports.
fn resources(run: &Value) -> BTreeSet<(String, String, String)> {
    run["groups"][0]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("type"), s("name"), s("change"))
        })
        .collect()
}

/// The field paths of one reported resource.
fn fields(run: &Value, kind: &str, name: &str) -> Vec<String> {
    run["groups"][0]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == kind && r["name"] == name)
        .flat_map(|r| r["fields"].as_array().cloned().unwrap_or_default())
        .map(|f| f["path"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

async fn dry_run(mesh: &Mesh, descriptor: &str) -> (u16, Value) {
    let r = mesh
        .http
        .post(format!("http://{}/api/dry-run", mesh.cp.admin_addr))
        .body(descriptor.to_owned())
        .send()
        .await
        .expect("admin");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn text(mesh: &Mesh, path: &str) -> String {
    mesh.http
        .get(format!("http://{}{path}", mesh.cp.admin_addr))
        .send()
        .await
        .expect("admin")
        .text()
        .await
        .expect("body")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_names_exactly_the_changes_and_changes_nothing() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    for (id, service) in [("payments-1", "payments"), ("inventory-1", "inventory")] {
        let port = upstream(id).await;
        mesh.register(id, service, port, &[], 1).await;
    }
    let (app, ingress, egress) = (free_port(), free_port(), free_port());
    let orders = |dependencies: &str| caller("orders", app, ingress, egress, dependencies);
    let live = orders("  - service: payments\n");
    mesh.sidecar("orders-1", &live, 2).await;
    let admin = mesh.cp.admin_addr;
    let synced = poll(|| async {
        let proxies: Value =
            serde_json::from_str(&text(&mesh, "/api/proxies").await).unwrap_or(Value::Null);
        proxies[0]["sync"] == "SYNCED"
    })
    .await;
    assert!(synced, "orders-1 synced");
    let proxies: Value = serde_json::from_str(&text(&mesh, "/api/proxies").await).expect("json");
    let key = proxies[0]["group"].as_str().expect("group").to_owned();
    let before = text(&mesh, &format!("/api/groups/{key}/resources")).await;
    let envoy_before = envoy_versions(&mesh).await;
    assert!(
        !envoy_before.is_empty(),
        "orders' Envoy holds dynamic resources"
    );

    // The live descriptor itself: no change.
    let (status, same) = dry_run(&mesh, &live).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["groups"][0]["group"], key.as_str(), "{same}");
    assert_eq!(same["groups"][0]["proxies"], 1, "{same}");
    assert_eq!(resources(&same), set(&[]), "{same}");

    // A dependency added: its cluster, its endpoints, its virtual host; nothing else.
    let (status, added) = dry_run(
        &mesh,
        &orders("  - service: payments\n  - service: inventory\n"),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        resources(&added),
        set(&[
            ("CDS", "inventory", "added"),
            ("EDS", "inventory", "added"),
            ("RDS", "egress", "changed"),
        ]),
        "{added:#}"
    );
    let paths = fields(&added, "RDS", "egress");
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.starts_with("virtual_hosts[")),
        "only virtual hosts change: {paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.contains("inventory")),
        "inventory's virtual host: {paths:?}"
    );
    let descriptor = &added["groups"][0]["descriptor"];
    assert_eq!(
        descriptor.as_array().map(Vec::len),
        Some(1),
        "{descriptor:#}"
    );
    assert_eq!(descriptor[0]["path"], "dependencies[=]");
    assert_eq!(
        descriptor[0]["after"]["target"]["service"], "inventory",
        "{descriptor:#}"
    );

    documented_shape(&added);

    // A dependency removed.
    let (status, removed) = dry_run(&mesh, &orders("  - service: inventory\n")).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        resources(&removed),
        set(&[
            ("CDS", "payments", "removed"),
            ("EDS", "payments", "removed"),
            ("CDS", "inventory", "added"),
            ("EDS", "inventory", "added"),
            ("RDS", "egress", "changed"),
        ]),
        "{removed:#}"
    );

    // `incoming` tightened: the ingress listener's permissions, nothing else.
    let tightened = format!(
        "{live}incoming:\n  endpoints:\n    - {{ path_prefix: /api/, methods: [GET], clients: [web] }}\n"
    );
    let (status, permissions) = dry_run(&mesh, &tightened).await;
    assert_eq!(status, 200, "{permissions}");
    assert_eq!(
        resources(&permissions),
        set(&[("LDS", "ingress", "changed")]),
        "{permissions:#}"
    );
    let paths = fields(&permissions, "LDS", "ingress");
    assert!(
        paths
            .iter()
            .any(|p| p.contains("http_filters[meshplane.rbac.enforce]")),
        "the RBAC filter: {paths:?}"
    );
    assert_eq!(
        permissions["groups"][0]["descriptor"][0]["path"],
        "incoming"
    );

    // The readable form, from the command line.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("meshplane.yaml");
    std::fs::write(
        &file,
        orders("  - service: payments\n  - service: inventory\n"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["diff", "--descriptor", &file.display().to_string()])
        .args(["--control-plane", &format!("http://{admin}")])
        .output()
        .expect("meshplane diff runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "+ CDS inventory",
        "+ EDS inventory",
        "~ RDS egress",
        "descriptor:",
    ] {
        assert!(stdout.contains(line), "`{line}` in:\n{stdout}");
    }
    assert!(
        !stdout.contains("payments\n"),
        "payments is unchanged:\n{stdout}"
    );

    // An invalid descriptor: the sidecar's field error, from the API and the command.
    let broken = orders("  - service: payments\n    timeout: soon\n");
    let (status, error) = dry_run(&mesh, &broken).await;
    assert_eq!(status, 400, "{error}");
    let error = error.as_str().unwrap_or_default().to_owned();
    assert!(error.contains("timeout"), "names the field: {error}");
    std::fs::write(&file, &broken).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["diff", "--descriptor", &file.display().to_string()])
        .args(["--control-plane", &format!("http://{admin}")])
        .output()
        .expect("meshplane diff runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("timeout"),
        "{stderr}"
    );

    // Nothing live changed: the group's resources and what the Envoy holds.
    assert_eq!(
        text(&mesh, &format!("/api/groups/{key}/resources")).await,
        before,
        "the live configuration is byte-identical"
    );
    assert_eq!(
        envoy_versions(&mesh).await,
        envoy_before,
        "what Envoy holds"
    );
}

/// The version of each dynamic resource type orders' Envoy holds (from its config dump).
async fn envoy_versions(mesh: &Mesh) -> Vec<String> {
    let dump = mesh.config_dump("orders-1").await;
    let mut versions = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for list in [
            "dynamic_active_clusters",
            "dynamic_listeners",
            "dynamic_route_configs",
        ] {
            for r in config[list].as_array().into_iter().flatten() {
                let v = r["version_info"]
                    .as_str()
                    .or_else(|| r["active_state"]["version_info"].as_str())
                    .unwrap_or_default();
                versions.push(v.to_owned());
            }
        }
    }
    versions
}

/// The keys of an object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// docs/admin-api.md's example of `POST /api/dry-run` has the keys of a real answer (one
/// with a descriptor change, an added and a changed resource).
fn documented_shape(real: &Value) {
    let doc = include_str!("../../../docs/admin-api.md");
    let example: Value = fenced_blocks(doc)
        .into_iter()
        .find(|(info, _)| info == "json POST /api/dry-run")
        .map(|(_, body)| serde_json::from_str(&body).expect("the example is JSON"))
        .expect("docs/admin-api.md documents POST /api/dry-run");
    assert_eq!(keys(&example), keys(real), "top-level keys");
    let (doc_group, group) = (&example["groups"][0], &real["groups"][0]);
    assert_eq!(keys(doc_group), keys(group), "a group's keys");
    let by_change = |v: &Value, change: &str| {
        v["resources"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["change"] == change))
            .map(keys)
            .unwrap_or_default()
    };
    for change in ["added", "changed"] {
        assert_eq!(
            by_change(doc_group, change),
            by_change(group, change),
            "keys of a resource {change}"
        );
    }
    let allowed: BTreeSet<String> = ["path", "before", "after"].map(String::from).into();
    for entry in group["descriptor"].as_array().into_iter().flatten() {
        assert!(keys(entry).is_subset(&allowed), "{entry}");
    }
    assert!(keys(&doc_group["descriptor"][0]).is_subset(&allowed));
}
