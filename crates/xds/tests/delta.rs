//! Delta ADS against an in-process client: per-resource diffs, removals, reconnect with
//! `initial_resource_versions`, NACK handling.

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use meshplane_xds::{GroupKey, ResourceType, Snapshot};
use support::{DeltaClient, Harness, mk_node};

const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;

fn group() -> GroupKey {
    GroupKey::new("orders")
}

fn mk_snapshot(services: &[(&str, u16)]) -> Snapshot {
    let mut resources = vec![mk_http_listener("egress", 15001, "egress-routes")];
    let hosts: Vec<(&str, &str)> = services.iter().map(|(s, _)| (*s, *s)).collect();
    resources.push(mk_routes("egress-routes", &hosts));
    for (name, port) in services {
        resources.push(mk_eds_cluster(name));
        resources.push(mk_endpoints(name, &[("127.0.0.1", *port, 1)]));
    }
    Snapshot::new(resources).expect("consistent")
}

fn subscribe(kind: ResourceType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(mk_node("orders-1", "orders")),
        type_url: kind.type_url().into(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    n.sort();
    n
}

async fn cds_client(h: &Harness) -> (DeltaClient, DeltaDiscoveryResponse) {
    let mut c = h.delta().await;
    c.send(subscribe(CDS, &[])).await;
    let r = c.expect().await;
    c.ack(&r).await;
    (c, r)
}

#[tokio::test]
async fn only_changed_resources_are_sent_and_removals_named() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("billing", 2)]))
        .expect("set");
    let (mut c, first) = cds_client(&h).await;
    assert_eq!(
        names(&first),
        vec!["billing".to_string(), "payments".to_string()]
    );

    // Endpoint-only change: no CDS.
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("billing", 3)]))
        .expect("set");
    c.expect_silence().await;

    // One service added, one removed.
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("audit", 4)]))
        .expect("set");
    let added = c.expect().await;
    assert_eq!(names(&added), vec!["audit".to_string()]);
    assert!(
        added.removed_resources.is_empty(),
        "removals come after routes"
    );
    c.ack(&added).await;
    let removed = c.expect().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, vec!["billing".to_string()]);
}

#[tokio::test]
async fn reconnect_with_initial_versions_receives_nothing_it_has() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("billing", 2)]))
        .expect("set");
    let (c, first) = cds_client(&h).await;
    drop(c);
    let have: HashMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();

    let mut again = h.delta().await;
    let mut req = subscribe(CDS, &[]);
    req.initial_resource_versions = have.clone();
    again.send(req).await;
    again.expect_silence().await;

    // A proxy that has a resource the server no longer knows is told to remove it.
    let mut stale = h.delta().await;
    let mut req = subscribe(CDS, &[]);
    req.initial_resource_versions = have;
    req.initial_resource_versions
        .insert("ghost".into(), "v0".into());
    stale.send(req).await;
    let r = stale.expect().await;
    assert!(r.resources.is_empty());
    assert_eq!(r.removed_resources, vec!["ghost".to_string()]);
}

#[tokio::test]
async fn eds_answers_every_subscribed_name() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1)]))
        .expect("set");
    let mut c = h.delta().await;
    c.send(subscribe(EDS, &["payments", "vanished"])).await;
    let r = c.expect().await;
    assert_eq!(
        names(&r),
        vec!["payments".to_string(), "vanished".to_string()]
    );
    c.ack(&r).await;
    // The service goes away entirely: its assignment becomes empty, never silence.
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[]))
        .expect("set");
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["payments".to_string()]);
}

#[tokio::test]
async fn explicit_wildcard_and_unsubscribe() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("billing", 2)]))
        .expect("set");
    let mut c = h.delta().await;
    c.send(subscribe(CDS, &["payments"])).await;
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["payments".to_string()]);
    c.send(DeltaDiscoveryRequest {
        type_url: CDS.type_url().into(),
        response_nonce: r.nonce.clone(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await;
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["billing".to_string()], "only what it lacks");
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent() {
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1)]))
        .expect("set");
    let mut c = h.delta().await;
    c.send(subscribe(CDS, &[])).await;
    let r = c.expect().await;
    c.send(DeltaDiscoveryRequest {
        type_url: CDS.type_url().into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "rejected".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    let p = h.server.status().proxies();
    let t = p[0].type_status(CDS);
    assert_eq!(
        t.last_nack.as_ref().map(|n| n.message.as_str()),
        Some("rejected")
    );
    assert_eq!(t.responses, 1);
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1), ("billing", 2)]))
        .expect("set");
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["billing".to_string()]);
}

#[tokio::test]
async fn resubscribing_resends_though_the_snapshot_is_unchanged() {
    // Streams skip types whose snapshot content and subscription are unchanged; a changed
    // subscription must still be answered.
    let h = Harness::start().await;
    h.cache
        .set_snapshot(&group(), mk_snapshot(&[("payments", 1)]))
        .expect("set");
    let mut c = h.delta().await;
    c.send(subscribe(EDS, &["payments"])).await;
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["payments".to_string()]);
    c.ack(&r).await;
    c.expect_silence().await;
    c.send(DeltaDiscoveryRequest {
        type_url: EDS.type_url().into(),
        resource_names_unsubscribe: vec!["payments".into()],
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    c.send(DeltaDiscoveryRequest {
        type_url: EDS.type_url().into(),
        resource_names_subscribe: vec!["payments".into()],
        ..Default::default()
    })
    .await;
    let r = c.expect().await;
    assert_eq!(names(&r), vec!["payments".to_string()]);
}
