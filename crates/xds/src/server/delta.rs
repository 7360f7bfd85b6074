//! Incremental (delta) protocol state of one stream: what the proxy has, per resource,
//! so each push sends exactly the resources that changed and names the ones removed.
//!
//! Pure and synchronous; the async driver in [`super::stream`] feeds it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::stream::{Protocol, Pushes, answer, parse_type};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{ResourceMap, Snapshot, version_of};
use crate::status::{Nack, StatusEntry};
use crate::wire::DeltaResponse;

/// Responses awaiting an ACK, per type; Envoy answers each, so this stays tiny. The cap
/// only guards against a peer that never answers.
const MAX_PENDING: usize = 64;

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name → version the proxy has (from `initial_resource_versions` and our responses).
    has: HashMap<String, String>,
    /// Nonce → system version of responses not yet answered.
    pending: VecDeque<(String, String)>,
    /// The snapshot type version `has` was last brought in line with, while the
    /// subscription stayed the same: diffing again would find nothing.
    evaluated: Option<String>,
}

/// Delta state of one stream.
#[derive(Debug)]
pub(crate) struct DeltaState {
    only: Option<ResourceType>,
    types: [Option<TypeState>; 5],
    nonces: u64,
    /// EDS resources of newly sent clusters that the proxy has not been sent yet (it asks
    /// for them once it has processed the clusters). Until then those clusters warm and a
    /// route naming them would fail requests with 503, so listeners, routes and cluster
    /// removals wait (make-before-break).
    awaiting_endpoints: BTreeSet<String>,
    /// EDS resource name of each cluster sent whose EDS name is not its own name (rare), so
    /// the endpoints of a cluster gone from the snapshot are still known while it is held.
    eds_aliases: HashMap<String, String>,
}

/// What to send for one type: changed resources and removed names.
struct Diff {
    system_version: String,
    updated: Vec<std::sync::Arc<Resource>>,
    removed: Vec<String>,
}

impl DeltaState {
    pub(crate) fn new(only: Option<ResourceType>) -> Self {
        DeltaState {
            only,
            types: Default::default(),
            nonces: 0,
            awaiting_endpoints: BTreeSet::new(),
            eds_aliases: HashMap::new(),
        }
    }

    /// Whether a cluster the proxy has uses EDS resource `name`.
    fn held_cluster_uses(&self, name: &str, snapshot: &Snapshot) -> bool {
        let Some(cds) = self.types[ResourceType::Cluster.index()].as_ref() else {
            return false;
        };
        cds.has.keys().any(
            |cluster| match snapshot.get(ResourceType::Cluster, cluster) {
                Some(c) => c
                    .references()
                    .iter()
                    .any(|r| r.kind == ResourceType::Endpoint && r.name == name),
                None => self.eds_aliases.get(cluster).unwrap_or(cluster) == name,
            },
        )
    }

    /// Recomputes [`DeltaState::awaiting_endpoints`] after clusters using `new` EDS
    /// resources were sent. Streams without an EDS subscription (per-type CDS streams, or
    /// before the proxy's first EDS request) never wait.
    fn await_endpoints(&mut self, new: BTreeSet<String>, snapshot: &Snapshot) {
        let (Some(cds), Some(eds)) = (
            self.types[ResourceType::Cluster.index()].as_ref(),
            self.types[ResourceType::Endpoint.index()].as_ref(),
        ) else {
            self.awaiting_endpoints.clear();
            return;
        };
        let mut awaiting = std::mem::take(&mut self.awaiting_endpoints);
        awaiting.extend(new);
        awaiting.retain(|name| !eds.has.contains_key(name));
        if !awaiting.is_empty() {
            // Only clusters the proxy still has matter.
            let used: BTreeSet<&str> = cds
                .has
                .keys()
                .filter_map(|name| snapshot.get(ResourceType::Cluster, name))
                .flat_map(|c| endpoint_names(c))
                .collect();
            awaiting.retain(|name| used.contains(name.as_str()));
        }
        self.awaiting_endpoints = awaiting;
    }

    /// Drops from [`DeltaState::awaiting_endpoints`] what the proxy has now been sent.
    fn endpoints_delivered(&mut self) {
        if let Some(eds) = self.types[ResourceType::Endpoint.index()].as_ref() {
            self.awaiting_endpoints
                .retain(|name| !eds.has.contains_key(name));
        }
    }

    fn desired(&self, kind: ResourceType, snapshot: &Snapshot) -> Option<ResourceMap> {
        let st = self.types[kind.index()].as_ref()?;
        let all = snapshot.resources(kind);
        let mut out = if st.wildcard {
            all.clone()
        } else {
            ResourceMap::new()
        };
        for name in &st.names {
            match all.get(name) {
                Some(r) => {
                    out.insert(name.clone(), r.clone());
                }
                // Never leave a cluster warming: unknown EDS names get an empty assignment.
                None if kind == ResourceType::Endpoint => {
                    out.insert(name.clone(), Resource::empty_endpoints(name));
                }
                None => {}
            }
        }
        Some(out)
    }

