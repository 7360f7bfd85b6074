//! The answer to a proxyless client's channel to a target that is not one of its
//! dependencies (`xds:///ledger` from a client that declares only `payments`).
//!
//! Leaving the listener out is not an answer a gRPC client acts on: in state-of-the-world
//! xDS a response can predate the request that named the listener, so gRPC (grpc-core and
//! grpc-js alike) takes a name missing from a response as proof that it does not exist only
//! when it held the resource before, and otherwise waits for its resource timer (15 s).
//! And grpc-js fails no call on an xDS resolution error (a missing listener, a route
//! configuration without a virtual host for the target): its calls wait for name
//! resolution until their deadline. So the control plane answers with a configuration that
//! resolves and refuses: a listener for the name whose one route goes to a cluster named
//! with the reason, a cluster without endpoints. Both gRPC libraries then fail the
//! channel's calls at once with `UNAVAILABLE`, the message naming that cluster.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use meshplane_model::Descriptor;

use crate::proto::any;

/// How the names of [`undeclared_listener`]'s clusters begin: only such names get an
/// [`undeclared_cluster`] (a cluster a group merely lacks, being removed, gets nothing).
pub const REASON_PREFIX: &str = "meshplane: `";

/// The API listener a proxyless client with descriptor `d` gets for `target`, a name it
/// asked for that is not one of its dependencies (for `service: "*"`: not a service in the
/// registry): calls through it go to [`undeclared_cluster`] named with the reason, and fail
/// at once with `UNAVAILABLE` (see the module docs). The same `target` always gives the same
/// listener.
pub fn undeclared_listener(d: &Descriptor, target: &str) -> Listener {
    let reason = if d.depends_on_all() {
        format!("{REASON_PREFIX}{target}` is not a service in the registry")
    } else {
        format!(
            "{REASON_PREFIX}{target}` is not a dependency of `{}`; declare it under `dependencies` in its meshplane.yaml",
            d.service
        )
    };
    let route_config = RouteConfiguration {
        name: reason.clone(),
        virtual_hosts: vec![VirtualHost {
            name: reason.clone(),
            domains: vec!["*".to_owned()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(reason)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: target.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            route_config,
        )),
        http_filters: vec![crate::listener::router()],
        ..Default::default()
    };
    Listener {
        name: target.to_owned(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}

/// The cluster a proxyless client gets for `name`, a cluster it asked for that its group
/// does not have (the one an [`undeclared_listener`] routes to): a plain EDS cluster whose
/// endpoints, unknown to the group too, are an empty assignment.
pub fn undeclared_cluster(name: &str) -> Cluster {
    super::eds_cluster(name.to_owned())
}

#[cfg(test)]
mod tests;
