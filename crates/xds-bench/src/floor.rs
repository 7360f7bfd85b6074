//! The floor: the least an ADS server can do to deliver the bench's changes, to measure
//! Meshplane's server against.
//!
//! It speaks the same protocol to the same client over the same tonic transport, but keeps
//! no snapshot cache, no planner and no per-stream diff: every response is encoded once per
//! group before the clock starts (a gRPC frame in shared [`Bytes`]), a stream gets its
//! group's full response for each type it asks for the first time, and a change is one loop
//! handing the group's pre-encoded change to every stream of every affected group. ACKs are
//! read and ignored. Responses carry what the real server's would (type URL, version, a nonce
//! unique on the stream; SotW EDS/RDS and delta carry only the changed resources), so the
//! client ACKs exactly as it does for Meshplane.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use http_body::Frame;
use meshplane_xds::wire::{DeltaResponse, SotwResponse, WireDecoder, WireMessage};
use meshplane_xds::{GroupKey, Resource, ResourceType, Snapshot};
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

use crate::client::Mode;
use crate::probe::mono_ns;

/// The types the bench proxies use, in the order a change writes them.
const TYPES: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
];

/// Largest request read (delta initial requests stay far below).
const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// One group: its current content, its full responses, and its streams.
struct GroupState {
    /// Kept only to prepare the next change outside the timed path.
    snapshot: Snapshot,
    /// Per type in [`TYPES`], the full response a new subscriber gets.
    full: [Bytes; 4],
    streams: Vec<mpsc::UnboundedSender<Bytes>>,
}

/// A change, encoded and ready to write: per group, the frames each of its streams gets.
pub struct PreparedChange {
    groups: Vec<(GroupKey, Snapshot, [Bytes; 4], Vec<Bytes>)>,
}

/// The floor server's state, shared by its streams.
#[derive(Clone)]
pub struct Floor {
    mode: Mode,
    groups: Arc<RwLock<HashMap<GroupKey, GroupState>>>,
}

// === impl Floor ===

impl Floor {
    /// A floor serving `snapshots` (round 0) to `mode` streams.
    pub fn new(mode: Mode, snapshots: Vec<(GroupKey, Snapshot)>) -> Self {
        let groups = snapshots
            .into_iter()
            .map(|(key, snapshot)| {
                let full = full_responses(mode, &snapshot, 0);
                let state = GroupState {
                    snapshot,
                    full,
                    streams: Vec::new(),
                };
                (key, state)
            })
            .collect();
        Floor {
            mode,
            groups: Arc::new(RwLock::new(groups)),
        }
    }

