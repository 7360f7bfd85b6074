//! The fleet of Envoy-like ADS proxies: N streams over a few HTTP/2 connections, each
//! reporting when it is synced and when it has ACKed the change of a round.

mod delta;
mod names;
mod sotw;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
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
    Acked(u64),
    Failed(String),
}

#[derive(Debug)]
struct Event {
    stream: usize,
    kind: EventKind,
    at_ns: u64,
}

/// A running fleet.
pub struct Fleet {
    streams: usize,
    events_rx: mpsc::UnboundedReceiver<Event>,
    armed: Arc<AtomicU64>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

// === impl Fleet ===

impl Fleet {
    /// Connects and opens every stream; returns once all are opening.
    pub async fn start(config: &FleetConfig) -> anyhow::Result<Fleet> {
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
        let armed = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for i in 0..config.streams {
            let stream = StreamTask {
                index: i,
                channel: channels[i % channels.len()].clone(),
                node: node(config.layout, i, config.streams),
                armed: armed.clone(),
                events_tx: events_tx.clone(),
            };
            let shutdown = shutdown.clone();
            let mode = config.mode;
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = stream.run(mode) => {}
                }
            });
        }
        Ok(Fleet {
            streams: config.streams,
            events_rx,
            armed,
            shutdown,
            tasks,
        })
    }

    /// Waits until every stream is synced; returns when the last one was (monotonic ns).
    pub async fn synced(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let times = self
            .collect(timeout, "sync", |k| matches!(k, EventKind::Synced))
            .await?;
        Ok(times.into_iter().max().unwrap_or_default())
    }

    /// From now on, the next EDS response each stream ACKs counts for `round`.
    pub fn arm(&self, round: u64) {
        self.armed.store(round, Ordering::SeqCst);
    }

    /// Waits until every stream has ACKed the change of `round`; returns each stream's ACK
    /// time (monotonic ns).
    pub async fn acked(&mut self, round: u64, timeout: Duration) -> anyhow::Result<Vec<u64>> {
        self.collect(
            timeout,
            "ACK",
            |k| matches!(k, EventKind::Acked(r) if *r == round),
        )
        .await
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
        wanted: impl Fn(&EventKind) -> bool,
    ) -> anyhow::Result<Vec<u64>> {
        let mut times: Vec<Option<u64>> = vec![None; self.streams];
        let mut done = 0;
        let deadline = tokio::time::Instant::now() + timeout;
        while done < self.streams {
            let event = tokio::time::timeout_at(deadline, self.events_rx.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{what}: only {done} of {} streams after {timeout:?}",
                        self.streams
                    )
                })?
                .context("every stream task ended")?;
            if let EventKind::Failed(e) = &event.kind {
                anyhow::bail!("stream {} failed: {e}", event.stream);
            }
            if wanted(&event.kind) && times[event.stream].replace(event.at_ns).is_none() {
                done += 1;
            }
        }
        Ok(times.into_iter().flatten().collect())
    }
}

fn node(layout: Layout, i: usize, streams: usize) -> Node {
    Node {
        id: format!("proxy-{i:05}"),
        cluster: layout.node_service(i, streams),
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
        let (mut synced, mut reported_round) = (false, 0);
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
