//! The fleet of Envoy-like ADS proxies: N streams over a few HTTP/2 connections, each
//! reporting when it is synced and when it has ACKed the change of a round. For the
//! storms ([`crate::storm`]) a stream also reports every response it receives, keeps the
//! endpoints it holds for an exactness check, and survives a server restart: it waits to be
//! told the restarted server's address, then reconnects reporting what it holds.

mod delta;
mod names;
mod sotw;
mod storm;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshplane_xds::ResourceType;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use delta::DeltaProxy;
pub use names::addresses_digest;
pub use sotw::SotwProxy;
pub use storm::StormReport;

use crate::probe::mono_ns;
use crate::scenario::Layout;

/// Envoy's default HTTP/2 windows (256 MiB): a big snapshot is never throttled by flow control.
const ENVOY_WINDOW: u32 = 256 * 1024 * 1024;
/// Largest response a proxy accepts, as the server's own limit allows.
const MAX_MESSAGE: usize = 128 * 1024 * 1024;

/// Protocol flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// State-of-the-world ADS.
    Sotw,
    /// Incremental ADS.
    Delta,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sotw" => Ok(Mode::Sotw),
            "delta" => Ok(Mode::Delta),
            other => Err(format!("unknown mode `{other}`: use `sotw` or `delta`")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        })
    }
}

/// What to open.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The server.
    pub addr: SocketAddr,
    /// ADS streams (proxies).
    pub streams: usize,
    /// Streams multiplexed on one HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Protocol flavour.
    pub mode: Mode,
    /// Decides each proxy's `node.cluster`, hence its group.
    pub layout: Layout,
    /// Put each proxy's service descriptor in `node.metadata`, as the real control plane
    /// requires ([`crate::plane::descriptor_metadata`]).
    pub descriptors: bool,
    /// Record the routable endpoints of every assignment each proxy holds (the storms'
    /// exactness check; it costs the client a decode per assignment).
    pub track: bool,
}

impl FleetConfig {
    /// HTTP/2 connections the fleet opens.
    pub fn connections(&self) -> usize {
        self.streams.div_ceil(self.streams_per_conn.max(1))
    }
}

#[derive(Debug)]
enum EventKind {
    Synced,
    /// The stream ACKed its first EDS response since round `.0` was armed.
    Acked(u64),
    /// The stream received a response of another type since round `.0` was armed.
    Other(u64),
    /// The stream was re-established after a server restart.
    Reconnected,
    /// A response received while a storm is armed.
    Storm(Received),
    Failed(String),
}

/// What one response carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Its type.
    pub kind: ResourceType,
    /// Resources it carried.
    pub resources: usize,
    /// Of those, the ones the proxy already held: at the same version (delta) or with the
    /// same bytes (SotW, whose resources carry no version of their own).
    pub held: usize,
}

/// Name → digest ([`addresses_digest`]) of the routable endpoints of every assignment a
/// proxy holds.
pub type Digests = Arc<parking_lot::Mutex<BTreeMap<String, u64>>>;

#[derive(Debug)]
struct Event {
    stream: usize,
    kind: EventKind,
    at_ns: u64,
}

/// What the fleet saw of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundAcks {
    /// Each affected stream's ACK time (monotonic ns), in stream order.
    pub times: Vec<u64>,
    /// Streams the round does not affect.
    pub unaffected: usize,
    /// Of those, the ones that received a response anyway (should be none).
    pub unaffected_touched: usize,
}

/// How long unaffected streams are watched after the last affected ACK: a response meant
/// for them would have been written in the same fan-out, so it arrives well within this.
const UNAFFECTED_QUIET: Duration = Duration::from_millis(200);

