//! What the server publishes: the groups, their snapshots, and the change made each round.
//!
//! Two layouts. [`Layout::Groups`] is the realistic mesh: proxies spread over
//! groups (one per service, five proxies each), each group seeing its own service and four
//! dependencies; a round changes the endpoints of every service, so every group changes.
//! [`Layout::Shared`] is the wildcard worst case: every proxy in one group that sees 1,000
//! services of 20 instances; a round changes one service's endpoints.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use meshplane_xds::server::node::check_node_identity;
use meshplane_xds::{GroupError, GroupKey, NodeGrouper, PeerInfo, Resource, Snapshot};

/// Proxies per group in the realistic layout (a mesh of 5,000 proxies has ≈ 1,000 groups).
pub const PROXIES_PER_GROUP: usize = 5;
/// Dependencies each service's proxies route to, besides their own service.
const DEPENDENCIES: usize = 4;
/// Instances per service in the realistic layout.
const GROUP_INSTANCES: usize = 3;
/// Services seen by the shared group (the wildcard target: 1,000 services × 20 instances).
pub const SHARED_SERVICES: usize = 1_000;
const SHARED_INSTANCES: usize = 20;

/// How proxies map to groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One group per service, five proxies per group, five clusters per group.
    Groups,
    /// Every proxy in one group of 1,000 clusters.
    Shared,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "groups" => Ok(Layout::Groups),
            "shared" => Ok(Layout::Shared),
            other => Err(format!(
                "unknown layout `{other}`: use `groups` or `shared`"
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Groups => "groups",
            Layout::Shared => "shared",
        })
    }
}

impl Layout {
    /// Number of services (and, for `Groups`, groups) for `streams` proxies.
    pub fn services(self, streams: usize) -> usize {
        match self {
            Layout::Groups => streams.div_ceil(PROXIES_PER_GROUP).max(1),
            Layout::Shared => SHARED_SERVICES,
        }
    }

    /// Rough memory a scenario needs, server and client together (measured: about 1 MiB
    /// per stream on each side for `Shared`, whose responses are ~0.7 MiB; 0.05 for `Groups`).
    pub fn memory_estimate(self, streams: usize) -> u64 {
        let per_stream: u64 = match self {
            Layout::Groups => 128 * 1024,
            Layout::Shared => 2 * 1024 * 1024 + 512 * 1024,
        };
        256 * 1024 * 1024 + per_stream * streams as u64
    }

    /// The `node.cluster` (service) of proxy `i`; the bench grouper groups by it.
    pub fn node_service(self, i: usize, streams: usize) -> String {
        match self {
            Layout::Groups => service_name(i % self.services(streams)),
            Layout::Shared => "mesh".to_owned(),
        }
    }

    /// Every group with its snapshot after `round` changes (round 0 is the initial state).
    pub fn snapshots(
        self,
        streams: usize,
        round: u64,
    ) -> anyhow::Result<Vec<(GroupKey, Snapshot)>> {
        let services = self.services(streams);
        match self {
            Layout::Groups => {
                // Every service's endpoints change each round; one shared `Arc` per service.
                let endpoints: Vec<_> = (0..services)
                    .map(|s| service_endpoints(s, GROUP_INSTANCES, round))
                    .collect();
                let clusters: Vec<_> = (0..services)
                    .map(|s| mk_eds_cluster(&service_name(s)))
                    .collect();
                let listener = mk_http_listener("outbound", 15001, "outbound");
                (0..services)
                    .map(|g| {
                        let seen: BTreeMap<usize, ()> = (0..=DEPENDENCIES)
                            .map(|d| ((g + d) % services, ()))
                            .collect();
                        let snapshot =
                            group_snapshot(seen.keys().copied(), &clusters, &endpoints, &listener)?;
                        Ok((GroupKey::new(service_name(g)), snapshot))
                    })
                    .collect()
            }
            Layout::Shared => {
                // Round r (from 1) changes service (r-1) mod 1,000; the rest keep their version.
                let endpoints: Vec<_> = (0..services)
                    .map(|s| service_endpoints(s, SHARED_INSTANCES, changes_of(s, services, round)))
                    .collect();
                let clusters: Vec<_> = (0..services)
                    .map(|s| mk_eds_cluster(&service_name(s)))
                    .collect();
                let listener = mk_http_listener("outbound", 15001, "outbound");
                let snapshot = group_snapshot(0..services, &clusters, &endpoints, &listener)?;
                Ok(vec![(GroupKey::new("mesh"), snapshot)])
            }
        }
    }
}

