//! Proxyless gRPC clients (node metadata `proxyless: grpc`) get gRPC's resources, grouped
//! apart from sidecars with the same descriptor, and follow the registry: new instances
//! reach their endpoints, a canary appears with its cluster and route.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshplane_model::ServiceName;
use meshplane_model::identity::MTLS_META_KEY;
use meshplane_model::node_metadata::{
    CERTIFICATE_PROVIDER_KEY, GRPC_CERTIFICATE_PROVIDER, PROXYLESS_GRPC,
};
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
    // Bounded: only names that could be services get a listener, only the reasons those
    // listeners route to get a cluster (a cluster the group merely lacks gets nothing), each
    // built once, and at most 256 names per type.
    assert!(
        snapshot
            .fallback(ResourceType::Listener, "not a name!")
            .is_none()
    );
    assert!(
        snapshot
            .fallback(ResourceType::Cluster, "canary:payments")
            .is_none()
    );
    assert!(std::sync::Arc::ptr_eq(
        &ledger,
        &snapshot
            .fallback(ResourceType::Listener, "ledger")
            .expect("again")
    ));
    let answered = (0..300)
        .filter(|i| {
            snapshot
                .fallback(ResourceType::Listener, &format!("svc-{i}"))
                .is_some()
        })
        .count();
    assert_eq!(answered, 255, "256 names per type, `ledger` being one");
    assert!(
        snapshot
            .fallback(ResourceType::Listener, "ledger")
            .is_some()
    );
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

/// `node` with `node.metadata.certificate_provider: name`.
fn with_certificate_provider(mut node: Node, name: &str) -> Node {
    use envoy_types::pb::google::protobuf::{Value, value::Kind};
    if let Some(m) = node.metadata.as_mut() {
        m.fields.insert(
            CERTIFICATE_PROVIDER_KEY.into(),
            Value {
                kind: Some(Kind::StringValue(name.into())),
            },
        );
    }
    node
}

fn has_transport_socket(cache: &SnapshotCache, key: &GroupKey, name: &str) -> bool {
    let snapshot = cache.snapshot(key).expect("published");
    let resource = snapshot.get(ResourceType::Cluster, name).expect("CDS");
    Cluster::decode(&*resource.to_any().value)
        .expect("a cluster")
        .transport_socket
        .is_some()
}

/// A proxyless client with a certificate (`certificate_provider: meshplane`) is grouped
/// apart from a plaintext one and gets the clusters with mTLS once every instance takes it;
/// the plaintext client's clusters never change.
#[test]
fn proxyless_clients_with_a_certificate_get_mtls_clusters() {
    let mut h = Harness::new(MeshOptions::default());
    let source = h.source.clone();
    let strict = |id: &str, port: u16| {
        let mut i = mk_instance("payments", id, port);
        i.meta.insert(MTLS_META_KEY.into(), "strict".into());
        i
    };
    let service = |instances: Vec<meshplane_model::Instance>| RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new("payments").expect("name"),
        instances,
    };
    h.apply(service(vec![
        strict("p1", 10),
        mk_instance("payments", "p2", 12),
    ]));
    let (grouper, cache) = (&h.grouper, h.cache.clone());
    let peer = PeerInfo::default();
    let plain = grouper
        .group(
            &proxyless(mk_node("orders-1", ORDERS), PROXYLESS_GRPC),
            &peer,
        )
        .expect("valid");
    let mtls = grouper
        .group(
            &with_certificate_provider(
                proxyless(mk_node("orders-2", ORDERS), PROXYLESS_GRPC),
                GRPC_CERTIFICATE_PROVIDER,
            ),
            &peer,
        )
        .expect("valid");
    assert_ne!(plain, mtls);
    assert!(mtls.as_str().contains("-grpc-mtls-"), "{mtls}");
    // Another provider name would be NACKed by gRPC, and an Envoy has none.
    for node in [
        with_certificate_provider(
            proxyless(mk_node("orders-3", ORDERS), PROXYLESS_GRPC),
            "other",
        ),
        with_certificate_provider(mk_node("orders-4", ORDERS), GRPC_CERTIFICATE_PROVIDER),
    ] {
        let err = grouper.group(&node, &peer).expect_err("refused");
        assert!(
            matches!(&err, GroupError::InvalidArgument(m) if m.contains("node.metadata.certificate_provider")),
            "{err:?}"
        );
    }
    let _subscribed = (cache.subscribe(&plain), cache.subscribe(&mtls));
    h.translator.on_demand(&plain);
    h.translator.on_demand(&mtls);
    // p2 has no sidecar: plaintext for both, same routes and endpoints.
    assert!(!has_transport_socket(&cache, &mtls, "payments"));
    let snapshot = |key: &GroupKey| cache.snapshot(key).expect("published");
    for kind in [
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Endpoint,
    ] {
        let versions = |key: &GroupKey| -> Vec<(String, String)> {
            snapshot(key)
                .resources(kind)
                .iter()
                .map(|(n, r)| (n.clone(), r.version().to_owned()))
                .collect()
        };
        assert_eq!(versions(&plain), versions(&mtls), "{kind:?} shared");
    }

    // Every instance behind a strict sidecar: mTLS for the client with a certificate only.
    h.apply(service(vec![strict("p1", 10), strict("p2", 12)]));
    assert!(has_transport_socket(&cache, &mtls, "payments"));
    assert!(!has_transport_socket(&cache, &plain, "payments"));
    assert_eq!(ports(&cache, &mtls, "payments"), vec![10, 12]);
}
