//! A control plane following another datacenter: dc2's local-state export served over HTTP on
//! 127.0.0.1, dc1's `RemoteSource` feeding dc1's store, with the link between them failing.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{instance, serve};
use meshplane_model::{Health, ServiceName};
use meshplane_registry::{RegistryEvent, RegistrySource, SourceId, SourceStatus, Store, Writer};
use meshplane_remote::{
    DatacenterView, FollowState, Followed, LocalState, RemoteConfig, RemoteSource,
};
use meshplane_test_support::fault::{Fault, FaultProxy};
use meshplane_test_support::{eventually, fault_window, hold};
use tokio_util::sync::CancellationToken;

/// A change in dc2 is in dc1's store within this (the issue's cross-DC bound is 1 s to
/// reachable, translation and the push included).
const CHANGE_ARRIVES_WITHIN: Duration = Duration::from_millis(500);

fn name(s: &str) -> ServiceName {
    s.parse().expect("service name")
}

/// dc2: a store whose writer the test drives, and its export served on 127.0.0.1.
struct Dc2 {
    writer: Writer,
    addr: SocketAddr,
}

async fn dc2(shutdown: &CancellationToken) -> Dc2 {
    let (store, mut writer) = meshplane_registry::store();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services: BTreeMap::from([
            (
                name("payments"),
                vec![instance("payments", "payments-1", "dc2", Health::Passing)],
            ),
            // Learned from a third datacenter: dc2 must not re-export it.
            (
                name("ledger"),
                vec![instance("ledger", "ledger-1", "dc3", Health::Passing)],
            ),
        ]),
    });
    let addr = serve(
        meshplane_remote::router(LocalState::new("dc2", store), Followed::default()),
        shutdown,
    )
    .await;
    Dc2 { writer, addr }
}

/// dc1's store, fed by a `RemoteSource` following `url` with `config`, and dc1's status of dc2.
fn follow(url: String, config: RemoteConfig, shutdown: &CancellationToken) -> (Store, Followed) {
    let (store, writer) = meshplane_registry::store();
    let (sink, events) = meshplane_registry::event_channel(64);
    tokio::spawn(writer.run(events, shutdown.clone()));
    let source = RemoteSource::new(RemoteConfig {
        datacenter: "dc2".into(),
        urls: vec![url],
        ..config
    })
    .expect("source");
    let followed = Followed::default();
    tokio::spawn(
        source
            .with_status(followed.clone())
            .run(sink, shutdown.clone()),
    );
    (store, followed)
}

fn view(followed: &Followed) -> DatacenterView {
    followed
        .views()
        .into_iter()
        .next()
        .expect("dc2 is followed")
}

fn ids(store: &Store, service: &str) -> Vec<String> {
    store
        .snapshot()
        .service(service)
        .map(|e| e.instances.iter().map(|i| i.id.to_string()).collect())
        .unwrap_or_default()
}

