//! A snapshot Envoy rejects: the NACK is recorded with Envoy's message, the previous
//! config keeps serving, and nothing more is sent for that type until its content changes.

use meshplane_e2e::{Flavour, Upstream, egress};
use meshplane_xds::ResourceType;
use meshplane_xds::fixtures::mk_rejected_cluster;

use crate::{NODE, SERVICE, Web, all_acked};

async fn rejected_snapshot_is_not_resent(flavour: Flavour) {
    let web = Web::start(flavour).await;
    web.cp
        .wait_for_proxy(NODE, "every type ACKed", all_acked)
        .await
        .expect("ACKs");
    let routes = [("payments", "payments")];
    let cds_before = web.responses()[&ResourceType::Cluster];

    let with_broken = |ports: &[u16]| {
        let mut resources = egress(web.port, &routes, &[("payments", ports)]);
        resources.push(mk_rejected_cluster("broken"));
        resources
    };
    let first = [web.payments_1.port()];
    assert!(
        web.cp
            .publish(SERVICE, with_broken(&first))
            .expect("publish")
    );
    let status = web
        .cp
        .wait_for_proxy(NODE, "a CDS NACK", |s| {
            match &s.type_status(ResourceType::Cluster).last_nack {
                Some(_) => Ok(()),
                None => Err(format!("{:?}", s.type_status(ResourceType::Cluster))),
            }
        })
        .await
        .expect("Envoy rejects the broken cluster");
    let cds = status.type_status(ResourceType::Cluster);
    let nack = cds.last_nack.as_ref().expect("NACK recorded");
    assert!(
        nack.message.contains("not-an-ip"),
        "the NACK carries Envoy's reason: {nack:?}"
    );
    assert_eq!(cds.sent_version.as_deref(), Some(nack.version.as_str()));
    assert_ne!(cds.acked_version.as_deref(), Some(nack.version.as_str()));
    assert_eq!(cds.nacks, 1, "{cds:?}");
    let cds_rejected = cds.responses;
    assert_eq!(
        cds_rejected,
        cds_before + 1,
        "one CDS response carried the bad cluster"
    );

    // The previous configuration keeps serving.
    web.client
        .wait_served_by("payments", "payments-1")
        .await
        .expect("payments still served after the NACK");
    let clusters = web.envoy.dynamic_clusters().await.expect("config dump");
    assert_eq!(clusters.active, ["payments"], "{clusters:?}");

    // Publishing the same content again changes nothing.
    assert!(
        !web.cp
            .publish(SERVICE, with_broken(&first))
            .expect("publish")
    );

    // Unrelated changes (endpoints, then routes) reach Envoy, and CDS is not re-sent with
    // them.
    let payments_2 = Upstream::start("payments-2").await.expect("start upstream");
    let second = [payments_2.port()];
    assert!(
        web.cp
            .publish(SERVICE, with_broken(&second))
            .expect("publish")
    );
    web.client
        .wait_served_by("payments", "payments-2")
        .await
        .expect("the endpoint change reaches Envoy despite the rejected cluster");
    let more_routes = [("payments", "payments"), ("pay", "payments")];
    let mut resources = egress(web.port, &more_routes, &[("payments", &second)]);
    resources.push(mk_rejected_cluster("broken"));
    web.cp.publish(SERVICE, resources).expect("publish");
    web.client
        .wait_served_by("pay", "payments-2")
        .await
        .expect("the route change reaches Envoy despite the rejected cluster");
    let status = web.status();
    let cds = status.type_status(ResourceType::Cluster);
    assert_eq!(cds.responses, cds_rejected, "no CDS re-send: {status:?}");
    assert_eq!(cds.nacks, 1, "{cds:?}");

    // A good change to CDS is sent, ACKed, and clears the NACK.
    web.cp
        .publish(SERVICE, egress(web.port, &routes, &[("payments", &second)]))
        .expect("publish");
    let status = web
        .cp
        .wait_for_proxy(NODE, "the fixed CDS ACKed", |s| {
            let cds = s.type_status(ResourceType::Cluster);
            if cds.responses > cds_rejected {
                all_acked(s)
            } else {
                Err(format!("{cds:?}"))
            }
        })
        .await
        .expect("fixed CDS ACKed");
    let cds = status.type_status(ResourceType::Cluster);
    assert_eq!(cds.responses, cds_rejected + 1, "{cds:?}");
    assert!(cds.last_nack.is_none());
    web.client
        .wait_served_by("payments", "payments-2")
        .await
        .expect("still served");
}

crate::both_flavours!(rejected_snapshot_is_not_resent);

/// A rejected EDS cluster never gets its endpoints requested; later changes must not wait
/// for them (make-before-break waits only for clusters Envoy accepted).
mod rejected_eds_cluster {
    use meshplane_e2e::{Flavour, egress, rejected_eds_cluster};
    use meshplane_xds::ResourceType;

    use crate::{NODE, SERVICE, Web};

    async fn later_route_changes_still_apply(flavour: Flavour) {
        let web = Web::start(flavour).await;
        let port = web.payments_1.port();
        let mut resources = egress(
            web.port,
            &[("payments", "payments")],
            &[("payments", &[port])],
        );
        resources.extend(rejected_eds_cluster("broken"));
        web.cp.publish(SERVICE, resources).expect("publish");
        web.cp
            .wait_for_proxy(NODE, "a CDS NACK", |s| {
                match &s.type_status(ResourceType::Cluster).last_nack {
                    Some(_) => Ok(()),
                    None => Err(format!("{:?}", s.type_status(ResourceType::Cluster))),
                }
            })
            .await
            .expect("Envoy rejects the broken cluster");

        // An unrelated change that adds a cluster and moves the route to it.
        let mut resources = egress(
            web.port,
            &[("payments", "payments-v2")],
            &[("payments-v2", &[port])],
        );
        resources.extend(rejected_eds_cluster("broken"));
        web.cp.publish(SERVICE, resources).expect("publish");
        let what = "route moved to payments-v2 and payments removed";
        meshplane_e2e::eventually(what, meshplane_e2e::CONVERGE, || async {
            let clusters = web
                .envoy
                .dynamic_clusters()
                .await
                .map_err(|e| e.to_string())?;
            if clusters.active == ["payments-v2"] && clusters.warming.is_empty() {
                Ok(())
            } else {
                Err(format!("{clusters:?}"))
            }
        })
        .await
        .expect("the change applies despite the rejected cluster");
        web.client
            .wait_served_by("payments", "payments-1")
            .await
            .expect("served through payments-v2");
        let stats = web
            .envoy
            .stats_containing(&["no_cluster"])
            .await
            .expect("stats");
        assert_eq!(stats.get("http.egress.no_cluster"), Some(&0), "{stats:?}");
    }

    crate::both_flavours!(later_route_changes_still_apply);
}
