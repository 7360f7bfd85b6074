//! The async driver shared by both protocol flavours: reads requests, watches the group's
//! snapshot, and writes what the protocol state decides to send.

use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::Shared;
use super::node::PeerInfo;
use crate::resource::{ResourceType, is_type_url};
use crate::snapshot::Snapshot;
use crate::status::{Nack, StatusEntry, StreamInfo, StreamKind};
use crate::wire::WireMessage;

/// One protocol flavour's per-stream state machine.
pub(crate) trait Protocol: Send + 'static {
    type Request: Message + Default + Send + 'static;
    type Response: WireMessage;

    /// The node carried by a request, if any.
    fn node(req: &Self::Request) -> Option<&Node>;

    /// Handles a request; returns what to send. An error ends this stream only.
    fn on_request(
        &mut self,
        req: Self::Request,
        snapshot: Option<&Snapshot>,
        status: &StatusEntry,
    ) -> Result<Vec<Self::Response>, Status>;

    /// Handles a new snapshot for the stream's group; returns what to send.
    fn on_snapshot(&mut self, snapshot: &Snapshot, status: &StatusEntry) -> Vec<Self::Response>;
}

/// Numbers a stream's responses; both flavours use nonces "1", "2", … per stream.
#[derive(Debug, Default)]
pub(crate) struct Nonces(u64);

impl Nonces {
    /// The nonce of the next response, reported to the observers as sent.
    pub(crate) fn sent(
        &mut self,
        kind: ResourceType,
        version: &str,
        status: &StatusEntry,
    ) -> String {
        self.0 += 1;
        let nonce = self.0.to_string();
        status.sent(kind, version, &nonce);
        nonce
    }
}

/// Logs and reports that the proxy rejected the response `nonce` carrying `version`.
pub(crate) fn report_nack(
    status: &StatusEntry,
    kind: ResourceType,
    version: String,
    nonce: String,
    message: &str,
) {
    tracing::warn!(
        type_url = %kind, node = %status.node_id(), %version, error = %message,
        "proxy rejected configuration; keeping it until the content changes"
    );
    status.nacked(
        kind,
        Nack {
            version,
            nonce,
            message: message.to_owned(),
            at: SystemTime::now(),
        },
    );
}

/// Parses a request's type URL. Per-type services accept an empty URL (their type is
/// implied) and refuse any other type.
pub(crate) fn parse_type(url: &str, only: Option<ResourceType>) -> Result<ResourceType, Status> {
    if url.is_empty() {
        return only.ok_or_else(|| {
            Status::invalid_argument(
                "type_url is empty: an ADS request must name its resource type",
            )
        });
    }
    let kind = ResourceType::from_type_url(url).ok_or_else(|| {
        let hint = if is_type_url(url) { "" } else { " (type URLs start with type.googleapis.com/)" };
        Status::invalid_argument(format!(
            "unsupported type_url `{url}`{hint}; this server serves clusters, endpoints, listeners, routes and secrets"
        ))
    })?;
    match only {
        Some(t) if t != kind => Err(Status::invalid_argument(format!(
            "type_url `{url}` sent to the {t} service; use ADS or the matching discovery service"
        ))),
        _ => Ok(kind),
    }
}

