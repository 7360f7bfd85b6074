//! Egress rollout flags through the admin API of a real control plane: stored in its embedded
//! registry's KV (durable across a restart), or in the KV of a registry it follows with
//! `--registry consul`; token, check-and-set versions, validation, the audit log and the
//! decisions' long poll.

use std::time::{Duration, Instant};

use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use meshplane_runtime::control_plane::{self, ControlPlane};
use meshplane_runtime::{ControlPlaneConfig, RegistryKind};
use meshplane_test_support::{eventually, hold};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "rollout-t0ken";
/// A flag flip reaches a waiting decisions long poll within this.
const FLIP_WITHIN: Duration = Duration::from_secs(1);

fn config(data: &std::path::Path) -> ControlPlaneConfig {
    let any = "127.0.0.1:0".parse().expect("address");
    ControlPlaneConfig {
        xds_addr: any,
        admin_addr: any,
        registry_addr: any,
        data_dir: data.to_owned(),
        token: Some(TOKEN.into()),
        ..ControlPlaneConfig::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(cp: &ControlPlane) -> Api {
        Api {
            http: client(),
            base: format!("http://{}", cp.admin_addr),
        }
    }

    /// `(status, ETag, body)` of `GET path`.
    async fn get(&self, path: &str) -> (u16, String, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("admin API");
        let etag = header(&r, "etag");
        (
            r.status().as_u16(),
            etag,
            r.text().await.unwrap_or_default(),
        )
    }

    async fn document(&self) -> (String, Value) {
        let (status, etag, body) = self.get("/api/rollout").await;
        assert_eq!(status, 200, "{body}");
        (etag, serde_json::from_str(&body).expect("json"))
    }

    /// `PUT /api/rollout` with `headers`: `(status, body)`.
    async fn put(&self, flags: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut r = self
            .http
            .put(format!("{}/api/rollout", self.base))
            .body(flags.to_owned());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.expect("admin API");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

const BEARER: (&str, &str) = ("authorization", "Bearer rollout-t0ken");

const PAYMENTS_ON: &str =
    r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": true}}}}}"#;
const PAYMENTS_OFF_YAML: &str =
    "services:\n  orders:\n    dependencies:\n      payments: { proxy: false }\n";

async fn stop(cp: ControlPlane, shutdown: CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), cp.wait(shutdown))
        .await
        .expect("the control plane stops")
        .expect("cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_need_the_token_are_versioned_validated_audited_and_survive_a_restart() {
    let data = tempfile::tempdir().expect("dir");
    let shutdown = CancellationToken::new();
    let cp = control_plane::start(config(data.path()), shutdown.clone())
        .await
        .expect("control plane");
    let api = Api::new(&cp);

    // Nothing written yet: the default document, version 0.
    let (etag, doc) = api.document().await;
    assert_eq!(etag, "\"0\"");
    assert_eq!(
        doc,
        json!({"flags": {"default": {"proxy": false}}, "version": 0})
    );

    // Without the token, or with a wrong one: refused, nothing changes.
    let (status, body) = api.put(PAYMENTS_ON, &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = api
        .put(PAYMENTS_ON, &[("authorization", "Bearer nope")])
        .await;
    assert_eq!(status, 403);
    assert_eq!(api.document().await.1["version"], 0);

    // An invalid document: 400 naming the field, nothing stored.
    let invalid = r#"{"services": {"orders": {"dependencies": {"payments": {"proxy": false, "rollout": 10}}}}}"#;
    let (status, body) = api.put(invalid, &[BEARER]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("services.orders.dependencies.payments.rollout"),
        "{body}"
    );
    assert_eq!(api.document().await.1["version"], 0);

    // With the token and the version read: stored; named actor.
    let (status, body) = api
        .put(
            PAYMENTS_ON,
            &[BEARER, ("if-match", &etag), ("x-meshplane-actor", "alice")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (etag1, doc) = api.document().await;
    assert_ne!(etag1, etag);
    assert_eq!(
        doc["flags"]["services"]["orders"]["dependencies"]["payments"]["proxy"],
        true
    );

    // A write on the old version: 412, the document stays.
    let (status, body) = api
        .put(PAYMENTS_OFF_YAML, &[BEARER, ("if-match", &etag)])
        .await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(api.document().await.0, etag1);

    // A long poll on orders-1's decisions answers within 1 s of a flip.
    let decisions = "/api/rollout/decisions?service=orders&instance=orders-1&datacenter=dc1";
    let (status, tag, body) = api.get(decisions).await;
    assert_eq!(status, 200, "{body}");
    let first: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(first["dependencies"]["payments"]["proxy"], true, "{body}");
    let poll = {
        let (http, url, tag) = (
            api.http.clone(),
            format!("{}{decisions}&wait=20s", api.base),
            tag.clone(),
        );
        tokio::spawn(async move {
            let r = http
                .get(url)
                .header("if-none-match", tag)
                .send()
                .await
                .expect("poll");
            let status = r.status().as_u16();
            (status, Instant::now(), r.text().await.unwrap_or_default())
        })
    };
    // The poll waits while nothing changes (a 304 would only come after 20 s).
    hold(
        Duration::from_millis(300),
        "the long poll waits",
        || async { !poll.is_finished() },
    )
    .await;
    // YAML, no If-Match, no actor header: the token's write.
    let flipped = Instant::now();
    let (status, body) = api.put(PAYMENTS_OFF_YAML, &[BEARER]).await;
    assert_eq!(status, 200, "{body}");
    let (status, answered, body) = poll.await.expect("poll task");
    assert_eq!(status, 200, "{body}");
    let waited = answered.saturating_duration_since(flipped);
    println!("flip (PUT sent) to the long poll answering: {waited:?}");
    assert!(
        waited < FLIP_WITHIN,
        "the long poll answered {waited:?} after the flip"
    );
    let second: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(second["dependencies"]["payments"]["proxy"], false, "{body}");
    assert_eq!(second["dependencies"]["payments"]["source"], "dependency");
    // Unchanged decisions: a short poll with the current ETag is 304.
    let (_, tag2, _) = api.get(decisions).await;
    let r = api
        .http
        .get(format!("{}{decisions}&wait=100ms", api.base))
        .header("if-none-match", &tag2)
        .send()
        .await
        .expect("poll");
    assert_eq!(r.status().as_u16(), 304);

    // The audit log: each change, who, what.
    let check_audit = |entries: Value| {
        let entries = entries.as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0]["actor"]["name"], "alice");
        assert!(
            entries[0]["actor"]["remote_address"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{entries:?}"
        );
        assert_eq!(
            entries[0]["summary"],
            json!([r#"added services.orders.dependencies.payments: {"proxy":true}"#])
        );
        assert_eq!(entries[0]["before"], json!({"default": {"proxy": false}}));
        assert_eq!(entries[1]["actor"]["name"], "token");
        assert_eq!(
            entries[1]["summary"],
            json!([r#"services.orders.dependencies.payments: {"proxy":true} -> {"proxy":false}"#])
        );
        assert_eq!(entries[1]["after"], second_doc());
    };
    let (status, _, body) = api.get("/api/rollout/audit").await;
    assert_eq!(status, 200, "{body}");
    check_audit(serde_json::from_str(&body).expect("json"));
    let (etag2, doc2) = api.document().await;

    // Restarted on the same data directory: the same document, version and audit log. A
    // long poll waiting meanwhile ends at once (503), and does not hold the shutdown.
    let (_, tag, _) = api.get(decisions).await;
    let waiting = {
        let (http, url) = (
            api.http.clone(),
            format!("{}{decisions}&wait=60s", api.base),
        );
        tokio::spawn(async move {
            let r = http.get(url).header("if-none-match", tag).send().await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    };
    hold(
        Duration::from_millis(200),
        "the long poll waits",
        || async { !waiting.is_finished() },
    )
    .await;
    let stopping = Instant::now();
    stop(cp, shutdown).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the shutdown waited {:?}",
        stopping.elapsed()
    );
    assert_eq!(waiting.await.expect("poll"), 503);
    let shutdown = CancellationToken::new();
    let cp = control_plane::start(config(data.path()), shutdown.clone())
        .await
        .expect("control plane restarts");
    let api = Api::new(&cp);
    assert_eq!(api.document().await, (etag2, doc2));
    let (_, _, body) = api.get("/api/rollout/audit").await;
    check_audit(serde_json::from_str(&body).expect("json"));
    // The decisions are served again once the control plane has read the flags.
    eventually(
        "decisions after the restart",
        Duration::from_secs(10),
        || async {
            let (status, _, body) = api.get(decisions).await;
            status == 200 && body.contains(r#""payments":{"proxy":false"#)
        },
    )
    .await;
    stop(cp, shutdown).await;
}

fn second_doc() -> Value {
    json!({"default": {"proxy": false}, "services": {"orders": {"dependencies": {"payments": {"proxy": false}}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_registry_consul_the_flags_live_in_that_registrys_kv() {
    let (registry_data, cp_data) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let shutdown = CancellationToken::new();
    let registry = EmbeddedRegistry::bind(EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: registry_data.path().to_owned(),
        token: Some(TOKEN.into()),
        ..EmbeddedConfig::default()
    })
    .await
    .expect("registry");
    let registry_addr = registry.local_addr();
    let serving = tokio::spawn(registry.serve(shutdown.clone()));
    let cp = control_plane::start(
        ControlPlaneConfig {
            registry: RegistryKind::Consul,
            consul_addr: Some(format!("http://{registry_addr}")),
            consul_token: Some(TOKEN.into()),
            ..config(cp_data.path())
        },
        shutdown.clone(),
    )
    .await
    .expect("control plane");
    let api = Api::new(&cp);
    let (status, body) = api.put(PAYMENTS_ON, &[BEARER]).await;
    assert_eq!(status, 200, "{body}");

    // In the followed registry's KV, at the documented key.
    let r = client()
        .get(format!(
            "http://{registry_addr}/v1/kv/meshplane/rollout/flags?raw"
        ))
        .send()
        .await
        .expect("registry KV");
    assert_eq!(r.status().as_u16(), 200);
    let stored: Value = r.json().await.expect("json");
    assert_eq!(
        stored["flags"]["services"]["orders"]["dependencies"]["payments"]["proxy"], true,
        "{stored}"
    );
    // Written there by hand (another control plane, an operator with the Consul CLI): the
    // control plane follows it.
    let by_hand = json!({"flags": second_doc()}).to_string();
    let r = client()
        .put(format!(
            "http://{registry_addr}/v1/kv/meshplane/rollout/flags"
        ))
        .header("x-consul-token", TOKEN)
        .body(by_hand)
        .send()
        .await
        .expect("registry KV");
    assert!(r.status().is_success());
    eventually("the control plane follows the KV", FLIP_WITHIN, || async {
        let (status, _, body) = api
            .get("/api/rollout/decisions?service=orders&instance=orders-1")
            .await;
        status == 200 && body.contains(r#""payments":{"proxy":false"#)
    })
    .await;

    // A second control plane on the same registry sees the same document and version, and
    // a write on a version the first one moved since is refused.
    let cp2_data = tempfile::tempdir().expect("dir");
    let cp2 = control_plane::start(
        ControlPlaneConfig {
            registry: RegistryKind::Consul,
            consul_addr: Some(format!("http://{registry_addr}")),
            consul_token: Some(TOKEN.into()),
            ..config(cp2_data.path())
        },
        shutdown.clone(),
    )
    .await
    .expect("second control plane");
    let api2 = Api::new(&cp2);
    let (etag, doc) = api.document().await;
    assert_eq!(api2.document().await, (etag.clone(), doc));
    let (status, body) = api.put(PAYMENTS_ON, &[BEARER, ("if-match", &etag)]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api2
        .put(PAYMENTS_OFF_YAML, &[BEARER, ("if-match", &etag)])
        .await;
    assert_eq!(status, 412, "{body}");

    // A change whose control plane stopped before copying it into the audit log (written
    // here by hand, as it stores it): a control plane following the key copies it.
    let (etag, _) = api.document().await;
    let version: u64 = etag.trim_matches('"').parse().expect("version");
    let stored = json!({
        "flags": second_doc(),
        "change": {
            "at": "Fri, 04 Dec 2026 19:00:00 GMT", "at_unix_ms": 1796410800000u64,
            "actor": {"name": "crashed-writer"}, "previous_version": version,
            "summary": ["by hand"], "before": {"default": {"proxy": false}},
        },
    });
    let r = client()
        .put(format!(
            "http://{registry_addr}/v1/kv/meshplane/rollout/flags?cas={version}"
        ))
        .header("x-consul-token", TOKEN)
        .body(stored.to_string())
        .send()
        .await
        .expect("registry KV");
    assert_eq!(r.text().await.expect("body").trim(), "true");
    eventually(
        "the change is copied into the audit log",
        Duration::from_secs(5),
        || async {
            let (_, _, body) = api2.get("/api/rollout/audit").await;
            body.contains("crashed-writer")
        },
    )
    .await;
    stop(cp2, shutdown.clone()).await;
    stop(cp, shutdown.clone()).await;
    serving.await.expect("join").expect("registry stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_registry_file_the_flags_routes_say_they_need_a_kv_store() {
    let data = tempfile::tempdir().expect("dir");
    let services = data.path().join("services.yaml");
    std::fs::write(&services, "services: []\n").expect("services file");
    let shutdown = CancellationToken::new();
    let cp = control_plane::start(
        ControlPlaneConfig {
            registry: RegistryKind::File,
            services_file: Some(services),
            ..config(data.path())
        },
        shutdown.clone(),
    )
    .await
    .expect("control plane");
    let api = Api::new(&cp);
    let (status, _, body) = api.get("/api/rollout").await;
    assert_eq!(status, 501, "{body}");
    assert!(
        body.contains("--registry embedded or --registry consul"),
        "{body}"
    );
    let (status, _) = api.put(PAYMENTS_ON, &[BEARER]).await;
    assert_eq!(status, 501);
    stop(cp, shutdown).await;
}
