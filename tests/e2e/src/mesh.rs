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
use meshplane_xds::fixtures::{mk_endpoints, mk_http_listener, mk_routes};

use crate::error::{IoContext, Result};

/// Name of the egress listener in every test snapshot.
pub const LISTENER: &str = "egress";
/// Name of its route configuration.
pub const ROUTES: &str = "egress-routes";

/// A port for Envoy to listen on: bound to 127.0.0.1:0 and released. Another process could
/// take it before Envoy binds it; the window is tiny and a test that loses the race fails
/// with Envoy's bind error in its log rather than passing wrongly.
/// A port is never handed out twice in one test process, so parallel tests cannot be given
/// the same released port.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0")
            .io_context(|| "finding a free port on 127.0.0.1".to_owned())?;
        let port = listener
            .local_addr()
            .io_context(|| "reading a free port".to_owned())?
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// The egress listener on `port` with routes `(host, cluster)`, and EDS clusters
/// `(name, upstream ports)` (an empty port list is a service with no instances). The
/// clusters warm until their endpoints arrive, with no time limit, so a missing EDS
/// response fails a test rather than slowing it down.
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
        resources.push(Resource::cluster(&eds_cluster(name, 1)));
        resources.push(mk_endpoints(name, &endpoints));
    }
    resources
}

/// An EDS cluster Envoy rejects when creating it (load-balancing policy
/// `CLUSTER_PROVIDED`, invalid for EDS), with its endpoints: Envoy applies the other
/// clusters of the update and never subscribes to this one's endpoints.
pub fn rejected_eds_cluster(name: &str) -> Vec<Arc<Resource>> {
    let mut cluster = eds_cluster(name, 1);
    cluster.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    vec![Resource::cluster(&cluster), mk_endpoints(name, &[])]
}

/// Cluster `name` of [`egress`] with a different connect timeout: a changed cluster with
/// unchanged endpoints, which Envoy warms again.
pub fn retimed_cluster(name: &str, connect_timeout_secs: i64) -> Arc<Resource> {
    Resource::cluster(&eds_cluster(name, connect_timeout_secs))
}

fn eds_cluster(name: &str, connect_timeout_secs: i64) -> Cluster {
    let ads = ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        // Warm until the endpoints arrive, however long: Envoy's default gives up after
        // 15 s, which would let a test pass slowly on a missing EDS response.
        initial_fetch_timeout: Some(Duration {
            seconds: 0,
            nanos: 0,
        }),
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    };
    Cluster {
        name: name.to_owned(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: connect_timeout_secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}
