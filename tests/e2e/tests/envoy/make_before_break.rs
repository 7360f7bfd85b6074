//! Make-before-break: moving a route to a new cluster, and removing the old cluster in
//! the same snapshot, never fails a request.

use meshplane_e2e::{CONVERGE, Flavour, Load, Upstream, egress, eventually};

use crate::{NODE, SERVICE, Web, all_acked};

/// Route swaps per test: each is a fresh chance to catch a window with a missing cluster.
const SWAPS: usize = 4;

async fn route_swap_never_fails_a_request(flavour: Flavour) {
    let web = Web::start(flavour).await;
    let payments_2 = Upstream::start("payments-2").await.expect("start upstream");
    let load = Load::start(&web.client, "payments", 4);
    load.wait_more_ok(20).await.expect("traffic flows");

    let mut old = "payments".to_owned();
    for swap in 1..=SWAPS {
        // Alternate between the two upstreams so each swap is visible in the replies.
        let upstream = if swap % 2 == 1 {
            &payments_2
        } else {
            &web.payments_1
        };
        let cluster = format!("payments-v{swap}");
        web.cp
            .publish(
                SERVICE,
                egress(
                    web.port,
                    &[("payments", &cluster)],
                    &[(&cluster, &[upstream.port()])],
                ),
            )
            .expect("publish");
        web.client
            .wait_served_by("payments", upstream.name())
            .await
            .expect("traffic moves to the new cluster");
        // The old cluster is removed once nothing routes to it.
        let what = format!("only cluster {cluster} left (was {old})");
        eventually(&what, CONVERGE, || async {
            let clusters = web
                .envoy
                .dynamic_clusters()
                .await
                .map_err(|e| e.to_string())?;
            if clusters.active == [cluster.as_str()] && clusters.warming.is_empty() {
                Ok(())
            } else {
                Err(format!("{clusters:?}"))
            }
        })
        .await
        .expect("old cluster removed");
        load.wait_more_ok(20).await.expect("traffic flows");
        old = cluster;
    }
    web.cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");

    let report = load.stop().await;
    let why = web
        .envoy
        .stats_containing(&["no_cluster", "no_route", "none_healthy", "upstream_rq_503"])
        .await
        .expect("stats");
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during route swaps: {:?}; Envoy's counters: {why:?}",
        report.failures.len(),
        report.failures.len() as u64 + report.ok(),
        report.failures
    );
    assert_eq!(
        report.ok_by_upstream.len(),
        2,
        "both upstreams served: {report:?}"
    );
}

crate::both_flavours!(route_swap_never_fails_a_request);
