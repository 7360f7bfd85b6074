//! What the server publishes: the groups, their snapshots, and the change made each round.
//!
//! Three layouts. [`Layout::Groups`] is the realistic mesh: proxies spread over
//! groups (one per service, five proxies each), each group seeing its own service and four
//! dependencies; a round changes the endpoints of every service, so every group changes.
//! [`Layout::Shared`] is the wildcard worst case: every proxy in one group that sees 1,000
//! services of 20 instances; a round changes one service's endpoints. [`Layout::Mixed`] is the
//! production shape: 1,000 services × 20 instances, 1 % of the proxies in one wildcard group,
//! the rest in groups of five by service; a round changes one service, so only the wildcard
//! proxies and the groups that see that service are affected.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
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
/// One proxy in this many is a wildcard proxy in the mixed layout (1 %).
const MIXED_WILDCARD_EVERY: usize = 100;
/// The wildcard group's key (its proxies' `node.cluster`; the service a control plane must
/// allow to depend on `*`).
pub const WILDCARD_GROUP: &str = "mesh";

/// How proxies map to groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One group per service, five proxies per group, five clusters per group.
    Groups,
    /// Every proxy in one group of 1,000 clusters.
    Shared,
    /// 1,000 services × 20 instances; 1 % of the proxies in one wildcard group, the rest in
    /// groups of five by service.
    Mixed,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "groups" => Ok(Layout::Groups),
            "shared" => Ok(Layout::Shared),
            "mixed" => Ok(Layout::Mixed),
            other => Err(format!(
                "unknown layout `{other}`: use `groups`, `shared` or `mixed`"
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Groups => "groups",
            Layout::Shared => "shared",
            Layout::Mixed => "mixed",
        })
    }
}

impl Layout {
    /// Number of services (and, for `Groups`, groups) for `streams` proxies.
    pub fn services(self, streams: usize) -> usize {
        match self {
            Layout::Groups => streams.div_ceil(PROXIES_PER_GROUP).max(1),
            Layout::Shared | Layout::Mixed => SHARED_SERVICES,
        }
    }

    /// Proxies in the wildcard group of the mixed layout: 1 %, rounded up, at least one.
    /// They are the last indices, so the others can connect (and be measured) first.
    pub fn wildcard_streams(self, streams: usize) -> usize {
        match self {
            Layout::Mixed => streams.div_ceil(MIXED_WILDCARD_EVERY).max(1).min(streams),
            Layout::Groups | Layout::Shared => 0,
        }
    }

    /// Non-wildcard groups of the mixed layout: five proxies each, one per service while
    /// there are services left (past 5,000 non-wildcard proxies, groups grow beyond five).
    fn mixed_groups(streams: usize) -> usize {
        let others = streams - Layout::Mixed.wildcard_streams(streams);
        others.div_ceil(PROXIES_PER_GROUP).min(SHARED_SERVICES)
    }

    /// Groups published.
    pub fn groups(self, streams: usize) -> usize {
        match self {
            Layout::Groups => self.services(streams),
            Layout::Shared => 1,
            Layout::Mixed => Layout::mixed_groups(streams) + 1,
        }
    }

    /// The stream indices connected together, in order; the server's memory is read after
    /// each, so the mixed layout tells non-wildcard and wildcard streams apart.
    pub fn phases(self, streams: usize) -> Vec<Range<usize>> {
        let wildcard = self.wildcard_streams(streams);
        if wildcard == 0 || wildcard == streams {
            return std::iter::once(0..streams).collect();
        }
        vec![0..streams - wildcard, streams - wildcard..streams]
    }

    /// Rough memory a scenario needs, server and client together (measured: about 1 MiB
    /// per stream on each side for `Shared`, whose responses are ~0.7 MiB; 0.05 for `Groups`).
    pub fn memory_estimate(self, streams: usize) -> u64 {
        const WILDCARD: u64 = 2 * 1024 * 1024 + 512 * 1024;
        const GROUPED: u64 = 128 * 1024;
        let per_stream = match self {
            Layout::Groups => GROUPED * streams as u64,
            Layout::Shared => WILDCARD * streams as u64,
            Layout::Mixed => {
                let w = self.wildcard_streams(streams) as u64;
                WILDCARD * w + GROUPED * (streams as u64 - w)
            }
        };
        256 * 1024 * 1024 + per_stream
    }

