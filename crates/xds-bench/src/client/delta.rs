//! An incremental (delta) ADS proxy, behaving like Envoy: legacy-wildcard CDS and LDS, EDS
//! and RDS subscriptions following the clusters and listeners it holds, every response
//! ACKed by its nonce.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use meshplane_xds::ResourceType;

use super::names;
use super::sotw::slot;

/// Delta state of one proxy.
#[derive(Debug)]
pub struct DeltaProxy {
    node: Node,
    /// Cluster name → the EDS name it needs.
    clusters: BTreeMap<String, Option<String>>,
    /// Listener name → the route configurations it needs.
    listeners: BTreeMap<String, Vec<String>>,
    eds_subscribed: BTreeSet<String>,
    routes_subscribed: BTreeSet<String>,
    eds_have: BTreeSet<String>,
    routes_have: BTreeSet<String>,
    acked: [bool; 4],
}

impl DeltaProxy {
    /// A proxy identifying itself with `node`.
    pub fn new(node: Node) -> Self {
        DeltaProxy {
            node,
            clusters: BTreeMap::new(),
            listeners: BTreeMap::new(),
            eds_subscribed: BTreeSet::new(),
            routes_subscribed: BTreeSet::new(),
            eds_have: BTreeSet::new(),
            routes_have: BTreeSet::new(),
            acked: [false; 4],
        }
    }

    /// The first requests: CDS (carrying the node) and LDS, both legacy wildcards.
    pub fn initial(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let mut cds = request(ResourceType::Cluster);
        cds.node = Some(self.node.clone());
        vec![cds, request(ResourceType::Listener)]
    }

    /// Handles a response; returns its type and the requests to send (the ACK last).
    pub fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
    ) -> anyhow::Result<(ResourceType, Vec<DeltaDiscoveryRequest>)> {
        let kind = ResourceType::from_type_url(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("response of unknown type `{}`", resp.type_url))?;
        self.acked[slot(kind)?] = true;
        let mut out = Vec::new();
        match kind {
            ResourceType::Cluster => {
                for r in &resp.resources {
                    let value = r
                        .resource
                        .as_ref()
                        .map(|a| a.value.as_slice())
                        .unwrap_or_default();
                    self.clusters
                        .insert(r.name.clone(), names::eds_name_of_cluster(value)?);
                }
                for name in &resp.removed_resources {
                    self.clusters.remove(name);
                }
                let wanted: BTreeSet<String> = self.clusters.values().flatten().cloned().collect();
                out.extend(resubscribe(
                    ResourceType::Endpoint,
                    &mut self.eds_subscribed,
                    wanted,
                ));
            }
            ResourceType::Listener => {
                for r in &resp.resources {
                    let value = r
                        .resource
                        .as_ref()
                        .map(|a| a.value.as_slice())
                        .unwrap_or_default();
                    self.listeners
                        .insert(r.name.clone(), names::routes_of_listener(value)?.1);
                }
                for name in &resp.removed_resources {
                    self.listeners.remove(name);
                }
                let wanted: BTreeSet<String> = self.listeners.values().flatten().cloned().collect();
                out.extend(resubscribe(
                    ResourceType::Route,
                    &mut self.routes_subscribed,
                    wanted,
                ));
            }
            ResourceType::Endpoint | ResourceType::Route => {
                let have = if kind == ResourceType::Endpoint {
                    &mut self.eds_have
                } else {
                    &mut self.routes_have
                };
                have.extend(resp.resources.iter().map(|r| r.name.clone()));
                for name in &resp.removed_resources {
                    have.remove(name);
                }
            }
            ResourceType::Secret => {}
        }
        let mut ack = request(kind);
        ack.response_nonce = resp.nonce;
        out.push(ack);
        Ok((kind, out))
    }

    /// Every type ACKed, and every EDS and RDS name it subscribes to received.
    pub fn synced(&self) -> bool {
        self.acked.iter().all(|a| *a)
            && !self.eds_subscribed.is_empty()
            && self.eds_subscribed.is_subset(&self.eds_have)
            && self.routes_subscribed.is_subset(&self.routes_have)
    }
}

fn request(kind: ResourceType) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: kind.type_url().to_owned(),
        ..Default::default()
    }
}

/// A request moving the subscription of `kind` from `current` to `wanted`, if they differ.
fn resubscribe(
    kind: ResourceType,
    current: &mut BTreeSet<String>,
    wanted: BTreeSet<String>,
) -> Option<DeltaDiscoveryRequest> {
    if *current == wanted {
        return None;
    }
    let mut req = request(kind);
    req.resource_names_subscribe = wanted.difference(current).cloned().collect();
    req.resource_names_unsubscribe = current.difference(&wanted).cloned().collect();
    *current = wanted;
    Some(req)
}
