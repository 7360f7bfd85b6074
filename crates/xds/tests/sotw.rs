//! State-of-the-world ADS against an in-process client: subscriptions, ordering, nonces,
//! ACK/NACK and shutdown.

mod support;

use std::future::ready;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc;
use meshplane_test_support::eventually;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use meshplane_xds::{GroupKey, ResourceType, Snapshot};
use support::{Harness, SotwClient, WAIT, mk_node, names_of};

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;
const LDS: ResourceType = ResourceType::Listener;
const RDS: ResourceType = ResourceType::Route;

fn group() -> GroupKey {
    GroupKey::new("orders")
}

/// `payments` routed from the egress listener; `extra` clusters are added unrouted.
fn mk_snapshot(routed: &str, port: u16) -> Snapshot {
    Snapshot::new([
        mk_eds_cluster(routed),
        mk_endpoints(routed, &[("127.0.0.1", port, 1)]),
        mk_http_listener("egress", 15001, "egress-routes"),
        mk_routes("egress-routes", &[(routed, routed)]),
    ])
    .expect("consistent")
}

fn request(kind: ResourceType, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(mk_node("orders-1", "orders")),
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Subscribes like Envoy and ACKs everything; returns once all four types are synced.
async fn synced_client(h: &Harness, routed: &str) -> SotwClient {
    let mut c = h.sotw().await;
    c.send(request(CDS, &[])).await;
    let cds = c.expect().await;
    assert_eq!(cds.type_url, CDS.type_url());
    c.ack(&cds, &[]).await;
    c.send(request(EDS, &[routed])).await;
    let eds = c.expect().await;
    assert_eq!(eds.type_url, EDS.type_url());
    c.ack(&eds, &[routed]).await;
    c.send(request(LDS, &[])).await;
    let lds = c.expect().await;
    c.ack(&lds, &[]).await;
    c.send(request(RDS, &["egress-routes"])).await;
    let rds = c.expect().await;
    assert_eq!(names_of(&rds), vec!["egress-routes".to_string()]);
    c.ack(&rds, &["egress-routes"]).await;
    c
}

#[tokio::test]
async fn unchanged_resources_are_not_resent() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = synced_client(&h, "payments").await;
    // Same content published again: nothing.
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    c.expect_silence().await;
    // Only the endpoints change: exactly one EDS response.
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 9090))
        .expect("set");
    let eds = c.expect().await;
    assert_eq!(eds.type_url, EDS.type_url());
    c.ack(&eds, &["payments"]).await;
    c.expect_silence().await;
}

#[tokio::test]
async fn unknown_eds_names_get_an_empty_assignment() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = h.sotw().await;
    c.send(request(EDS, &["payments", "vanished"])).await;
    let eds = c.expect().await;
    assert_eq!(
        names_of(&eds),
        vec!["payments".to_string(), "vanished".to_string()]
    );
}

/// `(cluster_name, endpoint count)` of each assignment in an EDS response.
fn endpoint_counts(
    r: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
) -> Vec<(String, usize)> {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    r.resources
        .iter()
        .map(|any| {
            let cla = ClusterLoadAssignment::decode(any.value.as_slice()).expect("assignment");
            let count = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
            (cla.cluster_name, count)
        })
        .collect()
}

#[tokio::test]
async fn make_before_break_when_a_route_moves_to_a_new_cluster() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = synced_client(&h, "payments").await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("billing", 8081))
        .expect("set");

    // 1. Clusters: the new one added, the old one kept while routes still use it.
    let cds = c.expect().await;
    assert_eq!(cds.type_url, CDS.type_url());
    assert_eq!(
        names_of(&cds),
        vec!["billing".to_string(), "payments".to_string()]
    );
    // 2. Endpoints for the current subscription (re-sent after the CDS change); the old
    //    cluster keeps its endpoints while routes still use it.
    let eds = c.expect().await;
    assert_eq!(eds.type_url, EDS.type_url());
    assert_eq!(endpoint_counts(&eds), vec![("payments".to_string(), 1)]);
    // 3. Routes wait until the new cluster has its endpoints: like Envoy, the client
    //    subscribes to them once it has processed the clusters.
    c.ack(&cds, &[]).await;
    c.ack(&eds, &["payments"]).await;
    c.expect_silence().await;
    c.send(request(EDS, &["billing", "payments"])).await;
    let eds = c.expect().await;
    assert_eq!(eds.type_url, EDS.type_url());
    // SotW EDS is incremental: payments is unchanged, only billing's endpoints are sent.
    assert_eq!(endpoint_counts(&eds), vec![("billing".to_string(), 1)]);
    // 4. Routes now name only the new cluster.
    let rds = c.expect().await;
    assert_eq!(rds.type_url, RDS.type_url());
    // 5. Then, once the proxy has taken those routes, the old cluster goes.
    c.expect_silence().await;
    c.ack(&rds, &["egress-routes"]).await;
    let cds2 = c.expect().await;
    assert_eq!(cds2.type_url, CDS.type_url());
    assert_eq!(names_of(&cds2), vec!["billing".to_string()]);
    assert_ne!(cds.nonce, cds2.nonce);
}

