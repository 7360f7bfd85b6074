//! Clusters: shared mesh-service clusters (EDS), the local app, external domains and the
//! dynamic forward proxy. Defaults (connect timeout, circuit breakers, outlier detection)
//! are documented on [`service_cluster`].

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HealthCheck, Http1ProtocolOptions, Http2ProtocolOptions, TransportSocket,
    TypedExtensionConfig, data_source, health_check,
    http1_protocol_options::{HeaderKeyFormat, header_key_format},
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::clusters::dynamic_forward_proxy::v3::{
    ClusterConfig, cluster_config,
};
use envoy_types::pb::envoy::extensions::common::dynamic_forward_proxy::v3::DnsCacheConfig;
use envoy_types::pb::envoy::extensions::http::header_formatters::preserve_case::v3::PreserveCaseFormatterConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Struct;
use meshplane_model::descriptor::Domain;
use meshplane_model::{Descriptor, Instance, Protocol, ServiceName};

use crate::MeshOptions;
use crate::endpoints::TAGS_KEY;
use crate::proto::{ads, any, duration, socket, stable_map, string_value, u32_value};
use crate::protocol::{UpstreamProtocol, upstream_protocol};
use crate::{names, security};

/// Connect timeout of every mesh cluster. Short, because a connect failure is retried on
/// another instance (see the route's retry policy) instead of surfacing as a 503.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Circuit-breaker thresholds per mesh cluster (Envoy's defaults are 1024 connections and
/// requests, and 3 concurrent retries, which is too few for a busy caller).
pub const MAX_CONNECTIONS: u32 = 4096;
/// See [`MAX_CONNECTIONS`].
pub const MAX_REQUESTS: u32 = 4096;
/// Concurrent retries allowed per cluster.
pub const MAX_RETRIES: u32 = 64;

