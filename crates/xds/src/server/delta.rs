//! Incremental (delta) protocol state of one stream: nonces, ACK/NACK and subscription
//! changes. What to send, and in which order, is the [`Planner`]'s; this module renders its
//! steps as `DeltaDiscoveryResponse`s: the resources that changed and the names removed.
//!
//! Pure and synchronous; the async driver in [`super::stream`] feeds it.

use std::collections::VecDeque;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::planner::{Flavour, Planner, Step};
use super::stream::{Nonces, Protocol, parse_type, report_nack};
use crate::resource::ResourceType;
use crate::snapshot::Snapshot;
use crate::status::StatusEntry;
use crate::wire::DeltaResponse;

/// Responses awaiting an ACK, per type; Envoy answers each, so this stays tiny. The cap
/// only guards against a peer that never answers.
const MAX_PENDING: usize = 64;

/// Delta state of one stream.
#[derive(Debug)]
pub(crate) struct DeltaState {
    only: Option<ResourceType>,
    /// Per type, nonce → system version of responses not yet answered.
    pending: [VecDeque<(String, String)>; 5],
    nonces: Nonces,
    planner: Planner,
}

impl DeltaState {
    pub(crate) fn new(only: Option<ResourceType>) -> Self {
        DeltaState {
            only,
            pending: Default::default(),
            nonces: Nonces::default(),
            planner: Planner::new(Flavour::Delta, only.is_none()),
        }
    }

    fn render(&mut self, steps: Vec<Step>, status: &StatusEntry) -> Vec<DeltaResponse> {
        steps
            .into_iter()
            .map(|step| {
                let nonce = self.nonces.sent(step.kind, &step.version, status);
                let pending = &mut self.pending[step.kind.index()];
                if pending.len() == MAX_PENDING {
                    pending.pop_front();
                }
                pending.push_back((nonce.clone(), step.version.clone()));
                DeltaResponse {
                    system_version: step.version,
                    kind: step.kind,
                    nonce,
                    resources: step.resources,
                    removed: step.removals,
                }
            })
            .collect()
    }

    fn record_answer(
        &mut self,
        kind: ResourceType,
        req: &DeltaDiscoveryRequest,
        status: &StatusEntry,
    ) {
        let pending = &mut self.pending[kind.index()];
        let Some(pos) = pending.iter().position(|(n, _)| *n == req.response_nonce) else {
            return;
        };
        let (nonce, version) = pending.remove(pos).unwrap_or_default();
        // Answers to older responses are implied by this one.
        pending.drain(..pos);
        // A newer response of this type is still in flight: the proxy answers that one next,
        // so a NACK of this superseded one must not make the planner re-send (SotW ignores
        // such stale NACKs by their nonce).
        let superseded = !pending.is_empty();
        match &req.error_detail {
            Some(err) => {
                if !superseded {
                    self.planner.rejected(kind);
                }
                report_nack(status, kind, version, nonce, &err.message);
            }
            None => {
                if !superseded {
                    self.planner.accepted(kind);
                }
                status.acked(kind, &version);
            }
        }
    }
}

#[cfg(test)]
impl DeltaState {
    pub(crate) fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
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
        let held = self.planner.holding();
        if !self.planner.knows(kind) {
            // Legacy wildcard: a first CDS/LDS request that names nothing wants everything.
            let wildcard = req.resource_names_subscribe.is_empty() && kind.is_full_state();
            self.planner.set_subscription(kind, wildcard, &[], snapshot);
            self.planner
                .report_held(kind, &req.initial_resource_versions, snapshot);
        }
        self.planner.change_subscription(
            kind,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
            snapshot,
        );
        if !req.response_nonce.is_empty() {
            self.record_answer(kind, &req, status);
        }
        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        let steps = self.planner.answer(kind, held, snapshot);
        Ok(self.render(steps, status))
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<DeltaResponse> {
        let steps = self.planner.push(snapshot);
        self.render(steps, status)
    }
}
