use envoy_types::pb::envoy::config::cluster::v3::cluster;
use prost::Message;

use super::*;

const CHECKOUT: &str = "service: checkout\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: payments\n";

fn cluster_of(l: &Listener) -> String {
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = hcm(l).route_specifier
    else {
        panic!("an inline route configuration");
    };
    match &rc.virtual_hosts[0].routes[0].action {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
            ..
        })) => c.clone(),
        other => panic!("to a cluster: {other:?}"),
    }
}

fn hcm(l: &Listener) -> HttpConnectionManager {
    let any = l
        .api_listener
        .as_ref()
        .and_then(|a| a.api_listener.as_ref())
        .expect("an API listener");
    HttpConnectionManager::decode(any.value.as_slice()).expect("an HTTP connection manager")
}

/// gRPC resolves the listener without asking for anything but the cluster: the route
/// configuration is inline, every authority and path go to the one cluster, and its name
/// says why (grpc-core quotes it when a call fails).
#[test]
fn the_listener_routes_every_call_to_a_cluster_named_with_the_reason() {
    let checkout = Descriptor::from_yaml(CHECKOUT).expect("valid");
    let l = undeclared_listener(&checkout, "ledger");
    assert_eq!(l.name, "ledger");
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = hcm(&l).route_specifier
    else {
        panic!("an inline route configuration");
    };
    let [host] = rc.virtual_hosts.as_slice() else {
        panic!("one virtual host: {rc:?}");
    };
    assert_eq!(host.domains, vec!["*"]);
    assert_eq!(host.routes.len(), 1, "one route: {host:?}");
    assert_eq!(
        cluster_of(&l),
        "meshplane: `ledger` is not a dependency of `checkout`; declare it under `dependencies` in its meshplane.yaml"
    );
    assert_eq!(
        undeclared_listener(&checkout, "ledger"),
        l,
        "the same name, the same listener"
    );
}

/// A client that depends on every service asked for one the registry does not have.
#[test]
fn a_wildcard_client_is_told_the_service_is_not_registered() {
    let all = Descriptor::from_yaml(
        "service: batch\nport: 8080\ningress: { port: 31001 }\ndependencies:\n  - service: \"*\"\n",
    )
    .expect("valid");
    assert_eq!(
        cluster_of(&undeclared_listener(&all, "ledger")),
        "meshplane: `ledger` is not a service in the registry"
    );
}

#[test]
fn the_cluster_is_a_plain_eds_cluster_of_the_name() {
    let c = undeclared_cluster("why");
    assert_eq!(c.name, "why");
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
}