    /// Encodes round `round`'s change (`changed`: the groups whose snapshot it changes) as
    /// the upserts and removals Meshplane's server would send.
    pub fn prepare(
        &self,
        round: u64,
        changed: Vec<(GroupKey, Snapshot)>,
    ) -> anyhow::Result<PreparedChange> {
        let groups = self.groups.read();
        let mut out = Vec::with_capacity(changed.len());
        for (key, snapshot) in changed {
            let old = groups
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("floor: no group `{}`", key.as_str()))?;
            let frames = TYPES
                .iter()
                .filter_map(|&kind| change_frame(self.mode, kind, &old.snapshot, &snapshot, round))
                .collect();
            let full = full_responses(self.mode, &snapshot, round);
            out.push((key, snapshot, full, frames));
        }
        Ok(PreparedChange { groups: out })
    }

    /// Writes a prepared change to every stream of its groups; returns when the last frame
    /// was handed over (monotonic ns).
    pub fn publish(&self, change: PreparedChange) -> u64 {
        // A short, synchronous critical section: handing frames to unbounded channels never
        // waits, and streams only take the lock when they open.
        let mut groups = self.groups.write();
        for (key, snapshot, full, frames) in change.groups {
            let Some(group) = groups.get_mut(&key) else {
                continue;
            };
            for tx in &group.streams {
                for frame in &frames {
                    // A closed stream has gone; nothing to deliver.
                    let _ = tx.send(frame.clone());
                }
            }
            group.snapshot = snapshot;
            group.full = full;
        }
        mono_ns()
    }

    /// Ends every stream's response (the client has gone or the bench is over).
    pub fn close(&self) {
        for group in self.groups.write().values_mut() {
            group.streams.clear();
        }
    }

    /// Serves ADS on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(self)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }

    /// Registers a stream of `node`'s group and returns the group's full response of each type.
    fn join(&self, node: &Node, tx: &mpsc::UnboundedSender<Bytes>) -> Result<[Bytes; 4], Status> {
        let key = GroupKey::new(node.cluster.as_str());
        let mut groups = self.groups.write();
        let group = groups.get_mut(&key).ok_or_else(|| {
            Status::not_found(format!("floor: no configuration for `{}`", node.cluster))
        })?;
        group.streams.push(tx.clone());
        Ok(group.full.clone())
    }

    /// One stream: answers the first request of each type with the group's full response,
    /// reads every later request (ACKs) and ignores it.
    async fn drive<R: FloorRequest>(
        self,
        mut requests: Streaming<R>,
        tx: mpsc::UnboundedSender<Bytes>,
    ) {
        let mut full: Option<[Bytes; 4]> = None;
        let mut answered = [false; 4];
        while let Ok(Some(req)) = requests.message().await {
            if full.is_none() {
                let Some(node) = req.node() else {
                    tracing::warn!("floor: a stream's first request carries no node");
                    return;
                };
                match self.join(node, &tx) {
                    Ok(responses) => full = Some(responses),
                    Err(status) => {
                        tracing::warn!(%status, "floor: stream refused");
                        return;
                    }
                }
            }
            let Some(slot) = TYPES.iter().position(|t| t.type_url() == req.type_url()) else {
                continue;
            };
            if let Some(responses) = &full
                && !std::mem::replace(&mut answered[slot], true)
            {
                let _ = tx.send(responses[slot].clone());
            }
        }
    }
}

impl NamedService for Floor {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl<B> tonic::codegen::Service<http::Request<B>> for Floor
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let floor = self.clone();
        Box::pin(async move {
            let method = req.uri().path().rsplit('/').next().unwrap_or_default();
            let (tx, rx) = mpsc::unbounded_channel();
            match (method, floor.mode) {
                ("StreamAggregatedResources", Mode::Sotw) => {
                    tokio::spawn(floor.drive(requests::<DiscoveryRequest, B>(req), tx));
                }
                ("DeltaAggregatedResources", Mode::Delta) => {
                    tokio::spawn(floor.drive(requests::<DeltaDiscoveryRequest, B>(req), tx));
                }
                _ => {
                    return Ok(Status::unimplemented(format!(
                        "the floor serves {} ADS only",
                        floor.mode
                    ))
                    .into_http());
                }
            }
            let mut response =
                http::Response::new(tonic::body::Body::new(FrameBody { rx, done: false }));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(response)
        })
    }
}

fn requests<R: prost::Message + Default + Send + 'static, B>(req: http::Request<B>) -> Streaming<R>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    Streaming::new_request(
        WireDecoder::<R>::default(),
        req.into_body(),
        None,
        Some(MAX_REQUEST),
    )
}

/// What the floor reads from a request of either flavour.
trait FloorRequest: prost::Message + Default + Send + 'static {
    fn node(&self) -> Option<&Node>;
    fn type_url(&self) -> &str;
}

impl FloorRequest for DiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

impl FloorRequest for DeltaDiscoveryRequest {
    fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
}

/// A response body made of pre-encoded gRPC frames, each written as the shared bytes.
struct FrameBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    done: bool,
}

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(frame)) => Poll::Ready(Some(Ok(Frame::data(frame)))),
            Poll::Ready(None) => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The full response of every type in [`TYPES`] for `snapshot`.
