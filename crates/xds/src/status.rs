//! What streams report, and the first thing they report to: what each connected proxy has
//! been sent, has acknowledged and has rejected.
//!
//! A stream tells its [`StatusEntry`] what happens (response sent, ACK, NACK, failure, close);
//! the entry passes each event to every [`XdsObserver`] registered with the server. The
//! [`StatusBoard`] is one such observer (the admin API reads [`StatusBoard::proxies`]); the
//! control plane's metrics are another, outside this crate, so the xDS layer knows nothing of
//! how its events are exported. Each board entry has its own small lock, so 10,000 streams
//! never contend on one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::cache::GroupKey;
use crate::resource::ResourceType;

/// Which flavour of the protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// State-of-the-world xDS.
    Sotw,
    /// Incremental (delta) xDS.
    Delta,
}

/// A rejected response, as Envoy reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version Envoy rejected.
    pub version: String,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// Envoy's error message (`error_detail.message`).
    pub message: String,
    /// When the NACK arrived.
    pub at: SystemTime,
}

/// Per resource type status of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// Last version Envoy acknowledged.
    pub acked_version: Option<String>,
    /// Last rejection, cleared by a later ACK of a newer version.
    pub last_nack: Option<Nack>,
    /// Responses sent on this stream.
    pub responses: u64,
    /// NACKs received on this stream.
    pub nacks: u64,
}

/// Status of one connected proxy (one stream).
#[derive(Debug, Clone)]
pub struct ProxyStatus {
    /// Who the stream serves, as it opened.
    pub stream: StreamInfo,
    /// Per type, in [`ResourceType::ALL`] order.
    pub types: [TypeStatus; 5],
}

impl ProxyStatus {
    /// Status for one type.
    pub fn type_status(&self, kind: ResourceType) -> &TypeStatus {
        &self.types[kind.index()]
    }
}

// === Observers ===

/// Who a stream serves, as observers see it when it opens.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Server-assigned stream id, unique per server.
    pub stream_id: u64,
    /// `node.id`: the proxy's instance id.
    pub node_id: String,
    /// `node.cluster`: the proxy's service.
    pub service: String,
    /// The group the proxy belongs to.
    pub group: GroupKey,
    /// Protocol flavour.
    pub kind: StreamKind,
    /// Remote address of the connection, when known.
    pub remote_addr: Option<SocketAddr>,
    /// When the stream opened.
    pub connected_since: SystemTime,
    /// The xDS client, as the node names itself (`user_agent_name` and its version):
    /// `envoy 1.36.2`, or a proxyless gRPC client's `gRPC Python 1.85.1`.
    pub user_agent: String,
}

/// Watches the streams of an xDS server; register one with
/// [`XdsServer::with_observer`](crate::XdsServer::with_observer).
///
/// Calls come from the streams' own tasks, so they must be quick and must not block.
pub trait XdsObserver: Send + Sync + 'static {
    /// A stream was admitted; the returned observer sees its events until it closes.
    fn stream_opened(&self, stream: &StreamInfo) -> Box<dyn StreamObserver>;

    /// A stream was refused before admission (no node, a node the grouper rejects, a
    /// malformed first request); `error` is the status message sent to the proxy.
    fn stream_refused(&self, error: &str) {
        let _ = error;
    }
}

/// The events of one admitted stream, in the order they happen.
pub trait StreamObserver: Send + Sync {
    /// A response of `kind` went to the proxy.
    fn sent(&self, kind: ResourceType, version: &str, nonce: &str) {
        let _ = (kind, version, nonce);
    }

    /// The proxy acknowledged `version`. `push_to_ack` is the time since the response it
    /// acknowledges was sent, when it acknowledges the last response of that type.
    fn acked(&self, kind: ResourceType, version: &str, push_to_ack: Option<Duration>) {
        let _ = (kind, version, push_to_ack);
    }

    /// The proxy rejected a response.
    fn nacked(&self, kind: ResourceType, nack: &Nack) {
        let _ = (kind, nack);
    }

    /// The stream is ending with an error status sent to the proxy.
    fn failed(&self, error: &str) {
        let _ = error;
    }

    /// The stream closed, for whatever reason; the last call.
    fn closed(&self) {}
}

// === impl StatusEntry ===

/// A stream's handle on its observers: every event goes to each of them. Closes them when
/// dropped, however the stream ends.
pub struct StatusEntry {
    node_id: String,
    observers: Vec<Box<dyn StreamObserver>>,
    /// Per type, a hash of the last version sent and when: what an ACK's latency is measured
    /// against. Only this stream's task touches it, so the lock is never contended.
    last_sent: Mutex<[Option<(u64, Instant)>; 5]>,
}

