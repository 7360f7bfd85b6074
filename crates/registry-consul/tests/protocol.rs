//! Protocol edge cases against a small scripted fake of Consul's HTTP API: an index that goes
//! backwards (and one that is 0), and 500/429 responses.

use meshplane_test_support::poll::{eventually, eventually_watch};
use std::future::ready;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use meshplane_registry::{RegistrySource, Snapshot, Store, event_channel, store};
use meshplane_registry_consul::{ConsulConfig, ConsulSource, ErrorObserver};
use tokio_util::sync::CancellationToken;

/// What the fake answers: `None` blocks until the client gives up (a blocking query with no
/// change); otherwise status, X-Consul-Index and body.
type Script = Arc<dyn Fn(&str, usize) -> Option<(u16, u64, String)> + Send + Sync>;

#[derive(Clone)]
struct Fake {
    script: Script,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Clone, Debug)]
struct Call {
    path: String,
    index: Option<u64>,
    query: String,
    token: Option<String>,
    at: Instant,
}

async fn handle(
    State(fake): State<Fake>,
    uri: Uri,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let token = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = uri.path().to_string();
    // The source's liveness probe: answered as Consul does, and not a call the scripts count.
    if path == "/v1/status/leader" {
        return (StatusCode::OK, "\"127.0.0.1:8300\"").into_response();
    }
    let index = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("index="))
        .and_then(|v| v.parse().ok());
    let n = {
        let mut calls = fake.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let n = calls.iter().filter(|c| c.path == path).count();
        calls.push(Call {
            path: path.clone(),
            index,
            query: query.clone().unwrap_or_default(),
            token,
            at: Instant::now(),
        });
        n
    };
    match (fake.script)(&path, n) {
        Some((status, index, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [("X-Consul-Index", index.to_string())], body).into_response()
        }
        None => std::future::pending().await,
    }
}

async fn start_fake(script: Script) -> (SocketAddr, Fake) {
    let fake = Fake {
        script,
        calls: Arc::default(),
    };
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fake serves") });
    (addr, fake)
}

impl Fake {
    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
}

fn health(ids: &[&str]) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"Node": {{"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"}}, "Service": {{"ID": "{id}", "Service": "web", "Port": 80}}, "Checks": []}}"#))
        .collect();
    format!("[{}]", entries.join(","))
}

fn run(addr: SocketAddr) -> (Store, CancellationToken) {
    run_observed(addr, ErrorObserver::default())
}

fn run_observed(addr: SocketAddr, errors: ErrorObserver) -> (Store, CancellationToken) {
    let config = ConsulConfig {
        address: format!("http://{addr}"),
        wait: Duration::from_secs(30),
        min_retry: Duration::from_millis(100),
        max_retry: Duration::from_millis(400),
        min_request_interval: Duration::from_millis(10),
        token: Some("acl-token".into()),
        datacenter: Some("dc1".into()),
        ..ConsulConfig::default()
    };
    let (reader, writer) = store();
    let (sink, events) = event_channel(64);
    let shutdown = CancellationToken::new();
    let source = ConsulSource::new(config)
        .expect("config")
        .with_errors(errors);
    tokio::spawn(writer.run(events, shutdown.clone()));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move { source.run(sink, shutdown).await.expect("source") }
    });
    (reader, shutdown)
}

async fn until(store: &Store, what: &str, pred: impl Fn(&Snapshot) -> bool) {
    eventually_watch(&mut store.subscribe(), what, Duration::from_secs(10), |s| {
        pred(s)
    })
    .await;
}

async fn eventually_calls(fake: &Fake, path: &str, n: usize) -> Vec<Call> {
    eventually(
        &format!("{n} calls to {path}"),
        Duration::from_secs(10),
        || {
            let calls = fake.calls(path);
            ready(if calls.len() >= n {
                Ok(calls)
            } else {
                Err(format!("only {} calls", calls.len()))
            })
        },
    )
    .await
}