    fn diff(&self, kind: ResourceType, snapshot: &Snapshot) -> Option<Diff> {
        let desired = self.desired(kind, snapshot)?;
        let st = self.types[kind.index()].as_ref()?;
        let updated: Vec<_> = desired
            .values()
            .filter(|r| match st.has.get(r.name()) {
                // Unknown EDS names get an empty assignment (never leave a cluster warming),
                // but a cluster removed from the snapshot and still held for
                // make-before-break is still routed to until the routes change: it keeps
                // the endpoints it has.
                Some(_)
                    if kind == ResourceType::Endpoint
                        && snapshot.get(kind, r.name()).is_none()
                        && self.held_cluster_uses(r.name(), snapshot) =>
                {
                    false
                }
                Some(version) => version != r.version(),
                None => true,
            })
            .cloned()
            .collect();
        let mut removed: Vec<String> = st
            .has
            .keys()
            .filter(|n| !desired.contains_key(*n))
            .cloned()
            .collect();
        removed.sort();
        if updated.is_empty() && removed.is_empty() {
            return None;
        }
        Some(Diff {
            system_version: version_of(&desired),
            updated,
            removed,
        })
    }

    fn emit(&mut self, kind: ResourceType, diff: Diff, status: &StatusEntry) -> DeltaResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        status.sent(kind, &diff.system_version, &nonce);
        if kind == ResourceType::Cluster {
            for r in &diff.updated {
                let eds = r
                    .references()
                    .iter()
                    .find(|r| r.kind == ResourceType::Endpoint);
                match eds {
                    Some(eds) if eds.name != r.name() => {
                        self.eds_aliases
                            .insert(r.name().to_owned(), eds.name.clone());
                    }
                    _ => {
                        self.eds_aliases.remove(r.name());
                    }
                }
            }
            for name in &diff.removed {
                self.eds_aliases.remove(name);
            }
            // Which clusters the proxy holds decides what its EDS diff keeps.
            if let Some(eds) = self.types[ResourceType::Endpoint.index()].as_mut() {
                eds.evaluated = None;
            }
        }
        if let Some(st) = self.types[kind.index()].as_mut() {
            for r in &diff.updated {
                st.has.insert(r.name().to_owned(), r.version().to_owned());
            }
            for name in &diff.removed {
                st.has.remove(name);
            }
            if st.pending.len() == MAX_PENDING {
                st.pending.pop_front();
            }
            st.pending
                .push_back((nonce.clone(), diff.system_version.clone()));
        }
        DeltaResponse {
            system_version: diff.system_version,
            kind,
            nonce,
            resources: diff.updated,
            removed: diff.removed,
        }
    }

    fn needs_diff(&self, kind: ResourceType, snapshot: &Snapshot) -> bool {
        self.types[kind.index()]
            .as_ref()
            .is_some_and(|st| st.evaluated.as_deref() != Some(snapshot.type_version(kind)))
    }

    fn mark_evaluated(&mut self, kind: ResourceType, snapshot: &Snapshot) {
        if let Some(st) = self.types[kind.index()].as_mut() {
            st.evaluated = Some(snapshot.type_version(kind).to_owned());
        }
    }

    /// After clusters change, their EDS resources are re-sent: an updated cluster warms
    /// until it receives an EDS response, even an unchanged one.
    fn force_endpoints_of(&mut self, clusters: &[std::sync::Arc<Resource>]) {
        let Some(eds) = self.types[ResourceType::Endpoint.index()].as_mut() else {
            return;
        };
        eds.evaluated = None;
        for c in clusters {
            for reference in c.references() {
                if reference.kind == ResourceType::Endpoint {
                    eds.has.remove(&reference.name);
                }
            }
        }
    }

    fn push_type(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        status: &StatusEntry,
        out: &mut Vec<DeltaResponse>,
    ) {
        if !self.needs_diff(kind, snapshot) {
            return;
        }
        let diff = self.diff(kind, snapshot);
        self.mark_evaluated(kind, snapshot);
        if let Some(diff) = diff {
            let response = self.emit(kind, diff, status);
            if kind == ResourceType::Cluster {
                self.force_endpoints_of(&response.resources);
            }
            out.push(response);
        }
    }

    /// Everything to send after the snapshot changed: cluster additions and updates, then
    /// endpoints, listeners and routes, and only then cluster removals (make-before-break).
    fn push(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<DeltaResponse> {
        let mut out = Vec::new();
        let mut removals = None;
        let mut new_endpoints = BTreeSet::new();
        let clusters_diff = if self.needs_diff(ResourceType::Cluster, snapshot) {
            self.diff(ResourceType::Cluster, snapshot)
        } else {
            None
        };
        if let Some(mut diff) = clusters_diff {
            let removed = std::mem::take(&mut diff.removed);
            if !diff.updated.is_empty() {
                let response = self.emit(ResourceType::Cluster, diff, status);
                self.force_endpoints_of(&response.resources);
                for cluster in &response.resources {
                    new_endpoints.extend(endpoint_names(cluster).map(str::to_owned));
                }
                out.push(response);
            }
            if !removed.is_empty() {
                removals = Some(removed);
            }
        }
        self.push_type(ResourceType::Endpoint, snapshot, status, &mut out);
        self.await_endpoints(new_endpoints, snapshot);
        if !self.awaiting_endpoints.is_empty() {
            // New clusters first get their endpoints; `on_request` resumes the push once
            // the proxy has asked for them and been sent them.
            self.push_type(ResourceType::Secret, snapshot, status, &mut out);
            return out;
        }
        for kind in [ResourceType::Listener, ResourceType::Route] {
            self.push_type(kind, snapshot, status, &mut out);
        }
        if let Some(removed) = removals {
            let system_version = self
                .desired(ResourceType::Cluster, snapshot)
                .map(|d| version_of(&d))
                .unwrap_or_default();
            let diff = Diff {
                system_version,
                updated: Vec::new(),
                removed,
            };
            out.push(self.emit(ResourceType::Cluster, diff, status));
        }
        // Only a push that ran to the end (removals sent) leaves clusters in line.
        self.mark_evaluated(ResourceType::Cluster, snapshot);
        self.push_type(ResourceType::Secret, snapshot, status, &mut out);
        out
    }

    fn record_answer(
        &mut self,
        kind: ResourceType,
        req: &DeltaDiscoveryRequest,
        status: &StatusEntry,
    ) {
        let Some(st) = self.types[kind.index()].as_mut() else {
            return;
        };
        let Some(pos) = st
            .pending
            .iter()
            .position(|(n, _)| *n == req.response_nonce)
        else {
            return;
        };
        let (nonce, version) = st.pending.remove(pos).unwrap_or_default();
        // Answers to older responses are implied by this one.
        st.pending.drain(..pos);
        match &req.error_detail {
            Some(err) => {
                if kind == ResourceType::Cluster {
                    // The proxy will not ask for the endpoints of clusters it rejected.
                    self.awaiting_endpoints.clear();
                }
                tracing::warn!(
                    type_url = %kind, node = %status.node_id(), %version, error = %err.message,
                    "proxy rejected configuration; keeping it until the content changes"
                );
                status.nacked(
                    kind,
                    Nack {
                        version,
                        nonce,
                        message: err.message.clone(),
                        at: SystemTime::now(),
                    },
                );
            }
            None => status.acked(kind, &version),
        }
    }
}

