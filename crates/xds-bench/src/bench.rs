//! One scenario, run from the server's side: start the server (Meshplane's real `XdsServer`,
//! or the [`crate::floor::Floor`]; `target.rs`), publish the layout's snapshots, let the fleet
//! connect and sync phase by phase, measure memory, then publish a change per round and time
//! it until every affected stream has ACKed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::child::{ChildClient, Timeouts};
use crate::client::{Fleet, FleetConfig, Mode, RoundAcks};
use crate::plane::PlaneRegistry;
use crate::probe::{cpu_ns, mono_ns, raise_nofile_limit, rss_bytes};
use crate::scenario::Layout;
use crate::target::Target;

/// Where the client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In this process: quick, but memory figures include the client (tests use it).
    InProcess,
    /// In a child process: memory figures are the server's alone.
    Child,
}

/// Which server a scenario measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Meshplane's `XdsServer` with its `SnapshotCache`.
    Meshplane,
    /// The [`crate::floor::Floor`]: pre-encoded responses written to every stream, nothing else.
    Floor,
    /// The whole control plane (`meshplane_runtime`) with this registry, changes made
    /// through the registry's Consul-compatible API ([`crate::plane`]).
    ControlPlane(PlaneRegistry),
}

impl FromStr for ServerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "meshplane" => Ok(ServerKind::Meshplane),
            "floor" => Ok(ServerKind::Floor),
            "control-plane" => Ok(ServerKind::ControlPlane(PlaneRegistry::Embedded)),
            "control-plane-consul" => Ok(ServerKind::ControlPlane(PlaneRegistry::Consul)),
            "control-plane-consul-https" => {
                Ok(ServerKind::ControlPlane(PlaneRegistry::ConsulHttps))
            }
            other => Err(format!(
                "unknown server `{other}`: use `meshplane`, `floor`, `control-plane`, `control-plane-consul` or `control-plane-consul-https`"
            )),
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Meshplane => "meshplane",
            ServerKind::Floor => "floor",
            ServerKind::ControlPlane(PlaneRegistry::Embedded) => "control-plane",
            ServerKind::ControlPlane(PlaneRegistry::Consul) => "control-plane-consul",
            ServerKind::ControlPlane(PlaneRegistry::ConsulHttps) => "control-plane-consul-https",
        })
    }
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// The server measured.
    pub server: ServerKind,
    /// Groups and change pattern.
    pub layout: Layout,
    /// Protocol flavour.
    pub mode: Mode,
    /// ADS streams.
    pub streams: usize,
    /// Streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Instances per service loaded into the control plane's registry (control-plane
    /// servers only; the others publish the layout's snapshots).
    pub instances: usize,
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
    /// Time for the fleet to connect and sync every stream (all phases).
    pub sync: Duration,
    /// Server RSS before any stream connected.
    pub rss_before: u64,
    /// Server RSS once each phase's streams were synced (the last: every stream).
    pub rss_phases: Vec<u64>,
    /// Per round: each affected stream's time from the start of publishing to its ACK (ns).
    pub rounds: Vec<Vec<u64>>,
    /// Per round: streams the change does not affect, and how many of them got a response.
    pub unaffected: Vec<(usize, usize)>,
    /// Per round: time from publishing until the server had emitted an EDS response to
    /// every affected stream (ns): the server's own fan-out time, before transport and client.
    pub emitted: Vec<u64>,
    /// Per round: CPU the server process used from publishing until its ACKs settled (ns).
    pub server_cpu: Vec<u64>,
    /// Per round: CPU the client process used over the same span (ns); empty in process.
    pub client_cpu: Vec<u64>,
    /// Streams whose server-side status shows the last EDS version sent as ACKed (the
    /// floor keeps no status).
    pub status_acked: Option<usize>,
}

impl ScenarioResult {
    /// Server RSS once every stream was synced.
    pub fn rss_synced(&self) -> u64 {
        self.rss_phases.last().copied().unwrap_or(self.rss_before)
    }
}

/// The client, wherever it runs.
pub(crate) enum ClientHandle {
    InProcess(Fleet),
    Child(Box<ChildClient>),
}

