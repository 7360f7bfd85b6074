//! Incremental (delta) protocol state of one stream: what the proxy has, per resource,
//! so each push sends exactly the resources that changed and names the ones removed.
//!
//! Pure and synchronous; the async driver in [`super::stream`] feeds it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::stream::{Protocol, parse_type};
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
}

/// Delta state of one stream.
#[derive(Debug)]
pub(crate) struct DeltaState {
    only: Option<ResourceType>,
    types: [Option<TypeState>; 5],
    nonces: u64,
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
            .filter(|r| st.has.get(r.name()).map(String::as_str) != Some(r.version()))
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

    /// After clusters change, their EDS resources are re-sent: an updated cluster warms
    /// until it receives an EDS response, even an unchanged one.
    fn force_endpoints_of(&mut self, clusters: &[std::sync::Arc<Resource>]) {
        let Some(eds) = self.types[ResourceType::Endpoint.index()].as_mut() else {
            return;
        };
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
        if let Some(diff) = self.diff(kind, snapshot) {
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
        if let Some(mut diff) = self.diff(ResourceType::Cluster, snapshot) {
            let removed = std::mem::take(&mut diff.removed);
            if !diff.updated.is_empty() {
                let response = self.emit(ResourceType::Cluster, diff, status);
                self.force_endpoints_of(&response.resources);
                out.push(response);
            }
            if !removed.is_empty() {
                removals = Some(removed);
            }
        }
        for kind in [
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Route,
        ] {
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
        let mut out = Vec::new();
        self.push_type(kind, snapshot, status, &mut out);
        if kind == ResourceType::Cluster && !out.is_empty() {
            self.push_type(ResourceType::Endpoint, snapshot, status, &mut out);
        }
        Ok(out)
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<DeltaResponse> {
        self.push(snapshot, status)
    }
}
