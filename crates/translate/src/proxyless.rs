//! Proxyless gRPC clients: an application whose gRPC library speaks xDS itself (a channel to
//! `xds:///payments`, bootstrapped by `meshplane bootstrap --grpc`) and runs no sidecar.
//!
//! gRPC reads a small subset of xDS (gRFCs A27 load balancing, A28 routing, A31 timeouts,
//! A44 retries) and NACKs what it cannot honour, so such a group gets its own resources, per
//! service it declares as a dependency:
//! - an *API listener* named as the target (`payments`): an HTTP connection manager with
//!   RDS over ADS and the router filter only;
//! - a route configuration `grpc:payments`: the default route, and with canary instances an
//!   `x-canary: 1` route to the canary cluster; a call's own deadline, uncapped
//!   (`grpc_timeout_header_max: 0`: gRPC then reads no `max_stream_duration`, so a call
//!   without a deadline is not bounded by the dependency's timeout, gRFC A31), and retries
//!   on gRPC statuses;
//! - shared per service, like the sidecars' [`crate::service_cluster`]: a plain EDS cluster
//!   named after the service (plaintext HTTP/2, round robin, no transport socket), plus
//!   `canary:payments` while some instance is tagged `canary`, and their endpoints. gRPC's
//!   round robin ignores endpoint weights and honours only locality weights, so every
//!   instance is its own locality (datacenter as region and zone, the instance id as
//!   sub-zone) weighted by its registry weight; datacenters stay failover priorities.
//! - for clients with a certificate (their bootstrap defines gRPC's certificate provider
//!   [`GRPC_CERTIFICATE_PROVIDER`], gRFC A29), the same clusters with mTLS
//!   ([`proxyless_mtls_clusters`]): a parallel set, shared by every such client, under the
//!   same names, so their routes and endpoints are the plaintext clients' ones. gRPC reads
//!   one `transport_socket` per cluster (no `transport_socket_matches`, which is how a
//!   sidecar picks mTLS per instance), so a cluster is mTLS when every instance it can reach
//!   accepts mTLS (a sidecar with `mtls: permissive|strict`), and plaintext otherwise, like
//!   a plaintext client's: a service half moved onto sidecars keeps answering.
//!
//! An undeclared target gets [`undeclared_listener`] when the client asks for it: a listener
//! that routes nowhere, so the channel's calls fail at once. No ingress or egress listener,
//! no local-app cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use meshplane_model::descriptor::{Dependency, GrpcRetryStatus, RetryOn};
use meshplane_model::node_metadata::GRPC_CERTIFICATE_PROVIDER;
use meshplane_model::{Instance, ServiceName};

use crate::endpoints::{CANARY_TAG, routable_address};
use crate::proto::{ads, any, duration, u32_value};
use crate::route::{CANARY_HEADER, DEFAULT_RETRIES, dependency, header_exact, retry_back_off};
use crate::security::{accepts_mtls, grpc_upstream_mtls};
use crate::{Catalog, GroupConfig, MeshOptions, ProxyGroup, names, service_endpoints};

mod undeclared;

pub use undeclared::{REASON_PREFIX, undeclared_cluster, undeclared_listener};

/// gRPC caps a call's attempts at 5 (A44): retries beyond 4 are not sent.
const MAX_GRPC_RETRIES: u32 = 4;

/// A proxyless group's own resources ([`crate::group_config`] for a group whose
/// `proxyless` is set, its `services` the descriptor's): per dependency, its API listener and
/// route configuration. Its services' clusters and endpoints come from [`proxyless_clusters`]
/// and [`proxyless_endpoints`].
pub(crate) fn config(
    group: &ProxyGroup,
    services: Vec<ServiceName>,
    catalog: &dyn Catalog,
) -> GroupConfig {
    let mut config = GroupConfig::default();
    for service in &services {
        config.listeners.push(api_listener(service));
        let canary = has_canary(catalog.instances(service).unwrap_or_default());
        config.routes.push(routes(
            service,
            dependency(&group.descriptor, service),
            canary,
        ));
    }
    config.services = services;
    config
}

