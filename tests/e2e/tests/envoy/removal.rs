//! A service with no instances, then no service at all: Envoy never keeps a cluster
//! warming and keeps no stale cluster.

use meshplane_e2e::{Flavour, egress, retimed_cluster};
use meshplane_xds::ResourceType;

use crate::{NODE, SERVICE, Web, all_acked};

/// Clusters Envoy has outside of xDS: the static `xds` cluster.
const STATIC_CLUSTERS: u64 = 1;

async fn removed_service_leaves_nothing_warming(flavour: Flavour) {
    let web = Web::start(flavour).await;
    let payments = [web.payments_1.port()];

    // The cluster's settings change, its endpoints do not: Envoy warms the new cluster
    // until it receives its endpoints again, so they must be re-sent.
    let modified = stat(&web, "cluster_manager.cluster_modified").await;
    let mut resources = egress(
        web.port,
        &[("payments", "payments")],
        &[("payments", &payments)],
    );
    resources.retain(|r| !(r.kind() == ResourceType::Cluster && r.name() == "payments"));
    resources.push(retimed_cluster("payments", 2));
    web.cp.publish(SERVICE, resources).expect("publish");
    web.envoy
        .wait_stat("cluster_manager.cluster_modified", modified + 1)
        .await
        .expect("Envoy takes the changed cluster");
    wait_clusters(&web, &["payments"]).await;
    web.client
        .wait_served_by("payments", "payments-1")
        .await
        .expect("payments still served");

    // A new dependency with no instances yet: its cluster gets an empty assignment and
    // must not stay warming, and the existing service keeps working.
    web.cp
        .publish(
            SERVICE,
            egress(
                web.port,
                &[("payments", "payments"), ("orders", "orders")],
                &[("payments", &payments), ("orders", &[])],
            ),
        )
        .expect("publish");
    wait_clusters(&web, &["orders", "payments"]).await;
    let reply = web
        .client
        .wait_status("orders", 503)
        .await
        .expect("orders has no instances");
    assert!(reply.body.contains("no healthy upstream"), "{reply:?}");
    web.client
        .wait_served_by("payments", "payments-1")
        .await
        .expect("payments still served");

    // payments' last instance goes away.
    web.cp
        .publish(
            SERVICE,
            egress(
                web.port,
                &[("payments", "payments"), ("orders", "orders")],
                &[("payments", &[]), ("orders", &[])],
            ),
        )
        .expect("publish");
    web.client
        .wait_status("payments", 503)
        .await
        .expect("payments has no instances");
    wait_clusters(&web, &["orders", "payments"]).await;

    // Then both services go away: clusters, endpoints and routes.
    web.cp
        .publish(SERVICE, egress(web.port, &[], &[]))
        .expect("publish");
    wait_clusters(&web, &[]).await;
    web.client
        .wait_status("payments", 404)
        .await
        .expect("no route for payments any more");
    web.envoy
        .wait_stat("cluster_manager.active_clusters", STATIC_CLUSTERS)
        .await
        .expect("only the static cluster is left");
    web.envoy
        .wait_stat("cluster_manager.warming_clusters", 0)
        .await
        .expect("nothing warming");
    web.cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
}

async fn stat(web: &Web, name: &str) -> u64 {
    let value = web.envoy.stat(name).await.expect("stats");
    value.unwrap_or_else(|| panic!("Envoy has no stat {name}"))
}

/// Waits until Envoy's xDS clusters are exactly `names`, all active, none warming.
async fn wait_clusters(web: &Web, names: &[&str]) {
    let what = format!("xDS clusters {names:?}, all active");
    meshplane_e2e::eventually(&what, meshplane_e2e::CONVERGE, || async move {
        let clusters = web
            .envoy
            .dynamic_clusters()
            .await
            .map_err(|e| e.to_string())?;
        let warming = web
            .envoy
            .stat("cluster_manager.warming_clusters")
            .await
            .map_err(|e| e.to_string())?;
        if clusters.active == names && clusters.warming.is_empty() && warming == Some(0) {
            Ok(())
        } else {
            Err(format!("{clusters:?}, warming_clusters = {warming:?}"))
        }
    })
    .await
    .expect("clusters converge");
    web.envoy
        .wait_stat(
            "cluster_manager.active_clusters",
            STATIC_CLUSTERS + names.len() as u64,
        )
        .await
        .expect("active cluster count");
}

crate::both_flavours!(removed_service_leaves_nothing_warming);
