//! A state-of-the-world ADS proxy, behaving like Envoy: CDS and LDS as wildcards, then EDS
//! and RDS for the names they carry, every response ACKed with its version and nonce. A
//! reconnect re-sends each type's last version and names, as Envoy does; a resource re-sent
//! with the bytes the proxy holds is counted.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshplane_xds::ResourceType;

use super::names;
use super::{Digests, Received};

/// Per type: the last response's version and nonce, and whether it was ACKed.
#[derive(Debug, Default)]
struct Seen {
    version: String,
    nonce: String,
    acked: bool,
}

/// SotW state of one proxy.
#[derive(Debug)]
pub struct SotwProxy {
    node: Node,
    eds_names: BTreeSet<String>,
    route_names: BTreeSet<String>,
    eds_have: BTreeSet<String>,
    routes_have: BTreeSet<String>,
    seen: [Seen; 4],
    /// Per type: name → content hash of every resource held.
    held: [BTreeMap<String, u64>; 4],
    digests: Option<Digests>,
}

impl SotwProxy {
    /// A proxy identifying itself with `node`; with `digests`, it records the routable
    /// endpoints of every assignment it holds there.
    pub fn new(node: Node, digests: Option<Digests>) -> Self {
        SotwProxy {
            node,
            eds_names: BTreeSet::new(),
            route_names: BTreeSet::new(),
            eds_have: BTreeSet::new(),
            routes_have: BTreeSet::new(),
            seen: Default::default(),
            held: Default::default(),
            digests,
        }
    }

    /// The first requests: wildcard CDS (carrying the node) and wildcard LDS.
    pub fn initial(&mut self) -> Vec<DiscoveryRequest> {
        let mut cds = self.request(ResourceType::Cluster, Vec::new());
        cds.node = Some(self.node.clone());
        vec![cds, self.request(ResourceType::Listener, Vec::new())]
    }

    /// The first requests on a new stream after one ended, as Envoy sends them: every type
    /// with the version it last accepted and the names it asks for (no nonce).
    pub fn reconnect(&mut self) -> Vec<DiscoveryRequest> {
        let mut out = vec![
            self.request(ResourceType::Cluster, Vec::new()),
            self.request(
                ResourceType::Endpoint,
                self.eds_names.iter().cloned().collect(),
            ),
            self.request(ResourceType::Listener, Vec::new()),
        ];
        if !self.route_names.is_empty() {
            out.push(self.request(
                ResourceType::Route,
                self.route_names.iter().cloned().collect(),
            ));
        }
        for r in &mut out {
            r.response_nonce.clear();
        }
        out[0].node = Some(self.node.clone());
        out
    }

    /// Handles a response; returns what it carried and the requests to send (the ACK last).
    pub fn on_response(
        &mut self,
        resp: DiscoveryResponse,
    ) -> anyhow::Result<(Received, Vec<DiscoveryRequest>)> {
        let kind = ResourceType::from_type_url(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("response of unknown type `{}`", resp.type_url))?;
        let slot = slot(kind)?;
        let received = self.hold(kind, &resp)?;
        self.seen[slot].version = resp.version_info;
        self.seen[slot].nonce = resp.nonce;
        self.seen[slot].acked = true;
        let mut out = Vec::new();
        match kind {
            ResourceType::Cluster => {
                let wanted = resp
                    .resources
                    .iter()
                    .filter_map(|a| names::eds_name_of_cluster(&a.value).transpose())
                    .collect::<anyhow::Result<BTreeSet<_>>>()?;
                if wanted != self.eds_names {
                    // Envoy drops the assignments of the clusters it no longer has.
                    self.held[1].retain(|name, _| wanted.contains(name));
                    if let Some(digests) = &self.digests {
                        digests.lock().retain(|name, _| wanted.contains(name));
                    }
                    self.eds_names = wanted;
                    out.push(self.request(
                        ResourceType::Endpoint,
                        self.eds_names.iter().cloned().collect(),
                    ));
                }
            }
            ResourceType::Listener => {
                let mut wanted = BTreeSet::new();
                for a in &resp.resources {
                    wanted.extend(names::routes_of_listener(&a.value)?.1);
                }
                if wanted != self.route_names {
                    self.route_names = wanted;
                    out.push(self.request(
                        ResourceType::Route,
                        self.route_names.iter().cloned().collect(),
                    ));
                }
            }
            ResourceType::Endpoint | ResourceType::Route => {
                let have = resp
                    .resources
                    .iter()
                    .map(|a| names::name_of(&a.value))
                    .collect::<anyhow::Result<BTreeSet<_>>>()?;
                if kind == ResourceType::Endpoint {
                    self.eds_have = have;
                } else {
                    self.routes_have = have;
                }
            }
            ResourceType::Secret => {}
        }
        let names = match kind {
            ResourceType::Endpoint => self.eds_names.iter().cloned().collect(),
            ResourceType::Route => self.route_names.iter().cloned().collect(),
            _ => Vec::new(),
        };
        out.push(self.request(kind, names));
        Ok((received, out))
    }