/// Runs one stream to completion. Every outcome is local to this stream.
pub(crate) async fn drive<P: Protocol>(
    shared: Arc<Shared>,
    mut state: P,
    kind: StreamKind,
    peer: PeerInfo,
    mut requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    let shutdown = shared.shutdown.clone();
    let first = tokio::select! {
        r = requests.message() => r,
        _ = shutdown.cancelled() => return,
    };
    let first = match first {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(status) => return reply_to_bad_request(&shared, None, &tx, status).await,
    };
    let entry = match admit::<P>(&shared, &first, kind, &peer) {
        Ok(entry) => entry,
        Err(status) => {
            refused(&shared, &status);
            tracing::warn!(peer = ?peer.remote_addr, code = ?status.code(), error = %status.message(), "refused xDS stream");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let (group, status) = entry;
    let mut snapshots = shared.cache.subscribe(&group);
    let snapshot = snapshots.borrow_and_update().clone();
    let mut outcome = state.on_request(first, snapshot.as_deref(), &status);
    loop {
        match outcome {
            Ok(responses) => {
                for r in responses {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                status.failed(err.message());
                tracing::warn!(node = %status.node_id(), code = ?err.code(), error = %err.message(), "ending xDS stream");
                let _ = tx.send(Err(err)).await;
                return;
            }
        }
        outcome = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx
                    .send(Err(Status::unavailable("control plane is shutting down; reconnect to another instance")))
                    .await;
                return;
            }
            req = requests.message() => match req {
                Ok(Some(req)) => {
                    let snapshot = snapshots.borrow().clone();
                    state.on_request(req, snapshot.as_deref(), &status)
                }
                Ok(None) => return,
                Err(err) => return reply_to_bad_request(&shared, Some(&status), &tx, err).await,
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // The group was dropped from the cache; keep serving what the proxy has
                    // and re-attach so a future snapshot reaches it.
                    snapshots = shared.cache.subscribe(&group);
                }
                let snapshot = snapshots.borrow_and_update().clone();
                Ok(snapshot.map(|s| state.on_snapshot(&s, &status)).unwrap_or_default())
            }
        };
    }
}

/// A request that failed to decode ends the stream with the decoder's `INVALID_ARGUMENT`;
/// transport errors (the proxy went away) just end it. `entry` is `None` before admission.
async fn reply_to_bad_request<R>(
    shared: &Shared,
    entry: Option<&StatusEntry>,
    tx: &mpsc::Sender<Result<R, Status>>,
    status: Status,
) {
    if status.code() == tonic::Code::InvalidArgument {
        match entry {
            Some(entry) => entry.failed(status.message()),
            None => refused(shared, &status),
        }
        tracing::warn!(error = %status.message(), "ending xDS stream: malformed request");
        let _ = tx.send(Err(status)).await;
    }
}

/// Tells the observers a stream was refused before admission.
fn refused(shared: &Shared, status: &Status) {
    for o in &shared.observers {
        o.stream_refused(status.message());
    }
}

/// `user_agent_name` and its version (Envoy and gRPC send `user_agent_version`; a build may
/// send `user_agent_build_version` instead), cut to a sane length: it is only displayed.
fn user_agent(node: &envoy_types::pb::envoy::config::core::v3::Node) -> String {
    use envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType;
    let version = match &node.user_agent_version_type {
        Some(UserAgentVersionType::UserAgentVersion(v)) => v.clone(),
        Some(UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut out = format!("{} {version}", node.user_agent_name)
        .trim()
        .to_owned();
    if out.len() > 128 {
        let mut cut = 128;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn admit<P: Protocol>(
    shared: &Shared,
    first: &P::Request,
    kind: StreamKind,
    peer: &PeerInfo,
) -> Result<(crate::cache::GroupKey, StatusEntry), Status> {
    let node = P::node(first).ok_or_else(|| {
        Status::invalid_argument(
            "the first request on an xDS stream must carry `node` (id, cluster, metadata)",
        )
    })?;
    let group = shared.grouper.group(node, peer)?;
    let stream_id = shared.status.next_stream_id();
    tracing::debug!(node = %node.id, service = %node.cluster, %group, stream_id, "xDS stream admitted");
    let stream = StreamInfo {
        stream_id,
        node_id: node.id.clone(),
        service: node.cluster.clone(),
        group: group.clone(),
        kind,
        remote_addr: peer.remote_addr,
        connected_since: SystemTime::now(),
        user_agent: user_agent(node),
    };
    Ok((group, StatusEntry::open(&shared.observers, &stream)))
}
