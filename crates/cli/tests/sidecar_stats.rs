//! The statistics a sidecar's Envoy keeps (`stats` in the descriptor): by default the mesh's
//! list, which keeps what Meshplane and an operator read and drops the rest of each cluster's
//! statistics; `include` patterns bring trimmed ones back; `include: all` keeps everything.

mod support;

use support::{Mesh, caller, envoy_stat, free_port, poll, upstream, via_egress};

/// Trimmed by the mesh's list: a load-balancer statistic created with every cluster.
const TRIMMED: &str = "cluster.payments.lb_healthy_panic";
/// Trimmed too, and a traffic statistic (created on a cluster's first request).
const TRIMMED_TRAFFIC: &str = "cluster.payments.upstream_cx_rx_bytes_total";

/// Starts a sidecar for `service` calling payments, with `stats` appended to its descriptor;
/// returns its admin and egress ports once its payments cluster has the one instance.
async fn sidecar(mesh: &mut Mesh, service: &str, stats: &str) -> (u16, u16) {
    let egress = free_port();
    let app = upstream("app").await;
    let d = caller(service, app, free_port(), egress, "  - service: payments\n") + stats;
    let id = format!("{service}-1");
    mesh.sidecar(&id, &d, 2).await;
    let admin = mesh.sidecar_admin(&id);
    assert!(
        poll(|| async {
            envoy_stat(&mesh.http, admin, "cluster.payments.membership_total").await == Some(1)
        })
        .await,
        "{service}: the payments cluster never had its instance\n{}",
        mesh.sidecar_log(&id)
    );
    (admin, egress)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mesh_list_keeps_what_is_read_and_descriptors_bring_back_the_rest() {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let payments = upstream("payments-1").await;
    mesh.register("payments-1", "payments", payments, &[], 1)
        .await;

    // Default: the mesh's list.
    let (admin, egress) = sidecar(&mut mesh, "orders", "").await;
    assert_eq!(
        via_egress(&mesh.http, egress, "payments", None).await,
        (200, "payments-1".into())
    );
    assert!(
        poll(|| async {
            envoy_stat(&mesh.http, admin, "cluster.payments.upstream_rq_2xx").await == Some(1)
        })
        .await,
        "per-dependency outcomes are kept"
    );
    for kept in [
        "cluster.payments.upstream_rq_total",
        "cluster.payments.upstream_cx_total",
        "cluster.payments.membership_healthy",
        "cluster.meshplane_xds.upstream_cx_total",
        "cluster_manager.warming_clusters",
        "cluster_manager.active_clusters",
        "listener_manager.total_listeners_active",
        "control_plane.connected_state",
        "server.live",
        "server.hot_restart_epoch",
        "http.egress.downstream_rq_total",
        "http.ingress.downstream_rq_5xx",
    ] {
        assert!(
            envoy_stat(&mesh.http, admin, kept).await.is_some(),
            "{kept} is kept"
        );
    }
    assert_eq!(envoy_stat(&mesh.http, admin, TRIMMED).await, None);
    assert_eq!(envoy_stat(&mesh.http, admin, TRIMMED_TRAFFIC).await, None);

    // An addition brings one trimmed statistic back, and only that one.
    let (admin, _) = sidecar(
        &mut mesh,
        "reports",
        "stats:\n  include:\n    - suffix: .lb_healthy_panic\n",
    )
    .await;
    assert_eq!(envoy_stat(&mesh.http, admin, TRIMMED).await, Some(0));
    assert_eq!(
        envoy_stat(
            &mesh.http,
            admin,
            "cluster.payments.lb_zone_no_capacity_left"
        )
        .await,
        None
    );

    // `all`: every statistic, created eagerly as Envoy does by default.
    let (admin, _) = sidecar(&mut mesh, "billing", "stats: { include: all }\n").await;
    assert_eq!(envoy_stat(&mesh.http, admin, TRIMMED).await, Some(0));
    assert_eq!(
        envoy_stat(&mesh.http, admin, TRIMMED_TRAFFIC).await,
        Some(0)
    );
}
