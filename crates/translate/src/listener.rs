//! Listeners: ingress (public, to the local app) and egress (the app's local explicit HTTP
//! proxy, with `CONNECT` and a clear 503 for undeclared hosts).

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, AndFilter, HeaderFilter, ResponseFlagFilter, access_log_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, Http2ProtocolOptions, SubstitutionFormatString,
    TrafficDirection, data_source, header_value_option, substitution_format_string,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    FilterConfig, filter_config,
};
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::{
    FilterConfig as GrpcStats, filter_config::PerMethodStatSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::health_check::v3::HealthCheck;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
    http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::BoolValue;
use meshplane_model::Descriptor;
use meshplane_model::Protocol;
use meshplane_model::descriptor::{MtlsMode, Target};

use crate::access_log::{self, Direction};
use crate::cluster::{dns_cache, preserve_case_http1};
use crate::proto::{ads, any, socket, u32_value};
use crate::{MeshOptions, ProxyGroup, names, rbac, route, security};

const HCM: &str = "envoy.filters.network.http_connection_manager";

pub(crate) fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

/// gRPC calls counted by their final status per cluster (`cluster.<name>.grpc.<code>`, with
/// `success`, `failure`, `total` and message counts); other requests pass untouched. Not per
/// method: a caller could grow the statistics without bound by inventing method names.
fn grpc_stats() -> HttpFilter {
    let config = GrpcStats {
        per_method_stat_specifier: Some(PerMethodStatSpecifier::StatsForAllMethods(BoolValue {
            value: false,
        })),
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.grpc_stats".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&config))),
        ..Default::default()
    }
}

/// WebSocket upgrades pass through (an HTTP/1.1 app that speaks WebSocket needs nothing
/// declared: `http1` services keep HTTP/1.1 between sidecars, which carries the upgrade).
fn websocket() -> http_connection_manager::UpgradeConfig {
    http_connection_manager::UpgradeConfig {
        upgrade_type: "websocket".to_owned(),
        ..Default::default()
    }
}

/// A filter chain running `hcm`; `named` is (chain name, transport protocol it matches).
fn chain(named: Option<(&str, &str)>, hcm: HttpConnectionManager) -> FilterChain {
    let (name, filter_chain_match) = match named {
        Some((name, protocol)) => (
            name.to_owned(),
            Some(FilterChainMatch {
                transport_protocol: protocol.to_owned(),
                ..Default::default()
            }),
        ),
        None => (String::new(), None),
    };
    FilterChain {
        name,
        filter_chain_match,
        filters: vec![Filter {
            name: HCM.to_owned(),
            config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
        }],
        ..Default::default()
    }
}

/// A listener on `(name, ip, port)` for `direction`'s traffic (tracing makes server spans
/// on inbound listeners, client spans on outbound ones).
fn listener(
    (name, ip, port): (&str, &str, u16),
    direction: TrafficDirection,
    filter_chains: Vec<FilterChain>,
) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket(ip, port)),
        traffic_direction: direction as i32,
        filter_chains,
        // Without SO_REUSEPORT a second process on the same port (a misconfigured sidecar)
        // fails loudly with a NACK instead of silently taking half the connections. Hot
        // restart hands sockets over without it.
        enable_reuse_port: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

/// The public listener on `listen_address:ingress.port`, forwarding to the app.
///
/// By the descriptor's `mtls`: `disabled` accepts plaintext; `permissive` inspects the
/// first bytes and accepts mTLS and plaintext; `strict` accepts mTLS, and plaintext only
/// for the health path (the registry's check cannot present a certificate), answering any
/// other plaintext request with 403. `incoming` permissions apply on every chain.
pub(crate) fn ingress(group: &ProxyGroup, options: &MeshOptions) -> Listener {
    let d = &group.descriptor;
    let to_app = |route: RouteConfiguration, http_filters: Vec<HttpFilter>, access_log| {
        HttpConnectionManager {
            stat_prefix: names::INGRESS_LISTENER.to_owned(),
            route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(route)),
            // A gRPC app's health path is answered before anything else (it is open to all).
            http_filters: grpc_health(d).into_iter().chain(http_filters).collect(),
            access_log,
            // The caller's request id (and the trace decision Envoy keeps in it) is kept; Envoy
            // generates one when there is none. Both sidecars' log lines of a request carry the
            // same `request_id`, and a trace is sampled or not as a whole.
            preserve_external_request_id: true,
            http_protocol_options: d.preserve_header_case.then(preserve_case_http1),
            tracing: crate::tracing::hcm(d, options),
            upgrade_configs: vec![websocket()],
            local_reply_config: Some(LocalReplyConfig {
                mappers: vec![grpc_timeout()],
                ..Default::default()
            }),
            // A WebSocket upgrade that crossed an HTTP/2 hop arrives as an extended CONNECT.
            http2_protocol_options: Some(Http2ProtocolOptions {
                allow_connect: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let mut http_filters = rbac::filters(d, &options.trust_domain);
    http_filters.extend([grpc_stats(), router()]);
    let requests = access_log::requests(d, Direction::Ingress, &options.trust_domain);
    let mut access_logs = requests.clone();
    access_logs.extend(rbac::access_logs(d));
    let checked = to_app(
        route::ingress(d, &options.trust_domain),
        http_filters,
        access_logs,
    );
    let address = (
        names::INGRESS_LISTENER,
        group.listen_address.as_str(),
        d.ingress.port,
    );
    let plaintext = match d.mtls {
        MtlsMode::Disabled => {
            return listener(
                address,
                TrafficDirection::Inbound,
                vec![chain(None, checked)],
            );
        }
        MtlsMode::Permissive => checked.clone(),
        MtlsMode::Strict => to_app(
            route::strict_plaintext(d, &options.trust_domain),
            vec![router()],
            requests,
        ),
    };
    let mut tls = checked;
    // The app learns the verified caller (`x-forwarded-client-cert: ...;URI=spiffe://...`);
    // a header sent by the caller is replaced, never trusted.
    tls.forward_client_cert_details =
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    tls.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        });
    let tls_chain = FilterChain {
        transport_socket: Some(security::downstream_mtls()),
        transport_socket_connect_timeout: Some(crate::proto::duration(
            std::time::Duration::from_secs(10),
        )),
        ..chain(Some(("mtls", "tls")), tls)
    };
    let mut l = listener(
        address,
        TrafficDirection::Inbound,
        vec![
            tls_chain,
            chain(Some(("plaintext", "raw_buffer")), plaintext),
        ],
    );
    l.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_owned(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }];
    l
}

