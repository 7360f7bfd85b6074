//! Locality with real Envoy sidecars: each proxy's own datacenter first; another datacenter
//! only when its own has no healthy instance, and never for a service pinned local-only.
//! Uses the file registry, which carries datacenter and health per instance; one control
//! plane (dc1) serves callers in dc1 and dc2.

mod support;

use meshplane_runtime::{RegistryKind, ServiceDatacenters};
use support::{Mesh, caller, free_port, poll, upstream, via_egress};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upstream ports: payments and ledger in dc1 and dc2.
struct Upstreams {
    payments: [u16; 2],
    ledger: [u16; 2],
}

/// The registry file: `dc1_health` for both services' dc1 instances; the dc2 payments
/// instance is a canary.
fn services(u: &Upstreams, dc1_health: &str) -> String {
    let [p1, p2] = u.payments;
    let [l1, l2] = u.ledger;
    format!(
        "services:
  - name: payments
    instances:
      - {{ id: p-dc1, address: 127.0.0.1, port: {p1}, datacenter: dc1, health: {dc1_health} }}
      - {{ id: p-dc2, address: 127.0.0.1, port: {p2}, datacenter: dc2, tags: [canary] }}
  - name: ledger
    instances:
      - {{ id: l-dc1, address: 127.0.0.1, port: {l1}, datacenter: dc1, health: {dc1_health} }}
      - {{ id: l-dc2, address: 127.0.0.1, port: {l2}, datacenter: dc2 }}
"
    )
}

/// A caller of payments and ledger (retrying a refused connection, like any mesh caller
/// should); its descriptor and egress port.
fn mk_caller() -> (String, u16) {
    let egress = free_port();
    let retries = "    retries: { attempts: 3, on: [connect-failure, reset] }\n";
    let d = caller(
        "orders",
        free_port(),
        free_port(),
        egress,
        &format!("  - service: payments\n{retries}  - service: ledger\n{retries}"),
    );
    (d, egress)
}

/// An upstream answering `name` until `stop` is cancelled; then it closes its listener and
/// its idle connections, like a stopped process (its registry entry stays passing).
async fn stoppable_upstream(name: &'static str, stop: CancellationToken) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = axum::Router::new().fallback(axum::routing::get(move || async move { name }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    port
}

/// Requests to payments through `egress`, one after another, until the token is cancelled;
/// the task returns every answer.
fn spawn_traffic(
    http: &reqwest::Client,
    egress: u16,
) -> (CancellationToken, JoinHandle<Vec<(u16, String)>>) {
    let (http, stop) = (http.clone(), CancellationToken::new());
    let handle = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut answers = Vec::new();
            while !stop.is_cancelled() {
                answers.push(via_egress(&http, egress, "payments", None).await);
            }
            answers
        }
    });
    (stop, handle)
}

/// Stops the traffic and checks every request was served, from both datacenters.
async fn assert_all_served(
    traffic: (CancellationToken, JoinHandle<Vec<(u16, String)>>),
    what: &str,
) {
    let (stop, handle) = traffic;
    stop.cancel();
    let answers = handle.await.expect("traffic task");
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        answers.iter().any(|(_, b)| b == "dc2") && answers.iter().any(|(_, b)| b == "dc1"),
        "{what}: the traffic saw both datacenters"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_proxy_prefers_its_datacenter_and_fails_over_and_back() {
    let stop_dc1 = CancellationToken::new();
    let u = Upstreams {
        payments: [
            stoppable_upstream("dc1", stop_dc1.clone()).await,
            upstream("dc2").await,
        ],
        ledger: [upstream("ledger-dc1").await, upstream("ledger-dc2").await],
    };
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), services(&u, "passing")).expect("write");
    let path = file.path().to_owned();
    let mut mesh = Mesh::start(move |config, _| {
        config.registry = RegistryKind::File;
        config.services_file = Some(path);
        config.datacenter = "dc1".into();
        let ledger = meshplane_model::ServiceName::new("ledger").expect("name");
        let local_only = ServiceDatacenters {
            order: None,
            local_only: true,
        };
        config.service_datacenters = [(ledger, local_only)].into();
    })
    .await;
    let (d1, egress1) = mk_caller();
    mesh.sidecar("orders-1", &d1, 2).await;
    let (d2, egress2) = mk_caller();
    mesh.sidecar_with("orders-2", &d2, 2, &["--datacenter", "dc2"])
        .await;
    let http = mesh.http.clone();
    let get = |egress: u16, host: &'static str| {
        let http = http.clone();
        async move { via_egress(&http, egress, host, None).await }
    };

    // Each caller reaches its own datacenter only.
    for (egress, dc) in [(egress1, "dc1"), (egress2, "dc2")] {
        assert!(
            poll(|| async { get(egress, "payments").await == (200, dc.into()) }).await,
            "the {dc} caller reaches {dc}"
        );
        for _ in 0..30 {
            assert_eq!(
                get(egress, "payments").await,
                (200, dc.into()),
                "local first"
            );
            let ledger = format!("ledger-{dc}");
            assert_eq!(get(egress, "ledger").await, (200, ledger), "local first");
        }
    }
    // `x-canary` finds the canary in another datacenter, at its priority.
    let canary = via_egress(&mesh.http, egress1, "payments", Some(("x-canary", "1"))).await;
    assert_eq!(canary, (200, "dc2".into()), "the only canary is in dc2");

    // dc1 fails its checks while the dc1 caller keeps sending: every request is served,
    // from dc1 until the change arrives, then from dc2.
    let traffic = spawn_traffic(&mesh.http, egress1);
    std::fs::write(file.path(), services(&u, "critical")).expect("write");
    assert!(
        poll(|| async { get(egress1, "payments").await == (200, "dc2".into()) }).await,
        "payments fails over to dc2"
    );
    for _ in 0..30 {
        assert_eq!(get(egress1, "payments").await.1, "dc2", "failed over");
        let (status, body) = get(egress1, "ledger").await;
        assert_ne!(body, "ledger-dc2", "a local-only service never leaves dc1");
        assert_eq!(status, 503, "no healthy ledger in dc1: {body}");
    }
    assert_eq!(
        get(egress2, "payments").await,
        (200, "dc2".into()),
        "the dc2 caller is not disturbed"
    );

    // dc1 comes back: traffic returns to it.
    std::fs::write(file.path(), services(&u, "passing")).expect("write");
    assert!(
        poll(|| async { get(egress1, "payments").await.1 == "dc1" }).await,
        "back home"
    );
    assert!(
        poll(|| async { get(egress1, "ledger").await.1 == "ledger-dc1" }).await,
        "the local-only service is back"
    );
    assert_all_served(traffic, "failing checks, then back").await;

    // dc1's instance stops while its registry entry still says passing (its check has not
    // run yet): the attempts that find it refusing are retried in dc2, and none fails.
    let traffic = spawn_traffic(&mesh.http, egress1);
    assert!(poll(|| async { get(egress1, "payments").await.1 == "dc1" }).await);
    stop_dc1.cancel();
    assert!(
        poll(|| async { get(egress1, "payments").await == (200, "dc2".into()) }).await,
        "a stopped datacenter's traffic goes to dc2"
    );
    for _ in 0..20 {
        assert_eq!(get(egress1, "payments").await, (200, "dc2".into()));
    }
    assert_all_served(traffic, "dc1 stopped").await;
}
