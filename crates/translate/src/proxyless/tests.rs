use super::*;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use meshplane_model::{Descriptor, Health, InstanceId, Locality as ModelLocality};

use crate::fixtures::{Fixture, name};
use crate::group_config;

fn mk_instance(id: &str, address: &str, dc: &str, tags: &[&str], weight: u32) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: name("payments"),
        node: "n1".into(),
        address: address.into(),
        port: 9000,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: Default::default(),
        weight,
        health: Health::Passing,
        locality: ModelLocality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

fn mk_group(yaml: &str) -> ProxyGroup {
    ProxyGroup {
        descriptor: Descriptor::from_yaml(yaml).expect("valid"),
        listen_address: "0.0.0.0".into(),
        datacenter: "dc1".into(),
        proxyless: true,
        proxyless_mtls: false,
    }
}

const CHECKOUT: &str = "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n";

fn hcm(l: &Listener) -> HttpConnectionManager {
    use prost::Message;
    let any = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .expect("an API listener");
    HttpConnectionManager::decode(any.value.as_slice()).expect("an HCM")
}

#[test]
fn only_declared_dependencies_get_a_listener() {
    let catalog = Fixture(vec![
        (
            name("payments"),
            vec![mk_instance("p1", "10.0.0.1", "dc1", &[], 1)],
        ),
        (
            name("billing"),
            vec![mk_instance("b1", "10.0.0.2", "dc1", &[], 1)],
        ),
    ]);
    let config = group_config(&mk_group(CHECKOUT), &catalog, &MeshOptions::default()).expect("ok");
    let listeners: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(listeners, vec!["payments"], "no ingress, egress or billing");
    assert!(config.clusters.is_empty(), "no local app cluster");
    assert_eq!(config.services, vec![name("payments")]);
    let hcm = hcm(&config.listeners[0]);
    let filters: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        filters,
        vec!["envoy.filters.http.router"],
        "gRPC takes few filters"
    );
    match hcm.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            assert_eq!(rds.route_config_name, "grpc:payments");
        }
        other => panic!("expected RDS, got {other:?}"),
    }
    assert_eq!(config.routes[0].name, "grpc:payments");
    assert_eq!(config.routes[0].virtual_hosts[0].domains, vec!["payments"]);
}

#[test]
fn canary_route_only_while_a_canary_exists() {
    let plain = Fixture(vec![(
        name("payments"),
        vec![mk_instance("p1", "10.0.0.1", "dc1", &[], 1)],
    )]);
    let config = group_config(&mk_group(CHECKOUT), &plain, &MeshOptions::default()).expect("ok");
    assert_eq!(config.routes[0].virtual_hosts[0].routes.len(), 1);
    let instances = vec![
        mk_instance("p1", "10.0.0.1", "dc1", &[], 1),
        mk_instance("p2", "10.0.0.2", "dc1", &["canary"], 1),
    ];
    let canary = Fixture(vec![(name("payments"), instances.clone())]);
    let config = group_config(&mk_group(CHECKOUT), &canary, &MeshOptions::default()).expect("ok");
    let routes = &config.routes[0].virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].name, "payments/canary");
    let Some(route::Action::Route(action)) = &routes[0].action else {
        panic!("a route action");
    };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "canary:payments".into()
        ))
    );
    let clusters: Vec<_> = proxyless_clusters(&name("payments"), &instances)
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(clusters, vec!["payments", "canary:payments"]);
    let eds = proxyless_endpoints(
        &name("payments"),
        &instances,
        "dc1",
        &MeshOptions::default(),
    );
    assert_eq!(eds[1].cluster_name, "canary:payments");
    assert_eq!(eds[1].endpoints.len(), 1, "only the canary instance");
}