/// For a gRPC app, the health path is answered by Envoy: 200 while the app reports SERVING
/// to the local-app cluster's gRPC health check, 503 otherwise. A gRPC server resets a plain
/// `GET`, so the registry's HTTP check could never pass through to it.
fn grpc_health(d: &Descriptor) -> Option<HttpFilter> {
    if d.protocol != Protocol::Grpc {
        return None;
    }
    let config = HealthCheck {
        pass_through_mode: Some(BoolValue { value: false }),
        cluster_min_healthy_percentages: [(names::LOCAL_APP.to_owned(), Percent { value: 100.0 })]
            .into(),
        headers: vec![HeaderMatcher {
            name: ":path".to_owned(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(
                        d.ingress.health_path.clone(),
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Some(HttpFilter {
        name: "envoy.filters.http.health_check".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&config))),
        ..Default::default()
    })
}

/// The egress listener on `127.0.0.1:port` (local only: it is the app's proxy).
pub(crate) fn egress(d: &Descriptor, port: u16, options: &MeshOptions) -> Listener {
    let mut http_filters = Vec::new();
    if d.dependencies
        .iter()
        .any(|dep| matches!(dep.target, Target::DomainPattern(_)))
    {
        http_filters.push(HttpFilter {
            name: "envoy.filters.http.dynamic_forward_proxy".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(any(&FilterConfig {
                implementation_specifier: Some(
                    filter_config::ImplementationSpecifier::DnsCacheConfig(dns_cache()),
                ),
                ..Default::default()
            }))),
            ..Default::default()
        });
    }
    http_filters.extend([grpc_stats(), router()]);
    let hcm = HttpConnectionManager {
        stat_prefix: names::EGRESS_LISTENER.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: names::EGRESS_ROUTES.to_owned(),
        })),
        http_filters,
        http_protocol_options: d.preserve_header_case.then(preserve_case_http1),
        upgrade_configs: vec![
            http_connection_manager::UpgradeConfig {
                upgrade_type: "CONNECT".to_owned(),
                ..Default::default()
            },
            websocket(),
        ],
        // `Host: payments:80` and `CONNECT api.example.com:443` match their virtual hosts.
        strip_port_mode: Some(http_connection_manager::StripPortMode::StripAnyHostPort(
            true,
        )),
        local_reply_config: Some(not_a_dependency(d)),
        tracing: crate::tracing::hcm(d, options),
        access_log: access_log::requests(d, Direction::Egress, &options.trust_domain),
        // The app's request id is kept, so a request id it propagates from its own caller
        // follows the request through the mesh.
        preserve_external_request_id: true,
        ..Default::default()
    };
    listener(
        (names::EGRESS_LISTENER, "127.0.0.1", port),
        TrafficDirection::Outbound,
        vec![chain(None, hcm)],
    )
}

/// A gRPC call the sidecar ended on a timeout (`UT`: the dependency's `timeout`, or the
/// call's own deadline, which the sidecar enforces too) answers `DEADLINE_EXCEEDED`, as a
/// gRPC client's own timer would, rather than Envoy's `UNAVAILABLE` for an HTTP 504 (a status
/// clients retry).
fn grpc_timeout() -> ResponseMapper {
    let flag = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
            ResponseFlagFilter {
                flags: vec!["UT".to_owned()],
            },
        )),
    };
    let grpc = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::HeaderFilter(
            HeaderFilter {
                header: Some(HeaderMatcher {
                    name: "content-type".to_owned(),
                    header_match_specifier: Some(
                        header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                            match_pattern: Some(string_matcher::MatchPattern::Prefix(
                                "application/grpc".to_owned(),
                            )),
                            ..Default::default()
                        }),
                    ),
                    ..Default::default()
                }),
            },
        )),
    };
    ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
                filters: vec![flag, grpc],
            })),
        }),
        headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "grpc-status".to_owned(),
                value: "4".to_owned(),
                ..Default::default()
            }),
            append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// No virtual host matched (`NR`): the host is not a dependency. Say so, naming the host,
/// with a 503 rather than Envoy's bare 404.
fn not_a_dependency(d: &Descriptor) -> LocalReplyConfig {
    let body = format!(
        "meshplane: `%REQ(:AUTHORITY)%` is not a dependency of `{}`; declare it under `dependencies` in its meshplane.yaml\n",
        d.service
    );
    LocalReplyConfig {
        mappers: vec![
            ResponseMapper {
                filter: Some(AccessLogFilter {
                    filter_specifier: Some(access_log_filter::FilterSpecifier::ResponseFlagFilter(
                        ResponseFlagFilter {
                            flags: vec!["NR".to_owned()],
                        },
                    )),
                }),
                status_code: Some(u32_value(503)),
                body_format_override: Some(SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(body)),
                            ..Default::default()
                        },
                    )),
                    content_type: "text/plain".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            grpc_timeout(),
        ],
        ..Default::default()
    }
}