fn status(store: &Store) -> Option<SourceStatus> {
    store
        .snapshot()
        .sources
        .get(&SourceId::new("datacenter/dc2"))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_datacenter_is_followed_and_its_changes_arrive_as_they_happen() {
    let shutdown = CancellationToken::new();
    let mut dc2 = dc2(&shutdown).await;
    let proxy = FaultProxy::start(dc2.addr).await.expect("proxy");
    let (dc1, followed) = follow(
        format!("http://{}", proxy.addr()),
        RemoteConfig::default(),
        &shutdown,
    );
    eventually("dc2's payments in dc1", Duration::from_secs(5), || async {
        ids(&dc1, "payments") == ["payments-1"]
    })
    .await;
    assert!(
        dc1.snapshot().service("ledger").is_none(),
        "dc2 re-exported what it learned from dc3"
    );
    let learned = dc1.snapshot();
    let payments = &learned.service("payments").expect("payments").instances[0];
    assert_eq!(payments.locality.datacenter, "dc2");
    assert!(learned.is_synced());
    let seen = view(&followed);
    assert_eq!(
        (seen.state, seen.services, seen.instances),
        (FollowState::Fresh, 1, 1),
        "{seen:?}"
    );

    for (round, health) in [Health::Critical, Health::Passing, Health::Warning]
        .into_iter()
        .enumerate()
    {
        let added = format!("payments-{}", round + 2);
        dc2.writer.apply(RegistryEvent::Service {
            source: SourceId::new("embedded"),
            name: name("payments"),
            instances: vec![
                instance("payments", "payments-1", "dc2", health),
                instance("payments", &added, "dc2", Health::Passing),
            ],
        });
        eventually(
            &format!("change {round} in dc1"),
            CHANGE_ARRIVES_WITHIN,
            || async {
                let snapshot = dc1.snapshot();
                let Some(entry) = snapshot.service("payments") else {
                    return false;
                };
                entry.instances.len() == 2
                    && entry.instances[0].health == health
                    && entry.instances[1].id.as_str() == added
            },
        )
        .await;
    }
    // A service gone from dc2 is gone from dc1 (sent as a removal among the changes).
    dc2.writer.apply(RegistryEvent::Service {
        source: SourceId::new("embedded"),
        name: name("payments"),
        instances: Vec::new(),
    });
    eventually("payments removed in dc1", CHANGE_ARRIVES_WITHIN, || async {
        dc1.snapshot().service("payments").is_none()
    })
    .await;
    // Idle: the follower holds one request on one connection; nothing is re-sent.
    let connections = proxy.accepted();
    hold(Duration::from_secs(1), "idle follower", || async {
        proxy.accepted() == connections && status(&dc1) == Some(SourceStatus::Synced)
    })
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_datacenter_is_kept_then_dropped_and_comes_back() {
    let keep_stale = Duration::from_millis(1500).max(fault_window() / 2);
    let shutdown = CancellationToken::new();
    let mut dc2 = dc2(&shutdown).await;
    let proxy = FaultProxy::start(dc2.addr).await.expect("proxy");
    let (dc1, followed) = follow(
        format!("http://{}", proxy.addr()),
        RemoteConfig {
            keep_stale,
            max_backoff: Duration::from_millis(200),
            ..RemoteConfig::default()
        },
        &shutdown,
    );
    eventually("dc2's payments in dc1", Duration::from_secs(5), || async {
        ids(&dc1, "payments") == ["payments-1"]
    })
    .await;

    proxy.set(Fault::Drop);
    let cut = tokio::time::Instant::now();
    eventually("dc2 flagged stale", Duration::from_secs(2), || async {
        status(&dc1).is_some_and(|s| s.is_stale())
    })
    .await;
    // A change during the cut is not seen; what dc1 had is kept for `keep_stale`.
    dc2.writer.apply(RegistryEvent::Service {
        source: SourceId::new("embedded"),
        name: name("payments"),
        instances: vec![
            instance("payments", "payments-1", "dc2", Health::Passing),
            instance("payments", "payments-9", "dc2", Health::Passing),
        ],
    });
    let kept_for = keep_stale.saturating_sub(cut.elapsed() + Duration::from_millis(300));
    hold(kept_for, "dc2's last state kept while stale", || async {
        let v = view(&followed);
        ids(&dc1, "payments") == ["payments-1"]
            && status(&dc1).is_some_and(|s| s.is_stale())
            && v.state == FollowState::Stale
            && v.reason.is_some()
            && v.instances == 1
    })
    .await;
    eventually(
        "dc2 dropped after the time its state is kept",
        keep_stale + Duration::from_secs(2),
        || async { ids(&dc1, "payments").is_empty() },
    )
    .await;
    let dropped = status(&dc1);
    assert!(
        matches!(&dropped, Some(SourceStatus::Stale { reason }) if reason.contains("dropped")),
        "{dropped:?}"
    );
    assert!(
        dc1.snapshot().is_synced(),
        "a dropped remote datacenter must not hold back the local one"
    );
    let v = view(&followed);
    assert_eq!((v.state, v.instances), (FollowState::Dropped, 0), "{v:?}");
    assert!(
        v.last_answer_seconds
            .is_some_and(|s| s >= keep_stale.as_secs_f64()),
        "{v:?}"
    );

    proxy.set(Fault::Pass);
    eventually(
        "dc2 back after the repair",
        Duration::from_secs(3),
        || async {
            ids(&dc1, "payments") == ["payments-1", "payments-9"]
                && status(&dc1) == Some(SourceStatus::Synced)
        },
    )
    .await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_hangs_is_noticed_and_the_state_kept() {
    let shutdown = CancellationToken::new();
    let dc2 = dc2(&shutdown).await;
    let proxy = FaultProxy::start(dc2.addr).await.expect("proxy");
    let (wait, hung_after) = (Duration::from_millis(300), Duration::from_millis(500));
    let (dc1, followed) = follow(
        format!("http://{}", proxy.addr()),
        RemoteConfig {
            wait,
            hung_after,
            max_backoff: Duration::from_millis(200),
            ..RemoteConfig::default()
        },
        &shutdown,
    );
    eventually("dc2's payments in dc1", Duration::from_secs(5), || async {
        ids(&dc1, "payments") == ["payments-1"]
    })
    .await;
    // A partition: connections stay open, nothing gets through.
    proxy.set(Fault::BlackHole);
    eventually(
        "the hang noticed within wait + hung_after",
        wait + hung_after + Duration::from_secs(1),
        || async { view(&followed).state == FollowState::Stale },
    )
    .await;
    hold(
        fault_window() / 2,
        "dc2's state kept through the hang",
        || async { ids(&dc1, "payments") == ["payments-1"] },
    )
    .await;
    proxy.set(Fault::Pass);
    eventually("fresh again", Duration::from_secs(3), || async {
        view(&followed).state == FollowState::Fresh
    })
    .await;
    shutdown.cancel();
}

/// What the front between the datacenters answers.
const REAL: u8 = 0;
const TRUNCATED: u8 = 1;
const WRONG_DATACENTER: u8 = 2;
const HUGE: u8 = 3;
const SERVER_ERROR: u8 = 4;

#[derive(Clone)]
struct Front {
    mode: Arc<AtomicU8>,
    target: SocketAddr,
    http: reqwest::Client,
}

async fn front(State(front): State<Front>, request: Request) -> Response {
    match front.mode.load(Ordering::SeqCst) {
        REAL => {
            let url = format!(
                "http://{}{}",
                front.target,
                request.uri().path_and_query().map_or("", |p| p.as_str())
            );
            let mut forwarded = front.http.get(url);
            for (k, v) in request.headers() {
                if k != "host" {
                    forwarded = forwarded.header(k.as_str(), v.as_bytes());
                }
            }
            let Ok(answer) = forwarded.send().await else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::OK);
            let headers: Vec<(String, Vec<u8>)> = answer
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::try_from(k),
                    axum::http::HeaderValue::from_bytes(&v),
                ) {
                    response.headers_mut().insert(k, v);
                }
            }
            response
        }
        TRUNCATED => {
            r#"{"datacenter":"dc2","version":"1","services":{"payments":[{"id":"#.into_response()
        }
        WRONG_DATACENTER => r#"{"datacenter":"dc3","version":"1","services":{}}"#.into_response(),
        HUGE => vec![b' '; 1 << 20].into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_a_datacenter_state_are_refused_and_the_previous_state_kept() {
    let shutdown = CancellationToken::new();
    let mut dc2 = dc2(&shutdown).await;
    let mode = Arc::new(AtomicU8::new(REAL));
    let front_addr = serve(
        axum::Router::new().fallback(front).with_state(Front {
            mode: mode.clone(),
            target: dc2.addr,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        }),
        &shutdown,
    )
    .await;
    let (dc1, _) = follow(
        format!("http://{front_addr}"),
        RemoteConfig {
            // Requests cycle quickly, so each broken answer is asked for during its window.
            wait: Duration::from_millis(100),
            max_body: 64 << 10,
            max_backoff: Duration::from_millis(100),
            ..RemoteConfig::default()
        },
        &shutdown,
    );
    eventually("dc2's payments in dc1", Duration::from_secs(5), || async {
        ids(&dc1, "payments") == ["payments-1"]
    })
    .await;
    let window = (fault_window() / 4).max(Duration::from_millis(500));
    for broken in [TRUNCATED, WRONG_DATACENTER, HUGE, SERVER_ERROR] {
        mode.store(broken, Ordering::SeqCst);
        eventually(
            &format!("answer {broken} refused (stale)"),
            Duration::from_secs(3),
            || async { status(&dc1).is_some_and(|s| s.is_stale()) },
        )
        .await;
        hold(window, "the previous state kept", || async {
            ids(&dc1, "payments") == ["payments-1"]
        })
        .await;
        mode.store(REAL, Ordering::SeqCst);
        eventually(
            &format!("fresh again after answer {broken}"),
            Duration::from_secs(3),
            || async { status(&dc1) == Some(SourceStatus::Synced) },
        )
        .await;
    }
    dc2.writer.apply(RegistryEvent::Service {
        source: SourceId::new("embedded"),
        name: name("payments"),
        instances: vec![instance("payments", "payments-2", "dc2", Health::Passing)],
    });
    eventually(
        "a change after recovery",
        Duration::from_secs(3),
        || async { ids(&dc1, "payments") == ["payments-2"] },
    )
    .await;
    shutdown.cancel();
}
