//! Listeners: ingress (public, to the local app) and egress (the app's local explicit HTTP
//! proxy, with `CONNECT` and a clear 503 for undeclared hosts).

use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, ResponseFlagFilter, access_log_filter,
};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::dynamic_forward_proxy::v3::{
    FilterConfig, filter_config,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, ResponseMapper,
    http_connection_manager, http_filter,
};
use meshplane_model::Descriptor;
use meshplane_model::descriptor::Target;

use crate::cluster::{dns_cache, preserve_case_http1};
use crate::proto::{ads, any, socket, u32_value};
use crate::{ProxyGroup, names, route};

const HCM: &str = "envoy.filters.network.http_connection_manager";

fn router() -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            any(&Router::default()),
        )),
        ..Default::default()
    }
}

fn listener(name: &str, ip: &str, port: u16, hcm: HttpConnectionManager) -> Listener {
    Listener {
        name: name.to_owned(),
        address: Some(socket(ip, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HCM.to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        // Without SO_REUSEPORT a second process on the same port (a misconfigured sidecar)
        // fails loudly with a NACK instead of silently taking half the connections. Hot
        // restart hands sockets over without it.
        enable_reuse_port: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        ..Default::default()
    }
}

/// The public listener on `listen_address:ingress.port`, forwarding to the app.
pub(crate) fn ingress(group: &ProxyGroup) -> Listener {
    let d = &group.descriptor;
    let hcm = HttpConnectionManager {
        stat_prefix: names::INGRESS_LISTENER.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route::ingress(d),
        )),
        http_filters: vec![router()],
        http_protocol_options: d.preserve_header_case.then(preserve_case_http1),
        ..Default::default()
    };
    listener(
        names::INGRESS_LISTENER,
        &group.listen_address,
        d.ingress.port,
        hcm,
    )
}

/// The egress listener on `127.0.0.1:port` (local only: it is the app's proxy).
pub(crate) fn egress(d: &Descriptor, port: u16) -> Listener {
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
    http_filters.push(router());
    let hcm = HttpConnectionManager {
        stat_prefix: names::EGRESS_LISTENER.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: names::EGRESS_ROUTES.to_owned(),
        })),
        http_filters,
        http_protocol_options: d.preserve_header_case.then(preserve_case_http1),
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "CONNECT".to_owned(),
            ..Default::default()
        }],
        // `Host: payments:80` and `CONNECT api.example.com:443` match their virtual hosts.
        strip_port_mode: Some(http_connection_manager::StripPortMode::StripAnyHostPort(
            true,
        )),
        local_reply_config: Some(not_a_dependency(d)),
        ..Default::default()
    };
    listener(names::EGRESS_LISTENER, "127.0.0.1", port, hcm)
}

/// No virtual host matched (`NR`): the host is not a dependency. Say so, naming the host,
/// with a 503 rather than Envoy's bare 404.
fn not_a_dependency(d: &Descriptor) -> LocalReplyConfig {
    let body = format!(
        "meshplane: `%REQ(:AUTHORITY)%` is not a dependency of `{}`; declare it under `dependencies` in its meshplane.yaml\n",
        d.service
    );
    LocalReplyConfig {
        mappers: vec![ResponseMapper {
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
        }],
        ..Default::default()
    }
}
