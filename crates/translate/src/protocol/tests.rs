use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::transport_socket;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::CodecType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use meshplane_model::{Descriptor, Health, InstanceId, Locality, ServiceName};
use prost::Message;

use super::*;
use crate::{Catalog, MeshOptions, ProxyGroup, group_config, names, service_cluster};

fn mk_instance(id: &str, meta: &[(&str, &str)]) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: ServiceName::new("payments").expect("name"),
        node: "n1".into(),
        address: "10.0.0.1".into(),
        port: 31001,
        tags: Vec::new(),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        weight: 1,
        health: Health::Passing,
        locality: Locality::default(),
    }
}

fn sidecar(id: &str, protocol: &str) -> Instance {
    mk_instance(
        id,
        &[(SIDECAR_META_KEY, "true"), (PROTOCOL_META_KEY, protocol)],
    )
}

#[test]
fn services_declaring_http2_or_grpc_get_http2() {
    for p in ["http2", "grpc"] {
        let all = [sidecar("a", p), sidecar("b", p)];
        assert_eq!(upstream_protocol(&all), UpstreamProtocol::Http2, "{p}");
    }
    let bare = [mk_instance("a", &[(PROTOCOL_META_KEY, "grpc")])];
    assert_eq!(
        upstream_protocol(&bare),
        UpstreamProtocol::Http2,
        "an app registered without a sidecar may declare its protocol too"
    );
}

#[test]
fn http1_and_undeclared_services_keep_http1() {
    assert_eq!(upstream_protocol(&[]), UpstreamProtocol::Http1);
    assert_eq!(
        upstream_protocol(&[sidecar("a", "http1")]),
        UpstreamProtocol::Http1
    );
    assert_eq!(
        upstream_protocol(&[mk_instance("a", &[(SIDECAR_META_KEY, "true")])]),
        UpstreamProtocol::Http1
    );
}

#[test]
fn a_rollout_uses_http2_only_when_every_instance_takes_it() {
    // Sidecars of both kinds accept HTTP/2 and convert for their apps.
    let upgrade = [sidecar("a", "http1"), sidecar("b", "grpc")];
    assert_eq!(upstream_protocol(&upgrade), UpstreamProtocol::Http2);
    // An app without a sidecar, or a sidecar from before protocols, takes HTTP/1.1 only.
    for old in [
        mk_instance("a", &[]),
        mk_instance("a", &[(SIDECAR_META_KEY, "true")]),
        mk_instance("a", &[(PROTOCOL_META_KEY, "http1")]),
        mk_instance("a", &[(PROTOCOL_META_KEY, "spdy")]),
    ] {
        let mixed = [old.clone(), sidecar("b", "http2")];
        assert_eq!(
            upstream_protocol(&mixed),
            UpstreamProtocol::Http1,
            "{:?}",
            old.meta
        );
    }
    // An instance registered with a host name gets no traffic (it is no endpoint): it
    // does not hold the others back.
    let named = Instance {
        address: "payments-old.example.org".into(),
        ..mk_instance("a", &[])
    };
    let mixed = [named, sidecar("b", "grpc")];
    assert_eq!(upstream_protocol(&mixed), UpstreamProtocol::Http2);
    // A newer sidecar registering a protocol this control plane does not know still
    // fronts the app with an ingress that accepts HTTP/2.
    let newer = [sidecar("a", "http3"), sidecar("b", "grpc")];
    assert_eq!(upstream_protocol(&newer), UpstreamProtocol::Http2);
}

/// The HTTP version a cluster's protocol options configure.
fn cluster_protocol(c: &Cluster) -> UpstreamProtocol {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let any = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let options = HttpProtocolOptions::decode(any.value.as_slice()).expect("decodes");
    match options.upstream_protocol_options {
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) => {
            match e.protocol_config.expect("a protocol") {
                ProtocolConfig::HttpProtocolOptions(_) => UpstreamProtocol::Http1,
                ProtocolConfig::Http2ProtocolOptions(_) => UpstreamProtocol::Http2,
                other => panic!("unexpected protocol {other:?}"),
            }
        }
        other => panic!("expected an explicit protocol, got {other:?}"),
    }
}

fn mtls_alpn(c: &Cluster) -> Vec<String> {
    let socket = c.transport_socket_matches[0]
        .transport_socket
        .as_ref()
        .expect("a socket");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        panic!("typed config");
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
    tls.common_tls_context.expect("common").alpn_protocols
}

struct NoServices;

impl Catalog for NoServices {
    fn services(&self) -> Vec<ServiceName> {
        Vec::new()
    }
    fn instances(&self, _: &ServiceName) -> Option<&[Instance]> {
        None
    }
}

fn translate(yaml: &str) -> crate::GroupConfig {
    let group = ProxyGroup {
        descriptor: Descriptor::from_yaml(yaml).expect("valid"),
        listen_address: "127.0.0.1".into(),
        datacenter: "dc1".into(),
        proxyless: false,
        proxyless_mtls: false,
    };
    group_config(&group, &NoServices, &MeshOptions::default()).expect("translates")
}

