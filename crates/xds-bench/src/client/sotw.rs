//! A state-of-the-world ADS proxy, behaving like Envoy: CDS and LDS as wildcards, then EDS
//! and RDS for the names they carry, every response ACKed with its version and nonce.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshplane_xds::ResourceType;

use super::names;

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
}

impl SotwProxy {
    /// A proxy identifying itself with `node`.
    pub fn new(node: Node) -> Self {
        SotwProxy {
            node,
            eds_names: BTreeSet::new(),
            route_names: BTreeSet::new(),
            eds_have: BTreeSet::new(),
            routes_have: BTreeSet::new(),
            seen: Default::default(),
        }
    }

    /// The first requests: wildcard CDS (carrying the node) and wildcard LDS.
    pub fn initial(&mut self) -> Vec<DiscoveryRequest> {
        let mut cds = self.request(ResourceType::Cluster, Vec::new());
        cds.node = Some(self.node.clone());
        vec![cds, self.request(ResourceType::Listener, Vec::new())]
    }

    /// Handles a response; returns its type and the requests to send (the ACK last).
    pub fn on_response(
        &mut self,
        resp: DiscoveryResponse,
    ) -> anyhow::Result<(ResourceType, Vec<DiscoveryRequest>)> {
        let kind = ResourceType::from_type_url(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("response of unknown type `{}`", resp.type_url))?;
        let slot = slot(kind)?;
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
        Ok((kind, out))
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