fn full_responses(mode: Mode, snapshot: &Snapshot, round: u64) -> [Bytes; 4] {
    TYPES.map(|kind| {
        let all: Vec<Arc<Resource>> = snapshot.resources(kind).values().cloned().collect();
        encode(mode, kind, round, all, Vec::new())
    })
}

/// The frame a change of `kind` from `old` to `new` sends, if it changes anything: SotW
/// CDS/LDS in full, SotW EDS/RDS and delta the changed resources (delta also the removed).
fn change_frame(
    mode: Mode,
    kind: ResourceType,
    old: &Snapshot,
    new: &Snapshot,
    round: u64,
) -> Option<Bytes> {
    let (old_map, new_map) = (old.resources(kind), new.resources(kind));
    let changed: Vec<Arc<Resource>> = new_map
        .values()
        .filter(|r| {
            old_map
                .get(r.name())
                .is_none_or(|o| o.version() != r.version())
        })
        .cloned()
        .collect();
    let removed: Vec<String> = old_map
        .keys()
        .filter(|name| !new_map.contains_key(*name))
        .cloned()
        .collect();
    if changed.is_empty() && removed.is_empty() {
        return None;
    }
    let resources = match mode {
        Mode::Sotw if kind.is_full_state() => new_map.values().cloned().collect(),
        Mode::Sotw | Mode::Delta => changed,
    };
    Some(encode(mode, kind, round, resources, removed))
}

/// One response as a gRPC frame: flag, length, then the message.
fn encode(
    mode: Mode,
    kind: ResourceType,
    round: u64,
    resources: Vec<Arc<Resource>>,
    removed: Vec<String>,
) -> Bytes {
    // Each stream gets at most one response per type and round, so this nonce is unique on
    // every stream, as the protocol requires.
    let nonce = format!("{}-{round}", kind.short_name());
    let version = round.to_string();
    let mut message = Vec::new();
    match mode {
        Mode::Sotw => SotwResponse {
            version,
            kind,
            nonce,
            resources,
        }
        .write(&mut message),
        Mode::Delta => DeltaResponse {
            system_version: version,
            kind,
            nonce,
            resources,
            removed,
        }
        .write(&mut message),
    }
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Layout;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;

    fn decode_sotw(frame: &Bytes) -> DiscoveryResponse {
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(frame[0], 0);
        assert_eq!(len, frame.len() - 5);
        DiscoveryResponse::decode(&frame[5..]).expect("a DiscoveryResponse")
    }

    #[test]
    fn a_change_frame_carries_only_the_changed_endpoints() {
        let before = Layout::Shared.snapshots(1, 0).expect("0").remove(0).1;
        let after = Layout::Shared.snapshots(1, 1).expect("1").remove(0).1;
        let sotw = change_frame(Mode::Sotw, ResourceType::Endpoint, &before, &after, 1)
            .expect("EDS changed");
        let r = decode_sotw(&sotw);
        assert_eq!(r.type_url, ResourceType::Endpoint.type_url());
        assert_eq!((r.version_info.as_str(), r.nonce.as_str()), ("1", "EDS-1"));
        assert_eq!(r.resources.len(), 1);
        assert!(change_frame(Mode::Sotw, ResourceType::Cluster, &before, &after, 1).is_none());
        let delta = change_frame(Mode::Delta, ResourceType::Endpoint, &before, &after, 1)
            .expect("EDS changed");
        let d = DeltaDiscoveryResponse::decode(&delta[5..]).expect("a DeltaDiscoveryResponse");
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].name, "svc-00000");
        assert!(d.removed_resources.is_empty());
    }

    #[test]
    fn full_responses_hold_every_resource_of_the_group() {
        let snapshot = Layout::Groups.snapshots(10, 0).expect("0").remove(0).1;
        let full = full_responses(Mode::Sotw, &snapshot, 0);
        let counts: Vec<usize> = full
            .iter()
            .map(|f| decode_sotw(f).resources.len())
            .collect();
        assert_eq!(counts, vec![2, 2, 1, 1]);
    }
}
