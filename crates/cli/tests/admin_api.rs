//! The admin API with real Envoys connected: sync status through a NACK and its fix, and
//! diagnosis of a sidecar (config dump, stats, traffic, log level) through its admin relay.

mod support;

use meshplane_test_support::docs::fenced_blocks;
use meshplane_xds::{GroupKey, Resource, Snapshot};
use serde_json::Value;
use support::{Mesh, orders_to_payments, poll, upstream, via_egress};

const TOKEN: &str = "t0ken-for-tests";

async fn proxy(mesh: &Mesh, id: &str) -> Value {
    let url = format!("http://{}/api/proxies", mesh.cp.admin_addr);
    let all: Value = mesh
        .http
        .get(url)
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    all.as_array()
        .and_then(|a| a.iter().find(|p| p["node_id"] == id).cloned())
        .unwrap_or(Value::Null)
}

async fn get(mesh: &Mesh, path: &str) -> (u16, String) {
    let r = mesh
        .http
        .get(format!("http://{}{path}", mesh.cp.admin_addr))
        .send()
        .await
        .expect("admin");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A control plane with a token, `payments-1` registered with `tags`, and an `orders-1`
/// sidecar calling it, synced: the mesh and the sidecar's egress port.
async fn orders_calling_payments(tags: &[&str]) -> (Mesh, u16) {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    let pay = upstream("payments-1").await;
    mesh.register("payments-1", "payments", pay, tags, 1).await;
    let (d, egress) = orders_to_payments();
    mesh.sidecar("orders-1", &d, 2).await;
    assert!(
        poll(|| async { proxy(&mesh, "orders-1").await["sync"] == "SYNCED" }).await,
        "{}",
        proxy(&mesh, "orders-1").await
    );
    (mesh, egress)
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_status_and_diagnosis_of_a_real_sidecar() {
    let (mesh, egress) = orders_calling_payments(&[]).await;

    // Config dump and stats come from the real Envoy, through its relay.
    let (status, dump) = get(&mesh, "/api/proxies/orders-1/config_dump").await;
    assert_eq!(status, 200, "{dump}");
    assert!(
        dump.contains("\"name\":\"egress\"") || dump.contains("\"name\": \"egress\""),
        "egress listener in the dump"
    );
    assert!(dump.contains("payments"));
    // The proxy's certificate is in the dump, its private key never is.
    let parsed: Value = serde_json::from_str(&dump).expect("json dump");
    let mut keys = Vec::new();
    private_keys(&parsed, &mut keys);
    assert!(
        dump.contains("meshplane_identity"),
        "the identity secret is dumped"
    );
    assert!(
        !keys.is_empty(),
        "the dump has the secret's private_key field"
    );
    for key in keys {
        // Envoy's redaction: base64 of "[redacted]".
        assert_eq!(key["inline_bytes"], "W3JlZGFjdGVkXQ==", "{key}");
    }
    // The certificates Envoy uses: its CA-issued identity and the trust bundle.
    let (status, certs) = get(&mesh, "/api/proxies/orders-1/certs").await;
    assert_eq!(status, 200, "{certs}");
    let certs: Value = serde_json::from_str(&certs).expect("json");
    let identity = certs
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["role"] == "identity")
        .expect("an identity certificate");
    assert_eq!(
        identity["uris"],
        serde_json::json!(["spiffe://meshplane.local/service/orders"])
    );
    assert!(
        identity["days_until_expiration"].as_u64() <= Some(1),
        "24 h certificates: {identity}"
    );
    assert!(
        certs
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["role"] == "trust"),
        "{certs}"
    );
    let (status, stats) = get(&mesh, "/api/proxies/orders-1/stats").await;
    assert_eq!(status, 200);
    assert!(
        stats.contains("cluster_manager.active_clusters"),
        "{}",
        &stats[..stats.len().min(300)]
    );
    for _ in 0..5 {
        assert_eq!(
            via_egress(&mesh.http, egress, "payments", None).await.0,
            200
        );
    }
    let (_, traffic) = get(&mesh, "/api/proxies/orders-1/traffic").await;
    let traffic: Value = serde_json::from_str(&traffic).expect("json");
    assert!(
        traffic["egress"]["requests"].as_u64().unwrap_or(0) >= 5,
        "{traffic}"
    );

    // Log level: a write route, token required; Envoy's own admin shows the change.
    let url = format!(
        "http://{}/api/proxies/orders-1/logging?level=debug",
        mesh.cp.admin_addr
    );
    assert_eq!(
        mesh.http.post(&url).send().await.expect("admin").status(),
        401
    );
    let r = mesh
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("admin");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let admin = mesh.sidecar_admin("orders-1");
    let levels = mesh
        .http
        .post(format!("http://127.0.0.1:{admin}/logging"))
        .send()
        .await
        .expect("envoy")
        .text()
        .await
        .expect("text");
    assert!(levels.contains("upstream: debug"), "{levels}");
    let unknown = mesh
        .http
        .get(format!(
            "http://{}/api/proxies/nobody/stats",
            mesh.cp.admin_addr
        ))
        .send()
        .await
        .expect("admin");
    assert_eq!(unknown.status(), 404);

    // A snapshot Envoy rejects turns the proxy NACKED with Envoy's message...
    let group = GroupKey::new(
        proxy(&mesh, "orders-1").await["group"]
            .as_str()
            .expect("group"),
    );
    let current = mesh.cp.cache.snapshot(&group).expect("snapshot");
    let mut resources: Vec<_> = meshplane_xds::ResourceType::ALL
        .iter()
        .flat_map(|k| current.resources(*k).values().cloned())
        .collect();
    resources.push(meshplane_xds::fixtures::mk_rejected_cluster("broken"));
    mesh.cp
        .cache
        .set_snapshot(&group, Snapshot::new(resources).expect("consistent"))
        .expect("set");
    assert!(poll(|| async { proxy(&mesh, "orders-1").await["sync"] == "NACKED" }).await);
    let p = proxy(&mesh, "orders-1").await;
    let message = p["types"]["CDS"]["last_nack"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("not-an-ip"),
        "Envoy's own message: {message}"
    );
    // ...traffic keeps flowing on the previous config...
    assert_eq!(
        via_egress(&mesh.http, egress, "payments", None).await.0,
        200
    );
    // ...and the next correct translation brings it back to SYNCED.
    let pay2 = upstream("payments-2").await;
    mesh.register("payments-2", "payments", pay2, &[], 1).await;
    assert!(
        poll(|| async { proxy(&mesh, "orders-1").await["sync"] == "SYNCED" }).await,
        "{}",
        proxy(&mesh, "orders-1").await
    );
    let _ = Resource::empty_endpoints;
}

