//! One scenario, run from the server's side: start the real [`XdsServer`], publish the
//! layout's snapshots, let the fleet connect and sync, measure memory, then publish a change
//! per round and time it until every stream has ACKed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meshplane_telemetry::XdsMetrics;
use meshplane_xds::{ResourceType, ServerConfig, SnapshotCache, XdsServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::child::{ChildClient, Timeouts};
use crate::client::{Fleet, FleetConfig, Mode};
use crate::probe::{cpu_ns, mono_ns, raise_nofile_limit, rss_bytes};
use crate::scenario::{Layout, ServiceGrouper};

/// Where the client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In this process: quick, but memory figures include the client (tests use it).
    InProcess,
    /// In a child process: memory figures are the server's alone.
    Child,
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Groups and change pattern.
    pub layout: Layout,
    /// Protocol flavour.
    pub mode: Mode,
    /// ADS streams.
    pub streams: usize,
    /// Streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Changes published, one after another.
    pub rounds: u64,
    /// Where the client runs.
    pub placement: Placement,
    /// How long to wait for the fleet.
    pub timeouts: Timeouts,
}

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario.
    pub config: ScenarioConfig,
    /// Groups published.
    pub groups: usize,
    /// HTTP/2 connections used.
    pub connections: usize,
    /// Time for the fleet to connect and sync every stream.
    pub sync: Duration,
    /// Server RSS before any stream connected.
    pub rss_before: u64,
    /// Server RSS once every stream was synced.
    pub rss_synced: u64,
    /// Per round: each stream's time from the start of publishing to its ACK (ns).
    pub rounds: Vec<Vec<u64>>,
    /// Per round: time from publishing until the server had emitted an EDS response to
    /// every stream (ns): the server's own fan-out time, before transport and client.
    pub emitted: Vec<u64>,
    /// Per round: CPU the server process used from publishing until its ACKs settled (ns).
    pub server_cpu: Vec<u64>,
    /// Per round: CPU the client process used over the same span (ns); empty in process.
    pub client_cpu: Vec<u64>,
    /// Streams whose server-side status shows the last EDS version sent as ACKed.
    pub status_acked: usize,
}

/// The client, wherever it runs.
enum ClientHandle {
    InProcess(Fleet),
    Child(Box<ChildClient>),
}

impl ClientHandle {
    async fn start(
        placement: Placement,
        config: &FleetConfig,
        timeouts: &Timeouts,
    ) -> anyhow::Result<(Self, Duration)> {
        match placement {
            Placement::InProcess => {
                let start = mono_ns();
                let mut fleet = Fleet::start(config).await?;
                let done = fleet.synced(timeouts.sync).await?;
                Ok((
                    ClientHandle::InProcess(fleet),
                    Duration::from_nanos(done.saturating_sub(start)),
                ))
            }
            Placement::Child => {
                let mut child = ChildClient::spawn(config, timeouts)?;
                let sync = child.synced(timeouts.sync).await?;
                Ok((ClientHandle::Child(Box::new(child)), sync))
            }
        }
    }

    async fn arm(&mut self, round: u64) -> anyhow::Result<()> {
        match self {
            ClientHandle::InProcess(fleet) => {
                fleet.arm(round);
                Ok(())
            }
            ClientHandle::Child(child) => child.arm(round).await,
        }
    }

    async fn acked(&mut self, round: u64, timeout: Duration) -> anyhow::Result<Vec<u64>> {
        match self {
            ClientHandle::InProcess(fleet) => fleet.acked(round, timeout).await,
            ClientHandle::Child(child) => child.acked(round, timeout).await,
        }
    }

    fn cpu_ns(&self) -> Option<u64> {
        match self {
            ClientHandle::InProcess(_) => None,
            ClientHandle::Child(child) => child.cpu_ns().ok(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            ClientHandle::InProcess(fleet) => {
                fleet.stop().await;
                Ok(())
            }
            ClientHandle::Child(child) => child.stop().await,
        }
    }
}

/// Runs one scenario to the end; the server and the client are stopped whatever happens.
pub async fn run_scenario(config: ScenarioConfig) -> anyhow::Result<ScenarioResult> {
    raise_nofile_limit()?;
    let cache = SnapshotCache::new();
    let initial = config.layout.snapshots(config.streams, 0)?;
    let groups = initial.len();
    for (group, snapshot) in initial {
        cache.set_snapshot(&group, snapshot)?;
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // The control plane's own metrics observer: the bench measures the server as deployed,
    // and reads the responses emitted from it.
    let metrics = XdsMetrics::default();
    let server = XdsServer::new(
        cache.clone(),
        Arc::new(ServiceGrouper),
        ServerConfig::default(),
        shutdown.clone(),
    )
    .with_observer(Arc::new(metrics.clone()));
    let serving = tokio::spawn(server.clone().serve(listener));
    let fleet = FleetConfig {
        addr,
        streams: config.streams,
        streams_per_conn: config.streams_per_conn,
        mode: config.mode,
        layout: config.layout,
    };
    let result = measure(&config, &fleet, &cache, (&server, &metrics), groups).await;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), serving).await {
        Ok(joined) => joined?.context("xDS server")?,
        Err(_) => tracing::warn!("xDS server did not drain within 30s"),
    }
    result
}