/// A running fleet.
pub struct Fleet {
    config: FleetConfig,
    /// The connections streams open on; replaced when the server restarts.
    channels_tx: watch::Sender<Arc<Vec<Channel>>>,
    /// Streams opened so far (`0..opened`).
    opened: usize,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    armed: Arc<AtomicU64>,
    /// Streams report every response ([`EventKind::Storm`]).
    storm: Arc<AtomicBool>,
    /// The server is restarting: a stream that ends waits for new connections.
    restarting: Arc<AtomicBool>,
    /// Per stream, when tracking.
    digests: Vec<Digests>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

// === impl Fleet ===

impl Fleet {
    /// Opens every HTTP/2 connection; streams are opened by [`Fleet::open`].
    pub async fn connect(config: &FleetConfig) -> anyhow::Result<Fleet> {
        let channels = connect_all(config.addr, config.connections()).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let digests = match config.track {
            true => (0..config.streams).map(|_| Digests::default()).collect(),
            false => Vec::new(),
        };
        Ok(Fleet {
            config: config.clone(),
            channels_tx: watch::Sender::new(Arc::new(channels)),
            opened: 0,
            events_tx,
            events_rx,
            armed: Arc::new(AtomicU64::new(0)),
            storm: Arc::new(AtomicBool::new(false)),
            restarting: Arc::new(AtomicBool::new(false)),
            digests,
            shutdown: CancellationToken::new(),
            tasks: JoinSet::new(),
        })
    }

    /// Opens the next streams, up to index `until` (exclusive).
    pub fn open(&mut self, until: usize) {
        let until = until.min(self.config.streams);
        for i in self.opened..until {
            let stream = StreamTask {
                index: i,
                channels: self.channels_tx.subscribe(),
                node: node(&self.config, i),
                armed: self.armed.clone(),
                storm: self.storm.clone(),
                restarting: self.restarting.clone(),
                digests: self.digests.get(i).cloned(),
                events_tx: self.events_tx.clone(),
            };
            let shutdown = self.shutdown.clone();
            let mode = self.config.mode;
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = stream.run(mode) => {}
                }
            });
        }
        self.opened = self.opened.max(until);
    }

    /// Waits until every stream in `streams` is synced; returns when the last one was
    /// (monotonic ns).
    pub async fn synced(
        &mut self,
        streams: Range<usize>,
        timeout: Duration,
    ) -> anyhow::Result<u64> {
        let wanted: Vec<bool> = (0..self.config.streams)
            .map(|i| streams.contains(&i))
            .collect();
        let mut times = vec![None; self.config.streams];
        self.collect(timeout, "sync", &wanted, &mut times, |k| {
            matches!(k, EventKind::Synced)
        })
        .await?;
        Ok(times.into_iter().flatten().max().unwrap_or_default())
    }

    /// From now on, the next EDS response each stream ACKs counts for `round`.
    pub fn arm(&self, round: u64) {
        self.armed.store(round, Ordering::SeqCst);
    }

    /// Waits until every stream the layout says `round` affects has ACKed its change, then
    /// watches the others for 200 ms: they must receive nothing.
    pub async fn acked(&mut self, round: u64, timeout: Duration) -> anyhow::Result<RoundAcks> {
        let FleetConfig {
            layout, streams, ..
        } = self.config;
        let affected: Vec<bool> = (0..streams)
            .map(|i| layout.affected(i, streams, round))
            .collect();
        let mut times = vec![None; streams];
        let mut touched = vec![false; streams];
        let mut note = |e: &Event| {
            if let EventKind::Acked(r) | EventKind::Other(r) = e.kind
                && r == round
                && !affected[e.stream]
            {
                touched[e.stream] = true;
            }
        };
        self.collect_noting(
            timeout,
            "ACK",
            &affected,
            &mut times,
            |k| matches!(k, EventKind::Acked(r) if *r == round),
            &mut note,
        )
        .await?;
        let unaffected = affected.iter().filter(|a| !**a).count();
        if unaffected > 0 {
            let quiet_until = tokio::time::Instant::now() + UNAFFECTED_QUIET;
            while let Ok(Some(event)) =
                tokio::time::timeout_at(quiet_until, self.events_rx.recv()).await
            {
                if let EventKind::Failed(e) = &event.kind {
                    anyhow::bail!("stream {} failed: {e}", event.stream);
                }
                note(&event);
            }
        }
        Ok(RoundAcks {
            times: times.into_iter().flatten().collect(),
            unaffected,
            unaffected_touched: touched.iter().filter(|t| **t).count(),
        })
    }

    /// Closes every stream.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    async fn collect(
        &mut self,
        timeout: Duration,
        what: &str,
        from: &[bool],
        times: &mut [Option<u64>],
        wanted: impl Fn(&EventKind) -> bool,
    ) -> anyhow::Result<()> {
        self.collect_noting(timeout, what, from, times, wanted, &mut |_| {})
            .await
    }

    /// Records in `times` the first `wanted` event of each stream marked in `from`, until
    /// every one has one; every event also goes to `note`.
    async fn collect_noting(
        &mut self,
        timeout: Duration,
        what: &str,
        from: &[bool],
        times: &mut [Option<u64>],
        wanted: impl Fn(&EventKind) -> bool,
        note: &mut dyn FnMut(&Event),
    ) -> anyhow::Result<()> {
        let expected = from.iter().filter(|f| **f).count();
        let mut done = 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while done < expected {
            let event = tokio::time::timeout_at(deadline, self.events_rx.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("{what}: only {done} of {expected} streams after {timeout:?}")
                })?
                .context("every stream task ended")?;
            if let EventKind::Failed(e) = &event.kind {
                anyhow::bail!("stream {} failed: {e}", event.stream);
            }
            note(&event);
            if from[event.stream]
                && wanted(&event.kind)
                && times[event.stream].replace(event.at_ns).is_none()
            {
                done += 1;
            }
        }
        Ok(())
    }
}

