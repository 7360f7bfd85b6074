//! State-of-the-world protocol state of one stream: subscriptions, nonces, ACK/NACK, and
//! what to send when a request arrives or the group's snapshot changes.
//!
//! Pure and synchronous; the async driver in [`super::stream`] feeds it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::stream::{Protocol, Pushes, answer, parse_type};
use crate::resource::{Resource, ResourceType};
use crate::snapshot::{ResourceMap, Snapshot, version_of};
use crate::status::{Nack, StatusEntry};
use crate::wire::SotwResponse;

/// Subscription and delivery state of one type on one stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Subscribed to every resource of the type.
    wildcard: bool,
    /// Explicitly subscribed names.
    names: BTreeSet<String>,
    /// Nonce of the latest response; requests answering an older one are stale.
    last_nonce: Option<String>,
    /// What the proxy was last sent (or already had when it connected).
    sent: Option<(String, ResourceMap)>,
    /// Version the proxy reported having on its first request (a reconnect).
    reported_version: Option<String>,
}

/// SotW state of one stream.
#[derive(Debug)]
pub(crate) struct SotwState {
    only: Option<ResourceType>,
    types: [Option<TypeState>; 5],
    nonces: u64,
    /// EDS resources of newly sent clusters that the proxy has not been sent yet (it asks
    /// for them once it has processed the clusters). Until then those clusters warm and a
    /// route naming them would fail requests with 503, so listeners, routes and cluster
    /// removals wait (make-before-break).
    awaiting_endpoints: BTreeSet<String>,
}

/// What a push would send for one type, computed before anything is committed.
struct Candidate {
    version: String,
    resources: ResourceMap,
}

impl SotwState {
    pub(crate) fn new(only: Option<ResourceType>) -> Self {
        SotwState {
            only,
            types: Default::default(),
            nonces: 0,
            awaiting_endpoints: BTreeSet::new(),
        }
    }

    fn sent_clusters(&self) -> Option<&ResourceMap> {
        let cds = self.types[ResourceType::Cluster.index()].as_ref()?;
        cds.sent.as_ref().map(|(_, clusters)| clusters)
    }

    /// Recomputes [`SotwState::awaiting_endpoints`] after clusters were sent (`before` is
    /// what the proxy had). Streams without an EDS subscription (per-type CDS streams, or
    /// before the proxy's first EDS request) never wait.
    fn await_endpoints(&mut self, before: &ResourceMap) {
        let (Some(clusters), Some(eds)) = (
            self.sent_clusters(),
            self.types[ResourceType::Endpoint.index()].as_ref(),
        ) else {
            self.awaiting_endpoints.clear();
            return;
        };
        let delivered = eds.sent.as_ref().map(|(_, sent)| sent);
        let mut awaiting = BTreeSet::new();
        for (name, cluster) in clusters {
            let new = before
                .get(name)
                .is_none_or(|b| b.version() != cluster.version());
            for r in cluster.references() {
                if r.kind == ResourceType::Endpoint
                    && (new || self.awaiting_endpoints.contains(&r.name))
                    && !delivered.is_some_and(|d| d.contains_key(&r.name))
                {
                    awaiting.insert(r.name.clone());
                }
            }
        }
        self.awaiting_endpoints = awaiting;
    }

    /// Drops from [`SotwState::awaiting_endpoints`] what the proxy has now been sent.
    fn endpoints_delivered(&mut self) {
        let eds = self.types[ResourceType::Endpoint.index()].as_ref();
        if let Some((_, sent)) = eds.and_then(|e| e.sent.as_ref()) {
            self.awaiting_endpoints
                .retain(|name| !sent.contains_key(name));
        }
    }

    fn desired(&self, kind: ResourceType, snapshot: &Snapshot) -> Option<Candidate> {
        let st = self.types[kind.index()].as_ref()?;
        if !st.wildcard && st.names.is_empty() {
            return None;
        }
        let all = snapshot.resources(kind);
        if st.wildcard {
            // The whole type: its version is computed once per snapshot, not per stream.
            return Some(Candidate {
                version: snapshot.type_version(kind).to_owned(),
                resources: all.clone(),
            });
        }
        let resources: ResourceMap = {
            st.names
                .iter()
                .filter_map(|name| match all.get(name) {
                    Some(r) => Some((name.clone(), r.clone())),
                    // A cluster must never stay warming: unknown EDS names get an empty
                    // assignment rather than silence. But a cluster removed from the snapshot
                    // and still held for make-before-break is still routed to until the
                    // routes change: it keeps the endpoints it was sent.
                    None if kind == ResourceType::Endpoint => {
                        let previous = st
                            .sent
                            .as_ref()
                            .and_then(|(_, sent)| sent.get(name))
                            .filter(|_| self.held_cluster_uses(name));
                        let r = previous
                            .cloned()
                            .unwrap_or_else(|| Resource::empty_endpoints(name));
                        Some((name.clone(), r))
                    }
                    None => None,
                })
                .collect()
        };
        Some(Candidate {
            version: version_of(&resources),
            resources,
        })
    }

