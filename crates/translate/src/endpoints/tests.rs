//! Priorities per proxy datacenter: order, per-service order, local-only pinning, spill-over
//! policy, and subset metadata on every priority.

use super::*;
use crate::{DEFAULT_OVERPROVISIONING_FACTOR, ServiceLocality};
use meshplane_model::{InstanceId, Locality as ModelLocality};

fn mk_name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid")
}

fn mk_instance(id: &str, dc: &str, tags: &[&str]) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: mk_name("payments"),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        port: 31001,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: Default::default(),
        weight: 10,
        health: Health::Passing,
        locality: ModelLocality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

/// One instance in each of dc1…dc4.
fn mk_spread() -> Vec<Instance> {
    ["dc4", "dc2", "dc1", "dc3"]
        .iter()
        .map(|dc| mk_instance(&format!("p-{dc}"), dc, &[]))
        .collect()
}

/// The datacenters of an assignment, by priority (checking priorities are 0, 1, 2…).
fn priorities(cla: &ClusterLoadAssignment) -> Vec<String> {
    cla.endpoints
        .iter()
        .enumerate()
        .map(|(at, e)| {
            assert_eq!(e.priority as usize, at, "priorities are dense, in order");
            e.locality
                .as_ref()
                .map(|l| l.region.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn the_proxy_datacenter_is_priority_zero_then_the_others_by_name() {
    let options = MeshOptions::default();
    let payments = mk_name("payments");
    for (proxy_dc, expected) in [
        ("dc1", ["dc1", "dc2", "dc3", "dc4"]),
        ("dc3", ["dc3", "dc1", "dc2", "dc4"]),
    ] {
        let cla = service_endpoints(&payments, &mk_spread(), proxy_dc, &options);
        assert_eq!(priorities(&cla), expected, "proxy in {proxy_dc}");
    }
    // A proxy in a datacenter without instances: every datacenter is a failover.
    let cla = service_endpoints(&payments, &mk_spread(), "dc9", &options);
    assert_eq!(priorities(&cla), ["dc1", "dc2", "dc3", "dc4"]);
}

#[test]
fn the_control_plane_order_ranks_the_other_datacenters() {
    let options = MeshOptions {
        datacenter_order: vec!["dc4".into(), "dc2".into()],
        ..Default::default()
    };
    let payments = mk_name("payments");
    let cla = service_endpoints(&payments, &mk_spread(), "dc1", &options);
    assert_eq!(
        priorities(&cla),
        ["dc1", "dc4", "dc2", "dc3"],
        "unlisted dc3 last"
    );
    // The proxy's own datacenter stays first even where the order lists it later.
    let cla = service_endpoints(&payments, &mk_spread(), "dc2", &options);
    assert_eq!(priorities(&cla), ["dc2", "dc4", "dc1", "dc3"]);
}

#[test]
fn a_service_order_replaces_the_control_plane_order_for_that_service_only() {
    let options = MeshOptions {
        datacenter_order: vec!["dc4".into()],
        service_localities: [(
            mk_name("payments"),
            ServiceLocality {
                datacenter_order: Some(vec!["dc3".into(), "dc2".into()]),
                local_only: false,
            },
        )]
        .into(),
        ..Default::default()
    };
    let cla = service_endpoints(&mk_name("payments"), &mk_spread(), "dc1", &options);
    assert_eq!(priorities(&cla), ["dc1", "dc3", "dc2", "dc4"]);
    let cla = service_endpoints(&mk_name("ledger"), &mk_spread(), "dc1", &options);
    assert_eq!(priorities(&cla), ["dc1", "dc4", "dc2", "dc3"]);
}

#[test]
fn a_local_only_service_never_leaves_the_proxy_datacenter() {
    let options = MeshOptions {
        service_localities: [(
            mk_name("payments"),
            ServiceLocality {
                datacenter_order: None,
                local_only: true,
            },
        )]
        .into(),
        ..Default::default()
    };
    let payments = mk_name("payments");
    let mut instances = mk_spread();
    for i in &mut instances {
        if i.locality.datacenter == "dc2" {
            i.health = Health::Critical;
        }
    }
    let cla = service_endpoints(&payments, &instances, "dc2", &options);
    assert_eq!(
        priorities(&cla),
        ["dc2"],
        "even with every local instance critical"
    );
    assert_eq!(cla.endpoints[0].lb_endpoints.len(), 1);
    let cla = service_endpoints(&payments, &instances, "dc9", &options);
    assert!(
        cla.endpoints.is_empty(),
        "no instance in the proxy's datacenter"
    );
}

#[test]
fn the_overprovisioning_factor_is_explicit() {
    let payments = mk_name("payments");
    let factor = |options: &MeshOptions| {
        service_endpoints(&payments, &mk_spread(), "dc1", options)
            .policy
            .and_then(|p| p.overprovisioning_factor)
            .map(|f| f.value)
    };
    assert_eq!(
        factor(&MeshOptions::default()),
        Some(DEFAULT_OVERPROVISIONING_FACTOR)
    );
    let gradual = MeshOptions {
        overprovisioning_factor: 140,
        ..Default::default()
    };
    assert_eq!(factor(&gradual), Some(140));
}

#[test]
fn tags_and_weights_are_on_every_priority() {
    // Envoy's subset load balancer keeps the priorities within each subset, so `x-canary`
    // and tag routes fail over too, provided remote endpoints carry the same metadata.
    let instances = vec![
        mk_instance("p-dc1", "dc1", &[]),
        mk_instance("p-dc2", "dc2", &["canary"]),
    ];
    let cla = service_endpoints(&mk_name("payments"), &instances, "dc1", &Default::default());
    let remote = &cla.endpoints[1].lb_endpoints[0];
    let tags = remote
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(LB_NAMESPACE))
        .and_then(|s| s.fields.get(TAGS_KEY))
        .and_then(|v| match &v.kind {
            Some(Kind::ListValue(l)) => Some(l.values.len()),
            _ => None,
        });
    assert_eq!(tags, Some(1), "the dc2 canary keeps its tag");
    assert_eq!(remote.load_balancing_weight.map(|w| w.value), Some(10));
}