#[tokio::test]
async fn eds_is_resent_after_a_cluster_changes_even_if_unchanged() {
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use meshplane_xds::Resource;
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = synced_client(&h, "payments").await;
    // Same endpoints, cluster changed (a different connect timeout).
    let changed = Resource::cluster(&Cluster {
        name: "payments".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig::default()),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 3,
            nanos: 0,
        }),
        ..Default::default()
    });
    let snapshot = Snapshot::new([
        changed,
        mk_endpoints("payments", &[("127.0.0.1", 8080, 1)]),
        mk_http_listener("egress", 15001, "egress-routes"),
        mk_routes("egress-routes", &[("payments", "payments")]),
    ])
    .expect("consistent");
    h.cache.set_snapshot(&group(), snapshot).expect("set");
    assert_eq!(c.expect().await.type_url, CDS.type_url());
    let eds = c.expect().await;
    assert_eq!(
        eds.type_url,
        EDS.type_url(),
        "the warming cluster needs its endpoints again"
    );
    assert_eq!(names_of(&eds), vec!["payments".to_string()]);
}

#[tokio::test]
async fn stale_nonces_are_ignored() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = h.sotw().await;
    c.send(request(EDS, &["payments"])).await;
    let first = c.expect().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 9090))
        .expect("set");
    let second = c.expect().await;
    assert_ne!(first.nonce, second.nonce);
    // A late answer to the first response asking for a different name: stale, ignored.
    c.send(DiscoveryRequest {
        response_nonce: first.nonce.clone(),
        version_info: first.version_info.clone(),
        type_url: EDS.type_url().into(),
        resource_names: vec!["payments".into(), "other".into()],
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    // The same change answering the latest response is honoured.
    c.send(DiscoveryRequest {
        response_nonce: second.nonce.clone(),
        version_info: second.version_info.clone(),
        type_url: EDS.type_url().into(),
        resource_names: vec!["payments".into(), "other".into()],
        ..Default::default()
    })
    .await;
    let third = c.expect().await;
    // Only what the proxy lacks: the (empty) assignment for the new name.
    assert_eq!(names_of(&third), vec!["other".to_string()]);
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent_until_content_changes() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = h.sotw().await;
    c.send(request(CDS, &[])).await;
    let cds = c.expect().await;
    c.send(DiscoveryRequest {
        response_nonce: cds.nonce.clone(),
        version_info: String::new(),
        type_url: CDS.type_url().into(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "bad cluster".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    // No re-send loop.
    c.expect_silence().await;
    let proxies = h.server.status().proxies();
    let cds_status = proxies[0].type_status(CDS);
    let nack = cds_status.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(nack.message, "bad cluster");
    assert_eq!(nack.version, cds.version_info);
    assert_eq!(cds_status.acked_version, None);
    assert_eq!(cds_status.responses, 1);
    // Unrelated change (endpoints only): still no CDS.
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 9090))
        .expect("set");
    c.expect_silence().await;
    // Clusters change: sent, ACKed, NACK cleared.
    h.cache
        .set_snapshot(&group(), mk_snapshot("billing", 9090))
        .expect("set");
    let fixed = c.expect().await;
    assert_eq!(fixed.type_url, CDS.type_url());
    c.ack(&fixed, &[]).await;
    eventually("the fix ACKed and the NACK cleared", WAIT, || {
        let p = h.server.status().proxies();
        let t = p[0].type_status(CDS).clone();
        let fixed = t.acked_version.as_deref() == Some(fixed.version_info.as_str());
        ready(if fixed && t.last_nack.is_none() {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        })
    })
    .await;
}

#[tokio::test]
async fn reconnect_with_current_version_gets_nothing_new() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = h.sotw().await;
    c.send(request(CDS, &[])).await;
    let cds = c.expect().await;
    drop(c);
    let mut again = h.sotw().await;
    let mut req = request(CDS, &[]);
    req.version_info = cds.version_info.clone();
    again.send(req).await;
    again.expect_silence().await;
    // But a change still arrives.
    h.cache
        .set_snapshot(&group(), mk_snapshot("billing", 8080))
        .expect("set");
    assert_eq!(again.expect().await.type_url, CDS.type_url());
}

#[tokio::test]
async fn streams_wait_for_their_group_then_get_it() {
    let h = Harness::start().await;
    let mut c = h.sotw().await;
    c.send(request(LDS, &[])).await;
    c.expect_silence().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let lds = c.expect().await;
    assert_eq!(names_of(&lds), vec!["egress".to_string()]);
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot("payments", 8080))
        .expect("set");
    let mut c = h.sotw().await;
    c.send(request(CDS, &[])).await;
    c.expect().await;
    h.shutdown.cancel();
    let status = c.next().await.expect_err("ended");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    eventually("an empty status board", WAIT, || {
        ready(h.server.status().is_empty())
    })
    .await;
}

