//! What each connected proxy has been sent, has acknowledged and has rejected.
//!
//! Streams write their own entry; the admin API reads [`StatusBoard::proxies`]. Each entry
//! has its own small lock, so 10,000 streams never contend on one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

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
    /// When the last response was sent (for the push-to-ACK latency).
    pub sent_at: Option<std::time::Instant>,
}

/// Upper bounds (ms) of the latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A latency histogram with fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound of [`LATENCY_BUCKETS_MS`] (not cumulative).
    pub buckets: [AtomicU64; 12],
    /// Observations above the last bound.
    pub overflow: AtomicU64,
    /// Number of observations.
    pub count: AtomicU64,
    /// Sum of observations, microseconds.
    pub sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let ms = d.as_millis() as u64;
        match LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus text for this histogram (seconds).
    pub fn render(&self, name: &str, help: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// Status of one connected proxy (one stream).
#[derive(Debug, Clone)]
pub struct ProxyStatus {
    /// Server-assigned stream id, unique per process.
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
    /// Per type, in [`ResourceType::ALL`] order.
    pub types: [TypeStatus; 5],
}

impl ProxyStatus {
    /// Status for one type.
    pub fn type_status(&self, kind: ResourceType) -> &TypeStatus {
        &self.types[kind.index()]
    }
}

/// Totals across all streams since start (for metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Responses sent, per type.
    pub responses: [AtomicU64; 5],
    /// NACKs received, per type.
    pub nacks: [AtomicU64; 5],
    /// Streams accepted.
    pub streams_opened: AtomicU64,
    /// Streams refused or ended with an error status.
    pub streams_failed: AtomicU64,
    /// Time from sending a response to its ACK.
    pub push_ack_latency: Histogram,
}

/// Live status of every connected proxy.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    entries: Arc<RwLock<HashMap<u64, Arc<Mutex<ProxyStatus>>>>>,
    counters: Arc<Counters>,
    next_id: Arc<AtomicU64>,
}

/// A stream's handle on its own entry; removes the entry when dropped.
#[derive(Debug)]
pub struct StatusEntry {
    board: StatusBoard,
    entry: Arc<Mutex<ProxyStatus>>,
    stream_id: u64,
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

    /// Registers a stream.
    pub(crate) fn register(&self, status: ProxyStatus) -> StatusEntry {
        let stream_id = status.stream_id;
        let entry = Arc::new(Mutex::new(status));
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream_id, entry.clone());
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        StatusEntry {
            board: self.clone(),
            entry,
            stream_id,
        }
    }

    /// A copy of every connected proxy's status, ordered by node id.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        let entries: Vec<_> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out: Vec<ProxyStatus> = entries
            .iter()
            .map(|e| e.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        out.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then(a.stream_id.cmp(&b.stream_id))
        });
        out
    }

    /// Number of connected streams.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no stream is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Process-wide counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl StatusEntry {
    /// The node id of the stream.
    pub(crate) fn node_id(&self) -> String {
        self.entry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .node_id
            .clone()
    }

    /// Records a response sent.
    pub(crate) fn sent(&self, kind: ResourceType, version: &str, nonce: &str) {
        self.board.counters.responses[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.update(kind, |t| {
            t.sent_version = Some(version.to_owned());
            t.sent_nonce = Some(nonce.to_owned());
            t.responses += 1;
            t.sent_at = Some(std::time::Instant::now());
        });
    }

    /// Records an ACK.
    pub(crate) fn acked(&self, kind: ResourceType, version: &str) {
        let latency = &self.board.counters.push_ack_latency;
        self.update(kind, |t| {
            if t.sent_version.as_deref() == Some(version)
                && let Some(at) = t.sent_at.take()
            {
                latency.observe(at.elapsed());
            }
            if t.last_nack.as_ref().is_some_and(|n| n.version != version) {
                t.last_nack = None;
            }
            t.acked_version = Some(version.to_owned());
        });
    }

    /// Records a NACK.
    pub(crate) fn nacked(&self, kind: ResourceType, nack: Nack) {
        self.board.counters.nacks[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.update(kind, |t| {
            t.nacks += 1;
            t.last_nack = Some(nack);
        });
    }

    fn update(&self, kind: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        let mut status = self.entry.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut status.types[kind.index()]);
    }
}

impl Drop for StatusEntry {
    fn drop(&mut self) {
        self.board
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.stream_id);
    }
}
