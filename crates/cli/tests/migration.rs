//! The migration view (`GET /api/migration`) against a mesh with known counts: services with
//! every instance behind a sidecar, with some, and with none, and egress flags that send one
//! of two instances' calls through Envoy.

mod support;

use serde_json::json;
use support::{Mesh, caller, free_port, poll, upstream};

const TOKEN: &str = "migration-token";

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_view_counts_sidecars_ingress_and_egress_decisions() {
    let mut mesh = Mesh::start(|c, _| c.token = Some(TOKEN.into())).await;
    // payments: one instance behind a sidecar, one registered by the app itself.
    let app = upstream("payments-app").await;
    let payments = format!(
        "service: payments\nport: {app}\ningress: {{ port: {} }}\n",
        free_port()
    );
    mesh.sidecar("payments-1", &payments, 1).await;
    let direct = upstream("payments-2").await;
    mesh.register("payments-2", "payments", direct, &[], 1)
        .await;
    // orders: both instances behind sidecars.
    for id in ["orders-1", "orders-2"] {
        let d = caller(
            "orders",
            free_port(),
            free_port(),
            free_port(),
            "  - service: payments\n",
        );
        mesh.sidecar(id, &d, 2).await;
    }
    // legacy: no sidecar at all.
    for id in ["legacy-1", "legacy-2"] {
        let port = upstream(id).await;
        mesh.register(id, "legacy", port, &[], 1).await;
    }
    // orders-1 alone sends its calls to payments through Envoy.
    let flags = json!({
        "services": { "orders": { "dependencies": { "payments": {
            "proxy": false,
            "overrides": [ { "instance": "orders-1", "proxy": true } ]
        } } } }
    });
    mesh.put_rollout(&flags.to_string()).await;

    let complete =
        poll(|| async { mesh.admin_json("/api/migration").await["totals"]["instances"] == 6 })
            .await;
    assert!(
        complete,
        "six instances: {}",
        mesh.admin_json("/api/migration").await
    );
    let view = mesh.admin_json("/api/migration").await;
    assert_eq!(
        view["totals"],
        json!({
            "services": 3,
            "ingress_via_envoy": 1,
            "ingress_mixed": 1,
            "ingress_direct": 1,
            "using_egress": 1,
            "instances": 6,
            "instances_with_sidecar": 3,
        }),
        "{view:#}"
    );
    let services = &view["services"];
    assert_eq!(
        services["payments"],
        json!({
            "instances": 2, "with_sidecar": 1, "without_sidecar": 1, "ingress": "mixed",
            "egress_default": { "proxy": 0, "direct": 1 }, "egress": []
        }),
        "{view:#}"
    );
    assert_eq!(
        services["orders"],
        json!({
            "instances": 2, "with_sidecar": 2, "without_sidecar": 0, "ingress": "envoy",
            "egress_default": { "proxy": 0, "direct": 2 },
            "egress": [ { "dependency": "payments", "proxy": 1, "direct": 1 } ]
        }),
        "{view:#}"
    );
    assert_eq!(
        services["legacy"],
        json!({
            "instances": 2, "with_sidecar": 0, "without_sidecar": 2, "ingress": "direct",
            "egress_default": { "proxy": 0, "direct": 0 }, "egress": []
        }),
        "{view:#}"
    );
    assert!(
        view["flags_version"].as_u64().is_some_and(|v| v > 0),
        "{view:#}"
    );
}