/// Every `private_key` object in a JSON document.
fn private_keys(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "private_key" {
                    out.push(child.clone());
                }
                private_keys(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| private_keys(i, out)),
        _ => {}
    }
}

/// Object keys whose names are data (service names, group keys, metadata keys): compared by the
/// shape of their values.
const DATA_KEYED: [&str; 6] = [
    "services",
    "sources",
    "meta",
    "groups",
    "datacenters",
    "labels",
];

/// Every example of docs/admin-api.md, fenced as ```json METHOD ROUTE, has the keys and value
/// types of the real response of that route (`null` on either side stands for an optional
/// value), and the translated resources of a group equal what the real Envoy dumps for them.
#[tokio::test(flavor = "multi_thread")]
async fn documented_responses_and_resource_views_match_reality() {
    let (mesh, egress) = orders_calling_payments(&["canary"]).await;
    assert_eq!(
        via_egress(&mesh.http, egress, "payments", None).await.0,
        200
    );
    let group = proxy(&mesh, "orders-1").await["group"]
        .as_str()
        .expect("group")
        .to_owned();

    // Rollout flags as the examples show them (the audit log then has an entry).
    let flags = r#"{"services": {"orders": {
        "default": {"proxy": true, "rollout": 25},
        "dependencies": {"payments": {"proxy": true, "overrides": [{"datacenter": "dc2", "proxy": false}]}}
    }}}"#;
    mesh.put_rollout(flags).await;

    // The documented shapes.
    let doc = include_str!("../../../docs/admin-api.md");
    let examples = json_examples(doc);
    assert!(examples.len() >= 10, "the page lost its examples");
    let mut drift = Vec::new();
    for (route, example) in &examples {
        // Signing needs a CSR from a sidecar's key; the sidecar above just went through it
        // (its certificate is checked in mesh_security.rs), so the shape is not re-fetched.
        if route == "POST /api/ca/sign" {
            continue;
        }
        // A dry run needs a descriptor to post: tests/dry_run.rs checks this example.
        if route == "POST /api/dry-run" {
            continue;
        }
        let path = route
            .strip_prefix("GET ")
            .unwrap_or_else(|| panic!("only GET examples are fetched: {route}"))
            .replace("{name}", "payments")
            .replace("{id}", "orders-1")
            .replace("{key}", &group);
        let (status, body) = get(&mesh, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let real: Value = serde_json::from_str(&body).expect("JSON");
        same_shape(example, &real, &path, &mut drift);
    }
    assert!(
        drift.is_empty(),
        "docs/admin-api.md drifted:\n{}",
        drift.join("\n")
    );

    // The admin view of the group's resources is what Envoy itself dumps for them.
    let (_, resources) = get(&mesh, &format!("/api/groups/{group}/resources")).await;
    let resources: Value = serde_json::from_str(&resources).expect("JSON");
    let view = |kind: &str, name: &str| {
        resources
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|r| r["type"] == kind && r["name"] == name)
                    .map(|r| r["config"].clone())
            })
            .unwrap_or_else(|| panic!("{kind} {name} in the admin view"))
    };
    let dump = mesh.config_dump("orders-1").await;
    let in_dump = |section: &str, list: &str, inner: &[&str], name: &str| {
        dump["configs"]
            .as_array()
            .and_then(|configs| {
                configs
                    .iter()
                    .find(|c| c["@type"] == format!("type.googleapis.com/envoy.admin.v3.{section}"))
            })
            .and_then(|c| c[list].as_array())
            .and_then(|entries| {
                entries.iter().find_map(|e| {
                    let config = inner.iter().fold(e, |v, key| &v[*key]);
                    (config["name"] == name).then(|| config.clone())
                })
            })
            .unwrap_or_else(|| panic!("{list} {name} in Envoy's config dump"))
    };
    let pairs = [
        (
            view("CDS", "payments"),
            in_dump(
                "ClustersConfigDump",
                "dynamic_active_clusters",
                &["cluster"],
                "payments",
            ),
        ),
        (
            view("LDS", "egress"),
            in_dump(
                "ListenersConfigDump",
                "dynamic_listeners",
                &["active_state", "listener"],
                "egress",
            ),
        ),
        (
            view("RDS", "egress"),
            in_dump(
                "RoutesConfigDump",
                "dynamic_route_configs",
                &["route_config"],
                "egress",
            ),
        ),
    ];
    for (ours, envoys) in pairs {
        let mut differences = Vec::new();
        compare(&ours, &envoys, "", &mut differences);
        assert!(
            differences.is_empty(),
            "{}: the admin view and Envoy's dump differ:\n{}",
            ours["name"],
            differences.join("\n")
        );
    }
}

