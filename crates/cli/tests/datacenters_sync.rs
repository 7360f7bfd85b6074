//! Two datacenters on 127.0.0.1, each with its own control plane and embedded registry; dc1
//! follows dc2 (`--remote-datacenters`) through a fault-injecting proxy, and a real Envoy
//! sidecar in dc1 calls services that exist only in dc2.

mod support;

use std::time::{Duration, Instant};

use meshplane_test_support::fault::{Fault, FaultProxy};
use meshplane_test_support::{eventually, fault_window, hold};
use support::{Mesh, caller, free_port, upstream, via_egress};

/// A service registered only in dc2 is reachable from dc1 within this of its registration
/// (the registration's durable commit, dc1 learning it, translation, Envoy applying it).
const REACHABLE_WITHIN: Duration = Duration::from_secs(1);
/// Services registered in dc2 one after another, each timed.
const TIMED: [&str; 6] = ["svc-a", "svc-b", "svc-c", "svc-d", "svc-e", "svc-f"];
/// Registered in dc2 while the link is cut.
const DURING_CUT: &str = "svc-g";

async fn reachable(mesh: &Mesh, egress: u16, service: &str) -> bool {
    via_egress(&mesh.http, egress, service, None).await == (200, service.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn another_datacenters_services_are_reachable_within_a_second_and_kept_through_a_cut() {
    // How long dc1 keeps dc2's state without an answer; the cut lasts longer than that.
    let keep = fault_window().max(Duration::from_secs(3));
    let dc2 = Mesh::start(|c, _| c.datacenter = "dc2".into()).await;
    let link = FaultProxy::start(dc2.cp.admin_addr).await.expect("proxy");
    let link_addr = link.addr();
    let dc2_admin = dc2.cp.admin_addr;
    let mut dc1 = Mesh::start(move |c, _| {
        // dc2's control plane is a consistency peer too, reached directly (not through the
        // link that gets cut): compared on the state both hold, dc2's instances.
        c.peers = vec![format!("http://{dc2_admin}")];
        c.remote_datacenters = Some(format!("dc2=http://{link_addr}"));
        c.remote_keep_stale = format!("{}ms", keep.as_millis());
    })
    .await;
    let dependencies: String = TIMED
        .iter()
        .chain([&DURING_CUT])
        .map(|s| format!("  - service: {s}\n"))
        .collect();
    let egress = free_port();
    let descriptor = caller("orders", free_port(), free_port(), egress, &dependencies);
    dc1.sidecar("orders-dc1", &descriptor, 2).await;

    let mut took = Vec::new();
    for service in TIMED {
        let port = upstream(service).await;
        let started = Instant::now();
        dc2.register(&format!("{service}-1"), service, port, &[], 1)
            .await;
        eventually(
            &format!("{service}, registered in dc2, reachable from dc1"),
            REACHABLE_WITHIN,
            || reachable(&dc1, egress, service),
        )
        .await;
        took.push(started.elapsed());
    }
    took.sort();
    eprintln!(
        "dc2 registration → reachable through dc1's Envoy: {:?} (max {:?})",
        took,
        took.last()
    );

    let consistency = |dc1: &Mesh| {
        let (http, url) = (
            dc1.http.clone(),
            format!("http://{}/api/consistency", dc1.cp.admin_addr),
        );
        async move {
            let report: serde_json::Value = http
                .get(url)
                .send()
                .await
                .expect("consistency")
                .json()
                .await
                .expect("json");
            report
        }
    };
    let agreed = consistency(&dc1).await;
    assert_eq!(agreed["consistent"], true, "{agreed}");
    assert_eq!(agreed["peers"][0]["datacenter"], "dc2", "{agreed}");

    // The link between the datacenters cut: what dc1 knew of dc2 keeps working for `keep`,
    // a service registered in dc2 meanwhile is not seen.
    link.set(Fault::Drop);
    let cut = Instant::now();
    let late = upstream(DURING_CUT).await;
    dc2.register(&format!("{DURING_CUT}-1"), DURING_CUT, late, &[], 1)
        .await;
    let kept_for = keep.saturating_sub(cut.elapsed() + Duration::from_millis(500));
    hold(
        kept_for,
        "dc2's known services reachable, the new one not, during the cut",
        || async {
            reachable(&dc1, egress, "svc-a").await && !reachable(&dc1, egress, DURING_CUT).await
        },
    )
    .await;
    // Consistency sees what dc1 missed.
    let missed = consistency(&dc1).await;
    assert!(
        missed["peers"][0]["differences"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d
                == &serde_json::json!(format!(
                    "datacenter `dc2`, service `{DURING_CUT}`: only on the peer"
                )))),
        "{missed}"
    );
    // Then dc2 is dropped and shown so.
    eventually(
        "dc2 dropped once kept for --remote-keep-stale",
        keep + Duration::from_secs(5),
        || async { !reachable(&dc1, egress, "svc-a").await },
    )
    .await;
    let seen: serde_json::Value = dc1
        .http
        .get(format!("http://{}/api/datacenters", dc1.cp.admin_addr))
        .send()
        .await
        .expect("datacenters")
        .json()
        .await
        .expect("json");
    assert_eq!(seen["remote"][0]["state"], "dropped", "{seen}");

    // Repaired: everything converges, including what was registered during the cut.
    link.set(Fault::Pass);
    eventually(
        "dc2's services back after the repair",
        Duration::from_secs(10),
        || async {
            reachable(&dc1, egress, "svc-a").await && reachable(&dc1, egress, DURING_CUT).await
        },
    )
    .await;
}