/// Whether some instance that becomes an endpoint is tagged `canary`.
pub(crate) fn has_canary(instances: &[Instance]) -> bool {
    instances
        .iter()
        .any(|i| routable_address(i) && i.tags.iter().any(|t| t == CANARY_TAG))
}

fn api_listener(service: &ServiceName) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: service.to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: names::proxyless_routes(service),
        })),
        http_filters: vec![crate::listener::router()],
        ..Default::default()
    };
    Listener {
        name: service.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}

fn routes(service: &ServiceName, dep: Option<&Dependency>, canary: bool) -> RouteConfiguration {
    let name = service.as_str();
    let mut routes = Vec::new();
    if canary {
        routes.push(Route {
            name: format!("{name}/canary"),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                headers: vec![header_exact(CANARY_HEADER, "1")],
                ..Default::default()
            }),
            action: Some(forward(&names::canary_cluster(service), dep)),
            ..Default::default()
        });
    }
    routes.push(Route {
        name: format!("{name}/default"),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(forward(name, dep)),
        ..Default::default()
    });
    RouteConfiguration {
        name: names::proxyless_routes(service),
        virtual_hosts: vec![VirtualHost {
            name: names::outbound_host(service),
            domains: vec![name.to_owned()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn forward(cluster: &str, dep: Option<&Dependency>) -> route::Action {
    route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_owned())),
        // A31: the call's own deadline, uncapped. gRPC reads `max_stream_duration` only
        // when `grpc_timeout_header_max` is absent, so a call without a deadline is not
        // bounded here; capping every call instead would cut long streams (README).
        max_stream_duration: Some(route_action::MaxStreamDuration {
            max_stream_duration: dep.and_then(|d| d.timeout).map(duration),
            grpc_timeout_header_max: Some(duration(Duration::ZERO)),
            ..Default::default()
        }),
        retry_policy: Some(retry_policy(dep)),
        ..Default::default()
    })
}

/// A44: gRPC retries on gRPC statuses only; the descriptor's other conditions (connection
/// failures, resets, HTTP statuses) are the channel's own business without a proxy.
fn retry_policy(dep: Option<&Dependency>) -> RetryPolicy {
    let (attempts, statuses): (u32, Vec<GrpcRetryStatus>) =
        match dep.and_then(|d| d.retries.as_ref()) {
            Some(r) => (
                r.attempts,
                r.on.iter()
                    .filter_map(|on| match on {
                        RetryOn::Grpc(s) => Some(*s),
                        _ => None,
                    })
                    .collect(),
            ),
            None => (DEFAULT_RETRIES, vec![GrpcRetryStatus::Unavailable]),
        };
    let retry_on: BTreeSet<&str> = statuses.iter().map(|s| s.name()).collect();
    RetryPolicy {
        retry_on: retry_on.into_iter().collect::<Vec<_>>().join(","),
        num_retries: Some(u32_value(attempts.min(MAX_GRPC_RETRIES))),
        retry_back_off: Some(retry_back_off()),
        ..Default::default()
    }
}

/// The clusters of a service for proxyless clients, shared by all of them: the service's
/// own, and `canary:<service>` while some instance is tagged `canary`.
pub fn proxyless_clusters(service: &ServiceName, instances: &[Instance]) -> Vec<Cluster> {
    let mut out = vec![eds_cluster(service.to_string())];
    if has_canary(instances) {
        out.push(eds_cluster(names::canary_cluster(service)));
    }
    out
}

