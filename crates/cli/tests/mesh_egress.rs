//! Egress through real Envoy sidecars: routing by Host and absolute URL, scoping, registry
//! changes, weights, canary and tags, retries.

mod support;

use support::{Mesh, caller, envoy_stat, free_port, poll, upstream, via_egress};

async fn mesh_with_orders(deps: &str) -> (Mesh, u16) {
    let mut mesh = Mesh::start(|_, _| {}).await;
    let egress = free_port();
    let app = upstream("orders-app").await;
    let d = caller("orders", app, free_port(), egress, deps);
    mesh.sidecar("orders-1", &d, 2).await;
    (mesh, egress)
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_routes_by_host_and_absolute_url_and_refuses_undeclared_hosts() {
    let (mesh, egress) = mesh_with_orders("  - service: payments\n").await;
    let pay = upstream("payments-a").await;
    mesh.register("payments-a", "payments", pay, &[], 1).await;
    assert!(
        poll(|| async {
            via_egress(&mesh.http, egress, "payments", None).await == (200, "payments-a".into())
        })
        .await
    );

    // Absolute URL through the proxy, as `curl -x` sends it.
    let proxied = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{egress}")).expect("proxy"))
        .build()
        .expect("client");
    let r = proxied
        .get("http://payments/some/path")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "payments-a");

    // Not a dependency: 503 naming the host.
    let (status, body) = via_egress(&mesh.http, egress, "billing", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("`billing` is not a dependency of `orders`"),
        "{body}"
    );
    let r = proxied
        .get("http://billing:8080/x")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn dependency_appearing_later_becomes_reachable_and_vanishing_leaves_no_warming_cluster() {
    let (mesh, egress) = mesh_with_orders("  - service: billing\n").await;
    // Declared but not registered yet: no instance, but no stuck config either.
    let (status, _) = via_egress(&mesh.http, egress, "billing", None).await;
    assert_eq!(status, 503);

    let billing = upstream("billing-1").await;
    mesh.register("billing-1", "billing", billing, &[], 1).await;
    assert!(
        poll(|| async {
            via_egress(&mesh.http, egress, "billing", None).await == (200, "billing-1".into())
        })
        .await
    );

    mesh.deregister("billing-1").await;
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "billing", None).await.0 == 503 }).await
    );
    let admin_port = mesh.sidecar_admin("orders-1");
    assert!(
        poll(|| async {
            envoy_stat(&mesh.http, admin_port, "cluster_manager.warming_clusters").await == Some(0)
        })
        .await,
        "a vanished service must not leave a warming cluster"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_weights_split_traffic() {
    let (mesh, egress) = mesh_with_orders("  - service: payments\n").await;
    let (a, b) = (upstream("heavy").await, upstream("light").await);
    mesh.register("heavy", "payments", a, &[], 300).await;
    mesh.register("light", "payments", b, &[], 100).await;
    // Both instances in the config before counting.
    assert!(
        poll(|| async { via_egress(&mesh.http, egress, "payments", None).await.1 == "light" })
            .await
    );
    let mut heavy = 0;
    for _ in 0..1000 {
        let (status, body) = via_egress(&mesh.http, egress, "payments", None).await;
        assert_eq!(status, 200);
        heavy += usize::from(body == "heavy");
    }
    // 3:1 → 750 expected; ±5 percentage points.
    assert!((700..=800).contains(&heavy), "heavy got {heavy} of 1000");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_preferred_with_fallback_and_tags_selected_without() {
    let (mesh, egress) = mesh_with_orders("  - service: payments\n").await;
    let (stable, canary, blue) = (
        upstream("stable").await,
        upstream("canary").await,
        upstream("blue").await,
    );
    mesh.register("stable", "payments", stable, &[], 1).await;
    mesh.register("canary", "payments", canary, &["canary"], 1)
        .await;
    mesh.register("blue", "payments", blue, &["blue"], 1).await;
    let canary_header = Some(("x-canary", "1"));
    assert!(
        poll(|| async {
            via_egress(
                &mesh.http,
                egress,
                "payments",
                Some(("x-service-tag", "blue")),
            )
            .await
            .0 == 200
        })
        .await
    );
    for _ in 0..50 {
        assert_eq!(
            via_egress(&mesh.http, egress, "payments", canary_header).await,
            (200, "canary".into())
        );
        assert_eq!(
            via_egress(
                &mesh.http,
                egress,
                "payments",
                Some(("x-service-tag", "blue"))
            )
            .await,
            (200, "blue".into())
        );
    }
    // Unknown tag: no fallback.
    let (status, body) = via_egress(
        &mesh.http,
        egress,
        "payments",
        Some(("x-service-tag", "red")),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // Canary gone: x-canary falls back to the others.
    mesh.deregister("canary").await;
    assert!(
        poll(|| async {
            let (s, b) = via_egress(&mesh.http, egress, "payments", canary_header).await;
            s == 200 && b != "canary"
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_is_retried_on_another_instance() {
    let (mesh, egress) = mesh_with_orders("  - service: payments\n").await;
    let alive = upstream("alive").await;
    let dead = free_port(); // nothing listens here
    mesh.register("alive", "payments", alive, &[], 1).await;
    mesh.register("dead", "payments", dead, &[], 1).await;
    let admin_port = mesh.sidecar_admin("orders-1");
    assert!(
        poll(|| async {
            envoy_stat(&mesh.http, admin_port, "cluster.payments.membership_total").await == Some(2)
        })
        .await
    );
    for i in 0..100 {
        let (status, body) = via_egress(&mesh.http, egress, "payments", None).await;
        assert_eq!((status, body.as_str()), (200, "alive"), "request {i}");
    }
    let retries = envoy_stat(&mesh.http, admin_port, "cluster.payments.upstream_rq_retry")
        .await
        .unwrap_or(0);
    assert!(
        retries > 0,
        "the dead instance must have been tried and retried"
    );
}