#[tokio::test]
async fn index_going_backwards_resets_to_zero_and_zero_becomes_one() {
    let script: Script = Arc::new(|path, n| match (path, n) {
        ("/v1/catalog/services", 0) => Some((200, 10, r#"{"web": []}"#.into())),
        ("/v1/catalog/services", 1) => Some((200, 5, r#"{"web": []}"#.into())), // backwards
        ("/v1/catalog/services", 2) => Some((200, 0, r#"{"web": []}"#.into())), // bogus 0
        ("/v1/catalog/services", 3) => Some((200, 7, r#"{"web": []}"#.into())),
        ("/v1/health/service/web", 0) => Some((200, 3, health(&["web-1"]))),
        _ => None,
    });
    let (addr, fake) = start_fake(script).await;
    let (store, shutdown) = run(addr);
    until(&store, "initial sync", |s| s.service("web").is_some()).await;
    let calls = eventually_calls(&fake, "/v1/catalog/services", 5).await;
    let sent: Vec<Option<u64>> = calls.iter().take(5).map(|c| c.index).collect();
    // 10 → 5 went backwards: reset (no index, a plain read); 0 is treated as 1, so the next
    // query blocks instead of spinning.
    assert_eq!(sent, [None, Some(10), None, Some(1), Some(7)]);
    // Every request is a stale read for the configured datacenter with the ACL token, and
    // blocking ones carry a wait.
    for call in &calls {
        assert!(
            call.query
                .split('&')
                .any(|kv| kv == "stale" || kv == "stale="),
            "{call:?}"
        );
        assert!(call.query.contains("dc=dc1"), "{call:?}");
        assert_eq!(call.token.as_deref(), Some("acl-token"));
        assert_eq!(
            call.index.is_some(),
            call.query.contains("wait="),
            "{call:?}"
        );
    }
    shutdown.cancel();
}

#[tokio::test]
async fn errors_and_rate_limits_back_off_keep_state_and_recover() {
    let script: Script = Arc::new(|path, n| match (path, n) {
        ("/v1/catalog/services", 0) => Some((200, 1, r#"{"web": []}"#.into())),
        ("/v1/health/service/web", 0) => Some((200, 5, health(&["web-1"]))),
        ("/v1/health/service/web", 1 | 3 | 5) => {
            Some((500, 0, "rpc error: No cluster leader".into()))
        }
        ("/v1/health/service/web", 2 | 4) => Some((
            429,
            0,
            "Your IP is issuing too many concurrent connections".into(),
        )),
        ("/v1/health/service/web", 6) => Some((200, 9, health(&["web-1", "web-2"]))),
        _ => None,
    });
    let (addr, fake) = start_fake(script).await;
    let (store, shutdown) = run(addr);
    until(&store, "initial sync", |s| s.service("web").is_some()).await;
    until(&store, "stale while failing", |s| s.is_stale()).await;
    let during = store.snapshot();
    assert_eq!(
        during.service("web").map(|e| e.instances.len()),
        Some(1),
        "state kept while Consul fails"
    );
    until(&store, "recovery", |s| {
        !s.is_stale() && s.service("web").is_some_and(|e| e.instances.len() == 2)
    })
    .await;

    // No hot loop: after each failure the next request waits at least min_retry/2 (jitter).
    let calls = fake.calls("/v1/health/service/web");
    for pair in calls[1..=6].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(45), "retried after {gap:?}");
    }
    // The index of the last good answer is kept across errors.
    assert!(calls[1..=6].iter().all(|c| c.index == Some(5)), "{calls:?}");
    shutdown.cancel();
}

/// Every failed request reaches the error observer with its kind (what the control plane
/// counts in `meshplane_registry_errors_total`): truncated and wrongly shaped bodies are
/// `body`, a 429 is `status`; the state stays meanwhile.
#[tokio::test]
async fn failed_requests_reach_the_error_observer_by_kind() {
    let script: Script = Arc::new(|path, n| match (path, n) {
        ("/v1/catalog/services", 0) => Some((200, 1, r#"{"web": []}"#.into())),
        ("/v1/health/service/web", 0) => Some((200, 5, health(&["web-1"]))),
        ("/v1/health/service/web", 1) => Some((200, 6, health(&["web-1"])[..20].to_string())),
        ("/v1/health/service/web", 2) => Some((200, 6, r#"[1, "two"]"#.into())),
        ("/v1/health/service/web", 3) => Some((429, 0, "slow down".into())),
        ("/v1/health/service/web", 4) => Some((200, 9, health(&["web-1", "web-2"]))),
        _ => None,
    });
    let (addr, _fake) = start_fake(script).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = ErrorObserver::new({
        let seen = Arc::clone(&seen);
        move |kind| {
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(kind)
        }
    });
    let (store, shutdown) = run_observed(addr, errors);
    until(&store, "recovery after three failures", |s| {
        s.service("web").is_some_and(|e| e.instances.len() == 2)
    })
    .await;
    assert_eq!(
        *seen.lock().unwrap_or_else(PoisonError::into_inner),
        ["body", "body", "status"]
    );
    shutdown.cancel();
}
