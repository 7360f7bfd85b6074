//! Make-before-break against an in-process client that behaves like Envoy: when a route
//! moves to a new cluster, routes wait until the proxy has asked for and been sent the new
//! cluster's endpoints, the old cluster keeps its endpoints until it is removed, and it is
//! removed only after the routes. A rejected cluster never holds routing.

mod support;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use meshplane_xds::{GroupKey, ResourceType, Snapshot};
use prost::Message;
use support::{DeltaClient, Harness, SotwClient, mk_node, names_of};

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::Route;

fn group() -> GroupKey {
    GroupKey::new("orders")
}

/// `payments` routed to `cluster`, whose endpoints are one instance on `port`.
fn mk_snapshot(cluster: &str, port: u16) -> Snapshot {
    Snapshot::new([
        mk_eds_cluster(cluster),
        mk_endpoints(cluster, &[("127.0.0.1", port, 1)]),
        mk_http_listener("egress", 15001, "egress-routes"),
        mk_routes("egress-routes", &[("payments", cluster)]),
    ])
    .expect("consistent")
}

fn endpoint_counts(resources: &[Any]) -> Vec<(String, usize)> {
    resources
        .iter()
        .map(|any| {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).expect("assignment");
            let count = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
            (cla.cluster_name, count)
        })
        .collect()
}

fn nack_detail() -> Option<rpc::Status> {
    Some(rpc::Status {
        code: 3,
        message: "cluster rejected".into(),
        details: vec![],
    })
}

// === SotW ===

