//! The Consul source against the embedded registry's Consul-compatible API, in-process.

use meshplane_test_support::{fault::FaultProxy, poll::eventually_watch};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use meshplane_registry::{RegistrySource, Store, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Registry {
    url: String,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start_registry(dir: &std::path::Path, addr: SocketAddr) -> Registry {
    let config = EmbeddedConfig {
        listen_addr: addr,
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    let registry = EmbeddedRegistry::bind(config).await.expect("bind");
    let addr = registry.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(registry.serve(shutdown.clone()).map_ok_unit());
    Registry {
        url: format!("http://{addr}"),
        addr,
        shutdown,
        task,
    }
}

trait MapOkUnit {
    fn map_ok_unit(self) -> impl std::future::Future<Output = ()> + Send;
}
impl<F: std::future::Future<Output = Result<(), meshplane_registry_embedded::EmbeddedError>> + Send>
    MapOkUnit for F
{
    async fn map_ok_unit(self) {
        self.await.expect("registry serves");
    }
}

impl Registry {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("registry task");
    }

    async fn register(&self, body: serde_json::Value) {
        self.put("/v1/agent/service/register", Some(body)).await;
    }

    async fn put(&self, path: &str, body: Option<serde_json::Value>) {
        let request = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .put(format!("{}{path}", self.url));
        let r = match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .expect("PUT");
        assert!(
            r.status().is_success(),
            "{}",
            r.text().await.unwrap_or_default()
        );
    }
}

struct Running {
    store: Store,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

fn fast_config(url: &str) -> ConsulConfig {
    ConsulConfig {
        address: url.to_string(),
        wait: Duration::from_secs(30),
        min_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(200),
        min_request_interval: Duration::from_millis(10),
        ..ConsulConfig::default()
    }
}

fn run_source(config: ConsulConfig) -> Running {
    let (reader, writer) = store();
    let (sink, events) = event_channel(256);
    let shutdown = CancellationToken::new();
    let source = ConsulSource::new(config).expect("valid config");
    let tasks = vec![
        tokio::spawn(writer.run(events, shutdown.clone())),
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { source.run(sink, shutdown).await.expect("source runs") }
        }),
    ];
    Running {
        store: reader,
        shutdown,
        tasks,
    }
}

impl Running {
    async fn until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&meshplane_registry::Snapshot) -> bool,
    ) {
        eventually_watch(&mut self.store.subscribe(), what, timeout, |s| pred(s)).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.expect("task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_the_store_within_200ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    registry
        .register(json!({"Name": "web", "ID": "web-1", "Port": 80}))
        .await;
    let running = run_source(fast_config(&registry.url));
    running
        .until(Duration::from_secs(5), "initial sync", |s| {
            s.is_synced() && s.service("web").is_some()
        })
        .await;

    for i in 0..5 {
        let id = format!("api-{i}");
        let started = Instant::now();
        registry
            .register(json!({"Name": "api", "ID": id, "Port": 81}))
            .await;
        running
            .until(
                Duration::from_millis(200),
                "registration in the store",
                |s| {
                    s.service("api")
                        .is_some_and(|e| e.instances.iter().any(|inst| inst.id.as_str() == id))
                },
            )
            .await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(200), "{took:?}");
    }
    running.stop().await;
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_keeps_state_marks_stale_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let addr = registry.addr;
    registry.register(json!({"Name": "web", "ID": "web-1", "Port": 80, "Check": {"TTL": "1h", "Status": "passing"}})).await;
    let running = run_source(fast_config(&registry.url));
    running
        .until(Duration::from_secs(5), "initial sync", |s| {
            s.service("web").is_some()
        })
        .await;

    registry.stop().await;
    running
        .until(Duration::from_secs(5), "stale", |s| s.is_stale())
        .await;
    let snap = running.store.snapshot();
    assert_eq!(
        snap.service("web").map(|s| s.instances.len()),
        Some(1),
        "a failing registry never empties services"
    );

    let registry = start_registry(dir.path(), addr).await;
    registry
        .register(json!({"Name": "web", "ID": "web-2", "Port": 81}))
        .await;
    running
        .until(Duration::from_secs(5), "recovery", |s| {
            !s.is_stale() && s.service("web").is_some_and(|e| e.instances.len() == 2)
        })
        .await;
    running.stop().await;
    registry.stop().await;
}

