//! The fleet of Envoy-like ADS proxies: N streams over a few HTTP/2 connections, each
//! reporting when it is synced and when it has ACKed the change of a round.

mod delta;
mod names;
mod sotw;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshplane_xds::ResourceType;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use delta::DeltaProxy;
pub use sotw::SotwProxy;

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
    Failed(String),
}

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
    channels: Vec<Channel>,
    /// Streams opened so far (`0..opened`).
    opened: usize,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    armed: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

// === impl Fleet ===

impl Fleet {
    /// Opens every HTTP/2 connection; streams are opened by [`Fleet::open`].
    pub async fn connect(config: &FleetConfig) -> anyhow::Result<Fleet> {
        let endpoint = Endpoint::from_shared(format!("http://{}", config.addr))?
            .initial_stream_window_size(ENVOY_WINDOW)
            .initial_connection_window_size(ENVOY_WINDOW)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        // Each `connect` is its own HTTP/2 connection; connect in batches so the listen
        // backlog is never overrun.
        let mut channels = Vec::with_capacity(config.connections());
        for batch in (0..config.connections()).collect::<Vec<_>>().chunks(256) {
            let connects = batch.iter().map(|_| endpoint.connect());
            channels.extend(
                futures::future::try_join_all(connects)
                    .await
                    .context("connecting to the xDS server")?,
            );
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        Ok(Fleet {
            config: config.clone(),
            channels,
            opened: 0,
            events_tx,
            events_rx,
            armed: Arc::new(AtomicU64::new(0)),
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
                channel: self.channels[i % self.channels.len()].clone(),
                node: node(&self.config, i),
                armed: self.armed.clone(),
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
    channel: Channel,
    node: Node,
    armed: Arc<AtomicU64>,
    events_tx: mpsc::UnboundedSender<Event>,
}

impl StreamTask {
    async fn run(self, mode: Mode) {
        let result = match mode {
            Mode::Sotw => self.drive(SotwProxy::new(self.node.clone())).await,
            Mode::Delta => self.drive(DeltaProxy::new(self.node.clone())).await,
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

    async fn drive<P: ProxyProtocol>(&self, mut proxy: P) -> anyhow::Result<()> {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        for r in proxy.initial() {
            req_tx.send(r)?;
        }
        let client = AggregatedDiscoveryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut responses = P::open(client, UnboundedReceiverStream::new(req_rx)).await?;
        let (mut synced, mut reported_round, mut reported_other) = (false, 0, 0);
        while let Some(resp) = responses.message().await? {
            let (kind, requests) = proxy.on_response(resp)?;
            for r in requests {
                req_tx.send(r)?;
            }
            if !synced && proxy.synced() {
                synced = true;
                self.report(EventKind::Synced);
            }
            let armed = self.armed.load(Ordering::SeqCst);
            if kind == ResourceType::Endpoint && armed > reported_round {
                reported_round = armed;
                self.report(EventKind::Acked(armed));
            } else if kind != ResourceType::Endpoint && armed > reported_other {
                reported_other = armed;
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
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(ResourceType, Vec<Self::Request>)>;
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
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(ResourceType, Vec<Self::Request>)> {
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
    fn on_response(
        &mut self,
        resp: Self::Response,
    ) -> anyhow::Result<(ResourceType, Vec<Self::Request>)> {
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