impl Pushes for DeltaState {
    type Response = DeltaResponse;

    fn push_type(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        status: &StatusEntry,
        out: &mut Vec<DeltaResponse>,
    ) {
        Self::push_type(self, kind, snapshot, status, out);
    }

    fn push(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<DeltaResponse> {
        Self::push(self, snapshot, status)
    }

    fn endpoints_delivered(&mut self) {
        Self::endpoints_delivered(self);
    }

    fn awaiting_endpoints(&self) -> bool {
        !self.awaiting_endpoints.is_empty()
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaResponse;

    fn node(
        req: &DeltaDiscoveryRequest,
    ) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        snapshot: Option<&Snapshot>,
        status: &StatusEntry,
    ) -> Result<Vec<DeltaResponse>, Status> {
        let kind = parse_type(&req.type_url, self.only)?;
        let held = !self.awaiting_endpoints.is_empty();
        let first = self.types[kind.index()].is_none();
        let st = self.types[kind.index()].get_or_insert_with(TypeState::default);
        if first {
            // Legacy wildcard: a first CDS/LDS request that names nothing wants everything.
            st.wildcard = req.resource_names_subscribe.is_empty() && kind.is_full_state();
            st.has = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        if first
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty()
        {
            st.evaluated = None;
        }
        for name in &req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
            } else {
                st.names.remove(name);
                st.has.remove(name);
            }
        }
        if !req.response_nonce.is_empty() {
            self.record_answer(kind, &req, status);
        }
        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        Ok(answer(self, kind, held, snapshot, status))
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<DeltaResponse> {
        self.push(snapshot, status)
    }
}

/// The EDS resources a cluster uses.
fn endpoint_names(cluster: &Resource) -> impl Iterator<Item = &str> {
    cluster
        .references()
        .iter()
        .filter(|r| r.kind == ResourceType::Endpoint)
        .map(|r| r.name.as_str())
}