/// A registry that hangs (connections open, nothing answers) fails no blocking query for
/// minutes; the liveness probe reports it stale within its interval and timeout, the state
/// stays, and the source is fresh again once the registry answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_registry_is_reported_stale_by_the_probe_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    registry
        .register(json!({"Name": "web", "ID": "web-1", "Port": 80}))
        .await;
    let proxy = FaultProxy::start(registry.addr).await.expect("proxy");
    let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(300));
    let running = run_source(ConsulConfig {
        probe_interval: interval,
        probe_timeout: timeout,
        ..fast_config(&format!("http://{}", proxy.addr()))
    });
    running
        .until(Duration::from_secs(5), "initial sync", |s| {
            s.service("web").is_some() && !s.is_stale()
        })
        .await;

    proxy.set(meshplane_test_support::fault::Fault::BlackHole);
    let hung = Instant::now();
    // Interval + timeout, and slack for a loaded machine.
    running
        .until(interval + timeout + Duration::from_secs(1), "stale", |s| {
            s.is_stale()
        })
        .await;
    let snap = running.store.snapshot();
    let reason = format!("{:?}", snap.sources);
    assert!(reason.contains("/v1/status/leader"), "{reason}");
    assert_eq!(snap.service("web").map(|s| s.instances.len()), Some(1));
    assert!(hung.elapsed() < interval + timeout + Duration::from_secs(1));

    proxy.set(meshplane_test_support::fault::Fault::Pass);
    running
        .until(Duration::from_secs(2), "fresh again", |s| !s.is_stale())
        .await;
    running.stop().await;
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_the_budget() {
    // 8 → 1 catalog + 5 health requests in flight (the checks watch and reads), 2 spare
    // (ConnectionPlan).
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = start_registry(dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    for i in 0..30 {
        registry
            .register(json!({"Name": format!("svc-{i}"), "Port": 1000 + i}))
            .await;
    }
    let proxy = FaultProxy::start(registry.addr).await.expect("proxy");
    let config = ConsulConfig {
        max_connections: 8,
        ..fast_config(&format!("http://{}", proxy.addr()))
    };
    let running = run_source(config);
    running
        .until(Duration::from_secs(10), "all 30 services", |s| {
            s.services.len() == 30
        })
        .await;
    // More services than slots: changes are found through /v1/health/state/any. A
    // registration with a check, a health change and a deregistration each arrive at once,
    // well before the one-second grace after which an unexplained change makes the source
    // read every service.
    let started = Instant::now();
    registry
        .register(json!({"Name": "svc-3", "ID": "svc-3b", "Port": 10, "Check": {"TTL": "30s"}}))
        .await;
    running
        .until(
            Duration::from_secs(10),
            "a registration with a check",
            |s| s.service("svc-3").is_some_and(|e| e.instances.len() == 2),
        )
        .await;
    registry
        .put("/v1/agent/check/pass/service:svc-3b", None)
        .await;
    running
        .until(Duration::from_secs(10), "its check passing", |s| {
            s.service("svc-3").is_some_and(|e| {
                e.instances
                    .iter()
                    .all(|i| i.health == meshplane_model::Health::Passing)
            })
        })
        .await;
    registry
        .put("/v1/agent/service/deregister/svc-3b", None)
        .await;
    running
        .until(Duration::from_secs(10), "the deregistration", |s| {
            s.service("svc-3").is_some_and(|e| e.instances.len() == 1)
        })
        .await;
    let signalled = started.elapsed();
    assert!(
        signalled < Duration::from_millis(900),
        "three signalled changes took {signalled:?}: they waited for a full re-read"
    );
    // A registration without checks shows in no check: the catalog's index moves, and the
    // full re-read finds it.
    registry
        .register(json!({"Name": "svc-7", "ID": "svc-7b", "Port": 9}))
        .await;
    running
        .until(
            Duration::from_secs(10),
            "a registration without checks",
            |s| s.service("svc-7").is_some_and(|e| e.instances.len() == 2),
        )
        .await;
    let peak = proxy.peak_open();
    assert!(
        peak <= 8,
        "peak of {peak} concurrent connections exceeds the budget of 8"
    );
    running.stop().await;
    registry.stop().await;
}
