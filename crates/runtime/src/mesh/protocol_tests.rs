//! A service's registered protocol (`Meta.protocol`) reaches its callers' clusters and
//! routes: a registry change that only changes it republishes the shared cluster in every
//! group that depends on the service, named or wildcard, and their egress routes (a service
//! reached over HTTP/2 has twin routes for gRPC calls carrying a deadline).

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshplane_model::registration::{PROTOCOL_META_KEY, SIDECAR_META_KEY};
use meshplane_model::{Instance, ServiceName};
use meshplane_registry::{RegistryEvent, SourceId};
use meshplane_translate::MeshOptions;
use meshplane_xds::{GroupKey, NodeGrouper, PeerInfo, ResourceType, SnapshotCache};
use prost::Message;

use super::tests::{BATCH, Harness, ORDERS, mk_instance, mk_node};

fn payments(source: &SourceId, protocols: &[&str]) -> RegistryEvent {
    let instances: Vec<Instance> = protocols
        .iter()
        .enumerate()
        .map(|(at, protocol)| {
            let mut i = mk_instance("payments", &format!("p{at}"), 10 + at as u16);
            i.meta.insert(SIDECAR_META_KEY.into(), "true".into());
            i.meta.insert(PROTOCOL_META_KEY.into(), (*protocol).into());
            i
        })
        .collect();
    RegistryEvent::Service {
        source: source.clone(),
        name: ServiceName::new("payments").expect("name"),
        instances,
    }
}

/// Whether a group's `payments` cluster speaks HTTP/2 (its protocol options name it).
fn speaks_http2(cache: &SnapshotCache, key: &GroupKey) -> bool {
    let snapshot = cache.snapshot(key).expect("published");
    let resource = snapshot
        .get(ResourceType::Cluster, "payments")
        .expect("payments cluster");
    let cluster = Cluster::decode(&*resource.to_any().value).expect("a Cluster");
    let options = &cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options,
    };
    let options = HttpProtocolOptions::decode(&*options.value).expect("options");
    matches!(
        options.upstream_protocol_options,
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)
                ),
            }
        ))
    )
}

/// Whether a group's egress routes have the twin route of gRPC calls carrying a deadline
/// (matched on the `grpc-timeout` header).
fn has_grpc_twin(cache: &SnapshotCache, key: &GroupKey) -> bool {
    let snapshot = cache.snapshot(key).expect("published");
    let routes = snapshot
        .get(ResourceType::Route, "egress")
        .expect("egress routes");
    let bytes = routes.to_any().value.clone();
    bytes
        .windows(b"grpc-timeout".len())
        .any(|w| w == b"grpc-timeout")
}

#[test]
fn a_protocol_change_in_the_registry_reaches_every_callers_cluster() {
    let mut h = Harness::new(MeshOptions {
        allow_wildcard_dependencies: [ServiceName::new("batch").expect("name")].into(),
        ..MeshOptions::default()
    });
    let (source, cache) = (h.source.clone(), h.cache.clone());
    h.apply(payments(&source, &["http1", "http1"]));

    let peer = PeerInfo::default();
    let orders = h
        .grouper
        .group(&mk_node("orders-1", ORDERS), &peer)
        .expect("valid");
    let batch = h
        .grouper
        .group(&mk_node("batch-1", BATCH), &peer)
        .expect("valid");
    let _subscribed = (cache.subscribe(&orders), cache.subscribe(&batch));
    h.translator.on_demand(&orders);
    h.translator.on_demand(&batch);
    for key in [&orders, &batch] {
        assert!(!speaks_http2(&cache, key), "http1 instances: HTTP/1.1");
        assert!(!has_grpc_twin(&cache, key), "no gRPC twins for HTTP/1.1");
    }

    // A rollout to gRPC: one instance switched, one not (both behind sidecars): HTTP/2.
    h.apply(payments(&source, &["grpc", "http1"]));
    for key in [&orders, &batch] {
        assert!(speaks_http2(&cache, key), "the rollout reaches {key}");
        assert!(has_grpc_twin(&cache, key), "and its routes: {key}");
    }
    // An instance without a protocol (a sidecar from before protocols) joins: HTTP/1.1,
    // which it can take.
    let mut event = payments(&source, &["grpc", "grpc"]);
    if let RegistryEvent::Service { instances, .. } = &mut event {
        let mut old = mk_instance("payments", "old", 30);
        old.meta.insert(SIDECAR_META_KEY.into(), "true".into());
        instances.push(old);
    }
    h.apply(event);
    for key in [&orders, &batch] {
        assert!(!speaks_http2(&cache, key), "{key} falls back to HTTP/1.1");
        assert!(!has_grpc_twin(&cache, key), "{key}'s twins go with it");
    }
}
