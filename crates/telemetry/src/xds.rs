//! The xDS server's metrics, recorded by a stream observer.
//!
//! Every label value is known up front (two protocols, five types), so the handles are
//! resolved once: recording a response is one atomic add, with no label lookup.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use meshplane_xds::{Nack, ResourceType, StreamInfo, StreamKind, StreamObserver, XdsObserver};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::LATENCY_BUCKETS;

type Labels = [(&'static str, &'static str); 1];

const PROTOCOLS: [(StreamKind, &str); 2] =
    [(StreamKind::Sotw, "sotw"), (StreamKind::Delta, "delta")];

/// The xDS families; an [`XdsObserver`] to register with the server. `Default` gives
/// unregistered families, for a server nobody scrapes (benchmarks).
#[derive(Clone, Debug)]
pub struct XdsMetrics {
    inner: Arc<Handles>,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        XdsMetrics::register(&mut Registry::default())
    }
}

#[derive(Debug)]
struct Handles {
    /// Per protocol, in [`PROTOCOLS`] order.
    streams: [Gauge; 2],
    /// Per type, in [`ResourceType::ALL`] order (as are the next two).
    proxies_by_type: [Gauge; 5],
    responses: [Counter; 5],
    nacks: [Counter; 5],
    streams_failed: Counter,
    push_ack: Histogram,
}

fn per_type<M: Clone>(family: &Family<Labels, M>) -> [M; 5] {
    ResourceType::ALL.map(|k| family.get_or_create(&[("type", k.short_name())]).clone())
}

fn slot(kind: ResourceType) -> usize {
    ResourceType::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

impl XdsMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let streams = Family::<Labels, Gauge>::default();
        let proxies_by_type = Family::<Labels, Gauge>::default();
        let responses = Family::<Labels, Counter>::default();
        let nacks = Family::<Labels, Counter>::default();
        let handles = Handles {
            streams: PROTOCOLS.map(|(_, p)| streams.get_or_create(&[("protocol", p)]).clone()),
            proxies_by_type: per_type(&proxies_by_type),
            responses: per_type(&responses),
            nacks: per_type(&nacks),
            streams_failed: Counter::default(),
            push_ack: Histogram::new(LATENCY_BUCKETS),
        };
        registry.register(
            "meshplane_xds_streams",
            "Connected xDS streams by protocol",
            streams,
        );
        registry.register(
            "meshplane_xds_proxies_by_type",
            "Proxies that were sent each resource type",
            proxies_by_type,
        );
        registry.register(
            "meshplane_xds_responses",
            "xDS responses sent, by type",
            responses,
        );
        registry.register(
            "meshplane_xds_nacks",
            "Responses rejected by proxies, by type",
            nacks,
        );
        registry.register(
            "meshplane_xds_streams_failed",
            "Streams refused or ended with an error",
            handles.streams_failed.clone(),
        );
        registry.register(
            "meshplane_xds_push_ack_seconds",
            "Time from sending a response to the proxy's ACK",
            handles.push_ack.clone(),
        );
        XdsMetrics {
            inner: Arc::new(handles),
        }
    }

    /// Responses of `kind` sent since start, over all streams.
    pub fn responses(&self, kind: ResourceType) -> u64 {
        self.inner.responses[slot(kind)].get()
    }
}

impl XdsObserver for XdsMetrics {
    fn stream_opened(&self, stream: &StreamInfo) -> Box<dyn StreamObserver> {
        let protocol = PROTOCOLS
            .iter()
            .position(|(k, _)| *k == stream.kind)
            .unwrap_or_default();
        self.inner.streams[protocol].inc();
        Box::new(StreamMetrics {
            handles: self.inner.clone(),
            protocol,
            types_sent: AtomicU8::new(0),
        })
    }

    fn stream_refused(&self, _error: &str) {
        self.inner.streams_failed.inc();
    }
}

/// One stream's share of the gauges, given back when it closes.
struct StreamMetrics {
    handles: Arc<Handles>,
    protocol: usize,
    /// Bit per type slot: the types this stream has been sent (counted in `proxies_by_type`).
    types_sent: AtomicU8,
}

impl StreamObserver for StreamMetrics {
    fn sent(&self, kind: ResourceType, _version: &str, _nonce: &str) {
        let i = slot(kind);
        self.handles.responses[i].inc();
        let bit = 1 << i;
        if self.types_sent.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            self.handles.proxies_by_type[i].inc();
        }
    }

    fn acked(&self, _kind: ResourceType, _version: &str, push_to_ack: Option<Duration>) {
        if let Some(latency) = push_to_ack {
            self.handles.push_ack.observe(latency.as_secs_f64());
        }
    }

    fn nacked(&self, kind: ResourceType, _nack: &Nack) {
        self.handles.nacks[slot(kind)].inc();
    }

    fn failed(&self, _error: &str) {
        self.handles.streams_failed.inc();
    }

    fn closed(&self) {
        self.handles.streams[self.protocol].dec();
        let sent = self.types_sent.load(Ordering::Relaxed);
        for (i, gauge) in self.handles.proxies_by_type.iter().enumerate() {
            if sent & (1 << i) != 0 {
                gauge.dec();
            }
        }
    }
}