#[tokio::test]
async fn eds_responses_carry_only_the_assignments_that_changed() {
    let h = Harness::start().await;
    let snapshot = |port: u16| {
        Snapshot::new([
            mk_eds_cluster("a"),
            mk_endpoints("a", &[("127.0.0.1", 1, 1)]),
            mk_eds_cluster("b"),
            mk_endpoints("b", &[("127.0.0.1", port, 1)]),
        ])
        .expect("consistent")
    };
    h.cache.set_snapshot(&group(), snapshot(2)).expect("set");
    let mut c = h.sotw().await;
    c.send(request(EDS, &["a", "b"])).await;
    let first = c.expect().await;
    assert_eq!(names_of(&first), vec!["a".to_string(), "b".to_string()]);
    c.ack(&first, &["a", "b"]).await;
    h.cache.set_snapshot(&group(), snapshot(3)).expect("set");
    let second = c.expect().await;
    assert_eq!(names_of(&second), vec!["b".to_string()], "a did not change");
    assert_ne!(second.version_info, first.version_info);
}

/// A listener standing in for a name the group lacks (the snapshot's fallback).
fn stand_in(name: &str) -> std::sync::Arc<meshplane_xds::Resource> {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    meshplane_xds::Resource::listener(&Listener {
        name: name.to_owned(),
        stat_prefix: "stand-in".to_owned(),
        ..Default::default()
    })
}

fn with_stand_ins(snapshot: Snapshot) -> Snapshot {
    snapshot.with_fallback(LDS, std::sync::Arc::new(|name: &str| Some(stand_in(name))))
}

/// A client naming listeners or clusters (as gRPC does) gets the snapshot's fallback for one the group
/// lacks, at once, whether it is its first name or one added to a synced subscription; a
/// later real listener of that name replaces it. Without a fallback an unknown name adds
/// nothing to the answer.
#[tokio::test]
async fn names_the_group_lacks_get_its_fallback_when_it_has_one() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), with_stand_ins(mk_snapshot("payments", 8080)))
        .expect("set");
    // Only an unknown name.
    let mut first = h.sotw().await;
    first.send(request(LDS, &["ledger"])).await;
    let lds = first.expect().await;
    assert_eq!(names_of(&lds), vec!["ledger".to_string()]);
    assert_eq!(
        lds.resources[0].value,
        stand_in("ledger").to_any().value,
        "the fallback's listener"
    );

    // A known name, then an unknown one added.
    let mut c = h.sotw().await;
    c.send(request(LDS, &["egress"])).await;
    let lds = c.expect().await;
    assert_eq!(names_of(&lds), vec!["egress".to_string()]);
    c.ack(&lds, &["egress"]).await;
    c.send(request(LDS, &["egress", "ledger"])).await;
    let lds = c.expect().await;
    assert_eq!(
        names_of(&lds),
        vec!["egress".to_string(), "ledger".to_string()]
    );
    c.ack(&lds, &["egress", "ledger"]).await;
    c.expect_silence().await;
    // Patched snapshots keep the fallback: publishing the same content sends nothing.
    let same = h
        .cache
        .snapshot(&group())
        .expect("published")
        .with_upserts([])
        .expect("patched");
    h.cache.set_snapshot(&group(), same).expect("set");
    c.expect_silence().await;
    // The group gains a real `ledger`: it replaces the stand-in.
    let real = mk_http_listener("ledger", 15002, "egress-routes");
    let next = with_stand_ins(mk_snapshot("payments", 8080))
        .with_upserts([real.clone()])
        .expect("consistent");
    h.cache.set_snapshot(&group(), next).expect("set");
    let lds = c.expect().await;
    let ledger = lds
        .resources
        .iter()
        .find(|r| r.value == real.to_any().value);
    assert!(ledger.is_some(), "the real listener replaces the stand-in");

    // A cluster fallback answers a cluster name the group lacks, and its endpoints, unknown
    // too, are an empty assignment.
    let next = with_stand_ins(mk_snapshot("payments", 8080)).with_fallback(
        CDS,
        std::sync::Arc::new(|name: &str| Some(mk_eds_cluster(name))),
    );
    h.cache.set_snapshot(&group(), next).expect("set");
    let mut named = h.sotw().await;
    named.send(request(CDS, &["why"])).await;
    let cds = named.expect().await;
    assert_eq!(names_of(&cds), vec!["why".to_string()]);
    named.ack(&cds, &["why"]).await;
    named.send(request(EDS, &["why"])).await;
    let eds = named.expect().await;
    assert_eq!(endpoint_counts(&eds), vec![("why".to_string(), 0)]);

    // Without a fallback, an unknown name gets nothing of its own.
    h.cache
        .set_snapshot(&GroupKey::new("plain"), mk_snapshot("payments", 8080))
        .expect("set");
    let mut plain = h.sotw().await;
    let mut req = request(LDS, &["egress", "ledger"]);
    req.node = Some(mk_node("plain-1", "plain"));
    plain.send(req).await;
    let lds = plain.expect().await;
    assert_eq!(names_of(&lds), vec!["egress".to_string()]);
}