impl std::fmt::Debug for StatusEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusEntry")
            .field("node_id", &self.node_id)
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl StatusEntry {
    /// Opens a stream on every observer.
    pub(crate) fn open(observers: &[Arc<dyn XdsObserver>], stream: &StreamInfo) -> Self {
        StatusEntry {
            node_id: stream.node_id.clone(),
            observers: observers.iter().map(|o| o.stream_opened(stream)).collect(),
            last_sent: Mutex::new(Default::default()),
        }
    }

    /// The node id of the stream.
    pub(crate) fn node_id(&self) -> String {
        self.node_id.clone()
    }

    /// Records a response sent.
    pub(crate) fn sent(&self, kind: ResourceType, version: &str, nonce: &str) {
        self.last_sent.lock()[kind.index()] = Some((version_hash(version), Instant::now()));
        for o in &self.observers {
            o.sent(kind, version, nonce);
        }
    }

    /// Records an ACK.
    pub(crate) fn acked(&self, kind: ResourceType, version: &str) {
        let push_to_ack = {
            let mut last = self.last_sent.lock();
            let slot = &mut last[kind.index()];
            // Only the first ACK of the last response sent measures a push.
            match *slot {
                Some((hash, at)) if hash == version_hash(version) => {
                    *slot = None;
                    Some(at.elapsed())
                }
                _ => None,
            }
        };
        for o in &self.observers {
            o.acked(kind, version, push_to_ack);
        }
    }

    /// Records a NACK.
    pub(crate) fn nacked(&self, kind: ResourceType, nack: Nack) {
        for o in &self.observers {
            o.nacked(kind, &nack);
        }
    }

    /// Records that the stream ends with `error`.
    pub(crate) fn failed(&self, error: &str) {
        for o in &self.observers {
            o.failed(error);
        }
    }
}

impl Drop for StatusEntry {
    fn drop(&mut self) {
        for o in &self.observers {
            o.closed();
        }
    }
}

fn version_hash(version: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(version.as_bytes())
}

// === impl StatusBoard ===

/// Live status of every connected proxy: the observer the admin API reads.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    entries: Arc<RwLock<HashMap<u64, Arc<Mutex<ProxyStatus>>>>>,
    next_id: Arc<AtomicU64>,
}

impl StatusBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh stream id.
    pub(crate) fn next_stream_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A copy of every connected proxy's status, ordered by node id.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        let entries: Vec<_> = self.entries.read().values().cloned().collect();
        let mut out: Vec<ProxyStatus> = entries.iter().map(|e| e.lock().clone()).collect();
        out.sort_by(|a, b| {
            (&a.stream.node_id, a.stream.stream_id).cmp(&(&b.stream.node_id, b.stream.stream_id))
        });
        out
    }

    /// Number of connected streams.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// True when no stream is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl XdsObserver for StatusBoard {
    fn stream_opened(&self, stream: &StreamInfo) -> Box<dyn StreamObserver> {
        let entry = Arc::new(Mutex::new(ProxyStatus {
            stream: stream.clone(),
            types: Default::default(),
        }));
        self.entries.write().insert(stream.stream_id, entry.clone());
        Box::new(BoardEntry {
            board: self.clone(),
            entry,
            stream_id: stream.stream_id,
        })
    }
}

/// One stream's row on the board; removed when the stream closes.
struct BoardEntry {
    board: StatusBoard,
    entry: Arc<Mutex<ProxyStatus>>,
    stream_id: u64,
}

impl BoardEntry {
    fn update(&self, kind: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        let mut status = self.entry.lock();
        f(&mut status.types[kind.index()]);
    }
}

impl StreamObserver for BoardEntry {
    fn sent(&self, kind: ResourceType, version: &str, nonce: &str) {
        self.update(kind, |t| {
            t.sent_version = Some(version.to_owned());
            t.sent_nonce = Some(nonce.to_owned());
            t.responses += 1;
        });
    }

    fn acked(&self, kind: ResourceType, version: &str, _push_to_ack: Option<Duration>) {
        self.update(kind, |t| {
            if t.last_nack.as_ref().is_some_and(|n| n.version != version) {
                t.last_nack = None;
            }
            t.acked_version = Some(version.to_owned());
        });
    }

    fn nacked(&self, kind: ResourceType, nack: &Nack) {
        self.update(kind, |t| {
            t.nacks += 1;
            t.last_nack = Some(nack.clone());
        });
    }

    fn closed(&self) {
        self.board.entries.write().remove(&self.stream_id);
    }
}