#[test]
fn every_instance_is_a_locality_weighted_by_its_registry_weight() {
    let instances = vec![
        mk_instance("p1", "10.0.0.1", "dc1", &[], 300),
        mk_instance("p2", "10.0.0.2", "dc1", &[], 100),
        mk_instance("p3", "10.0.0.3", "dc2", &[], 100),
        // Same address as p1: gRPC refuses an assignment naming an address twice.
        mk_instance("p4", "10.0.0.1", "dc1", &[], 100),
    ];
    let eds = proxyless_endpoints(
        &name("payments"),
        &instances,
        "dc1",
        &MeshOptions::default(),
    );
    assert_eq!(eds.len(), 1);
    let summary: Vec<(String, u32, u32)> = eds[0]
        .endpoints
        .iter()
        .map(|l| {
            let loc = l.locality.clone().expect("locality");
            assert_eq!(l.lb_endpoints.len(), 1);
            assert!(l.lb_endpoints[0].metadata.is_none());
            (
                format!("{}/{}", loc.zone, loc.sub_zone),
                l.load_balancing_weight.map_or(0, |w| w.value),
                l.priority,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dc1/p1".to_owned(), 300, 0),
            ("dc1/p2".to_owned(), 100, 0),
            ("dc2/p3".to_owned(), 100, 1),
        ]
    );
}

#[test]
fn retries_keep_grpc_statuses_only() {
    let yaml = "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n    timeout: 2s\n    retries: { attempts: 9, on: [connect-failure, unavailable, internal] }\n";
    let d = Descriptor::from_yaml(yaml).expect("valid");
    let policy = retry_policy(d.dependencies.first());
    assert_eq!(policy.retry_on, "internal,unavailable");
    assert_eq!(policy.num_retries.map(|n| n.value), Some(MAX_GRPC_RETRIES));
    let default = retry_policy(None);
    assert_eq!(default.retry_on, "unavailable");
}

fn with_mtls(mut i: Instance, mode: &str) -> Instance {
    i.meta.insert(
        meshplane_model::identity::MTLS_META_KEY.to_owned(),
        mode.to_owned(),
    );
    i
}

/// The cluster's UpstreamTlsContext, if it has one.
fn upstream_tls(c: &Cluster) -> Option<UpstreamTlsContext> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use prost::Message;
    let socket = c.transport_socket.as_ref()?;
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("a typed transport socket");
    };
    Some(UpstreamTlsContext::decode(any.value.as_slice()).expect("an UpstreamTlsContext"))
}

#[test]
fn mtls_clusters_name_the_bootstrap_provider_and_check_the_callee() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
    let instances = vec![
        with_mtls(mk_instance("p1", "10.0.0.1", "dc1", &[], 1), "strict"),
        with_mtls(
            mk_instance("p2", "10.0.0.2", "dc1", &["canary"], 1),
            "permissive",
        ),
    ];
    let clusters = proxyless_mtls_clusters(&name("payments"), &instances, "example.org");
    let names: Vec<_> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["payments", "canary:payments"],
        "the plaintext names"
    );
    for c in &clusters {
        let tls = upstream_tls(c).expect("mTLS");
        let common = tls.common_tls_context.expect("common");
        assert_eq!(
            common
                .tls_certificate_provider_instance
                .expect("identity")
                .instance_name,
            "meshplane"
        );
        // grpc-js NACKs a cluster with tls_params.
        assert!(common.tls_params.is_none());
        let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type
        else {
            panic!("a plain validation_context");
        };
        assert_eq!(
            v.ca_certificate_provider_instance
                .expect("CA")
                .instance_name,
            "meshplane"
        );
        #[allow(deprecated)]
        let sans = v.match_subject_alt_names;
        assert_eq!(sans.len(), 1);
        assert_eq!(
            sans[0].match_pattern,
            Some(string_matcher::MatchPattern::Exact(
                "spiffe://example.org/service/payments".into()
            ))
        );
        assert!(
            v.match_typed_subject_alt_names.is_empty(),
            "gRPC reads the other field"
        );
    }
    // Apart from the transport socket, the plaintext clients' clusters.
    let plain = proxyless_clusters(&name("payments"), &instances);
    for (mut mtls, plain) in clusters.into_iter().zip(plain) {
        mtls.transport_socket = None;
        assert_eq!(mtls, plain);
    }
}

#[test]
fn a_cluster_reaching_an_instance_without_mtls_stays_plaintext() {
    // p2 has no sidecar (no `mtls` meta), p3 a sidecar with mTLS disabled.
    for other in [
        mk_instance("p2", "10.0.0.2", "dc1", &["canary"], 1),
        with_mtls(
            mk_instance("p2", "10.0.0.2", "dc1", &["canary"], 1),
            "disabled",
        ),
    ] {
        let instances = vec![
            with_mtls(mk_instance("p1", "10.0.0.1", "dc1", &[], 1), "strict"),
            other,
        ];
        let clusters = proxyless_mtls_clusters(&name("payments"), &instances, "example.org");
        assert!(
            clusters.iter().all(|c| c.transport_socket.is_none()),
            "{clusters:?}"
        );
    }
    // The canary cluster decides on its own instances.
    let instances = vec![
        mk_instance("p1", "10.0.0.1", "dc1", &[], 1),
        with_mtls(
            mk_instance("p2", "10.0.0.2", "dc1", &["canary"], 1),
            "strict",
        ),
    ];
    let clusters = proxyless_mtls_clusters(&name("payments"), &instances, "example.org");
    assert!(clusters[0].transport_socket.is_none());
    assert!(clusters[1].transport_socket.is_some());
    // No instance: nothing to secure yet (the cluster changes with the first one).
    let clusters = proxyless_mtls_clusters(&name("payments"), &[], "example.org");
    assert!(clusters[0].transport_socket.is_none());
}
