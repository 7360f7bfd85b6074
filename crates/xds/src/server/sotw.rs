//! State-of-the-world protocol state of one stream: nonces, ACK/NACK and subscriptions. What
//! to send, and in which order, is the [`Planner`]'s; this module renders its steps as
//! `DiscoveryResponse`s (full sets for CDS and LDS, changed resources for the other types).
//!
//! Pure and synchronous; the async driver in [`super::stream`] feeds it.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::planner::{Flavour, Planner, Step};
use super::stream::{Nonces, Protocol, parse_type, report_nack};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::Snapshot;
use crate::status::StatusEntry;
use crate::wire::SotwResponse;

/// Delivery state of one type on one stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Nonce of the latest response; requests answering an older one are stale.
    last_nonce: Option<String>,
    /// Version of the latest response, named when the proxy rejects it.
    last_version: String,
}

/// SotW state of one stream.
#[derive(Debug)]
pub(crate) struct SotwState {
    only: Option<ResourceType>,
    types: [TypeState; 5],
    nonces: Nonces,
    planner: Planner,
}

impl SotwState {
    pub(crate) fn new(only: Option<ResourceType>) -> Self {
        SotwState {
            only,
            types: Default::default(),
            nonces: Nonces::default(),
            planner: Planner::new(Flavour::Sotw, only.is_none()),
        }
    }

    /// One-shot answer for the `Fetch*` RPCs.
    pub(crate) fn fetch(
        kind: ResourceType,
        names: &[String],
        snapshot: &Snapshot,
    ) -> (String, Vec<Arc<Resource>>) {
        Planner::fetch(kind, wildcard(kind, names), names, snapshot)
    }

    fn render(&mut self, steps: Vec<Step>, status: &StatusEntry) -> Vec<SotwResponse> {
        steps
            .into_iter()
            .map(|step| {
                let nonce = self.nonces.sent(step.kind, &step.version, status);
                let st = &mut self.types[step.kind.index()];
                st.last_nonce = Some(nonce.clone());
                st.last_version.clone_from(&step.version);
                SotwResponse {
                    version: step.version,
                    kind: step.kind,
                    nonce,
                    resources: step.resources,
                }
            })
            .collect()
    }
}

/// Whether a request's `resource_names` ask for the wildcard: `*` or, for CDS and LDS, no
/// name at all.
fn wildcard(kind: ResourceType, names: &[String]) -> bool {
    names.iter().any(|n| n == "*") || (names.is_empty() && kind.is_full_state())
}

#[cfg(test)]
impl SotwState {
    pub(crate) fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }
}

impl Protocol for SotwState {
    type Request = DiscoveryRequest;
    type Response = SotwResponse;

    fn node(req: &DiscoveryRequest) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        req.node.as_ref()
    }

    fn on_request(
        &mut self,
        req: DiscoveryRequest,
        snapshot: Option<&Snapshot>,
        status: &StatusEntry,
    ) -> Result<Vec<SotwResponse>, Status> {
        let kind = parse_type(&req.type_url, self.only)?;
        let mut rejected = false;
        let st = &self.types[kind.index()];
        if !req.response_nonce.is_empty() {
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                // Stale: answers a response that has since been superseded. Envoy will
                // answer the newer one; acting on this one could undo it. But rejected
                // clusters mean the newer set may (re)create clusters the proxy then warms.
                if kind == ResourceType::Cluster
                    && req.error_detail.is_some()
                    && let Some(snapshot) = snapshot
                {
                    let steps = self.planner.superseded_clusters_rejected(snapshot);
                    return Ok(self.render(steps, status));
                }
                return Ok(Vec::new());
            }
            match &req.error_detail {
                Some(err) => {
                    rejected = true;
                    let version = st.last_version.clone();
                    report_nack(
                        status,
                        kind,
                        version,
                        req.response_nonce.clone(),
                        &err.message,
                    );
                }
                None => {
                    status.acked(kind, &req.version_info);
                    self.planner.accepted(kind);
                }
            }
        } else if !req.version_info.is_empty() && !self.planner.synced(kind) {
            // A reconnecting proxy reports the version it has accepted; unless the content
            // differs there is nothing to send.
            self.planner.report_version(kind, &req.version_info);
            status.acked(kind, &req.version_info);
        }
        // An empty subscription (the clusters or listeners that named these resources are
        // gone) gets no answer: Envoy takes an empty response for a type it no longer
        // watches without ACKing it.
        let wildcard = wildcard(kind, &req.resource_names);
        self.planner
            .set_subscription(kind, wildcard, &req.resource_names, snapshot);
        let held = self.planner.holding();
        if rejected {
            self.planner.rejected(kind);
        }
        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        let steps = self.planner.answer(kind, held, snapshot);
        Ok(self.render(steps, status))
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<SotwResponse> {
        let steps = self.planner.push(snapshot);
        self.render(steps, status)
    }
}
