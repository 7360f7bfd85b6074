//! Builders for minimal, valid Envoy resources: an EDS cluster, its endpoints, an HTTP
//! listener using RDS and a route configuration. For tests and benchmarks (feature
//! `fixtures`); the real translator lives in the `translate` crate.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use prost::{Message, Name};

use crate::resource::Resource;

fn any<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// A socket address on `ip:port`.
pub fn mk_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// An EDS cluster fed over ADS, whose EDS resource has the cluster's name.
pub fn mk_eds_cluster(name: &str) -> Arc<Resource> {
    Resource::cluster(&Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(duration(Duration::from_secs(1))),
        ..Default::default()
    })
}

/// A cluster Envoy rejects (a static endpoint that is not an IP address): for NACK tests.
pub fn mk_rejected_cluster(name: &str) -> Arc<Resource> {
    Resource::cluster(&Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(load_assignment(name, &[("not-an-ip", 80, 1)])),
        connect_timeout: Some(duration(Duration::from_secs(1))),
        ..Default::default()
    })
}

fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn load_assignment(cluster: &str, endpoints: &[(&str, u16, u32)]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|(ip, port, weight)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(mk_address(ip, *port)),
                        ..Default::default()
                    })),
                    load_balancing_weight: Some(UInt32Value { value: *weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Endpoints `(ip, port, weight)` of a cluster.
pub fn mk_endpoints(cluster: &str, endpoints: &[(&str, u16, u32)]) -> Arc<Resource> {
    Resource::endpoints(&load_assignment(cluster, endpoints))
}

/// An HTTP listener on `127.0.0.1:port` whose routes come from RDS config `route_name`.
pub fn mk_http_listener(name: &str, port: u16, route_name: &str) -> Arc<Resource> {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.to_owned(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::listener(&Listener {
        name: name.to_owned(),
        address: Some(mk_address("127.0.0.1", port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_owned(),
                config_type: Some(filter::ConfigType::TypedConfig(any(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A route configuration: each `(domain, cluster)` becomes a virtual host routing every
/// path to the cluster.
pub fn mk_routes(name: &str, hosts: &[(&str, &str)]) -> Arc<Resource> {
    Resource::route(&RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: hosts
            .iter()
            .map(|(domain, cluster)| VirtualHost {
                name: format!("{domain}-vh"),
                domains: vec![(*domain).to_owned()],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                            (*cluster).to_owned(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}