fn sotw_request(kind: ResourceType, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(mk_node("orders-1", "orders")),
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The subscriptions of an Envoy routing to `v1`, in the order it makes them.
const SOTW_SUBSCRIPTIONS: [(ResourceType, &[&str]); 4] = [
    (CDS, &[]),
    (EDS, &["v1"]),
    (LDS, &[]),
    (RDS, &["egress-routes"]),
];

/// A client subscribed to and ACKing all four types, routing to `v1`.
async fn sotw_synced(h: &Harness) -> SotwClient {
    sotw_synced_with_versions(h).await.0
}

/// Like [`sotw_synced`], also returning the version accepted per subscription.
async fn sotw_synced_with_versions(h: &Harness) -> (SotwClient, Vec<String>) {
    let mut c = h.sotw().await;
    let mut versions = Vec::new();
    for (kind, names) in SOTW_SUBSCRIPTIONS {
        c.send(sotw_request(kind, names)).await;
        let r = c.expect().await;
        c.ack(&r, names).await;
        versions.push(r.version_info);
    }
    (c, versions)
}

/// A proxy synced on `v1`, then `v2` published (the route moves to it): the harness, the
/// client and the first CDS response (`v1` kept next to `v2`).
async fn sotw_moving_to_v2() -> (Harness, SotwClient, DiscoveryResponse) {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v1", 8080))
        .expect("set");
    let mut c = sotw_synced(&h).await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v2", 8081))
        .expect("set");
    let cds = sotw_expect(&mut c, CDS).await;
    assert_eq!(names_of(&cds), ["v1", "v2"]);
    (h, c, cds)
}

async fn sotw_expect(c: &mut SotwClient, kind: ResourceType) -> DiscoveryResponse {
    let r = c.expect().await;
    assert_eq!(r.type_url, kind.type_url(), "{r:?}");
    r
}

#[tokio::test]
async fn sotw_routes_wait_for_new_endpoints_and_old_endpoints_stay() {
    let (_h, mut c, cds) = sotw_moving_to_v2().await;
    let eds = sotw_expect(&mut c, EDS).await;
    assert_eq!(
        endpoint_counts(&eds.resources),
        [("v1".to_string(), 1)],
        "v1 keeps its endpoints"
    );
    // The CDS ACK alone releases nothing: v2 is still warming.
    c.ack(&cds, &[]).await;
    c.ack(&eds, &["v1"]).await;
    c.expect_silence().await;

    c.send(sotw_request(EDS, &["v1", "v2"])).await;
    let eds = sotw_expect(&mut c, EDS).await;
    // SotW EDS responses are incremental: v1 is unchanged, only v2 is sent.
    assert_eq!(endpoint_counts(&eds.resources), [("v2".to_string(), 1)]);
    let rds = sotw_expect(&mut c, RDS).await;
    // v1 leaves once the proxy has taken the routes that no longer name it.
    c.expect_silence().await;
    c.ack(&rds, &["egress-routes"]).await;
    let cds = sotw_expect(&mut c, CDS).await;
    assert_eq!(names_of(&cds), ["v2"]);
    c.ack(&cds, &[]).await;
}

#[tokio::test]
async fn sotw_rejected_routes_keep_their_clusters() {
    let (h, mut c, cds) = sotw_moving_to_v2().await;
    let eds = sotw_expect(&mut c, EDS).await;
    c.ack(&cds, &[]).await;
    c.ack(&eds, &["v1"]).await;
    c.send(sotw_request(EDS, &["v1", "v2"])).await;
    sotw_expect(&mut c, EDS).await;
    let rds = sotw_expect(&mut c, RDS).await;

    // The proxy rejects the new routes: its old ones still name v1, which must stay.
    c.send(DiscoveryRequest {
        type_url: RDS.type_url().into(),
        response_nonce: rds.nonce.clone(),
        resource_names: vec!["egress-routes".into()],
        error_detail: nack_detail(),
        ..Default::default()
    })
    .await;
    c.expect_silence().await;

    // Routes that are accepted release it.
    h.cache
        .set_snapshot(&group(), mk_snapshot("v3", 8082))
        .expect("set");
    let cds = sotw_expect(&mut c, CDS).await;
    assert_eq!(names_of(&cds), ["v1", "v2", "v3"], "v1 is still named");
}

#[tokio::test]
async fn sotw_unsubscribing_from_every_endpoint_gets_no_response() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v1", 8080))
        .expect("set");
    let mut c = sotw_synced(&h).await;
    let no_services = Snapshot::new([
        mk_http_listener("egress", 15001, "egress-routes"),
        mk_routes("egress-routes", &[]),
    ])
    .expect("consistent");
    h.cache.set_snapshot(&group(), no_services).expect("set");
    let rds = sotw_expect(&mut c, RDS).await;
    c.ack(&rds, &["egress-routes"]).await;
    let cds = sotw_expect(&mut c, CDS).await;
    assert!(cds.resources.is_empty());
    c.ack(&cds, &[]).await;

    // Like Envoy once its last EDS cluster is gone: an empty EDS subscription. Envoy would
    // take an empty answer without ACKing it, leaving the status out of sync forever.
    c.send(DiscoveryRequest {
        type_url: EDS.type_url().into(),
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    let status = &h.server.status().proxies()[0];
    let eds = status.type_status(EDS);
    assert_eq!(eds.sent_version, eds.acked_version, "{eds:?}");
}

#[tokio::test]
async fn sotw_reconnected_proxy_keeps_old_cluster_until_routes_move() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v1", 8080))
        .expect("set");
    let (first, versions) = sotw_synced_with_versions(&h).await;
    drop(first);

    // Reconnect reporting what it has: nothing is re-sent but the endpoints (a SotW version
    // cannot say which assignments the proxy kept).
    let mut c = h.sotw().await;
    for ((kind, names), version) in SOTW_SUBSCRIPTIONS.into_iter().zip(versions) {
        let mut req = sotw_request(kind, names);
        req.version_info = version;
        c.send(req).await;
    }
    let eds = sotw_expect(&mut c, EDS).await;
    assert_eq!(endpoint_counts(&eds.resources), [("v1".to_string(), 1)]);
    c.ack(&eds, &["v1"]).await;
    c.expect_silence().await;

    // The server knows v1 is in use, so it is kept until the routes have moved.
    h.cache
        .set_snapshot(&group(), mk_snapshot("v2", 8081))
        .expect("set");
    let cds = sotw_expect(&mut c, CDS).await;
    assert_eq!(names_of(&cds), ["v1", "v2"]);
}

#[tokio::test]
async fn sotw_rejected_clusters_release_routes() {
    let (_h, mut c, cds) = sotw_moving_to_v2().await;
    sotw_expect(&mut c, EDS).await;
    c.send(DiscoveryRequest {
        type_url: CDS.type_url().into(),
        response_nonce: cds.nonce.clone(),
        error_detail: nack_detail(),
        ..Default::default()
    })
    .await;
    sotw_expect(&mut c, RDS).await;
}

// === Delta ===

fn delta_subscribe(kind: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(mk_node("orders-1", "orders")),
        type_url: kind.type_url().into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn delta_synced(h: &Harness) -> DeltaClient {
    let mut c = h.delta().await;
    for (kind, names) in [
        (CDS, &[][..]),
        (EDS, &["v1"][..]),
        (LDS, &[][..]),
        (RDS, &["egress-routes"][..]),
    ] {
        c.send(delta_subscribe(kind, names)).await;
        let r = c.expect().await;
        c.ack(&r).await;
    }
    c
}

async fn delta_expect(c: &mut DeltaClient, kind: ResourceType) -> DeltaDiscoveryResponse {
    let r = c.expect().await;
    assert_eq!(r.type_url, kind.type_url(), "{r:?}");
    r
}

#[tokio::test]
async fn delta_routes_wait_for_new_endpoints_and_old_endpoints_stay() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v1", 8080))
        .expect("set");
    let mut c = delta_synced(&h).await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v2", 8081))
        .expect("set");

    let cds = delta_expect(&mut c, CDS).await;
    assert!(
        cds.removed_resources.is_empty(),
        "removal waits for the routes"
    );
    // Nothing else (in particular no emptied v1 endpoints) until v2 has its endpoints.
    c.ack(&cds).await;
    c.expect_silence().await;

    c.send(DeltaDiscoveryRequest {
        type_url: EDS.type_url().into(),
        resource_names_subscribe: vec!["v2".into()],
        ..Default::default()
    })
    .await;
    let eds = delta_expect(&mut c, EDS).await;
    let resources: Vec<Any> = eds
        .resources
        .iter()
        .filter_map(|r| r.resource.clone())
        .collect();
    assert_eq!(endpoint_counts(&resources), [("v2".to_string(), 1)]);
    let rds = delta_expect(&mut c, RDS).await;
    // v1 leaves once the proxy has taken the routes that no longer name it.
    c.expect_silence().await;
    c.ack(&rds).await;
    let cds = delta_expect(&mut c, CDS).await;
    assert_eq!(cds.removed_resources, ["v1"]);
}

#[tokio::test]
async fn delta_rejected_clusters_release_routes() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v1", 8080))
        .expect("set");
    let mut c = delta_synced(&h).await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("v2", 8081))
        .expect("set");
    let cds = delta_expect(&mut c, CDS).await;
    c.send(DeltaDiscoveryRequest {
        type_url: CDS.type_url().into(),
        response_nonce: cds.nonce.clone(),
        error_detail: nack_detail(),
        ..Default::default()
    })
    .await;
    delta_expect(&mut c, RDS).await;
}
