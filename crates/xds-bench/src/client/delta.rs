//! An incremental (delta) ADS proxy, behaving like Envoy: legacy-wildcard CDS and LDS, EDS
//! and RDS subscriptions following the clusters and listeners it holds, every response
//! ACKed by its nonce. It keeps the version of every resource it holds, so a reconnect
//! reports them in `initial_resource_versions` as Envoy does, and a resource re-sent at the
//! version it holds is counted.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use meshplane_xds::ResourceType;

use super::names;
use super::sotw::slot;
use super::{Digests, Received};

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
    /// Per type: name → version of every resource held.
    versions: [BTreeMap<String, String>; 4],
    acked: [bool; 4],
    digests: Option<Digests>,
}

impl DeltaProxy {
    /// A proxy identifying itself with `node`; with `digests`, it records the routable
    /// endpoints of every assignment it holds there.
    pub fn new(node: Node, digests: Option<Digests>) -> Self {
        DeltaProxy {
            node,
            clusters: BTreeMap::new(),
            listeners: BTreeMap::new(),
            eds_subscribed: BTreeSet::new(),
            routes_subscribed: BTreeSet::new(),
            versions: Default::default(),
            acked: [false; 4],
            digests,
        }
    }

    /// The first requests: CDS (carrying the node) and LDS, both legacy wildcards.
    pub fn initial(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let mut cds = request(ResourceType::Cluster);
        cds.node = Some(self.node.clone());
        vec![cds, request(ResourceType::Listener)]
    }

    /// The first requests on a new stream after one ended, as Envoy sends them: every type
    /// it subscribes to, with the names it subscribes to and the version of every resource
    /// it holds (`initial_resource_versions`).
    pub fn reconnect(&mut self) -> Vec<DeltaDiscoveryRequest> {
        let kinds = [
            (ResourceType::Cluster, None),
            (ResourceType::Endpoint, Some(&self.eds_subscribed)),
            (ResourceType::Listener, None),
            (ResourceType::Route, Some(&self.routes_subscribed)),
        ];
        let mut out: Vec<DeltaDiscoveryRequest> = kinds
            .into_iter()
            .enumerate()
            .filter(|(_, (_, names))| names.is_none_or(|n| !n.is_empty()))
            .map(|(i, (kind, names))| DeltaDiscoveryRequest {
                resource_names_subscribe: names
                    .map(|n| n.iter().cloned().collect())
                    .unwrap_or_default(),
                initial_resource_versions: self.versions[i]
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                ..request(kind)
            })
            .collect();
        if let Some(first) = out.first_mut() {
            first.node = Some(self.node.clone());
        }
        out
    }

    /// Handles a response; returns what it carried and the requests to send (the ACK last).
    pub fn on_response(
        &mut self,
        resp: DeltaDiscoveryResponse,
    ) -> anyhow::Result<(Received, Vec<DeltaDiscoveryRequest>)> {
        let kind = ResourceType::from_type_url(&resp.type_url)
            .ok_or_else(|| anyhow::anyhow!("response of unknown type `{}`", resp.type_url))?;
        let slot = slot(kind)?;
        self.acked[slot] = true;
        let mut received = Received {
            kind,
            resources: resp.resources.len(),
            held: 0,
        };
        for r in &resp.resources {
            let held = self.versions[slot].insert(r.name.clone(), r.version.clone());
            if held.as_deref() == Some(r.version.as_str()) {
                received.held += 1;
            }
        }
        for name in &resp.removed_resources {
            self.versions[slot].remove(name);
        }
        let mut out = Vec::new();
        match kind {
            ResourceType::Cluster => {
                for r in &resp.resources {
                    self.clusters
                        .insert(r.name.clone(), names::eds_name_of_cluster(value(r))?);
                }
                for name in &resp.removed_resources {
                    self.clusters.remove(name);
                }
                let wanted: BTreeSet<String> = self.clusters.values().flatten().cloned().collect();
                // Envoy forgets the assignments of the clusters it no longer has.
                for gone in self.eds_subscribed.difference(&wanted) {
                    self.versions[1].remove(gone); // slot(Endpoint)
                    if let Some(digests) = &self.digests {
                        digests.lock().remove(gone);
                    }
                }
                out.extend(resubscribe(
                    ResourceType::Endpoint,
                    &mut self.eds_subscribed,
                    wanted,
                ));
            }
            ResourceType::Listener => {
                for r in &resp.resources {
                    self.listeners
                        .insert(r.name.clone(), names::routes_of_listener(value(r))?.1);
                }
                for name in &resp.removed_resources {
                    self.listeners.remove(name);
                }
                let wanted: BTreeSet<String> = self.listeners.values().flatten().cloned().collect();
                for gone in self.routes_subscribed.difference(&wanted) {
                    self.versions[3].remove(gone); // slot(Route)
                }
                out.extend(resubscribe(
                    ResourceType::Route,
                    &mut self.routes_subscribed,
                    wanted,
                ));
            }
            ResourceType::Endpoint => {
                if let Some(digests) = &self.digests {
                    let mut digests = digests.lock();
                    for r in &resp.resources {
                        digests.insert(r.name.clone(), names::endpoints_digest(value(r))?);
                    }
                    for name in &resp.removed_resources {
                        digests.remove(name);
                    }
                }
            }
            ResourceType::Route | ResourceType::Secret => {}
        }
        let mut ack = request(kind);
        ack.response_nonce = resp.nonce;
        out.push(ack);
        Ok((received, out))
    }

    /// Every type ACKed, and every EDS and RDS name it subscribes to received.
    pub fn synced(&self) -> bool {
        let has = |kind: ResourceType, names: &BTreeSet<String>| {
            slot(kind).is_ok_and(|i| names.iter().all(|n| self.versions[i].contains_key(n)))
        };
        self.acked.iter().all(|a| *a)
            && !self.eds_subscribed.is_empty()
            && has(ResourceType::Endpoint, &self.eds_subscribed)
            && has(ResourceType::Route, &self.routes_subscribed)
    }
}

/// The encoded resource inside a delta `Resource`.
fn value(r: &envoy_types::pb::envoy::service::discovery::v3::Resource) -> &[u8] {
    r.resource
        .as_ref()
        .map(|a| a.value.as_slice())
        .unwrap_or_default()
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