    /// Whether a cluster the proxy was last sent uses EDS resource `name`.
    fn held_cluster_uses(&self, name: &str) -> bool {
        let cds = self.types[ResourceType::Cluster.index()].as_ref();
        let Some((_, clusters)) = cds.and_then(|c| c.sent.as_ref()) else {
            return false;
        };
        clusters
            .values()
            .flat_map(|c| c.references())
            .any(|r| r.kind == ResourceType::Endpoint && r.name == name)
    }

    /// Whether sending `candidate` would tell the proxy something it does not have.
    fn is_news(&self, kind: ResourceType, candidate: &Candidate) -> bool {
        let Some(st) = &self.types[kind.index()] else {
            return false;
        };
        match &st.sent {
            Some((version, _)) => *version != candidate.version,
            None => st.reported_version.as_deref() != Some(candidate.version.as_str()),
        }
    }

    /// What a response for `candidate` must carry. CDS and LDS responses are the full set
    /// (absence means deletion). EDS, RDS and SDS responses are incremental in SotW too: only
    /// resources that changed since the last response are sent, unless a re-send was forced
    /// (the sent version is then empty). A wildcard proxy whose one service changed gets one
    /// assignment, not a thousand.
    fn to_send(&self, kind: ResourceType, candidate: &Candidate) -> Vec<Arc<Resource>> {
        let previous = self.types[kind.index()]
            .as_ref()
            .and_then(|st| st.sent.as_ref())
            .filter(|(version, _)| !version.is_empty());
        match previous {
            Some((_, sent)) if !kind.is_full_state() => candidate
                .resources
                .iter()
                .filter(|(name, r)| sent.get(*name).is_none_or(|s| s.version() != r.version()))
                .map(|(_, r)| r.clone())
                .collect(),
            _ => candidate.resources.values().cloned().collect(),
        }
    }

    fn emit(
        &mut self,
        kind: ResourceType,
        candidate: Candidate,
        status: &StatusEntry,
    ) -> SotwResponse {
        let resources = self.to_send(kind, &candidate);
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        status.sent(kind, &candidate.version, &nonce);
        let response = SotwResponse {
            version: candidate.version.clone(),
            kind,
            nonce: nonce.clone(),
            resources,
        };
        if let Some(st) = self.types[kind.index()].as_mut() {
            st.last_nonce = Some(nonce);
            st.sent = Some((candidate.version, candidate.resources));
        }
        response
    }

    /// Marks EDS as needing a re-send: after any CDS change, updated clusters warm until
    /// they receive an EDS response, even an unchanged one.
    fn force_endpoints(&mut self) {
        if let Some(st) = self.types[ResourceType::Endpoint.index()].as_mut() {
            // No version matches the empty one; the resources sent are kept (see `desired`).
            st.sent = st.sent.take().map(|(_, sent)| (String::new(), sent));
            st.reported_version = None;
        }
    }

    fn push_type(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        status: &StatusEntry,
        out: &mut Vec<SotwResponse>,
    ) {
        let Some(c) = self.desired(kind, snapshot) else {
            return;
        };
        if self.is_news(kind, &c) {
            out.push(self.emit(kind, c, status));
            if kind == ResourceType::Cluster {
                self.force_endpoints();
            }
        } else if let Some(st) = self.types[kind.index()].as_mut()
            && st.sent.is_none()
        {
            // A reconnecting proxy reported exactly this version: remember what it has, as
            // if sent on this stream, so later pushes still hold removed clusters until
            // the routes have moved (make-before-break).
            st.sent = Some((c.version, c.resources));
        }
    }