/// `count` HTTP/2 connections to `addr`, each `connect` its own, in batches so the listen
/// backlog is never overrun.
async fn connect_all(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .initial_stream_window_size(ENVOY_WINDOW)
        .initial_connection_window_size(ENVOY_WINDOW)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let mut channels = Vec::with_capacity(count);
    for batch in (0..count).collect::<Vec<_>>().chunks(256) {
        let connects = batch.iter().map(|_| endpoint.connect());
        channels.extend(
            futures::future::try_join_all(connects)
                .await
                .context("connecting to the xDS server")?,
        );
    }
    Ok(channels)
}

fn node(config: &FleetConfig, i: usize) -> Node {
    let (layout, streams) = (config.layout, config.streams);
    Node {
        id: format!("proxy-{i:05}"),
        cluster: layout.node_service(i, streams),
        metadata: config
            .descriptors
            .then(|| crate::plane::descriptor_metadata(layout, i, streams)),
        ..Default::default()
    }
}

/// One proxy's stream.
struct StreamTask {
    index: usize,
    channels: watch::Receiver<Arc<Vec<Channel>>>,
    node: Node,
    armed: Arc<AtomicU64>,
    storm: Arc<AtomicBool>,
    restarting: Arc<AtomicBool>,
    digests: Option<Digests>,
    events_tx: mpsc::UnboundedSender<Event>,
}

/// What a stream has reported, kept across reconnects.
#[derive(Debug, Default)]
struct Reported {
    synced: bool,
    round: u64,
    other: u64,
}

/// Delay between attempts to re-open a stream on the restarted server's connections.
const RETRY: Duration = Duration::from_millis(100);

