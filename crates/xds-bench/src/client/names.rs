//! What an Envoy learns from a resource to know what to ask for next: a cluster's EDS
//! name, a listener's route configuration names.
//!
//! Clusters, endpoints and route configurations are decoded through tiny messages that keep
//! only the fields needed (prost skips the rest): with 1,000 clusters on 10,000 streams the
//! client must stay cheap, since it shares the machine's two cores with the server.

use std::hash::{DefaultHasher, Hash, Hasher};

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::Message;

/// `Cluster.name` (1), `Cluster.type` (2) and `Cluster.eds_cluster_config` (3).
#[derive(Clone, PartialEq, Message)]
struct ClusterNames {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    kind: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds: Option<EdsConfigName>,
}

/// `EdsClusterConfig.service_name` (2).
#[derive(Clone, PartialEq, Message)]
struct EdsConfigName {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// Field 1 of `ClusterLoadAssignment` (`cluster_name`) and `RouteConfiguration` (`name`).
#[derive(Clone, PartialEq, Message)]
struct FirstName {
    #[prost(string, tag = "1")]
    name: String,
}

/// The EDS resource a cluster's bytes name (its `service_name`, else its name); `None` for
/// a cluster of another discovery type (static, DNS), which Envoy asks no endpoints for.
pub fn eds_name_of_cluster(bytes: &[u8]) -> anyhow::Result<Option<String>> {
    const EDS: i32 = 3;
    let c = ClusterNames::decode(bytes)?;
    if c.kind.is_some_and(|k| k != EDS) {
        return Ok(None);
    }
    Ok(Some(
        c.eds
            .map(|e| e.service_name)
            .filter(|s| !s.is_empty())
            .unwrap_or(c.name),
    ))
}

/// The name of an endpoints or route configuration resource.
pub fn name_of(bytes: &[u8]) -> anyhow::Result<String> {
    Ok(FirstName::decode(bytes)?.name)
}

/// `(name, content hash)` of a cluster's bytes: what a proxy holds of it, to tell a
/// re-sent resource from a changed one.
pub fn cluster_name_and_hash(bytes: &[u8]) -> anyhow::Result<(String, u64)> {
    Ok((ClusterNames::decode(bytes)?.name, bytes_hash(bytes)))
}

/// A hash of encoded bytes, the same in every process running this binary (`DefaultHasher`
/// is SipHash with fixed keys).
pub fn bytes_hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The routable endpoints of an assignment's bytes, as [`addresses_digest`] of their
/// `address:port`: healthy and unknown endpoints count, unhealthy and draining ones do not
/// (Envoy sends no traffic to them).
pub fn endpoints_digest(bytes: &[u8]) -> anyhow::Result<u64> {
    let cla = ClusterLoadAssignment::decode(bytes)?;
    let routable = [HealthStatus::Unknown as i32, HealthStatus::Healthy as i32];
    let addresses = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .filter(|e| routable.contains(&e.health_status))
        .filter_map(|e| match &e.host_identifier {
            Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
            _ => None,
        })
        .filter_map(|a| match &a.address {
            Some(address::Address::SocketAddress(s)) => Some(format!(
                "{}:{}",
                s.address,
                match s.port_specifier {
                    Some(
                        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p),
                    ) => p,
                    _ => 0,
                }
            )),
            _ => None,
        });
    Ok(addresses_digest(addresses))
}

/// Order-independent digest of a set of `address:port` strings: what a proxy's assignment
/// and the registry's routable instances of a service are compared by.
pub fn addresses_digest(addresses: impl Iterator<Item = String>) -> u64 {
    let mut sorted: Vec<String> = addresses.collect();
    sorted.sort_unstable();
    let mut h = DefaultHasher::new();
    sorted.hash(&mut h);
    h.finish()
}

/// `(listener name, route configuration names its HTTP connection managers use over RDS)`.
pub fn routes_of_listener(bytes: &[u8]) -> anyhow::Result<(String, Vec<String>)> {
    let listener = Listener::decode(bytes)?;
    let mut routes = Vec::new();
    for chain in &listener.filter_chains {
        for f in &chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if !any.type_url.ends_with(".HttpConnectionManager") {
                continue;
            }
            let hcm = HttpConnectionManager::decode(any.value.as_slice())?;
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                routes.push(rds.route_config_name);
            }
        }
    }
    Ok((listener.name, routes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;
    use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};

    fn value(r: &meshplane_xds::Resource) -> Vec<u8> {
        Any::decode(r.encoded_any().as_ref()).expect("any").value
    }

    #[test]
    fn names_come_out_of_fixture_resources() {
        let c = mk_eds_cluster("svc-a");
        assert_eq!(
            eds_name_of_cluster(&value(&c)).expect("cluster").as_deref(),
            Some("svc-a")
        );
        // A static cluster (the control plane's local app) has no EDS resource to ask for.
        let local = envoy_types::pb::envoy::config::cluster::v3::Cluster {
            name: "local_app".to_owned(),
            cluster_discovery_type: Some(
                envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                    envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Static
                        as i32,
                ),
            ),
            ..Default::default()
        };
        assert_eq!(
            eds_name_of_cluster(&local.encode_to_vec()).expect("cluster"),
            None
        );
        let e = mk_endpoints("svc-a", &[("10.0.0.1", 80, 1), ("10.0.0.2", 81, 1)]);
        assert_eq!(name_of(&value(&e)).expect("cla"), "svc-a");
        let expected = ["10.0.0.2:81".to_owned(), "10.0.0.1:80".to_owned()];
        assert_eq!(
            endpoints_digest(&value(&e)).expect("cla"),
            addresses_digest(expected.into_iter())
        );
        assert_ne!(
            endpoints_digest(&value(&e)).expect("cla"),
            addresses_digest(std::iter::once("10.0.0.1:80".to_owned()))
        );
        let r = mk_routes("outbound", &[("a", "svc-a")]);
        assert_eq!(name_of(&value(&r)).expect("routes"), "outbound");
        let l = mk_http_listener("out", 15001, "outbound");
        let (name, routes) = routes_of_listener(&value(&l)).expect("listener");
        assert_eq!(
            (name.as_str(), routes),
            ("out", vec!["outbound".to_owned()])
        );
    }
}