    /// Everything to send after the snapshot changed, in make-before-break order.
    fn push(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<SotwResponse> {
        let mut out = Vec::new();
        // The clusters the proxy had, kept only when new ones are sent (rarely: most pushes
        // change endpoints only).
        let mut before = None;
        let clusters = self.desired(ResourceType::Cluster, snapshot);
        let removed = self.removed_clusters(clusters.as_ref());
        let routing_changes = [ResourceType::Listener, ResourceType::Route]
            .into_iter()
            .any(|k| {
                self.desired(k, snapshot)
                    .is_some_and(|c| self.is_news(k, &c))
            });
        let mut deferred_clusters = None;
        if let Some(final_clusters) = clusters {
            if !removed.is_empty() && routing_changes {
                // Phase A: add and update clusters but keep the removed ones until the
                // listeners and routes that named them have been replaced.
                let mut resources = final_clusters.resources.clone();
                resources.extend(removed);
                let interim = Candidate {
                    version: version_of(&resources),
                    resources,
                };
                if self.is_news(ResourceType::Cluster, &interim) {
                    before = Some(self.sent_clusters().cloned().unwrap_or_default());
                    out.push(self.emit(ResourceType::Cluster, interim, status));
                    self.force_endpoints();
                }
                deferred_clusters = Some(final_clusters);
            } else if self.is_news(ResourceType::Cluster, &final_clusters) {
                before = Some(self.sent_clusters().cloned().unwrap_or_default());
                out.push(self.emit(ResourceType::Cluster, final_clusters, status));
                self.force_endpoints();
            }
        }
        self.push_type(ResourceType::Endpoint, snapshot, status, &mut out);
        match &before {
            Some(before) => self.await_endpoints(before),
            None => self.endpoints_delivered(),
        }
        if !self.awaiting_endpoints.is_empty() {
            // New clusters first get their endpoints; `on_request` resumes the push once
            // the proxy has asked for them and been sent them.
            self.push_type(ResourceType::Secret, snapshot, status, &mut out);
            return out;
        }
        for kind in [ResourceType::Listener, ResourceType::Route] {
            self.push_type(kind, snapshot, status, &mut out);
        }
        if let Some(final_clusters) = deferred_clusters {
            out.push(self.emit(ResourceType::Cluster, final_clusters, status));
        }
        self.push_type(ResourceType::Secret, snapshot, status, &mut out);
        out
    }

    fn removed_clusters(&self, clusters: Option<&Candidate>) -> ResourceMap {
        let (Some(st), Some(c)) = (&self.types[ResourceType::Cluster.index()], clusters) else {
            return ResourceMap::new();
        };
        let Some((_, sent)) = &st.sent else {
            return ResourceMap::new();
        };
        sent.iter()
            .filter(|(name, _)| !c.resources.contains_key(*name))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// One-shot answer for the `Fetch*` RPCs.
    pub(crate) fn fetch(
        kind: ResourceType,
        names: &[String],
        snapshot: &Snapshot,
    ) -> (String, Vec<Arc<Resource>>) {
        let mut state = SotwState::new(Some(kind));
        state.types[kind.index()] = Some(subscription(kind, names));
        let c = state.desired(kind, snapshot).unwrap_or(Candidate {
            version: String::new(),
            resources: ResourceMap::new(),
        });
        (c.version, c.resources.into_values().collect())
    }
}

fn subscription(kind: ResourceType, names: &[String]) -> TypeState {
    let wildcard = names.iter().any(|n| n == "*") || (names.is_empty() && kind.is_full_state());
    TypeState {
        wildcard,
        names: names.iter().filter(|n| *n != "*").cloned().collect(),
        ..Default::default()
    }
}

impl Pushes for SotwState {
    type Response = SotwResponse;

    fn push_type(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        status: &StatusEntry,
        out: &mut Vec<SotwResponse>,
    ) {
        Self::push_type(self, kind, snapshot, status, out);
    }

    fn push(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<SotwResponse> {
        Self::push(self, snapshot, status)
    }

    fn endpoints_delivered(&mut self) {
        Self::endpoints_delivered(self);
    }

    fn awaiting_endpoints(&self) -> bool {
        !self.awaiting_endpoints.is_empty()
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
        let st = self.types[kind.index()].get_or_insert_with(TypeState::default);
        if !req.response_nonce.is_empty() {
            if st.last_nonce.as_deref() != Some(req.response_nonce.as_str()) {
                // Stale: answers a response that has since been superseded. Envoy will
                // answer the newer one; acting on this one could undo it.
                return Ok(Vec::new());
            }
            match &req.error_detail {
                Some(err) => {
                    let version = st.sent.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
                    tracing::warn!(
                        type_url = %kind, node = %status.node_id(), %version, error = %err.message,
                        "proxy rejected configuration; keeping it until the content changes"
                    );
                    rejected = true;
                    status.nacked(
                        kind,
                        Nack {
                            version,
                            nonce: req.response_nonce.clone(),
                            message: err.message.clone(),
                            at: SystemTime::now(),
                        },
                    );
                }
                None => status.acked(kind, &req.version_info),
            }
        } else if !req.version_info.is_empty() && st.sent.is_none() {
            // A reconnecting proxy reports the version it has accepted; unless the content
            // differs there is nothing to send.
            st.reported_version = Some(req.version_info.clone());
            status.acked(kind, &req.version_info);
        }
        let sub = subscription(kind, &req.resource_names);
        st.wildcard = sub.wildcard;
        st.names = sub.names;
        if !st.wildcard && st.names.is_empty() {
            // Unsubscribed from everything (the clusters or listeners that named these
            // resources are gone). Nothing to answer: Envoy takes an empty response for a
            // type it no longer watches without ACKing it. A later subscription starts afresh.
            st.sent = None;
            st.reported_version = None;
        }
        let held = !self.awaiting_endpoints.is_empty();
        if rejected && kind == ResourceType::Cluster {
            // The proxy will not ask for the endpoints of clusters it rejected.
            self.awaiting_endpoints.clear();
        }

        let Some(snapshot) = snapshot else {
            return Ok(Vec::new());
        };
        Ok(answer(self, kind, held, snapshot, status))
    }

    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<SotwResponse> {
        self.push(snapshot, status)
    }
}
