//! An Envoy bootstraps against the control plane, receives a listener, a route, a cluster
//! and endpoints, and proxies HTTP to the upstream.

use meshplane_e2e::Flavour;
use meshplane_xds::{ResourceType, StreamKind};

use crate::{NODE, Web, all_acked};

async fn bootstraps_and_proxies(flavour: Flavour) {
    let web = Web::start(flavour).await;
    assert!(web.payments_1.served() >= 1, "the upstream saw the request");

    // Routing is by Host: an undeclared host has no route.
    let reply = web.client.get("orders").await.expect("request");
    assert_eq!(reply.status, 404, "unrouted host: {reply:?}");

    let clusters = web.envoy.dynamic_clusters().await.expect("config dump");
    assert_eq!(clusters.active, ["payments"]);
    assert!(clusters.warming.is_empty(), "{clusters:?}");
    web.envoy
        .wait_stat("cluster_manager.warming_clusters", 0)
        .await
        .expect("nothing warming");
    web.envoy
        .wait_stat("listener_manager.total_listeners_active", 1)
        .await
        .expect("the egress listener is active");

    let status = web
        .cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
    let kind = match flavour {
        Flavour::Sotw => StreamKind::Sotw,
        Flavour::Delta => StreamKind::Delta,
    };
    assert_eq!(status.stream.kind, kind);
    assert_eq!(status.stream.service, "web");
    for t in [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        let ts = status.type_status(t);
        assert!(ts.acked_version.is_some(), "{t} acked: {ts:?}");
        assert_eq!(ts.nacks, 0, "{t}: {ts:?}");
    }
}

crate::both_flavours!(bootstraps_and_proxies);
