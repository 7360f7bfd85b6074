//! Proxyless gRPC clients (node metadata `proxyless: grpc`) get gRPC's resources, grouped
//! apart from sidecars with the same descriptor, and follow the registry: new instances
//! reach their endpoints, a canary appears with its cluster and route.

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshplane_model::ServiceName;
use meshplane_model::node_metadata::PROXYLESS_GRPC;
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_translate::MeshOptions;
use meshplane_xds::{GroupError, GroupKey, NodeGrouper, PeerInfo, ResourceType, SnapshotCache};
use prost::Message;

use super::tests::{Harness, ORDERS, mk_instance, mk_node, proxyless};

fn payments(source: &SourceId, instances: &[(&str, u16, &[&str])]) -> RegistryEvent {
    RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new("payments").expect("name"),
        instances: instances
            .iter()
            .map(|(id, port, tags)| {
                let mut i = mk_instance("payments", id, *port);
                i.tags = tags.iter().map(|t| (*t).to_owned()).collect();
                i
            })
            .collect(),
    }
}

fn names(cache: &SnapshotCache, key: &GroupKey, kind: ResourceType) -> Vec<String> {
    let snapshot = cache.snapshot(key).expect("published");
    snapshot.resources(kind).keys().cloned().collect()
}

fn ports(cache: &SnapshotCache, key: &GroupKey, name: &str) -> Vec<u32> {
    let snapshot = cache.snapshot(key).expect("published");
    let resource = snapshot.get(ResourceType::Endpoint, name).expect("EDS");
    let cla = ClusterLoadAssignment::decode(&*resource.to_any().value).expect("CLA");
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter_map(|e| match &e.host_identifier {
            Some(
                envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) => ep.address.as_ref(),
            _ => None,
        })
        .filter_map(|a| match &a.address {
            Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s)) => {
                match s.port_specifier {
                    Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => Some(p),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

#[test]
fn proxyless_clients_get_grpc_resources_and_follow_the_registry() {
    let mut h = Harness::new(MeshOptions::default());
    let source = h.source.clone();
    h.apply(payments(&source, &[("p1", 10, &[])]));
    let (grouper, cache) = (&h.grouper, h.cache.clone());

    let peer = PeerInfo::default();
    let sidecar = grouper
        .group(&mk_node("orders-1", ORDERS), &peer)
        .expect("valid");
    let client = grouper
        .group(
            &proxyless(mk_node("orders-2", ORDERS), PROXYLESS_GRPC),
            &peer,
        )
        .expect("valid");
    assert_ne!(
        sidecar, client,
        "same descriptor, other resources: other group"
    );
    assert!(client.as_str().contains("-grpc-"), "{client}");
    let err = grouper
        .group(&proxyless(mk_node("orders-3", ORDERS), "java"), &peer)
        .expect_err("unknown kind");
    assert!(
        matches!(&err, GroupError::InvalidArgument(m) if m.contains("node.metadata.proxyless")),
        "{err:?}"
    );
    let _subscribed = (cache.subscribe(&sidecar), cache.subscribe(&client));
    h.translator.on_demand(&sidecar);
    h.translator.on_demand(&client);
    assert_eq!(
        names(&cache, &client, ResourceType::Listener),
        vec!["payments"]
    );
    assert_eq!(
        names(&cache, &client, ResourceType::Route),
        vec!["grpc:payments"]
    );
    assert_eq!(
        names(&cache, &client, ResourceType::Cluster),
        vec!["payments"]
    );
    assert_eq!(
        names(&cache, &sidecar, ResourceType::Listener),
        vec!["egress", "ingress"],
        "the sidecar is unaffected"
    );
    // A target that is not a dependency gets a listener that refuses, routed to a cluster
    // named with the reason (answered for whatever name the client asks); a sidecar asks
    // for every listener and cluster at once and gets no such answers.
    let snapshot = cache.snapshot(&client).expect("published");
    let ledger = snapshot
        .fallback(ResourceType::Listener, "ledger")
        .expect("a listener for an undeclared target");
    assert_eq!(ledger.name(), "ledger");
    let reason = "meshplane: `ledger` is not a dependency of `orders`; declare it under `dependencies` in its meshplane.yaml";
    let cluster = snapshot
        .fallback(ResourceType::Cluster, reason)
        .expect("its cluster");
    assert_eq!(cluster.name(), reason);
    let sidecar_snapshot = cache.snapshot(&sidecar).expect("published");
    assert!(
        sidecar_snapshot
            .fallback(ResourceType::Listener, "ledger")
            .is_none()
    );

    // A new instance reaches the client's endpoints.
    h.apply(payments(&source, &[("p1", 10, &[]), ("p2", 12, &[])]));
    assert_eq!(ports(&cache, &client, "payments"), vec![10, 12]);

    // A canary appears: its cluster, endpoints and route.
    h.apply(payments(
        &source,
        &[("p1", 10, &[]), ("p2", 12, &[]), ("p3", 14, &["canary"])],
    ));
    assert_eq!(
        names(&cache, &client, ResourceType::Cluster),
        vec!["canary:payments", "payments"]
    );
    assert_eq!(ports(&cache, &client, "canary:payments"), vec![14]);
    assert_eq!(ports(&cache, &client, "payments"), vec![10, 12, 14]);

    // And leaves.
    h.apply(payments(&source, &[("p2", 12, &[])]));
    assert_eq!(
        names(&cache, &client, ResourceType::Cluster),
        vec!["payments"]
    );
    assert_eq!(ports(&cache, &client, "payments"), vec![12]);
}