/// How many of rounds `1..=round` changed service `s` when round `k` changes `(k-1) mod services`.
fn changes_of(s: usize, services: usize, round: u64) -> u64 {
    let (s, services) = (s as u64, services as u64);
    if round > s {
        (round - 1 - s) / services + 1
    } else {
        0
    }
}

fn service_name(s: usize) -> String {
    format!("svc-{s:05}")
}

/// Endpoints of service `s`; `generation` moves every instance to a new port.
fn service_endpoints(s: usize, instances: usize, generation: u64) -> Arc<Resource> {
    let ips: Vec<String> = (0..instances)
        .map(|i| format!("10.{}.{}.{}", (s >> 8) & 0xff, s & 0xff, i + 1))
        .collect();
    let port = 8000 + (generation % 1000) as u16;
    let eps: Vec<(&str, u16, u32)> = ips.iter().map(|ip| (ip.as_str(), port, 1)).collect();
    mk_endpoints(&service_name(s), &eps)
}

fn group_snapshot(
    seen: impl Iterator<Item = usize>,
    clusters: &[Arc<Resource>],
    endpoints: &[Arc<Resource>],
    listener: &Arc<Resource>,
) -> anyhow::Result<Snapshot> {
    let seen: Vec<usize> = seen.collect();
    let names: Vec<String> = seen.iter().map(|&s| service_name(s)).collect();
    let hosts: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), n.as_str())).collect();
    let resources = seen
        .iter()
        .flat_map(|&s| [clusters[s].clone(), endpoints[s].clone()])
        .chain([listener.clone(), mk_routes("outbound", &hosts)]);
    Ok(Snapshot::new(resources)?)
}

/// Groups proxies by `node.cluster`, the way the runtime groups by service descriptor.
#[derive(Debug, Default)]
pub struct ServiceGrouper;

impl NodeGrouper for ServiceGrouper {
    fn group(&self, node: &Node, _peer: &PeerInfo) -> Result<GroupKey, GroupError> {
        check_node_identity(node)?;
        Ok(GroupKey::new(node.cluster.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshplane_xds::ResourceType;

    #[test]
    fn groups_layout_changes_every_group_each_round() {
        let before = Layout::Groups.snapshots(20, 0).expect("round 0");
        let after = Layout::Groups.snapshots(20, 1).expect("round 1");
        assert_eq!(before.len(), 4);
        for ((g1, s1), (g2, s2)) in before.iter().zip(&after) {
            assert_eq!(g1, g2);
            assert_eq!(s1.resources(ResourceType::Cluster).len(), 4);
            assert_ne!(s1.digest(), s2.digest());
        }
    }

    #[test]
    fn shared_layout_changes_one_service_each_round() {
        let s0 = &Layout::Shared.snapshots(10, 0).expect("0")[0].1;
        let s1 = &Layout::Shared.snapshots(10, 1).expect("1")[0].1;
        assert_eq!(s0.resources(ResourceType::Cluster).len(), SHARED_SERVICES);
        let changed = s0
            .resources(ResourceType::Endpoint)
            .values()
            .zip(s1.resources(ResourceType::Endpoint).values())
            .filter(|(a, b)| a.version() != b.version())
            .count();
        assert_eq!(changed, 1);
    }
}
