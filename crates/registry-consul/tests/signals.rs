//! Signals mode (more services than health slots, over HTTP/1.1) against a small consistent
//! model of Consul, to pin one ordering: a registration that lands after the source read its
//! service but before the checks watch's first answer (the baseline, which no later answer is
//! compared against) must still reach the store — not wait for the 5-minute resync.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::Uri,
    response::{IntoResponse, Response},
};
use meshplane_registry::{RegistrySource, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource};
use meshplane_test_support::poll::eventually_watch;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Services in the catalog: more than the one health slot of a budget of 4.
const SERVICES: [&str; 3] = ["web", "db", "cache"];
/// The index before and after `web-2` registers.
const BEFORE: u64 = 10;
const AFTER: u64 = 11;
/// How long the first checks answer waits for `web-2` to register before answering without
/// it (a source that reads only after that answer never lets it register first).
const SLOW_BASELINE: Duration = Duration::from_secs(2);

/// The model: `web-2` registers (with a check) right after `/v1/health/service/web` is first
/// answered. Every answer is consistent with the current state and index.
#[derive(Clone)]
struct Model {
    registered: watch::Sender<bool>,
    web_reads: Arc<Mutex<Vec<usize>>>,
    /// `/v1/health/state/any` answers 500 while set.
    checks_fail: Arc<AtomicBool>,
}