/// The shared EDS cluster of a mesh service, named after it. Defaults: 1 s connect timeout,
/// round robin honouring endpoint weights, subset load balancing for `x-canary` (falls back
/// to any instance) and `x-service-tag` (no fallback), outlier detection (5 consecutive 5xx
/// or gateway errors eject a host for 30 s, at most 50% of hosts), circuit breakers above.
/// HTTP/2 or HTTP/1.1 from its instances' registered protocols (see `protocol`).
pub fn service_cluster(
    service: &ServiceName,
    instances: &[Instance],
    options: &MeshOptions,
) -> Cluster {
    let protocol = upstream_protocol(instances);
    with_protocol_options(
        Cluster {
            // Instances that accept mTLS (endpoint metadata, see `security`) get it; others,
            // like apps without a sidecar, get plaintext.
            transport_socket_matches: vec![cluster::TransportSocketMatch {
                name: security::TLS_MATCH_NAME.to_owned(),
                r#match: Some(Struct {
                    fields: {
                        let mut f = stable_map();
                        f.insert(
                            security::TLS_MATCH_KEY.to_owned(),
                            string_value(security::TLS_MATCH_MTLS),
                        );
                        f
                    },
                }),
                transport_socket: Some(security::upstream_mtls(
                    service,
                    &options.trust_domain,
                    protocol,
                )),
            }],
            name: service.to_string(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            connect_timeout: Some(duration(CONNECT_TIMEOUT)),
            lb_subset_config: Some(subset_config()),
            outlier_detection: Some(outlier_detection()),
            circuit_breakers: Some(circuit_breakers()),
            common_lb_config: Some(cluster::CommonLbConfig {
                // Without a health threshold, one dead instance in the local datacenter would
                // already shift traffic to other priorities; fail over only when few are left.
                healthy_panic_threshold: Some(envoy_types::pb::envoy::r#type::v3::Percent {
                    value: 0.0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        protocol,
    )
}

/// One subset selector on the `tags` list (`list_as_any`): `x-canary` asks for tag `canary`
/// and falls back to any instance when no instance has it. Tag routes exist only for tags some
/// instance has (unknown tags get a direct 503 route), so they never fall back. One key per
/// endpoint also keeps endpoint metadata a single-entry map, which encodes identically in
/// every process (versions survive control-plane restarts).
fn subset_config() -> cluster::LbSubsetConfig {
    use cluster::lb_subset_config::{LbSubsetFallbackPolicy, LbSubsetSelector};
    cluster::LbSubsetConfig {
        fallback_policy: LbSubsetFallbackPolicy::AnyEndpoint as i32,
        subset_selectors: vec![LbSubsetSelector {
            keys: vec![TAGS_KEY.to_owned()],
            ..Default::default()
        }],
        list_as_any: true,
        ..Default::default()
    }
}

fn outlier_detection() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: Some(u32_value(5)),
        consecutive_gateway_failure: Some(u32_value(5)),
        interval: Some(duration(Duration::from_secs(5))),
        base_ejection_time: Some(duration(Duration::from_secs(30))),
        max_ejection_percent: Some(u32_value(50)),
        ..Default::default()
    }
}

fn circuit_breakers() -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: Some(u32_value(MAX_CONNECTIONS)),
            max_pending_requests: Some(u32_value(MAX_REQUESTS)),
            max_requests: Some(u32_value(MAX_REQUESTS)),
            max_retries: Some(u32_value(MAX_RETRIES)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// HTTP/1.1 options that keep header names' case as the app wrote them.
pub(crate) fn preserve_case_http1() -> Http1ProtocolOptions {
    Http1ProtocolOptions {
        header_key_format: Some(HeaderKeyFormat {
            header_format: Some(header_key_format::HeaderFormat::StatefulFormatter(
                TypedExtensionConfig {
                    name: "envoy.http.stateful_header_formatters.preserve_case".to_owned(),
                    typed_config: Some(any(&PreserveCaseFormatterConfig::default())),
                },
            )),
        }),
        ..Default::default()
    }
}

/// Upstream HTTP options: HTTP/2 (prior knowledge in plaintext), or HTTP/1.1 with the
/// case-preserving header formatter. The formatter is set on every HTTP/1.1 cluster: it only
/// records the case the upstream used, and a listener writes it back only when its service
/// asked for `preserve_header_case`, so shared clusters serve both kinds.
fn with_protocol_options(mut c: Cluster, protocol: UpstreamProtocol) -> Cluster {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    let config = match protocol {
        UpstreamProtocol::Http1 => ProtocolConfig::HttpProtocolOptions(preserve_case_http1()),
        // Extended CONNECT (RFC 8441): a WebSocket upgrade towards an `http1` instance
        // crosses an HTTP/2 hop (a service in a rollout to `http2`/`grpc`) as a stream.
        UpstreamProtocol::Http2 => ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
            allow_connect: true,
            ..Default::default()
        }),
    };
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(config),
                },
            ),
        ),
        ..Default::default()
    };
    c.typed_extension_protocol_options = stable_map();
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
        any(&options),
    );
    c
}

/// A gRPC server at `host:port` (an IP address, or a name Envoy resolves): HTTP/2.
pub(crate) fn grpc_cluster(name: &str, host: &str, port: u16) -> Cluster {
    let mut c = static_cluster(name, host, port);
    if host.parse::<std::net::IpAddr>().is_err() {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    }
    with_protocol_options(c, UpstreamProtocol::Http2)
}

/// The local application, `127.0.0.1:<port>`, in the protocol its descriptor declares
/// (HTTP/2 without TLS for `http2` and `grpc`): the ingress listener converts callers'
/// HTTP/1.1 or HTTP/2 to it.
pub(crate) fn local_app(d: &Descriptor) -> Cluster {
    let protocol = if d.protocol.is_http2() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    let mut c = static_cluster(names::LOCAL_APP, "127.0.0.1", d.port);
    if d.protocol == Protocol::Grpc {
        c.health_checks = vec![grpc_health_check()];
    }
    with_protocol_options(c, protocol)
}

