//! One control plane, proxies in several datacenters: each gets its own datacenter as
//! priority 0, groups and endpoints are per datacenter and shared within one.

use std::sync::Arc;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshplane_model::ServiceName;
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_translate::MeshOptions;
use meshplane_xds::{GroupError, GroupKey, NodeGrouper, PeerInfo, ResourceType, SnapshotCache};
use prost::Message;

use super::tests::{Harness, ORDERS, mk_instance, mk_node, mk_node_in};
use super::{DescriptorGrouper, Groups, Translator};

/// `payments` with one instance in each of dc1, dc2 and dc3.
fn mk_payments(source: &SourceId) -> RegistryEvent {
    let instances = ["dc1", "dc2", "dc3"]
        .iter()
        .enumerate()
        .map(|(at, dc)| {
            let mut i = mk_instance("payments", &format!("p-{dc}"), 10 + at as u16);
            i.locality.datacenter = (*dc).into();
            i
        })
        .collect();
    RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new("payments").expect("name"),
        instances,
    }
}

/// The datacenters of a group's `payments` endpoints, by priority.
fn payments_priorities(cache: &SnapshotCache, key: &GroupKey) -> Vec<(u32, String)> {
    let snapshot = cache.snapshot(key).expect("published");
    let resource = snapshot
        .get(ResourceType::Endpoint, "payments")
        .expect("payments endpoints");
    let any = resource.to_any();
    let cla = ClusterLoadAssignment::decode(&*any.value).expect("a ClusterLoadAssignment");
    cla.endpoints
        .iter()
        .map(|e| {
            let dc = e.locality.as_ref().map(|l| l.region.clone());
            (e.priority, dc.unwrap_or_default())
        })
        .collect()
}

#[test]
fn proxies_of_one_service_in_two_datacenters_get_their_own_priorities() {
    let mut h = Harness::new(MeshOptions {
        datacenter: "dc1".into(),
        datacenter_order: vec!["dc3".into()],
        ..MeshOptions::default()
    });
    let (source, cache) = (h.source.clone(), h.cache.clone());
    h.apply(mk_payments(&source));

    let peer = PeerInfo::default();
    let group = |node| h.grouper.group(&node, &peer).expect("valid");
    let unnamed = group(mk_node("orders-1", ORDERS));
    let dc1 = group(mk_node_in("orders-2", ORDERS, "dc1"));
    let dc2 = group(mk_node_in("orders-3", ORDERS, "dc2"));
    assert_eq!(
        unnamed, dc1,
        "a proxy naming no datacenter is in the control plane's"
    );
    assert_ne!(dc1, dc2, "one service in two datacenters: two groups");
    let _subscribed = (cache.subscribe(&dc1), cache.subscribe(&dc2));
    h.translator.on_demand(&dc1);
    h.translator.on_demand(&dc2);

    let expect = |dcs: [&str; 3]| -> Vec<(u32, String)> {
        dcs.iter()
            .enumerate()
            .map(|(p, dc)| (p as u32, (*dc).to_owned()))
            .collect()
    };
    assert_eq!(
        payments_priorities(&cache, &dc1),
        expect(["dc1", "dc3", "dc2"])
    );
    assert_eq!(
        payments_priorities(&cache, &dc2),
        expect(["dc2", "dc3", "dc1"])
    );

    // An endpoint change reaches both datacenters, each with its own priorities.
    let mut moved = mk_payments(&source);
    if let RegistryEvent::Service { instances, .. } = &mut moved {
        instances.retain(|i| i.locality.datacenter != "dc3");
    }
    h.apply(moved);
    assert_eq!(
        payments_priorities(&cache, &dc1),
        vec![(0, "dc1".into()), (1, "dc2".into())]
    );
    assert_eq!(
        payments_priorities(&cache, &dc2),
        vec![(0, "dc2".into()), (1, "dc1".into())]
    );
}

#[test]
fn endpoints_are_shared_within_a_datacenter_only() {
    const WEB_TO_PAYMENTS: &str = "service: web\nport: 1\ningress: { port: 2 }\negress: { port: 3 }\ndependencies: [{ service: payments }]\n";
    let mut h = Harness::new(MeshOptions::default());
    let (source, cache) = (h.source.clone(), h.cache.clone());
    h.apply(mk_payments(&source));
    let peer = PeerInfo::default();
    let group = |node| h.grouper.group(&node, &peer).expect("valid");
    let orders_dc2 = group(mk_node_in("orders-1", ORDERS, "dc2"));
    let web_dc2 = group(mk_node_in("web-1", WEB_TO_PAYMENTS, "dc2"));
    let orders_dc1 = group(mk_node_in("orders-2", ORDERS, "dc1"));
    let keys = [&orders_dc2, &web_dc2, &orders_dc1];
    let _subscribed: Vec<_> = keys.iter().map(|k| cache.subscribe(k)).collect();
    for key in keys {
        h.translator.on_demand(key);
    }
    let endpoints = |key: &GroupKey| {
        cache
            .snapshot(key)
            .and_then(|s| s.get(ResourceType::Endpoint, "payments").cloned())
            .expect("payments endpoints")
    };
    let cluster = |key: &GroupKey| {
        cache
            .snapshot(key)
            .and_then(|s| s.get(ResourceType::Cluster, "payments").cloned())
            .expect("payments cluster")
    };
    assert!(
        Arc::ptr_eq(&endpoints(&orders_dc2), &endpoints(&web_dc2)),
        "two groups of one datacenter share the service's endpoints"
    );
    assert_ne!(
        endpoints(&orders_dc2).version(),
        endpoints(&orders_dc1).version()
    );
    assert!(
        Arc::ptr_eq(&cluster(&orders_dc2), &cluster(&orders_dc1)),
        "the cluster is the same in every datacenter"
    );
}

#[test]
fn a_zone_that_is_not_a_datacenter_name_is_refused() {
    let grouper = DescriptorGrouper::new(Groups::default(), Arc::new(MeshOptions::default()));
    match grouper.group(
        &mk_node_in("orders-1", ORDERS, "dc 1/../x"),
        &PeerInfo::default(),
    ) {
        Err(GroupError::InvalidArgument(m)) => {
            assert!(
                m.contains("not a datacenter name") && m.contains("--datacenter"),
                "{m}"
            )
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[test]
fn endpoints_are_built_only_for_datacenters_with_proxies() {
    let mut h = Harness::new(MeshOptions::default());
    let (source, cache) = (h.source.clone(), h.cache.clone());
    h.apply(mk_payments(&source));
    let peer = PeerInfo::default();
    let dc1 = h
        .grouper
        .group(&mk_node_in("orders-1", ORDERS, "dc1"), &peer)
        .expect("valid");
    let dc2 = h
        .grouper
        .group(&mk_node_in("orders-2", ORDERS, "dc2"), &peer)
        .expect("valid");
    let payments = ServiceName::new("payments").expect("name");
    let _dc1_rx = cache.subscribe(&dc1);
    h.translator.on_demand(&dc1);
    let built = |t: &Translator| {
        t.endpoint_datacenters(&payments)
            .into_iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        built(&h.translator),
        ["dc1"],
        "dc3 has instances but no proxies"
    );
    let dc2_rx = cache.subscribe(&dc2);
    h.translator.on_demand(&dc2);
    assert_eq!(built(&h.translator), ["dc1", "dc2"]);
    // dc2's last proxy leaves: its endpoints are forgotten with its group.
    drop(dc2_rx);
    h.translator.prune();
    assert_eq!(built(&h.translator), ["dc1"]);
}
