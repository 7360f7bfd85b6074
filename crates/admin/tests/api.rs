//! The admin API against real state: a registry store, an xDS server with a connected
//! in-process proxy, and a snapshot cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::rpc;
use meshplane_admin::AdminState;
use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_telemetry::Metrics;
use meshplane_test_support::eventually;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints};
use meshplane_xds::{
    MetadataGrouper, NodeGrouper, PeerInfo, ResourceType, ServerConfig, Snapshot, SnapshotCache,
    XdsServer,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn mk_instance(id: &str, health: Health) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: ServiceName::new("payments").expect("name"),
        node: "n1".into(),
        address: "10.0.0.5".into(),
        port: 31001,
        tags: vec!["canary".into()],
        meta: BTreeMap::new(),
        weight: 100,
        health,
        locality: Locality {
            datacenter: "dc1".into(),
            zone: None,
        },
    }
}

#[derive(Debug)]
struct NoRelays;

impl meshplane_admin::relay::ProxyDirectory for NoRelays {
    fn relay_addr(&self, _: &str) -> Option<std::net::SocketAddr> {
        None
    }
}

struct Setup {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    cache: SnapshotCache,
    xds: std::net::SocketAddr,
    _writer: meshplane_registry::Writer,
}

async fn setup(synced: bool) -> Setup {
    let (store, mut writer) = meshplane_registry::store();
    if synced {
        let services = [(
            ServiceName::new("payments").expect("name"),
            vec![
                mk_instance("p1", Health::Passing),
                mk_instance("p2", Health::Critical),
            ],
        )]
        .into_iter()
        .collect();
        writer.apply(RegistryEvent::Replace {
            source: SourceId::new("test"),
            services,
        });
    }
    let cache = SnapshotCache::new();
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new(store.clone(), cache.clone());
    let server = XdsServer::new(
        cache.clone(),
        Arc::new(MetadataGrouper::default()),
        ServerConfig::default(),
        shutdown.clone(),
    )
    .with_observer(Arc::new(metrics.xds().clone()));
    let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let xds = xds_listener.local_addr().expect("addr");
    let status = server.status();
    tokio::spawn(server.serve(xds_listener));
    let state = AdminState {
        store,
        status,
        cache: cache.clone(),
        xds_addr: xds,
        directory: Arc::new(NoRelays),
        token: Some(Arc::from("s3cret")),
        peers: Arc::new(Vec::new()),
        datacenter: "dc1".into(),
        http: reqwest::Client::new(),
        metrics,
        ca: None,
        enrolment_tokens: Default::default(),
        admin_tls: false,
        grafana_url: None,
        dry_run: None,
        rollout: None,
        traffic: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(meshplane_admin::serve(
        listener,
        meshplane_admin::router(state),
        shutdown.clone(),
    ));
    Setup {
        base,
        http: reqwest::Client::new(),
        shutdown,
        cache,
        xds,
        _writer: writer,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn get_json(s: &Setup, path: &str) -> Value {
    let r = s
        .http
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .expect("admin up");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.expect("json")
}

#[tokio::test]
async fn readiness_follows_the_first_full_registry_sync() {
    let s = setup(false).await;
    let r = s
        .http
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .expect("up");
    assert_eq!(r.status(), 503);
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .expect("up")
            .status(),
        200
    );
    let s = setup(true).await;
    assert_eq!(
        s.http
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .expect("up")
            .status(),
        200
    );
}

#[tokio::test]
async fn services_and_registry_state() {
    let s = setup(true).await;
    let services = get_json(&s, "/api/services").await;
    assert_eq!(services[0]["name"], "payments");
    assert_eq!(services[0]["instances"], 2);
    assert_eq!(services[0]["passing"], 1);
    let detail = get_json(&s, "/api/services/payments").await;
    assert_eq!(detail["instances"][1]["health"], "critical");
    assert_eq!(detail["instances"][0]["weight"], 100);
    assert_eq!(detail["instances"][0]["datacenter"], "dc1");
    let missing = s
        .http
        .get(format!("{}/api/services/nope", s.base))
        .send()
        .await
        .expect("up");
    assert_eq!(missing.status(), 404);
    let state = get_json(&s, "/api/state").await;
    assert_eq!(state["synced"], true);
    assert_eq!(
        state["services"]["payments"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn proxies_show_sync_status_and_nacks_and_groups_their_resources() {
    let s = setup(true).await;
    let node = Node {
        id: "orders-1".into(),
        cluster: "orders".into(),
        ..Default::default()
    };
    let key = MetadataGrouper::default()
        .group(&node, &PeerInfo::default())
        .expect("valid node");
    let snapshot = Snapshot::new([
        mk_eds_cluster("payments"),
        mk_endpoints("payments", &[("127.0.0.1", 1, 1)]),
    ])
    .expect("ok");
    s.cache.set_snapshot(&key, snapshot).expect("set");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", s.xds))
        .await
        .expect("connect");
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open")
        .into_inner();
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await
    .expect("send");
    let cds = stream.message().await.expect("ok").expect("response");

    let proxies = get_json(&s, "/api/proxies").await;
    assert_eq!(proxies[0]["node_id"], "orders-1");
    assert_eq!(proxies[0]["connected_to"], s.xds.to_string());
    assert_eq!(proxies[0]["types"]["CDS"]["sync"], "STALE");

    tx.send(DiscoveryRequest {
        type_url: ResourceType::Cluster.type_url().into(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "bad cluster from test".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .expect("send");
    let nacked = eventually("the proxy shown NACKED", Duration::from_secs(2), || async {
        let proxies = get_json(&s, "/api/proxies").await;
        if proxies[0]["sync"] == "NACKED" {
            Ok(proxies)
        } else {
            Err(proxies.to_string())
        }
    })
    .await;
    assert_eq!(
        nacked[0]["types"]["CDS"]["last_nack"]["message"],
        "bad cluster from test"
    );

    let groups = get_json(&s, "/api/groups").await;
    assert_eq!(groups[0]["key"], key.to_string());
    assert_eq!(groups[0]["resources"]["CDS"], 1);
    let resources = get_json(&s, &format!("/api/groups/{key}/resources")).await;
    assert_eq!(resources[0]["type"], "CDS");
    // Envoy's JSON form, as in its config dump.
    assert_eq!(
        resources[0]["config"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(resources[0]["config"]["name"], "payments");
    assert_eq!(resources[0]["config"]["type"], "EDS");

    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("up")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("meshplane_xds_streams{protocol=\"sotw\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshplane_xds_nacks_total{type=\"CDS\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshplane_registry_instances 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn log_level_writes_need_the_token() {
    let s = setup(true).await;
    let url = format!("{}/api/proxies/orders-1/logging?level=debug", s.base);
    assert_eq!(s.http.post(&url).send().await.expect("up").status(), 401);
    assert_eq!(
        s.http
            .post(&url)
            .bearer_auth("guess")
            .send()
            .await
            .expect("up")
            .status(),
        403
    );
    // With the token the request gets through authentication (and finds no such proxy).
    assert_eq!(
        s.http
            .post(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("up")
            .status(),
        404
    );
}

#[tokio::test]
async fn peers_come_from_configuration_and_the_registry() {
    let (store, mut writer) = meshplane_registry::store();
    let mut cp = mk_instance("cp-2", Health::Passing);
    cp.service =
        ServiceName::new(meshplane_admin::consistency::CONTROL_PLANE_SERVICE).expect("name");
    cp.meta
        .insert("admin_url".into(), "http://10.0.0.2:18080".into());
    let mut me = cp.clone();
    me.id = InstanceId::new("cp-1").expect("id");
    me.meta
        .insert("admin_url".into(), "http://10.0.0.1:18080".into());
    // Another datacenter's control plane (learned through --remote-datacenters) is a peer too,
    // compared on the state both hold (`compare_shared`).
    let mut remote = cp.clone();
    remote.id = InstanceId::new("cp-dc2").expect("id");
    remote.locality.datacenter = "dc2".into();
    remote
        .meta
        .insert("admin_url".into(), "http://10.9.0.1:18080".into());
    let services = [(cp.service.clone(), vec![cp, me, remote])]
        .into_iter()
        .collect();
    writer.apply(RegistryEvent::Replace {
        source: SourceId::new("test"),
        services,
    });
    let shutdown = CancellationToken::new();
    let cache = SnapshotCache::new();
    let server = XdsServer::new(
        cache.clone(),
        Arc::new(MetadataGrouper::default()),
        ServerConfig::default(),
        shutdown,
    );
    let state = AdminState {
        metrics: Metrics::new(store.clone(), cache.clone()),
        store,
        status: server.status(),
        cache,
        xds_addr: "127.0.0.1:18000".parse().expect("addr"),
        directory: Arc::new(NoRelays),
        token: None,
        peers: Arc::new(vec![
            "http://10.0.0.3:18080/".into(),
            "http://10.0.0.2:18080".into(),
        ]),
        datacenter: "dc1".into(),
        http: reqwest::Client::new(),
        ca: None,
        enrolment_tokens: Default::default(),
        admin_tls: false,
        grafana_url: None,
        dry_run: None,
        rollout: None,
        traffic: Default::default(),
    };
    let peers = meshplane_admin::consistency::peers(&state, Some("http://10.0.0.1:18080"));
    assert_eq!(
        peers,
        vec![
            "http://10.0.0.3:18080",
            "http://10.0.0.2:18080",
            "http://10.9.0.1:18080"
        ]
    );
}
