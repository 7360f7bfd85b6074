//! The Consul-compatible API against a registry on 127.0.0.1:0: JSON shapes, headers, blocking
//! queries, filters, validation, tokens and the registry's own health checking.

mod support;

use std::time::{Duration, Instant};

use meshplane_test_support::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{client, start, start_with};

async fn put(url: &str, body: Value) -> (StatusCode, String) {
    let r = client().put(url).json(&body).send().await.expect("request");
    (r.status(), r.text().await.expect("body"))
}

async fn get(url: &str) -> (StatusCode, Option<u64>, Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status();
    let index = r
        .headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, index, body)
}

#[tokio::test]
async fn register_then_read_in_consul_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let body = json!({
        "ID": "web-1", "Name": "web", "Tags": ["canary", "v2"], "Address": "10.0.0.5", "Port": 31001,
        "Meta": {"version": "2"}, "Weights": {"Passing": 10, "Warning": 2},
        "Check": {"TTL": "30s", "Status": "passing", "DeregisterCriticalServiceAfter": "90m"}
    });
    let (status, text) = put(&format!("{}/v1/agent/service/register", s.url), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    let r = client()
        .get(format!("{}/v1/catalog/services", s.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["X-Consul-KnownLeader"], "true");
    assert_eq!(r.headers()["X-Consul-LastContact"], "0");
    assert!(
        r.headers()["X-Consul-Index"]
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("int")
            >= 1
    );
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"web": ["canary", "v2"]})
    );

    let (status, _, health) = get(&format!("{}/v1/health/service/web", s.url)).await;
    assert_eq!(status, StatusCode::OK);
    let entry = &health[0];
    assert_eq!(entry["Service"]["ID"], "web-1");
    assert_eq!(entry["Service"]["Service"], "web");
    assert_eq!(entry["Service"]["Port"], 31001);
    assert_eq!(entry["Service"]["Address"], "10.0.0.5");
    assert_eq!(
        entry["Service"]["Weights"],
        json!({"Passing": 10, "Warning": 2})
    );
    assert_eq!(entry["Service"]["Meta"], json!({"version": "2"}));
    assert_eq!(entry["Node"]["Datacenter"], "dc1");
    let checks = entry["Checks"].as_array().expect("checks");
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[1]["CheckID"], "service:web-1");
    assert_eq!(checks[1]["Status"], "passing");
    assert_eq!(checks[1]["Type"], "ttl");
    assert_eq!(checks[1]["ServiceID"], "web-1");

    let (_, _, catalog) = get(&format!("{}/v1/catalog/service/web", s.url)).await;
    assert_eq!(catalog[0]["ServiceID"], "web-1");
    assert_eq!(catalog[0]["ServiceName"], "web");
    assert_eq!(catalog[0]["ServicePort"], 31001);
    assert_eq!(catalog[0]["ServiceTags"], json!(["canary", "v2"]));
    assert_eq!(
        catalog[0]["ServiceWeights"],
        json!({"Passing": 10, "Warning": 2})
    );

    let (_, _, dcs) = get(&format!("{}/v1/catalog/datacenters", s.url)).await;
    assert_eq!(dcs, json!(["dc1"]));
    let (_, _, leader) = get(&format!("{}/v1/status/leader", s.url)).await;
    assert!(leader.as_str().is_some_and(|l| l.contains(':')));
    s.stop().await;
}