    /// Records the content of what `resp` carries (CDS and LDS responses are full sets,
    /// EDS and RDS ones update the names they carry) and counts what was already held.
    fn hold(&mut self, kind: ResourceType, resp: &DiscoveryResponse) -> anyhow::Result<Received> {
        let mut carried = Vec::with_capacity(resp.resources.len());
        for a in &resp.resources {
            carried.push(match kind {
                ResourceType::Cluster => names::cluster_name_and_hash(&a.value)?,
                ResourceType::Listener => (
                    names::routes_of_listener(&a.value)?.0,
                    names::bytes_hash(&a.value),
                ),
                _ => (names::name_of(&a.value)?, names::bytes_hash(&a.value)),
            });
        }
        let held = &mut self.held[slot(kind)?];
        let already = carried
            .iter()
            .filter(|(name, hash)| held.get(name) == Some(hash))
            .count();
        if matches!(kind, ResourceType::Cluster | ResourceType::Listener) {
            held.clear();
        }
        held.extend(carried);
        if kind == ResourceType::Endpoint
            && let Some(digests) = &self.digests
        {
            let mut digests = digests.lock();
            for a in &resp.resources {
                digests.insert(
                    names::name_of(&a.value)?,
                    names::endpoints_digest(&a.value)?,
                );
            }
        }
        Ok(Received {
            kind,
            resources: resp.resources.len(),
            held: already,
        })
    }

    /// Every type ACKed, and every EDS and RDS name it needs received.
    pub fn synced(&self) -> bool {
        self.seen.iter().all(|s| s.acked)
            && !self.eds_names.is_empty()
            && self.eds_names.is_subset(&self.eds_have)
            && self.route_names.is_subset(&self.routes_have)
    }

    /// A request for `kind` that ACKs the last response of that type (if any).
    fn request(&self, kind: ResourceType, resource_names: Vec<String>) -> DiscoveryRequest {
        let seen = slot(kind).map(|i| &self.seen[i]).ok();
        DiscoveryRequest {
            version_info: seen.map(|s| s.version.clone()).unwrap_or_default(),
            response_nonce: seen.map(|s| s.nonce.clone()).unwrap_or_default(),
            resource_names,
            type_url: kind.type_url().to_owned(),
            ..Default::default()
        }
    }
}

/// Index of the four types the bench proxies use.
pub(super) fn slot(kind: ResourceType) -> anyhow::Result<usize> {
    match kind {
        ResourceType::Cluster => Ok(0),
        ResourceType::Endpoint => Ok(1),
        ResourceType::Listener => Ok(2),
        ResourceType::Route => Ok(3),
        ResourceType::Secret => anyhow::bail!("the bench proxies never ask for secrets"),
    }
}