/// How often a gRPC app's health is asked (`grpc.health.v1.Health/Check`, the server's
/// overall health): the ingress health path answers from it (see `listener`), since a gRPC
/// server cannot answer the registry's plain HTTP check itself.
pub const GRPC_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

fn grpc_health_check() -> HealthCheck {
    HealthCheck {
        timeout: Some(duration(Duration::from_secs(1))),
        interval: Some(duration(GRPC_HEALTH_INTERVAL)),
        // Envoy's default checks a cluster that has had no traffic yet once a minute; the
        // registry asks about a new instance long before its first call.
        no_traffic_interval: Some(duration(GRPC_HEALTH_INTERVAL)),
        unhealthy_threshold: Some(u32_value(2)),
        healthy_threshold: Some(u32_value(1)),
        health_checker: Some(health_check::HealthChecker::GrpcHealthCheck(
            health_check::GrpcHealthCheck::default(),
        )),
        ..Default::default()
    }
}

fn static_cluster(name: &str, host: &str, port: u16) -> Cluster {
    let cla = ClusterLoadAssignment {
        cluster_name: name.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(socket(host, port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        load_assignment: Some(cla),
        circuit_breakers: Some(circuit_breakers()),
        ..Default::default()
    }
}

/// An external domain: DNS-resolved (or pinned by `domain_addresses`), with TLS origination
/// for `https://` (SNI = host, certificate SAN must equal the host, CA from
/// [`MeshOptions::domain_ca_file`]).
pub(crate) fn domain(d: &Domain, options: &MeshOptions) -> Cluster {
    let mut c = dns_or_pinned(&names::domain_cluster(d), d, options);
    if d.tls {
        c.transport_socket = Some(upstream_tls(d, options));
    }
    with_protocol_options(c, UpstreamProtocol::Http1)
}

/// Plain TCP to an `https://` domain for `CONNECT` tunnels (the app speaks TLS inside).
pub(crate) fn tunnel(d: &Domain, options: &MeshOptions) -> Cluster {
    dns_or_pinned(&names::tunnel_cluster(d), d, options)
}

fn dns_or_pinned(name: &str, d: &Domain, options: &MeshOptions) -> Cluster {
    if let Some(ip) = options.domain_addresses.get(&d.host) {
        return static_cluster(name, &ip.to_string(), d.port);
    }
    let mut c = static_cluster(name, &d.host, d.port);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::LogicalDns as i32,
    ));
    c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    c
}

fn upstream_tls(d: &Domain, options: &MeshOptions) -> TransportSocket {
    let validation = CertificateValidationContext {
        trusted_ca: Some(DataSource {
            specifier: Some(data_source::Specifier::Filename(
                options.domain_ca_file.clone(),
            )),
            ..Default::default()
        }),
        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
            san_type: subject_alt_name_matcher::SanType::Dns as i32,
            matcher: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(d.host.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let tls = UpstreamTlsContext {
        sni: d.host.clone(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&tls))),
    }
}

/// The DNS cache shared by the dynamic forward proxy filter and cluster.
pub(crate) fn dns_cache() -> DnsCacheConfig {
    DnsCacheConfig {
        name: "meshplane_dynamic_forward_proxy".to_owned(),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        ..Default::default()
    }
}

/// The dynamic forward proxy cluster for `domain_pattern` dependencies.
pub(crate) fn dynamic_forward_proxy() -> Cluster {
    let config = ClusterConfig {
        cluster_implementation_specifier: Some(
            cluster_config::ClusterImplementationSpecifier::DnsCacheConfig(dns_cache()),
        ),
        ..Default::default()
    };
    Cluster {
        name: names::DYNAMIC_FORWARD_PROXY.to_owned(),
        connect_timeout: Some(duration(CONNECT_TIMEOUT)),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.dynamic_forward_proxy".to_owned(),
                typed_config: Some(any(&config)),
            },
        )),
        circuit_breakers: Some(circuit_breakers()),
        ..Default::default()
    }
}
