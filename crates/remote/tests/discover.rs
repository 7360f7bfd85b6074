//! Remote datacenters found through Consul: the catalog's datacenters (without this one and the
//! denied ones), each followed through the `meshplane-control-plane` instances registered there.
//! Consul is a protocol fake answering the two lookups as Consul documents them; the
//! datacenters' exports are real.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use common::{instance, serve};
use meshplane_model::{Health, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId, Store, Writer};
use meshplane_remote::discover::{Discovery, DiscoveryConfig};
use meshplane_remote::{FollowState, Followed, LocalState, RemoteConfig};
use meshplane_test_support::eventually;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A datacenter's control plane, as far as its export goes.
async fn export(dc: &str, service: &str, shutdown: &CancellationToken) -> (Writer, SocketAddr) {
    let (store, mut writer) = meshplane_registry::store();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("embedded"),
        services: [(
            service.parse::<ServiceName>().expect("name"),
            vec![instance(
                service,
                &format!("{service}-1"),
                dc,
                Health::Passing,
            )],
        )]
        .into(),
    });
    let router = meshplane_remote::router(LocalState::new(dc, store), Followed::default());
    (writer, serve(router, shutdown).await)
}

/// Admin URLs of the control planes registered in each datacenter.
type Registered = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

async fn fake_consul(registered: Registered, shutdown: &CancellationToken) -> SocketAddr {
    let datacenters = get(|| async { axum::Json(json!(["dc1", "dc2", "dc3"])) });
    let health = get(
        |State(registered): State<Registered>,
         Path(service): Path<String>,
         Query(q): Query<BTreeMap<String, String>>| async move {
            assert_eq!(service, "meshplane-control-plane");
            assert!(q.contains_key("passing"), "only passing instances: {q:?}");
            let urls = registered
                .lock()
                .get(q.get("dc").map_or("", String::as_str))
                .cloned()
                .unwrap_or_default();
            let entries: Vec<Value> = urls
                .iter()
                .enumerate()
                .map(|(n, url)| {
                    json!({
                        "Node": {"Node": format!("cp-node-{n}"), "Address": "10.0.0.9"},
                        "Service": {"ID": format!("cp-{n}"), "Service": "meshplane-control-plane",
                                    "Meta": {"admin_url": url}, "Port": 18080},
                        "Checks": [],
                    })
                })
                .collect();
            axum::Json(entries)
        },
    );
    let router = axum::Router::new()
        .route("/v1/catalog/datacenters", datacenters)
        .route("/v1/health/service/{service}", health)
        .with_state(registered);
    serve(router, shutdown).await
}

fn ids(store: &Store, service: &str) -> Vec<String> {
    store
        .snapshot()
        .service(service)
        .map(|e| e.instances.iter().map(|i| i.id.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datacenters_and_their_control_planes_are_found_through_consul() {
    let shutdown = CancellationToken::new();
    let (_dc2_writer, dc2) = export("dc2", "payments", &shutdown).await;
    let (_dc3_writer, dc3) = export("dc3", "ledger", &shutdown).await;
    let registered: Registered = Arc::new(Mutex::new(BTreeMap::from([
        ("dc2".to_owned(), vec![format!("http://{dc2}/")]),
        ("dc3".to_owned(), vec![format!("http://{dc3}")]),
    ])));
    let consul = fake_consul(registered.clone(), &shutdown).await;

    let (store, writer) = meshplane_registry::store();
    let (sink, events) = meshplane_registry::event_channel(64);
    tokio::spawn(writer.run(events, shutdown.clone()));
    let followed = Followed::default();
    let discovery = Discovery::new(DiscoveryConfig {
        consul: format!("http://{consul}"),
        token: None,
        ca_pem: None,
        datacenter: "dc1".into(),
        deny: ["dc3".to_owned()].into(),
        interval: Duration::from_millis(200),
    })
    .expect("discovery");
    tokio::spawn(meshplane_remote::discover::follow(
        discovery,
        RemoteConfig::default(),
        sink,
        followed.clone(),
        shutdown.clone(),
    ));

    eventually("dc2 found and followed", Duration::from_secs(5), || async {
        ids(&store, "payments") == ["payments-1"]
    })
    .await;
    let views = followed.views();
    assert_eq!(views.len(), 1, "dc1 is this one, dc3 is denied: {views:?}");
    assert_eq!(views[0].datacenter, "dc2");
    assert_eq!(views[0].state, FollowState::Fresh);
    assert!(ids(&store, "ledger").is_empty(), "dc3 is denied");

    // dc2's control plane moves: the old one stops answering, a new one is registered.
    let (_moved_writer, moved) = export("dc2", "billing", &shutdown).await;
    registered
        .lock()
        .insert("dc2".into(), vec![format!("http://{moved}")]);
    eventually(
        "dc2 followed where its control plane is now",
        Duration::from_secs(5),
        || async { ids(&store, "billing") == ["billing-1"] && ids(&store, "payments").is_empty() },
    )
    .await;
    assert_eq!(followed.views()[0].urls, [format!("http://{moved}")]);
    shutdown.cancel();
}