    /// The `node.cluster` (service) of proxy `i`; the bench grouper groups by it.
    pub fn node_service(self, i: usize, streams: usize) -> String {
        match self {
            Layout::Groups => service_name(i % self.services(streams)),
            Layout::Shared => WILDCARD_GROUP.to_owned(),
            Layout::Mixed if i >= streams - self.wildcard_streams(streams) => {
                WILDCARD_GROUP.to_owned()
            }
            Layout::Mixed => service_name(i % Layout::mixed_groups(streams)),
        }
    }

    /// The service whose endpoints round `round` (from 1) changes, for the layouts that
    /// change one service per round. `Mixed` starts at the fifth service, the first one
    /// seen by five groups, so every round affects as many groups as a typical service does.
    pub(crate) fn changed_service(self, round: u64) -> Option<usize> {
        let first = match self {
            Layout::Groups => return None,
            Layout::Shared => 0,
            Layout::Mixed => DEPENDENCIES as u64,
        };
        (round > 0).then(|| ((round - 1 + first) % SHARED_SERVICES as u64) as usize)
    }

    /// The services proxy `i` sees in the mixed layout: `None` for a wildcard proxy (every
    /// service), else its group's own service and the next four.
    pub fn seen_services(self, i: usize, streams: usize) -> Option<Vec<usize>> {
        match self {
            Layout::Mixed if i < streams - self.wildcard_streams(streams) => Some(
                mixed_seen(i % Layout::mixed_groups(streams))
                    .into_iter()
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Whether proxy `i` must receive round `round`'s change: every proxy for `Groups` and
    /// `Shared`; for `Mixed`, the wildcard proxies and the groups that see the changed service.
    pub fn affected(self, i: usize, streams: usize, round: u64) -> bool {
        match (self, self.changed_service(round)) {
            (Layout::Mixed, Some(changed)) => {
                i >= streams - self.wildcard_streams(streams)
                    || mixed_seen(i % Layout::mixed_groups(streams)).contains(&changed)
            }
            _ => true,
        }
    }

    /// Streams affected by round `round`.
    pub fn affected_count(self, streams: usize, round: u64) -> usize {
        (0..streams)
            .filter(|&i| self.affected(i, streams, round))
            .count()
    }

    /// Every group with its snapshot after `round` changes (round 0 is the initial state).
    pub fn snapshots(
        self,
        streams: usize,
        round: u64,
    ) -> anyhow::Result<Vec<(GroupKey, Snapshot)>> {
        self.build(streams, round, false)
    }

    /// The groups whose snapshot round `round` changes, with their new snapshot: what a
    /// control plane recomputes for that change (the others keep theirs).
    pub fn changed_snapshots(
        self,
        streams: usize,
        round: u64,
    ) -> anyhow::Result<Vec<(GroupKey, Snapshot)>> {
        self.build(streams, round, true)
    }

    fn build(
        self,
        streams: usize,
        round: u64,
        only_changed: bool,
    ) -> anyhow::Result<Vec<(GroupKey, Snapshot)>> {
        let services = self.services(streams);
        let listener = mk_http_listener("outbound", 15001, "outbound");
        let clusters: Vec<_> = (0..services)
            .map(|s| mk_eds_cluster(&service_name(s)))
            .collect();
        let endpoints: Vec<_> = match self {
            // Every service's endpoints change each round; one shared `Arc` per service.
            Layout::Groups => (0..services)
                .map(|s| service_endpoints(s, GROUP_INSTANCES, round))
                .collect(),
            Layout::Shared | Layout::Mixed => (0..services)
                .map(|s| service_endpoints(s, SHARED_INSTANCES, self.changes_of(s, round)))
                .collect(),
        };
        let group = |key: String, seen: &mut dyn Iterator<Item = usize>| {
            let snapshot = group_snapshot(seen, &clusters, &endpoints, &listener)?;
            anyhow::Ok((GroupKey::new(key), snapshot))
        };
        match self {
            Layout::Groups => (0..services)
                .map(|g| group(service_name(g), &mut groups_seen(g, services).into_iter()))
                .collect(),
            Layout::Shared => Ok(vec![group(WILDCARD_GROUP.to_owned(), &mut (0..services))?]),
            Layout::Mixed => {
                let changed = self.changed_service(round);
                let mut out = vec![group(WILDCARD_GROUP.to_owned(), &mut (0..services))?];
                for g in 0..Layout::mixed_groups(streams) {
                    let seen = mixed_seen(g);
                    if !only_changed || changed.is_some_and(|c| seen.contains(&c)) {
                        out.push(group(service_name(g), &mut seen.into_iter())?);
                    }
                }
                Ok(out)
            }
        }
    }

    /// How many of rounds `1..=round` changed service `s`.
    fn changes_of(self, s: usize, round: u64) -> u64 {
        (1..=round)
            .filter(|&r| self.changed_service(r) == Some(s))
            .count() as u64
    }
}

/// Services group `g` of `services` sees in the `Groups` layout: its own and the next four.
fn groups_seen(g: usize, services: usize) -> BTreeSet<usize> {
    (0..=DEPENDENCIES).map(|d| (g + d) % services).collect()
}

/// Services non-wildcard group `g` sees in the `Mixed` layout (out of all 1,000).
fn mixed_seen(g: usize) -> BTreeSet<usize> {
    groups_seen(g, SHARED_SERVICES)
}

/// The name of service `s` (`svc-00042`).
pub fn service_name(s: usize) -> String {
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
    seen: &mut dyn Iterator<Item = usize>,
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

    #[test]
    fn mixed_layout_puts_one_percent_in_one_wildcard_group() {
        let n = 5_000;
        assert_eq!(Layout::Mixed.wildcard_streams(n), 50);
        assert_eq!(Layout::Mixed.wildcard_streams(20), 1);
        assert_eq!(Layout::Mixed.groups(n), 991);
        assert_eq!(Layout::Mixed.phases(n), vec![0..4_950, 4_950..5_000]);
        assert_eq!(Layout::Mixed.node_service(4_950, n), "mesh");
        assert_eq!(Layout::Mixed.node_service(4_949, n), "svc-00989");
        let snapshots = Layout::Mixed.snapshots(n, 0).expect("round 0");
        assert_eq!(snapshots.len(), 991);
        let (wildcard, group) = (&snapshots[0].1, &snapshots[1].1);
        assert_eq!(
            wildcard.resources(ResourceType::Cluster).len(),
            SHARED_SERVICES
        );
        assert_eq!(group.resources(ResourceType::Cluster).len(), 5);
    }

    #[test]
    fn a_mixed_round_affects_the_wildcard_group_and_the_groups_that_see_the_service() {
        let n = 5_000;
        // Round 1 changes svc-00004, seen by groups 0..=4 (5 proxies each) and the wildcard.
        assert_eq!(Layout::Mixed.affected_count(n, 1), 25 + 50);
        assert!(Layout::Mixed.affected(4, n, 1));
        assert!(!Layout::Mixed.affected(5, n, 1));
        let changed = Layout::Mixed.changed_snapshots(n, 1).expect("round 1");
        let keys: Vec<&str> = changed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mesh",
                "svc-00000",
                "svc-00001",
                "svc-00002",
                "svc-00003",
                "svc-00004"
            ]
        );
        let before = Layout::Mixed.snapshots(n, 0).expect("round 0");
        let versions = |s: &Snapshot| {
            s.resources(ResourceType::Endpoint)
                .values()
                .map(|r| (r.name().to_owned(), r.version().to_owned()))
                .collect::<Vec<_>>()
        };
        let (old, new) = (versions(&before[0].1), versions(&changed[0].1));
        let moved: Vec<&str> = old
            .iter()
            .zip(&new)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0.as_str())
            .collect();
        assert_eq!(moved, ["svc-00004"]);
    }
}