fn hcms(l: &Listener) -> Vec<HttpConnectionManager> {
    l.filter_chains
        .iter()
        .flat_map(|c| &c.filters)
        .filter_map(|f| match &f.config_type {
            Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a),
            ) => HttpConnectionManager::decode(a.value.as_slice()).ok(),
            _ => None,
        })
        .collect()
}

#[test]
fn service_clusters_speak_the_decided_protocol_with_alpn_h2_over_mtls() {
    let options = MeshOptions::default();
    let payments = ServiceName::new("payments").expect("name");
    let grpc = service_cluster(&payments, &[sidecar("a", "grpc")], &options);
    assert_eq!(cluster_protocol(&grpc), UpstreamProtocol::Http2);
    assert_eq!(mtls_alpn(&grpc), vec!["h2"]);
    let http1 = service_cluster(&payments, &[sidecar("a", "http1")], &options);
    assert_eq!(cluster_protocol(&http1), UpstreamProtocol::Http1);
    assert!(
        mtls_alpn(&http1).is_empty(),
        "HTTP/1.1 offers no ALPN, as before"
    );
    assert_eq!(
        grpc.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        )),
        "still the shared EDS cluster"
    );
}

#[test]
fn the_local_app_gets_the_declared_protocol() {
    let base = "service: payments\nport: 9090\ningress: { port: 31001 }\n";
    for (protocol, want) in [
        ("http1", UpstreamProtocol::Http1),
        ("http2", UpstreamProtocol::Http2),
        ("grpc", UpstreamProtocol::Http2),
    ] {
        let config = translate(&format!("{base}protocol: {protocol}\n"));
        let app = config
            .clusters
            .iter()
            .find(|c| c.name == names::LOCAL_APP)
            .expect("local app");
        assert_eq!(cluster_protocol(app), want, "{protocol}");
    }
}

#[test]
fn listeners_accept_http1_and_http2_and_mtls_offers_both() {
    let config = translate(
        "service: web\nport: 9090\ningress: { port: 31001 }\negress: { port: 31000 }\nmtls: strict\n",
    );
    for l in &config.listeners {
        for hcm in hcms(l) {
            assert_eq!(hcm.codec_type, CodecType::Auto as i32, "{}", l.name);
            assert!(
                hcm.upgrade_configs
                    .iter()
                    .any(|u| u.upgrade_type == "websocket"),
                "{}: WebSocket upgrades pass",
                l.name
            );
        }
    }
    for hcm in hcms(&config.listeners[0]) {
        let h2 = hcm.http2_protocol_options.expect("HTTP/2 options");
        assert!(h2.allow_connect, "the ingress takes extended CONNECT");
    }
    let ingress = &config.listeners[0];
    let mtls = ingress
        .filter_chains
        .iter()
        .find_map(|c| c.transport_socket.as_ref())
        .expect("an mTLS chain");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mtls.config_type else {
        panic!("typed config");
    };
    let tls = DownstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
    assert_eq!(
        tls.common_tls_context.expect("common").alpn_protocols,
        vec!["h2", "http/1.1"]
    );
}

#[test]
fn a_grpc_apps_health_path_is_answered_from_its_grpc_health() {
    use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
    use envoy_types::pb::envoy::extensions::filters::http::health_check::v3::HealthCheck;
    let base = "service: payments\nport: 9090\ningress: { port: 31001 }\n";
    for mtls in ["permissive", "strict", "disabled"] {
        let config = translate(&format!("{base}protocol: grpc\nmtls: {mtls}\n"));
        let app = config
            .clusters
            .iter()
            .find(|c| c.name == names::LOCAL_APP)
            .expect("local app");
        assert!(
            matches!(
                app.health_checks[0].health_checker,
                Some(HealthChecker::GrpcHealthCheck(_))
            ),
            "the app's gRPC health is checked"
        );
        for hcm in hcms(&config.listeners[0]) {
            let first = &hcm.http_filters[0];
            assert_eq!(first.name, "envoy.filters.http.health_check", "{mtls}");
            let Some(
                envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any),
            ) = &first.config_type
            else {
                panic!("typed config");
            };
            let filter = HealthCheck::decode(any.value.as_slice()).expect("decodes");
            assert_eq!(filter.pass_through_mode.map(|b| b.value), Some(false));
            assert_eq!(
                filter.cluster_min_healthy_percentages[names::LOCAL_APP].value,
                100.0
            );
        }
    }
    for protocol in ["http1", "http2"] {
        let config = translate(&format!("{base}protocol: {protocol}\n"));
        let app = config
            .clusters
            .iter()
            .find(|c| c.name == names::LOCAL_APP)
            .expect("local app");
        assert!(app.health_checks.is_empty(), "{protocol}");
        for hcm in hcms(&config.listeners[0]) {
            assert!(
                hcm.http_filters
                    .iter()
                    .all(|f| f.name != "envoy.filters.http.health_check"),
                "{protocol}: the app answers its own health path"
            );
        }
    }
}