fn query_index(query: Option<&str>) -> u64 {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("index="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn json(index: u64, body: String) -> Response {
    ([("X-Consul-Index", index.to_string())], body).into_response()
}

impl Model {
    fn index(&self) -> u64 {
        if *self.registered.borrow() {
            AFTER
        } else {
            BEFORE
        }
    }

    /// Instances of `service` now: `name-1`, and `web-2` once registered.
    fn ids(&self, service: &str) -> Vec<String> {
        let mut ids = vec![format!("{service}-1")];
        if service == "web" && *self.registered.borrow() {
            ids.push("web-2".into());
        }
        ids
    }

    fn health(&self, service: &str) -> String {
        let entries: Vec<String> = self
            .ids(service)
            .iter()
            .map(|id| {
                format!(
                    r#"{{"Node": {{"Node": "n-{id}", "Address": "10.0.0.1", "Datacenter": "dc1"}}, "Service": {{"ID": "{id}", "Service": "{service}", "Port": 80}}, "Checks": [{{"Node": "n-{id}", "CheckID": "{id}:http", "ServiceID": "{id}", "ServiceName": "{service}", "Status": "passing", "ModifyIndex": {}}}]}}"#,
                    if id == "web-2" { AFTER } else { 1 }
                )
            })
            .collect();
        format!("[{}]", entries.join(","))
    }

    fn checks(&self) -> String {
        let checks: Vec<String> = SERVICES
            .iter()
            .flat_map(|service| self.ids(service).into_iter().map(move |id| (service, id)))
            .map(|(service, id)| {
                format!(
                    r#"{{"Node": "n-{id}", "CheckID": "{id}:http", "ServiceID": "{id}", "ServiceName": "{service}", "Status": "passing", "ModifyIndex": {}}}"#,
                    if id == "web-2" { AFTER } else { 1 }
                )
            })
            .collect();
        format!("[{}]", checks.join(","))
    }
}

async fn handle(State(model): State<Model>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let path = uri.path();
    let index = query_index(query.as_deref());
    let mut changed = model.registered.subscribe();
    match path {
        "/v1/status/leader" => "\"127.0.0.1:8300\"".into_response(),
        "/v1/catalog/services" if index < BEFORE => {
            let body: Vec<String> = SERVICES.iter().map(|s| format!(r#""{s}": []"#)).collect();
            json(BEFORE, format!("{{{}}}", body.join(",")))
        }
        // The catalog does not move: `web-2` is a new instance of a known service.
        "/v1/catalog/services" => std::future::pending().await,
        "/v1/health/state/any" if model.checks_fail.load(Ordering::SeqCst) => {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "rpc error").into_response()
        }
        "/v1/health/state/any" => {
            if index == 0 {
                // A slow first answer: it leaves time for `web-2` to register first.
                let _ = tokio::time::timeout(SLOW_BASELINE, changed.wait_for(|r| *r)).await;
            } else if index >= model.index() {
                // A blocking query: answered when the state moves past `index`.
                let _ = changed.wait_for(|r| *r).await;
                if index >= AFTER {
                    std::future::pending::<()>().await;
                }
            }
            json(model.index(), model.checks())
        }
        _ => match path.strip_prefix("/v1/health/service/") {
            Some(service) if SERVICES.contains(&service) => {
                let answer = json(model.index(), model.health(service));
                if service == "web" {
                    let mut reads = model
                        .web_reads
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    reads.push(model.ids("web").len());
                    // `web-2` registers just after the first read of `web` is answered.
                    model.registered.send_replace(true);
                }
                answer
            }
            _ => (axum::http::StatusCode::NOT_FOUND, "no such path").into_response(),
        },
    }
}

async fn start_model(checks_fail: bool) -> (SocketAddr, Model) {
    let model = Model {
        registered: watch::Sender::new(false),
        web_reads: Arc::default(),
        checks_fail: Arc::new(AtomicBool::new(checks_fail)),
    };
    let app = Router::new().fallback(handle).with_state(model.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("model serves") });
    (addr, model)
}

struct Running {
    store: meshplane_registry::Store,
    shutdown: CancellationToken,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

fn run(addr: SocketAddr) -> Running {
    let config = ConsulConfig {
        address: format!("http://{addr}"),
        max_connections: 4, // one health slot: three services are in signals mode
        wait: Duration::from_secs(30),
        min_retry: Duration::from_millis(50),
        max_retry: Duration::from_millis(200),
        min_request_interval: Duration::from_millis(10),
        datacenter: Some("dc1".into()),
        ..ConsulConfig::default()
    };
    assert!(
        config.resync >= Duration::from_secs(60),
        "no resync during the test"
    );
    let (store, writer) = store();
    let (sink, events) = event_channel(64);
    let shutdown = CancellationToken::new();
    let source = ConsulSource::new(config).expect("config");
    let tasks = [
        tokio::spawn(writer.run(events, shutdown.clone())),
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { source.run(sink, shutdown).await.expect("source") }
        }),
    ];
    Running {
        store,
        shutdown,
        tasks,
    }
}

impl Running {
    async fn until(&self, what: &str, pred: impl Fn(&meshplane_registry::Snapshot) -> bool) {
        let timeout = SLOW_BASELINE + Duration::from_secs(8);
        eventually_watch(&mut self.store.subscribe(), what, timeout, |s| pred(s)).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.expect("task");
        }
    }
}

fn first_web_read(model: &Model) -> Option<usize> {
    let reads = model
        .web_reads
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    reads.first().copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_between_a_read_and_the_checks_baseline_is_not_lost() {
    let (addr, model) = start_model(false).await;
    let running = run(addr);
    running
        .until("web-2 in the store next to web-1, db-1 and cache-1", |s| {
            s.is_synced() && s.instance_count() == 4
        })
        .await;
    assert_eq!(
        first_web_read(&model),
        Some(1),
        "web was first read before web-2 registered (the ordering under test)"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_checks_watch_delays_neither_the_first_state_nor_a_later_registration() {
    let (addr, model) = start_model(true).await;
    let running = run(addr);
    // The checks watch fails from its first request: every service is read anyway.
    running
        .until("the first state loaded, stale", |s| {
            s.is_synced() && s.instance_count() >= 3 && s.is_stale()
        })
        .await;
    assert_eq!(first_web_read(&model), Some(1));
    // web-2 registered after that read; once the checks watch answers, what was read
    // before its first answer is read again.
    model.checks_fail.store(false, Ordering::SeqCst);
    running
        .until("web-2 in the store, fresh", |s| {
            s.instance_count() == 4 && !s.is_stale()
        })
        .await;
    running.stop().await;
}