impl ClientHandle {
    /// Starts the client; returns once the first phase is synced, with its sync time.
    pub(crate) async fn start(
        placement: Placement,
        config: &FleetConfig,
        timeouts: &Timeouts,
    ) -> anyhow::Result<(Self, Duration)> {
        match placement {
            Placement::InProcess => {
                let start = mono_ns();
                let mut fleet = Fleet::connect(config).await?;
                let first = config.layout.phases(config.streams).remove(0);
                fleet.open(first.end);
                let done = fleet.synced(first, timeouts.sync).await?;
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

    /// Opens and syncs the streams of `phase` (not the first); returns its sync time.
    pub(crate) async fn next_phase(
        &mut self,
        phase: std::ops::Range<usize>,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        match self {
            ClientHandle::InProcess(fleet) => {
                let start = mono_ns();
                fleet.open(phase.end);
                let done = fleet.synced(phase, timeout).await?;
                Ok(Duration::from_nanos(done.saturating_sub(start)))
            }
            ClientHandle::Child(child) => {
                child.next_phase().await?;
                child.synced(timeout).await
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

    async fn acked(&mut self, round: u64, timeout: Duration) -> anyhow::Result<RoundAcks> {
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

    /// Starts counting a storm's responses.
    pub(crate) async fn storm_arm(&mut self) -> anyhow::Result<()> {
        match self {
            ClientHandle::InProcess(fleet) => {
                fleet.storm_arm();
                Ok(())
            }
            ClientHandle::Child(child) => child.storm_arm().await,
        }
    }

    /// Streams that end from now on wait for [`ClientHandle::reconnect`].
    pub(crate) async fn expect_restart(&mut self) -> anyhow::Result<()> {
        match self {
            ClientHandle::InProcess(fleet) => {
                fleet.expect_restart();
                Ok(())
            }
            ClientHandle::Child(child) => child.expect_restart().await,
        }
    }

    /// Every stream re-opens on the server at `addr`.
    pub(crate) async fn reconnect(
        &mut self,
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match self {
            ClientHandle::InProcess(fleet) => fleet.reconnect(addr).await,
            ClientHandle::Child(child) => child.reconnect(addr, timeout).await,
        }
    }

    /// Waits for the storm to settle on `expected`; see [`Fleet::settle`].
    pub(crate) async fn settle(
        &mut self,
        expected: &std::collections::BTreeMap<String, u64>,
        reconnecting: bool,
        timeout: Duration,
    ) -> anyhow::Result<crate::client::StormReport> {
        match self {
            ClientHandle::InProcess(fleet) => fleet.settle(expected, reconnecting, timeout).await,
            ClientHandle::Child(child) => child.settle(expected, reconnecting, timeout).await,
        }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
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
    let shutdown = CancellationToken::new();
    let (target, addr, serving, groups) = match config.server {
        ServerKind::ControlPlane(registry) => {
            let started = crate::plane::start(
                registry,
                config.layout,
                config.instances,
                config.timeouts.sync,
                &shutdown,
            )
            .await;
            // A half-started control plane (e.g. loading failed) stops with the scenario.
            let (plane, addr, serving) = started.inspect_err(|_| shutdown.cancel())?;
            let groups = config.layout.groups(config.streams);
            (Target::ControlPlane(Box::new(plane)), addr, serving, groups)
        }
        kind => {
            let initial = config.layout.snapshots(config.streams, 0)?;
            let groups = initial.len();
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding 127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let (target, serving) = Target::start(kind, config.mode, initial, listener, &shutdown)?;
            (target, addr, serving, groups)
        }
    };
    let fleet = FleetConfig {
        addr,
        streams: config.streams,
        streams_per_conn: config.streams_per_conn,
        mode: config.mode,
        layout: config.layout,
        descriptors: matches!(config.server, ServerKind::ControlPlane(_)),
        track: false,
    };
    let result = measure(&config, &fleet, &target, groups).await;
    target.stop();
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), serving).await {
        Ok(joined) => joined?.context("the server")?,
        Err(_) => tracing::warn!("xDS server did not drain within 30s"),
    }
    result
}

/// Lets the last ACKs land and transient write buffers drain, then reads RSS.
pub(crate) async fn settled_rss() -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    rss_bytes()
}

async fn measure(
    config: &ScenarioConfig,
    fleet: &FleetConfig,
    target: &Target,
    groups: usize,
) -> anyhow::Result<ScenarioResult> {
    let rss_before = rss_bytes()?;
    let (mut client, mut sync) =
        ClientHandle::start(config.placement, fleet, &config.timeouts).await?;
    let outcome = async {
        let mut rss_phases = vec![settled_rss().await?];
        for phase in config.layout.phases(config.streams).into_iter().skip(1) {
            sync += client.next_phase(phase, config.timeouts.sync).await?;
            rss_phases.push(settled_rss().await?);
        }
        let mut result = ScenarioResult {
            config: config.clone(),
            groups,
            connections: fleet.connections(),
            sync,
            rss_before,
            rss_phases,
            rounds: Vec::new(),
            unaffected: Vec::new(),
            emitted: Vec::new(),
            server_cpu: Vec::new(),
            client_cpu: Vec::new(),
            status_acked: None,
        };
        for round in 1..=config.rounds {
            let figures = run_round(config, target, &mut client, round).await?;
            result.rounds.push(figures.acks);
            result.unaffected.push(figures.unaffected);
            result.emitted.push(figures.emitted);
            result.server_cpu.push(figures.server_cpu);
            result.client_cpu.extend(figures.client_cpu);
        }
        result.status_acked = target.status_acked(config.streams).await;
        anyhow::Ok(result)
    }
    .await;
    client.stop().await?;
    outcome
}

/// What one round measured (times in ns from the start of publishing).
struct RoundFigures {
    acks: Vec<u64>,
    unaffected: (usize, usize),
    emitted: u64,
    server_cpu: u64,
    client_cpu: Option<u64>,
}

/// Publishes round `round`'s change and waits for every affected stream's ACK.
async fn run_round(
    config: &ScenarioConfig,
    target: &Target,
    client: &mut ClientHandle,
    round: u64,
) -> anyhow::Result<RoundFigures> {
    // The control plane computes its own snapshots from the registry change.
    let changed = match config.server {
        ServerKind::ControlPlane(_) => Vec::new(),
        _ => config.layout.changed_snapshots(config.streams, round)?,
    };
    let affected = config.layout.affected_count(config.streams, round);
    client.arm(round).await?;
    let pending = target.prepare(round, changed, affected, config.timeouts.ack)?;
    let (start, cpu_start, client_start) = (mono_ns(), cpu_ns()?, client.cpu_ns());
    let emitted = target.publish(pending).await?.saturating_sub(start);
    let acks = client.acked(round, config.timeouts.ack).await?;
    anyhow::ensure!(
        acks.times.len() == affected,
        "round {round}: {} ACKs for {affected} affected streams",
        acks.times.len()
    );
    // Let the server read the last ACKs, so the CPU figure covers the whole change and the
    // next round starts from a quiet server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client_cpu = match (client_start, client.cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    Ok(RoundFigures {
        acks: acks
            .times
            .into_iter()
            .map(|t| t.saturating_sub(start))
            .collect(),
        unaffected: (acks.unaffected, acks.unaffected_touched),
        emitted,
        server_cpu: cpu_ns()?.saturating_sub(cpu_start),
        client_cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report;

    async fn run_small(server: ServerKind, layout: Layout, mode: Mode) -> ScenarioResult {
        run_rounds(server, layout, mode, 2).await
    }

    async fn run_rounds(
        server: ServerKind,
        layout: Layout,
        mode: Mode,
        rounds: u64,
    ) -> ScenarioResult {
        let config = ScenarioConfig {
            server,
            layout,
            mode,
            streams: 20,
            streams_per_conn: 8,
            instances: 2,
            rounds,
            placement: Placement::InProcess,
            timeouts: Timeouts {
                sync: Duration::from_secs(30),
                ack: Duration::from_secs(30),
            },
        };
        run_scenario(config).await.expect("scenario runs")
    }

    /// Every affected stream ACKed every change, and no unaffected one received anything.
    fn assert_every_change_reached_exactly_the_affected(result: &ScenarioResult) {
        let c = &result.config;
        let what = format!("{} {} {}", c.server, c.layout, c.mode);
        assert_eq!(result.rounds.len() as u64, c.rounds, "{what}");
        for (round, acks) in (1..).zip(&result.rounds) {
            let affected = c.layout.affected_count(c.streams, round);
            assert_eq!(
                acks.len(),
                affected,
                "{what}: round {round} ACKed by each affected"
            );
        }
        for (unaffected, touched) in &result.unaffected {
            assert_eq!(
                *touched, 0,
                "{what}: {touched} of {unaffected} unaffected got a response"
            );
        }
        assert_eq!(result.connections, 3, "{what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stream_acks_each_change_on_meshplane_and_the_floor_in_both_modes() {
        for mode in [Mode::Sotw, Mode::Delta] {
            let meshplane = run_small(ServerKind::Meshplane, Layout::Groups, mode).await;
            let floor = run_small(ServerKind::Floor, Layout::Groups, mode).await;
            for result in [&meshplane, &floor] {
                assert_eq!(result.groups, 4, "{mode}");
                assert_every_change_reached_exactly_the_affected(result);
                assert!(result.rounds.iter().all(|r| r.len() == 20), "{mode}");
            }
            assert_eq!(
                meshplane.status_acked,
                Some(20),
                "{mode}: the server saw every ACK"
            );
            assert_eq!(
                floor.status_acked, None,
                "{mode}: the floor keeps no status"
            );
            let f = report::latency(&floor);
            let row = report::row(&meshplane, Some(&f));
            assert!(
                row.contains("| meshplane |") && row.contains("× / "),
                "{row}"
            );
            assert!(row.contains("| 20/20 |"), "{row}");
            assert!(report::row(&floor, None).contains("| floor |"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mixed_changes_reach_the_wildcard_and_affected_groups_only() {
        for server in [ServerKind::Meshplane, ServerKind::Floor] {
            for mode in [Mode::Sotw, Mode::Delta] {
                let result = run_small(server, Layout::Mixed, mode).await;
                assert_eq!(
                    result.groups, 5,
                    "{server} {mode}: 4 groups and the wildcard"
                );
                assert_every_change_reached_exactly_the_affected(&result);
                // Round 2 changes svc-00005, which group 0 (5 proxies) does not see.
                assert_eq!(result.rounds[1].len(), 15, "{server} {mode}");
                assert_eq!(result.unaffected[1], (5, 0), "{server} {mode}");
                assert_eq!(result.rss_phases.len(), 2, "{server} {mode}");
                let row = report::row(&result, None);
                assert!(row.contains("wildcard"), "{row}");
            }
        }
    }

    /// The Consul-path smoke check: the whole control plane following an embedded
    /// registry's Consul API (1,000 services × 2 instances) over plain HTTP/1.1 and over
    /// HTTPS with HTTP/2, changes made through that API;
    /// every affected proxy ACKs each change (a registration, a health change, a
    /// deregistration), the others receive nothing, and the server's status shows every
    /// stream ACKed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_control_plane_following_consul_delivers_each_change_to_the_affected_proxies() {
        for (registry, mode) in [
            (PlaneRegistry::Consul, Mode::Sotw),
            (PlaneRegistry::Consul, Mode::Delta),
            (PlaneRegistry::ConsulHttps, Mode::Delta),
        ] {
            let server = ServerKind::ControlPlane(registry);
            let result = run_rounds(server, Layout::Mixed, mode, 3).await;
            assert_eq!(
                result.groups, 5,
                "{registry:?} {mode}: 4 groups and the wildcard"
            );
            assert_every_change_reached_exactly_the_affected(&result);
            assert_eq!(result.rounds[1].len(), 15, "{registry:?} {mode}");
            assert_eq!(result.status_acked, Some(20), "{registry:?} {mode}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_control_plane_on_its_embedded_registry_delivers_each_change() {
        let server = ServerKind::ControlPlane(PlaneRegistry::Embedded);
        let result = run_rounds(server, Layout::Mixed, Mode::Delta, 3).await;
        assert_every_change_reached_exactly_the_affected(&result);
        assert_eq!(result.status_acked, Some(20));
    }
}
