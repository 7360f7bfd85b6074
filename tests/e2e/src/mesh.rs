//! Test snapshots: one egress listener whose routes send each `Host` to a cluster, and EDS
//! clusters whose endpoints are test upstreams on 127.0.0.1.

use std::net::TcpListener;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source,
};
use envoy_types::pb::google::protobuf::Duration;
use meshplane_xds::Resource;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};

use crate::error::{IoContext, Result};

/// Name of the egress listener in every test snapshot.
pub const LISTENER: &str = "egress";
/// Name of its route configuration.
pub const ROUTES: &str = "egress-routes";

/// A port for Envoy to listen on: bound to 127.0.0.1:0 and released. Another process could
/// take it before Envoy binds it; the window is tiny and a test that loses the race fails
/// with Envoy's bind error in its log rather than passing wrongly.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .io_context(|| "finding a free port on 127.0.0.1".to_owned())?;
    let addr = listener
        .local_addr()
        .io_context(|| "reading a free port".to_owned())?;
    Ok(addr.port())
}

/// The egress listener on `port` with routes `(host, cluster)`, and EDS clusters
/// `(name, upstream ports)` (an empty port list is a service with no instances).
pub fn egress(
    port: u16,
    routes: &[(&str, &str)],
    clusters: &[(&str, &[u16])],
) -> Vec<Arc<Resource>> {
    let mut resources = vec![
        mk_http_listener(LISTENER, port, ROUTES),
        mk_routes(ROUTES, routes),
    ];
    for (name, ports) in clusters {
        let endpoints: Vec<(&str, u16, u32)> = ports.iter().map(|p| ("127.0.0.1", *p, 1)).collect();
        resources.push(mk_eds_cluster(name));
        resources.push(mk_endpoints(name, &endpoints));
    }
    resources
}

/// An EDS cluster Envoy rejects when creating it (load-balancing policy
/// `CLUSTER_PROVIDED`, invalid for EDS), with its endpoints: Envoy applies the other
/// clusters of the update and never subscribes to this one's endpoints.
pub fn rejected_eds_cluster(name: &str) -> Vec<Arc<Resource>> {
    let ads = ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    };
    let cluster = Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads),
            service_name: String::new(),
        }),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    };
    vec![Resource::cluster(&cluster), mk_endpoints(name, &[])]
}