async fn measure(
    config: &ScenarioConfig,
    fleet: &FleetConfig,
    cache: &SnapshotCache,
    (server, metrics): (&XdsServer, &XdsMetrics),
    groups: usize,
) -> anyhow::Result<ScenarioResult> {
    let rss_before = rss_bytes()?;
    let (mut client, sync) = ClientHandle::start(config.placement, fleet, &config.timeouts).await?;
    let outcome = async {
        // Let the last ACKs land and transient write buffers drain before reading RSS.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_synced = rss_bytes()?;
        let mut result = ScenarioResult {
            config: config.clone(),
            groups,
            connections: fleet.connections(),
            sync,
            rss_before,
            rss_synced,
            rounds: Vec::new(),
            emitted: Vec::new(),
            server_cpu: Vec::new(),
            client_cpu: Vec::new(),
            status_acked: 0,
        };
        for round in 1..=config.rounds {
            let figures = run_round(config, cache, metrics, &mut client, round).await?;
            result.rounds.push(figures.acks);
            result.emitted.push(figures.emitted);
            result.server_cpu.push(figures.server_cpu);
            result.client_cpu.extend(figures.client_cpu);
        }
        result.status_acked = settled_eds_acked(server, config.streams).await;
        anyhow::Ok(result)
    }
    .await;
    client.stop().await?;
    outcome
}

/// What one round measured (times in ns from the start of publishing).
struct RoundFigures {
    acks: Vec<u64>,
    emitted: u64,
    server_cpu: u64,
    client_cpu: Option<u64>,
}

/// Publishes round `round`'s snapshots and waits for every stream's ACK.
async fn run_round(
    config: &ScenarioConfig,
    cache: &SnapshotCache,
    metrics: &XdsMetrics,
    client: &mut ClientHandle,
    round: u64,
) -> anyhow::Result<RoundFigures> {
    let snapshots = config.layout.snapshots(config.streams, round)?;
    client.arm(round).await?;
    // The baseline is read before publishing, so the watcher cannot miss responses.
    let target = metrics.responses(ResourceType::Endpoint) + config.streams as u64;
    let emitted = tokio::spawn(wait_emitted(metrics.clone(), target, config.timeouts.ack));
    let (start, cpu_start, client_start) = (mono_ns(), cpu_ns()?, client.cpu_ns());
    for (group, snapshot) in snapshots {
        cache.set_snapshot(&group, snapshot)?;
    }
    let acks = client.acked(round, config.timeouts.ack).await?;
    let emitted = emitted.await?.saturating_sub(start);
    // Let the server read the last ACKs, so the CPU figure covers the whole change and the
    // next round starts from a quiet server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client_cpu = match (client_start, client.cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(RoundFigures {
        acks: acks.into_iter().map(|t| t.saturating_sub(start)).collect(),
        emitted,
        server_cpu: cpu_ns()?.saturating_sub(cpu_start),
        client_cpu,
    })
}

/// When (monotonic ns) the server's EDS response counter has reached `target`: every stream
/// has been handed its response. Polled every millisecond, for at most `timeout`.
async fn wait_emitted(metrics: XdsMetrics, target: u64, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    while metrics.responses(ResourceType::Endpoint) < target
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    mono_ns()
}

/// [`eds_acked`] once it reaches `streams`, or after 10 s: the server reads the last ACKs
/// a little after the client sends them.
async fn settled_eds_acked(server: &XdsServer, streams: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let acked = eds_acked(server);
        if acked >= streams || tokio::time::Instant::now() >= deadline {
            return acked;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Streams whose status board entry shows their last EDS response ACKed and no NACK.
fn eds_acked(server: &XdsServer) -> usize {
    server
        .status()
        .proxies()
        .iter()
        .filter(|p| {
            let eds = p.type_status(ResourceType::Endpoint);
            eds.sent_version.is_some()
                && eds.acked_version == eds.sent_version
                && eds.last_nack.is_none()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_small(mode: Mode) -> ScenarioResult {
        let config = ScenarioConfig {
            layout: Layout::Groups,
            mode,
            streams: 20,
            streams_per_conn: 8,
            rounds: 2,
            placement: Placement::InProcess,
            timeouts: Timeouts {
                sync: Duration::from_secs(30),
                ack: Duration::from_secs(30),
            },
        };
        run_scenario(config).await.expect("scenario runs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stream_acks_each_change_in_both_modes() {
        for mode in [Mode::Sotw, Mode::Delta] {
            let result = run_small(mode).await;
            assert_eq!(result.groups, 4, "{mode}");
            assert_eq!(result.connections, 3, "{mode}");
            assert_eq!(result.rounds.len(), 2, "{mode}");
            for acks in &result.rounds {
                assert_eq!(acks.len(), 20, "{mode}: every stream ACKed the change");
            }
            assert_eq!(result.status_acked, 20, "{mode}: the server saw every ACK");
            assert!(crate::report::row(&result).contains("| 20/20 |"));
        }
    }
}