/// [`proxyless_clusters`] for clients with a certificate: each cluster whose instances all
/// accept mTLS presents the client's certificate and checks the callee's SPIFFE id in
/// `trust_domain` (gRPC's `file_watcher` certificate provider
/// [`GRPC_CERTIFICATE_PROVIDER`], which `meshplane bootstrap --grpc --certs-dir` writes).
pub fn proxyless_mtls_clusters(
    service: &ServiceName,
    instances: &[Instance],
    trust_domain: &str,
) -> Vec<Cluster> {
    let tls = || grpc_upstream_mtls(service, trust_domain, GRPC_CERTIFICATE_PROVIDER);
    let routable = || instances.iter().filter(|i| routable_address(i));
    let mut main = eds_cluster(service.to_string());
    if all_accept_mtls(routable()) {
        main.transport_socket = Some(tls());
    }
    let mut out = vec![main];
    if has_canary(instances) {
        let mut canary = eds_cluster(names::canary_cluster(service));
        if all_accept_mtls(routable().filter(|i| i.tags.iter().any(|t| t == CANARY_TAG))) {
            canary.transport_socket = Some(tls());
        }
        out.push(canary);
    }
    out
}

/// Whether there are instances and every one accepts mTLS.
fn all_accept_mtls<'a>(instances: impl Iterator<Item = &'a Instance>) -> bool {
    let mut instances = instances.peekable();
    instances.peek().is_some() && instances.all(|i| accepts_mtls(&i.meta))
}

fn eds_cluster(name: String) -> Cluster {
    Cluster {
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_requests: Some(u32_value(crate::cluster::MAX_REQUESTS)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The endpoints of [`proxyless_clusters`] for clients in `proxy_datacenter`: the service's
/// [`service_endpoints`] (same datacenter priorities), one locality per instance weighted by
/// its registry weight; the canary cluster's hold the canary instances only.
pub fn proxyless_endpoints(
    service: &ServiceName,
    instances: &[Instance],
    proxy_datacenter: &str,
    options: &MeshOptions,
) -> Vec<ClusterLoadAssignment> {
    let mut out = vec![per_instance_localities(
        service.to_string(),
        instances,
        service,
        proxy_datacenter,
        options,
    )];
    if has_canary(instances) {
        let canaries: Vec<Instance> = instances
            .iter()
            .filter(|i| i.tags.iter().any(|t| t == CANARY_TAG))
            .cloned()
            .collect();
        out.push(per_instance_localities(
            names::canary_cluster(service),
            &canaries,
            service,
            proxy_datacenter,
            options,
        ));
    }
    out
}

fn per_instance_localities(
    name: String,
    instances: &[Instance],
    service: &ServiceName,
    proxy_datacenter: &str,
    options: &MeshOptions,
) -> ClusterLoadAssignment {
    let base = service_endpoints(service, instances, proxy_datacenter, options);
    // gRPC refuses an assignment naming one address twice (A61).
    let mut seen = BTreeSet::new();
    let endpoints = base
        .endpoints
        .into_iter()
        .flat_map(|group| {
            let dc = group.locality.unwrap_or_default();
            let priority = group.priority;
            group
                .lb_endpoints
                .into_iter()
                .filter_map(|e| plain(e, &mut seen))
                .map(move |(id, e)| LocalityLbEndpoints {
                    locality: Some(Locality {
                        sub_zone: id,
                        ..dc.clone()
                    }),
                    load_balancing_weight: e.load_balancing_weight,
                    lb_endpoints: vec![e],
                    priority,
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: name,
        endpoints,
        ..Default::default()
    }
}

/// An endpoint without the sidecars' metadata (subset tags, mTLS match), which gRPC does not
/// read, and its instance id; `None` for an address already seen.
fn plain(mut e: LbEndpoint, seen: &mut BTreeSet<String>) -> Option<(String, LbEndpoint)> {
    use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
    let Some(HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
        return None;
    };
    let key = format!("{:?}", endpoint.address);
    if !seen.insert(key) {
        return None;
    }
    let id = endpoint.hostname.clone();
    e.metadata = None;
    Some((id, e))
}

#[cfg(test)]
mod tests;
