//! Restarting the control plane: Envoy keeps serving while it is down, reconnects to the
//! new instance, and is sent nothing it already has.

use meshplane_e2e::{ControlPlane, Flavour, Load, Upstream, egress};
use meshplane_xds::{ResourceType, SnapshotCache};

use crate::{NODE, SERVICE, Web, all_acked, responses};

/// Envoy's counters of accepted updates: they must not move when nothing is re-sent.
const UPDATE_STATS: [&str; 3] = [
    "cluster_manager.cds.update_success",
    "listener_manager.lds.update_success",
    "http.egress.rds.egress-routes.update_success",
];

async fn restart_keeps_serving_and_resends_nothing(flavour: Flavour) {
    let Web {
        cp,
        envoy,
        client,
        port,
        payments_1,
    } = Web::start(flavour).await;
    cp.wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
    let routes = [("payments", "payments")];
    let resources = egress(port, &routes, &[("payments", &[payments_1.port()])]);
    let stats = envoy.stats().await.expect("stats");
    let updates_before: Vec<_> = UPDATE_STATS
        .iter()
        .map(|s| stats.get(*s).copied())
        .collect();
    assert!(
        updates_before.iter().all(Option::is_some),
        "{updates_before:?}"
    );

    let load = Load::start(&client, "payments", 2);
    load.wait_more_ok(10).await.expect("traffic flows");

    // Stop: streams are ended and the port released.
    let addr = cp.addr();
    cp.stop().await.expect("the control plane drains");
    envoy
        .wait_stat("control_plane.connected_state", 0)
        .await
        .expect("Envoy notices the control plane is gone");
    load.wait_more_ok(50)
        .await
        .expect("Envoy keeps serving while the control plane is down");

    // A new instance on the same port, with a fresh cache holding the same snapshot.
    let cache = SnapshotCache::new();
    let cp = ControlPlane::start_on(addr, cache)
        .await
        .expect("restart on the same port");
    assert!(cp.publish(SERVICE, resources).expect("publish"));
    cp.wait_for_proxy(NODE, "Envoy reconnected", |_| Ok(()))
        .await
        .expect("Envoy reconnects");
    envoy
        .wait_stat("control_plane.connected_state", 1)
        .await
        .expect("Envoy reports itself connected");
    // A SotW proxy reports one EDS version, which cannot say which assignments it kept: its
    // endpoints are sent once more (identical; Envoy re-creates nothing).
    let endpoints_again = u64::from(flavour == Flavour::Sotw);
    if endpoints_again > 0 {
        cp.wait_for_proxy(NODE, "endpoints sent again and ACKed", |s| {
            match s.type_status(ResourceType::Endpoint).responses {
                0 => Err("no EDS response yet".into()),
                _ => all_acked(s),
            }
        })
        .await
        .expect("EDS again");
    }

    // A change after the reconnect still reaches Envoy. Its ACK also proves the server has
    // handled every request Envoy sent on reconnecting (they precede it on the stream).
    let payments_2 = Upstream::start("payments-2").await.expect("start upstream");
    cp.publish(
        SERVICE,
        egress(port, &routes, &[("payments", &[payments_2.port()])]),
    )
    .expect("publish");
    client
        .wait_served_by("payments", "payments-2")
        .await
        .expect("a change after the restart reaches Envoy");
    let status = cp
        .wait_for_proxy(NODE, "every type ACKed", |s| {
            match s.type_status(ResourceType::Endpoint).responses {
                n if n <= endpoints_again => Err("no EDS response for the change yet".into()),
                _ => all_acked(s),
            }
        })
        .await
        .expect("ACKs");

    // Nothing Envoy already had was sent: no CDS, LDS or RDS response at all, and one EDS
    // response for the change (after SotW's resend).
    let sent = responses(&status);
    let expected = ResourceType::ALL.map(|t| {
        let eds = t == ResourceType::Endpoint;
        (t, u64::from(eds) * (1 + endpoints_again))
    });
    assert_eq!(
        sent,
        expected.into_iter().collect(),
        "responses after reconnect: {status:?}"
    );
    let stats = envoy.stats().await.expect("stats");
    let updates_after: Vec<_> = UPDATE_STATS
        .iter()
        .map(|s| stats.get(*s).copied())
        .collect();
    assert_eq!(
        updates_after, updates_before,
        "Envoy applied no CDS/LDS/RDS update"
    );

    // The new instance knows what Envoy has, so make-before-break still holds: moving the
    // route to a new cluster and removing the old one fails no request.
    cp.publish(
        SERVICE,
        egress(
            port,
            &[("payments", "payments-v2")],
            &[("payments-v2", &[payments_1.port()])],
        ),
    )
    .expect("publish");
    client
        .wait_served_by("payments", "payments-1")
        .await
        .expect("the route moves to payments-v2");
    load.wait_more_ok(20).await.expect("traffic flows");

    let report = load.stop().await;
    assert!(
        report.failures.is_empty(),
        "requests failed during or after the restart: {:?}",
        report.failures
    );
    assert!(report.ok() > 60, "{report:?}");
}

crate::both_flavours!(restart_keeps_serving_and_resends_nothing);