impl StreamTask {
    async fn run(self, mode: Mode) {
        let (node, digests) = (self.node.clone(), self.digests.clone());
        let result = match mode {
            Mode::Sotw => self.drive_all(SotwProxy::new(node, digests)).await,
            Mode::Delta => self.drive_all(DeltaProxy::new(node, digests)).await,
        };
        let error = match result {
            Ok(()) => "the server ended the stream".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        self.report(EventKind::Failed(error));
    }

    fn report(&self, kind: EventKind) {
        let _ = self.events_tx.send(Event {
            stream: self.index,
            kind,
            at_ns: mono_ns(),
        });
    }

    /// Drives the proxy's stream; while the server restarts, a stream that ends waits for
    /// the new connections and re-opens with what the proxy holds, as Envoy reconnects.
    async fn drive_all<P: ProxyProtocol>(&self, mut proxy: P) -> anyhow::Result<()> {
        let mut channels = self.channels.clone();
        let mut requests = proxy.initial();
        let mut reported = Reported::default();
        let mut reconnect = false;
        loop {
            let channel = {
                let all = channels.borrow_and_update();
                all[self.index % all.len()].clone()
            };
            let outcome = self
                .drive(&mut proxy, channel, requests, reconnect, &mut reported)
                .await;
            if !self.restarting.load(Ordering::SeqCst) {
                return outcome;
            }
            // A stream that dropped before the new connections exist waits for them; one
            // that failed on them (the server still starting) retries shortly.
            tokio::select! {
                changed = channels.changed() => changed.context("the fleet stopped")?,
                _ = tokio::time::sleep(RETRY), if reconnect => {}
            }
            reconnect = true;
            requests = proxy.reconnect();
        }
    }

    async fn drive<P: ProxyProtocol>(
        &self,
        proxy: &mut P,
        channel: Channel,
        initial: Vec<P::Request>,
        reconnect: bool,
        reported: &mut Reported,
    ) -> anyhow::Result<()> {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        for r in initial {
            req_tx.send(r)?;
        }
        let client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut responses = P::open(client, UnboundedReceiverStream::new(req_rx)).await?;
        if reconnect {
            self.report(EventKind::Reconnected);
        }
        while let Some(resp) = responses.message().await? {
            let (received, requests) = proxy.on_response(resp)?;
            for r in requests {
                req_tx.send(r)?;
            }
            if self.storm.load(Ordering::SeqCst) {
                self.report(EventKind::Storm(received));
            }
            if !reported.synced && proxy.synced() {
                reported.synced = true;
                self.report(EventKind::Synced);
            }
            let (kind, armed) = (received.kind, self.armed.load(Ordering::SeqCst));
            if kind == ResourceType::Endpoint && armed > reported.round {
                reported.round = armed;
                self.report(EventKind::Acked(armed));
            } else if kind != ResourceType::Endpoint && armed > reported.other {
                reported.other = armed;
                self.report(EventKind::Other(armed));
            }
        }
        Ok(())
    }
}

/// What differs between the SotW and delta proxies, for the shared stream driver.
trait ProxyProtocol: Send + 'static {
    type Request: prost::Message + Send + Sync + 'static;
    type Response: prost::Message + Default + Send + 'static;

    fn initial(&mut self) -> Vec<Self::Request>;
    fn reconnect(&mut self) -> Vec<Self::Request>;
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(Received, Vec<Self::Request>)>;
    fn synced(&self) -> bool;
    fn open(
        client: AggregatedDiscoveryServiceClient<Channel>,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<tonic::Streaming<Self::Response>, tonic::Status>> + Send;
}

impl ProxyProtocol for SotwProxy {
    type Request = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    type Response = envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    fn initial(&mut self) -> Vec<Self::Request> {
        SotwProxy::initial(self)
    }
    fn reconnect(&mut self) -> Vec<Self::Request> {
        SotwProxy::reconnect(self)
    }
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(Received, Vec<Self::Request>)> {
        SotwProxy::on_response(self, resp)
    }
    fn synced(&self) -> bool {
        SotwProxy::synced(self)
    }
    async fn open(
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(client
            .stream_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}

impl ProxyProtocol for DeltaProxy {
    type Request = envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    type Response = envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;

    fn initial(&mut self) -> Vec<Self::Request> {
        DeltaProxy::initial(self)
    }
    fn reconnect(&mut self) -> Vec<Self::Request> {
        DeltaProxy::reconnect(self)
    }
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(Received, Vec<Self::Request>)> {
        DeltaProxy::on_response(self, resp)
    }
    fn synced(&self) -> bool {
        DeltaProxy::synced(self)
    }
    async fn open(
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: UnboundedReceiverStream<Self::Request>,
    ) -> Result<tonic::Streaming<Self::Response>, tonic::Status> {
        Ok(client
            .delta_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}