/// `(METHOD ROUTE, example)` of every ```json fence with a route.
fn json_examples(markdown: &str) -> Vec<(String, Value)> {
    fenced_blocks(markdown)
        .into_iter()
        .filter_map(|(info, body)| {
            let route = info.strip_prefix("json ")?.to_owned();
            let example = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("example of {route} is not JSON: {e}"));
            Some((route, example))
        })
        .collect()
}

fn same_shape(doc: &Value, real: &Value, at: &str, drift: &mut Vec<String>) {
    match (doc, real) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), Value::Object(r)) => {
            for (key, d_value) in d {
                match r.get(key) {
                    Some(r_value) if DATA_KEYED.contains(&key.as_str()) => {
                        if let (Some(example), Value::Object(entries)) =
                            (d_value.as_object().and_then(|m| m.values().next()), r_value)
                        {
                            for (k, v) in entries {
                                same_shape(example, v, &format!("{at}.{key}.{k}"), drift);
                            }
                        }
                    }
                    // The resource itself: Envoy's JSON, compared with Envoy below.
                    Some(r_value) if key == "config" => {
                        if !(r_value.is_object() || r_value.is_null()) {
                            drift.push(format!("{at}.config: {r_value}"));
                        }
                    }
                    Some(r_value) => same_shape(d_value, r_value, &format!("{at}.{key}"), drift),
                    None => drift.push(format!("{at}.{key}: documented, not in the response")),
                }
            }
            for key in r.keys().filter(|k| !d.contains_key(*k)) {
                drift.push(format!("{at}.{key}: in the response, not documented"));
            }
        }
        (Value::Array(d), Value::Array(r)) => {
            if let Some(example) = d.first() {
                for (i, v) in r.iter().enumerate() {
                    same_shape(example, v, &format!("{at}[{i}]"), drift);
                }
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => drift.push(format!("{at}: documented {doc}, got {real}")),
    }
}

/// Field-by-field differences of two JSON documents.
fn compare(ours: &Value, envoys: &Value, at: &str, out: &mut Vec<String>) {
    match (ours, envoys) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => compare(value, other, &format!("{at}.{key}"), out),
                    None => out.push(format!("{at}.{key}: only in the admin view: {value}")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{key}: only in Envoy's dump: {}", b[key]));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(x, y, &format!("{at}[{i}]"), out);
            }
        }
        _ if ours == envoys => {}
        _ => out.push(format!("{at}: admin view {ours}, Envoy {envoys}")),
    }
}
