//! The Consul source over HTTPS, where Consul negotiates HTTP/2: every service keeps its own
//! blocking query at any number of services, multiplexed over a few connections, so a change
//! no check shows (which HTTP/1.1's signals mode finds only after a one-second grace and a
//! re-read of every service) arrives at once. Served by the embedded registry's
//! Consul-compatible API, behind a TLS front that speaks HTTP/2 as a Consul agent with
//! `tls.enabled` does, and counts the requests it forwards by path.

use meshplane_test_support::{fault::FaultProxy, pki::TestPki, poll::eventually_watch};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use meshplane_https::TlsFiles;
use meshplane_registry::{RegistrySource, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Requests forwarded, by path (blocking ones, with `index`, apart).
#[derive(Default)]
struct Seen {
    plain: HashMap<String, usize>,
    blocking: HashMap<String, usize>,
}

/// HTTPS (HTTP/2 or HTTP/1.1 by ALPN) in front of the registry's plain HTTP API: forwards
/// every request and records its path.
async fn tls_front(
    registry: SocketAddr,
    tls: Arc<meshplane_https::ServerConfig>,
    shutdown: CancellationToken,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let upstream = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let record = seen.clone();
    let forward = move |request: axum::extract::Request| {
        let (upstream, record) = (upstream.clone(), record.clone());
        async move {
            let uri = request.uri().clone();
            {
                let mut seen = record.lock().expect("lock");
                let counts = if uri.query().is_some_and(|q| q.contains("index=")) {
                    &mut seen.blocking
                } else {
                    &mut seen.plain
                };
                *counts.entry(uri.path().to_string()).or_default() += 1;
            }
            let method = request.method().clone();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .expect("body");
            let target = uri.path_and_query().map_or("/", |p| p.as_str());
            let answer = upstream
                .request(method, format!("http://{registry}{target}"))
                .body(body)
                .send()
                .await
                .expect("registry answers");
            let mut response = axum::http::Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            let body = answer.bytes().await.expect("registry body");
            response
                .body(axum::body::Body::from(body))
                .expect("response")
        }
    };
    let router = axum::Router::new().fallback(forward);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind front");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(meshplane_https::serve(listener, router, tls, shutdown));
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_every_service_keeps_a_watch_on_a_few_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TestPki::new(&["127.0.0.1"]).write(dir.path());
    let (ca_file, tls) = (
        files.ca,
        TlsFiles {
            cert: files.cert,
            key: files.key,
        },
    );
    let registry = EmbeddedRegistry::bind(EmbeddedConfig {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().join("data"),
        ..Default::default()
    })
    .await
    .expect("bind");
    let plain = registry.local_addr();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(registry.serve(shutdown.clone()));
    let (api, seen) = tls_front(plain, tls.load().expect("TLS files"), shutdown.clone()).await;
    let http = reqwest::Client::builder()
        .tls_certs_only(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca_file).expect("CA"))
                .expect("CA PEM"),
        )
        .build()
        .expect("client");
    let put = |path: String, body: Option<serde_json::Value>| {
        let request = http.put(format!("https://{api}{path}"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let r = request.send().await.expect("PUT");
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    };
    for i in 0..30 {
        put(
            "/v1/agent/service/register".into(),
            Some(json!({"Name": format!("svc-{i}"), "Port": 1000 + i, "Check": {"TTL": "60s"}})),
        )
        .await;
    }

    // Budget 8: over HTTP/1.1 that is 5 health slots, fewer than the 30 services (signals
    // mode); over HTTP/2 the 30 watches share one connection.
    let proxy = FaultProxy::start(api).await.expect("proxy");
    let proxy_addr = proxy.addr();
    let (reader, writer) = store();
    let (sink, events) = event_channel(256);
    let stop = CancellationToken::new();
    tokio::spawn(writer.run(events, stop.clone()));
    let config = ConsulConfig {
        address: format!("https://{proxy_addr}"),
        ca_file: Some(ca_file.clone()),
        max_connections: 8,
        wait: Duration::from_secs(30),
        min_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(200),
        min_request_interval: Duration::from_millis(10),
        ..ConsulConfig::default()
    };
    let source = tokio::spawn(
        ConsulSource::new(config)
            .expect("config")
            .run(sink, stop.clone()),
    );
    let mut updates = reader.subscribe();
    eventually_watch(
        &mut updates,
        "all 30 services",
        Duration::from_secs(10),
        |s| s.services.len() == 30,
    )
    .await;

    // Registrations without checks and a re-registration on another port show in no check:
    // only a watch of the service itself sees them at once.
    let started = Instant::now();
    put(
        "/v1/agent/service/register".into(),
        Some(json!({"Name": "svc-7", "ID": "svc-7b", "Port": 9})),
    )
    .await;
    eventually_watch(
        &mut updates,
        "a registration without checks",
        Duration::from_secs(10),
        |s| s.service("svc-7").is_some_and(|e| e.instances.len() == 2),
    )
    .await;
    put(
        "/v1/agent/service/register".into(),
        Some(json!({"Name": "svc-7", "ID": "svc-7b", "Port": 19})),
    )
    .await;
    eventually_watch(
        &mut updates,
        "a re-registration on another port",
        Duration::from_secs(10),
        |s| {
            s.service("svc-7")
                .is_some_and(|e| e.instances.iter().any(|i| i.port == 19))
        },
    )
    .await;
    put("/v1/agent/check/fail/service:svc-21".into(), None).await;
    eventually_watch(
        &mut updates,
        "a health change",
        Duration::from_secs(10),
        |s| {
            s.service("svc-21").is_some_and(|e| {
                e.instances
                    .iter()
                    .all(|i| i.health == meshplane_model::Health::Critical)
            })
        },
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "three changes took {took:?}: they waited for a re-read of every service, not a watch"
    );
    // Every service's own blocking query, nothing of signals mode, on a few connections.
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen.plain.get("/v1/health/state/any").copied().unwrap_or(0)
                + seen
                    .blocking
                    .get("/v1/health/state/any")
                    .copied()
                    .unwrap_or(0),
            0,
            "signals mode's checks watch was used"
        );
        let watched = (0..30)
            .filter(|i| {
                let path = format!("/v1/health/service/svc-{i}");
                seen.blocking.get(&path).is_some_and(|n| *n >= 1)
            })
            .count();
        assert_eq!(watched, 30, "services with a blocking query of their own");
    }
    let peak = proxy.peak_open();
    assert!(
        peak <= 3,
        "{peak} concurrent connections for 30 blocking queries: not multiplexed over HTTP/2"
    );
    stop.cancel();
    source.await.expect("source task").expect("source");
    shutdown.cancel();
    served.await.expect("registry task").expect("registry");
}
