//! The admin API with real Envoys connected: sync status through a NACK and its fix, and
//! diagnosis of a sidecar (config dump, stats, traffic, log level) through its admin relay.

mod support;

use meshplane_xds::{GroupKey, Resource, Snapshot};
use serde_json::Value;
use support::{Mesh, caller, free_port, poll, upstream, via_egress};

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

#[tokio::test(flavor = "multi_thread")]
async fn sync_status_and_diagnosis_of_a_real_sidecar() {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    let pay = upstream("payments-1").await;
    mesh.register("payments-1", "payments", pay, &[], 1).await;
    let egress = free_port();
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        "  - service: payments\n",
    );
    mesh.sidecar("orders-1", &d, 2).await;
    assert!(
        poll(|| async { proxy(&mesh, "orders-1").await["sync"] == "SYNCED" }).await,
        "{}",
        proxy(&mesh, "orders-1").await
    );

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