#[tokio::test]
async fn lowercase_and_snake_case_keys_are_accepted_like_consul() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let body = json!({"name": "api", "id": "api-1", "port": 80,
        "checks": [{"ttl": "10s", "check_id": "api-ttl", "deregister_critical_service_after": "1m"}]});
    let (status, text) = put(&format!("{}/v1/agent/service/register", s.url), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, _, health) = get(&format!("{}/v1/health/service/api", s.url)).await;
    assert_eq!(health[0]["Checks"][1]["CheckID"], "api-ttl");
    assert_eq!(
        health[0]["Checks"][1]["Status"], "critical",
        "new checks start critical"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_400_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let url = format!("{}/v1/agent/service/register", s.url);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "Request decode failed"),
        (b"[]".to_vec(), "Request decode failed"),
        (br#"{"Port": 80}"#.to_vec(), "Missing service name"),
        (br#"{"Name": "x", "Port": 70000}"#.to_vec(), "Invalid Port"),
        (br#"{"Name": "x", "Port": -1}"#.to_vec(), "Invalid Port"),
        (br#"{"Name": "x", "Port": "80"}"#.to_vec(), "Invalid Port"),
        (br#"{"Name": "has space"}"#.to_vec(), "Invalid service name"),
        (br#"{"Name": "x", "Tags": "a"}"#.to_vec(), "Invalid Tags"),
        (
            br#"{"Name": "x", "Check": {"TTL": "soon"}}"#.to_vec(),
            "Invalid TTL",
        ),
        (
            br#"{"Name": "x", "Check": {"HTTP": "http://a"}}"#.to_vec(),
            "Interval must be > 0",
        ),
        (
            br#"{"Name": "x", "Check": {"TCP": "a:1", "Interval": "1s"}}"#.to_vec(),
            "not supported",
        ),
        (
            br#"{"Name": "x", "Check": {"Notes": "n"}}"#.to_vec(),
            "TTL or HTTP is required",
        ),
        (
            br#"{"Name": "x", "Weights": {"Passing": 0}}"#.to_vec(),
            "Weights.Passing",
        ),
        (
            br#"{"Name": "x", "Meta": {"k": 1}}"#.to_vec(),
            "Invalid Service Meta",
        ),
        (
            vec![b' '; meshplane_registry_embedded::MAX_BODY_BYTES + 1],
            "too large",
        ),
    ];
    for (body, expected) in cases {
        let r = client()
            .put(&url)
            .body(body.clone())
            .send()
            .await
            .expect("request");
        let status = r.status();
        let text = r.text().await.expect("text");
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}: {text}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(text.contains(expected), "expected {expected:?} in {text:?}");
    }
    let (_, index, services) = get(&format!("{}/v1/catalog/services", s.url)).await;
    assert_eq!(services, json!({}));
    assert_eq!(index, Some(1), "no index was consumed");
    s.stop().await;
}

#[tokio::test]
async fn blocking_query_wakes_on_change_and_times_out_on_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    put(&reg, json!({"Name": "web", "ID": "web-1", "Port": 1})).await;
    let (_, index, _) = get(&format!("{}/v1/health/service/web", s.url)).await;
    let index = index.expect("index");

    // Times out: nothing changes within `wait` (plus at most wait/16 jitter).
    let started = Instant::now();
    let (_, same, _) = get(&format!(
        "{}/v1/health/service/web?index={index}&wait=300ms",
        s.url
    ))
    .await;
    let took = started.elapsed();
    assert_eq!(same, Some(index));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // An index from another timeline (say, a wiped data directory) is answered at once.
    let started = Instant::now();
    let (_, lower, _) = get(&format!(
        "{}/v1/health/service/web?index={}&wait=30s",
        s.url,
        index + 1000
    ))
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(lower, Some(index));

    // Wakes on change: a second instance registered while the query blocks.
    let url = format!("{}/v1/health/service/web?index={index}&wait=30s", s.url);
    let waiter = tokio::spawn(async move { get(&url).await });
    // A change to another service must not wake it.
    put(&reg, json!({"Name": "other", "Port": 2})).await;
    put(&reg, json!({"Name": "web", "ID": "web-2", "Port": 2})).await;
    let started = Instant::now();
    let (_, new_index, body) = waiter.await.expect("waiter");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(new_index.expect("index") > index);
    assert_eq!(body.as_array().expect("list").len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn passing_tag_and_dc_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    put(&reg, json!({"Name": "web", "ID": "a", "Tags": ["canary"], "Check": {"TTL": "1h", "Status": "passing"}})).await;
    put(
        &reg,
        json!({"Name": "web", "ID": "b", "Check": {"TTL": "1h"}}),
    )
    .await;
    put(&reg, json!({"Name": "web", "ID": "c", "Tags": ["canary"], "Check": {"TTL": "1h", "Status": "warning"}})).await;
    let ids = |v: &Value| {
        v.as_array()
            .expect("list")
            .iter()
            .map(|e| e["Service"]["ID"].as_str().expect("id").to_string())
            .collect::<Vec<_>>()
    };
    let (_, _, all) = get(&format!("{}/v1/health/service/web", s.url)).await;
    assert_eq!(ids(&all), ["a", "b", "c"]);
    let (_, _, passing) = get(&format!("{}/v1/health/service/web?passing", s.url)).await;
    assert_eq!(ids(&passing), ["a"]);
    let (_, _, canary) = get(&format!("{}/v1/health/service/web?tag=canary", s.url)).await;
    assert_eq!(ids(&canary), ["a", "c"]);
    let (_, _, both) = get(&format!(
        "{}/v1/health/service/web?tag=canary&passing=1",
        s.url
    ))
    .await;
    assert_eq!(ids(&both), ["a"]);
    let (_, _, dc1) = get(&format!("{}/v1/health/service/web?dc=dc1", s.url)).await;
    assert_eq!(ids(&dc1), ["a", "b", "c"]);
    let r = client()
        .get(format!("{}/v1/health/service/web?dc=dc9", s.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("No path to datacenter")
    );
    s.stop().await;
}

/// What Prometheus's Consul discovery reads besides services: the agent's datacenter, and
/// node-meta filters (the single node has no metadata, so any filter excludes it, as Consul
/// would); filter expressions are refused rather than ignored.
#[tokio::test]
async fn agent_self_node_meta_and_filter_expressions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let (status, _, me) = get(&format!("{}/v1/agent/self", s.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert_eq!(me["Member"]["Tags"]["dc"], "dc1");
    assert!(me["Config"]["NodeName"].is_string(), "{me}");

    let reg = format!("{}/v1/agent/service/register", s.url);
    put(&reg, json!({"Name": "web", "ID": "a"})).await;
    for path in [
        "catalog/services",
        "catalog/service/web",
        "health/service/web",
    ] {
        let (_, _, all) = get(&format!("{}/v1/{path}?stale", s.url)).await;
        assert!(
            !all.as_object().map(|o| o.is_empty()).unwrap_or(false) && all != json!([]),
            "{path}: {all}"
        );
        let (status, _, none) = get(&format!("{}/v1/{path}?node-meta=rack:r1", s.url)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            none == json!({}) || none == json!([]),
            "{path} with node-meta: {none}"
        );
        let r = client()
            .get(format!("{}/v1/{path}?filter=Service.Port%3D%3D1", s.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(r.text().await.expect("text").contains("not supported"));
    }
    let r = client()
        .get(format!("{}/v1/catalog/services?node-meta=rack", s.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn ttl_checks_heartbeat_expire_and_reap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    let body = json!({"Name": "job", "ID": "job-1", "Check": {"TTL": "1s", "DeregisterCriticalServiceAfter": "300ms"}});
    assert_eq!(put(&reg, body).await.0, StatusCode::OK);
    let pass = format!("{}/v1/agent/check/pass/service:job-1?note=ok", s.url);
    assert_eq!(
        client().put(&pass).send().await.expect("pass").status(),
        StatusCode::OK
    );
    let (_, _, health) = get(&format!("{}/v1/health/service/job", s.url)).await;
    assert_eq!(health[0]["Checks"][1]["Status"], "passing");
    assert_eq!(health[0]["Checks"][1]["Output"], "ok");

    // The body form: PUT /v1/agent/check/update/:id.
    let update = format!("{}/v1/agent/check/update/service:job-1", s.url);
    let (status, text) = put(&update, json!({"Status": "warning", "Output": "slow"})).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (_, _, health) = get(&format!("{}/v1/health/service/job", s.url)).await;
    assert_eq!(health[0]["Checks"][1]["Status"], "warning");
    assert_eq!(health[0]["Checks"][1]["Output"], "slow");
    let (status, text) = put(&update, json!({"Status": "fine"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

    // No more heartbeats: critical after the TTL, then deregistered after 300ms more.
    let url = format!("{}/v1/health/service/job", s.url);
    eventually("TTL expiry", Duration::from_secs(5), || async {
        let (_, _, h) = get(&url).await;
        (h[0]["Checks"][1]["Status"] == "critical").then_some(())
    })
    .await;
    eventually("reaping", Duration::from_secs(5), || async {
        let (_, _, h) = get(&url).await;
        (h == json!([])).then_some(())
    })
    .await;

    let unknown = client()
        .put(format!("{}/v1/agent/check/pass/nope", s.url))
        .send()
        .await
        .expect("pass");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let unknown = client()
        .put(format!("{}/v1/agent/service/deregister/nope", s.url))
        .send()
        .await
        .expect("dereg");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn http_checks_are_run_by_the_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    // The registry's own API serves as the checked endpoint: 200 for /v1/status/leader,
    // 405 for a PUT-only route.
    let reg = format!("{}/v1/agent/service/register", s.url);
    let ok = json!({"Name": "up", "Check": {"HTTP": format!("{}/v1/status/leader", s.url), "Interval": "100ms"}});
    let bad = json!({"Name": "down", "Check": {"HTTP": format!("{}/v1/agent/service/register", s.url), "Interval": "100ms", "Status": "passing"}});
    assert_eq!(put(&reg, ok).await.0, StatusCode::OK);
    assert_eq!(put(&reg, bad).await.0, StatusCode::OK);
    for (name, expected) in [("up", "passing"), ("down", "critical")] {
        let url = format!("{}/v1/health/service/{name}", s.url);
        let output = eventually(name, Duration::from_secs(5), || async {
            let (_, _, h) = get(&url).await;
            (h[0]["Checks"][1]["Status"] == expected).then(|| h[0]["Checks"][1]["Output"].clone())
        })
        .await;
        assert!(
            output.as_str().is_some_and(|o| o.starts_with("HTTP GET")),
            "{output}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn token_guards_write_routes_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start_with(
        dir.path(),
        Some("s3cret"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    let body = json!({"Name": "web"});
    let none = client().put(&reg).json(&body).send().await.expect("put");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let wrong = client()
        .put(&reg)
        .header("X-Consul-Token", "nope")
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let (_, _, services) = get(&format!("{}/v1/catalog/services", s.url)).await;
    assert_eq!(services, json!({}), "refused writes write nothing");
    let consul = client()
        .put(&reg)
        .header("X-Consul-Token", "s3cret")
        .json(&body)
        .send()
        .await
        .expect("put");
    assert_eq!(consul.status(), StatusCode::OK);
    let bearer = client()
        .put(&reg)
        .bearer_auth("s3cret")
        .json(&json!({"Name": "api"}))
        .send()
        .await
        .expect("put");
    assert_eq!(bearer.status(), StatusCode::OK);
    let (_, _, services) = get(&format!("{}/v1/catalog/services", s.url)).await;
    assert_eq!(services, json!({"api": [], "web": []}));
    s.stop().await;
}

#[tokio::test]
async fn reregistration_with_same_content_does_not_bump_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    let body = json!({"Name": "web", "Port": 1, "Check": {"TTL": "1h"}});
    put(&reg, body.clone()).await;
    let (_, first, _) = get(&format!("{}/v1/health/service/web", s.url)).await;
    put(&reg, body).await;
    let (_, second, _) = get(&format!("{}/v1/health/service/web", s.url)).await;
    assert_eq!(first, second);
    s.stop().await;
}

#[tokio::test]
async fn renaming_a_registration_wakes_the_catalog_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    put(&reg, json!({"Name": "old", "ID": "x-1", "Port": 1})).await;
    let (_, index, _) = get(&format!("{}/v1/catalog/services", s.url)).await;
    let url = format!(
        "{}/v1/catalog/services?index={}&wait=30s",
        s.url,
        index.expect("index")
    );
    let waiter = tokio::spawn(async move { get(&url).await });
    put(&reg, json!({"Name": "new", "ID": "x-1", "Port": 1})).await;
    let started = Instant::now();
    let (_, _, services) = waiter.await.expect("waiter");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the rename must wake the query"
    );
    assert_eq!(services, json!({"new": []}));
    let (_, _, old) = get(&format!("{}/v1/health/service/old", s.url)).await;
    assert_eq!(old, json!([]));
    s.stop().await;
}

#[tokio::test]
async fn health_state_lists_every_check_by_state_and_blocks_on_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let reg = format!("{}/v1/agent/service/register", s.url);
    put(
        &reg,
        json!({"Name": "web", "ID": "web-1", "Port": 1, "Check": {"TTL": "30s", "Status": "passing"}}),
    )
    .await;
    put(
        &reg,
        json!({"Name": "db", "ID": "db-1", "Port": 2, "Check": {"TTL": "30s"}}),
    )
    .await;
    let (status, index, body) = get(&format!("{}/v1/health/state/any", s.url)).await;
    assert_eq!(status, StatusCode::OK);
    let checks = body.as_array().expect("a list of checks");
    let ids: Vec<(&str, &str, &str)> = checks
        .iter()
        .map(|c| {
            (
                c["CheckID"].as_str().expect("CheckID"),
                c["ServiceName"].as_str().expect("ServiceName"),
                c["Status"].as_str().expect("Status"),
            )
        })
        .collect();
    // The node's own check (no service) and each instance's, as Consul lists them.
    assert!(ids.contains(&("serfHealth", "", "passing")), "{ids:?}");
    assert!(
        ids.contains(&("service:web-1", "web", "passing")),
        "{ids:?}"
    );
    assert!(ids.contains(&("service:db-1", "db", "critical")), "{ids:?}");
    assert!(checks.iter().all(|c| c["ModifyIndex"].as_u64().is_some()));

    // One state only.
    let (_, _, critical) = get(&format!("{}/v1/health/state/critical", s.url)).await;
    let critical: Vec<&str> = critical
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["CheckID"].as_str().expect("CheckID"))
        .collect();
    assert_eq!(critical, ["service:db-1"]);
    let (status, _, _) = get(&format!("{}/v1/health/state/sideways", s.url)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Blocks until a check changes, then answers with the change and a higher index.
    let index = index.expect("index");
    let url = format!("{}/v1/health/state/any?index={index}&wait=30s", s.url);
    let waiter = tokio::spawn(async move { get(&url).await });
    let pass = client()
        .put(format!("{}/v1/agent/check/pass/service:db-1", s.url))
        .send()
        .await
        .expect("pass");
    assert!(pass.status().is_success());
    let (_, new_index, body) = waiter.await.expect("waiter");
    assert!(new_index.expect("index") > index);
    let db = body
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["CheckID"] == "service:db-1")
        .cloned()
        .expect("db's check");
    assert_eq!(db["Status"], "passing");
    s.stop().await;
}

/// Consul's key/value API: writes durable and answered `true`, check-and-set answered
/// `false` without writing, reads in Consul's shapes (base64 values, `raw`, `keys`,
/// `recurse`), blocking reads woken by a write, everything kept across a restart.
#[tokio::test]
async fn key_value_store_with_check_and_set_blocking_reads_and_durability() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(dir.path()).await;
    let kv = |key: &str| format!("{}/v1/kv/{key}", s.url);
    let put_raw = |url: String, body: &'static str| async move {
        let r = client().put(url).body(body).send().await.expect("put");
        (r.status(), r.text().await.expect("body"))
    };
    assert_eq!(
        put_raw(kv("meshplane/flags"), "{\"v\":1}").await,
        (StatusCode::OK, "true".into())
    );
    let (status, index, body) = get(&kv("meshplane/flags")).await;
    assert_eq!(status, StatusCode::OK);
    let entry = &body[0];
    assert_eq!(entry["Key"], "meshplane/flags");
    assert_eq!(entry["Value"], "eyJ2IjoxfQ==", "base64 of the value");
    let modify = entry["ModifyIndex"].as_u64().expect("index");
    assert_eq!(entry["CreateIndex"].as_u64(), Some(modify));
    assert!(index.expect("X-Consul-Index") >= modify);

    // Check-and-set: a stale index is refused and changes nothing; the current one wins.
    assert_eq!(
        put_raw(
            format!("{}?cas={}", kv("meshplane/flags"), modify + 100),
            "{\"v\":2}"
        )
        .await,
        (StatusCode::OK, "false".into())
    );
    assert_eq!(
        put_raw(format!("{}?cas=0", kv("meshplane/flags")), "{\"v\":2}").await,
        (StatusCode::OK, "false".into()),
        "cas=0 writes only a new key"
    );
    let raw = client()
        .get(format!("{}?raw", kv("meshplane/flags")))
        .send()
        .await
        .expect("get");
    assert_eq!(raw.text().await.expect("text"), "{\"v\":1}");
    assert_eq!(
        put_raw(
            format!("{}?cas={modify}", kv("meshplane/flags")),
            "{\"v\":2}"
        )
        .await,
        (StatusCode::OK, "true".into())
    );

    // A blocking read returns when the key changes.
    let (_, index, _) = get(&kv("meshplane/flags")).await;
    let index = index.expect("index");
    let url = format!("{}?index={index}&wait=10s", kv("meshplane/audit/"));
    let started = Instant::now();
    let blocked = tokio::spawn(async move { get(&format!("{url}&recurse")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(put_raw(kv("meshplane/audit/0001"), "first").await.1, "true");
    let (status, woken, entries) = blocked.await.expect("join");
    assert_eq!(status, StatusCode::OK);
    assert!(woken.expect("index") > index);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken by the write, not the wait"
    );
    assert_eq!(entries.as_array().map(Vec::len), Some(1));
    assert_eq!(
        put_raw(kv("meshplane/audit/0002"), "second").await.1,
        "true"
    );
    let (_, _, keys) = get(&format!("{}?keys", kv("meshplane/"))).await;
    assert_eq!(
        keys,
        json!([
            "meshplane/audit/0001",
            "meshplane/audit/0002",
            "meshplane/flags"
        ])
    );

    // Locks need sessions, which this registry has not: refused, not ignored.
    let (status, _) = put_raw(format!("{}?acquire=abc", kv("meshplane/lock")), "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A missing key is a 404; deletes are writes too.
    let (status, _, _) = get(&kv("nothing/here")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = client()
        .delete(kv("meshplane/audit/0001"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.text().await.expect("text"), "true");

    // Acknowledged means on disk.
    s.stop().await;
    let s = start(dir.path()).await;
    let (_, _, keys) = get(&format!("{}/v1/kv/meshplane/?keys", s.url)).await;
    assert_eq!(keys, json!(["meshplane/audit/0002", "meshplane/flags"]));
    let r = client()
        .delete(format!("{}/v1/kv/meshplane/?recurse", s.url))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.text().await.expect("text"), "true");
    let (status, _, _) = get(&format!("{}/v1/kv/meshplane/?recurse", s.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}
