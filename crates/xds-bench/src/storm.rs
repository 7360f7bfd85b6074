//! The storms (issue 11, target 4), through the real control plane on its embedded registry
//! (`--server control-plane`, `mixed` layout), each measured from the server's process:
//!
//! - [`Storm::Reconnect`]: every proxy is connected and synced; the control plane stops and
//!   starts again on the same data directory and xDS address ([`Plane::restart`]); the
//!   proxies, told the server is back, re-open their streams at once, reporting what they
//!   hold (delta: `initial_resource_versions`; SotW: each type's last `version_info` and
//!   names). Measured from the restarted server accepting: when it had every stream with its
//!   group's snapshot, when every stream was back, the last response, the responses and
//!   resources each type got (and how many of those resources the proxy already held), and
//!   whether every proxy still holds exactly the registry's endpoints.
//! - [`Storm::Registry`]: every one of the 1,000 services changes at once (the first
//!   instance's TTL check fails, 64 writes in flight through the Consul-compatible API).
//!   Measured from the last write's acknowledgment: the last response any proxy got, the
//!   responses per proxy and type, the server's peak RSS, and that every proxy ends with
//!   exactly the registry's routable endpoints for the services it sees.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bench::{ClientHandle, Placement, settled_rss};
use crate::child::Timeouts;
use crate::client::{FleetConfig, Mode, StormReport};
use crate::plane::Plane;
use crate::probe::{mono_ns, raise_nofile_limit, rss_bytes};
use crate::scenario::{Layout, SHARED_SERVICES};

/// Registry writes in flight during the registry storm (as many as the load uses).
const WRITES_IN_FLIGHT: usize = 64;
/// How often the server's RSS is sampled during a storm.
const RSS_EVERY: Duration = Duration::from_millis(10);

/// Which storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storm {
    /// Every proxy reconnects at once after a control-plane restart.
    Reconnect,
    /// Every service changes at once in the registry.
    Registry,
}

impl FromStr for Storm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reconnect" => Ok(Storm::Reconnect),
            "registry" => Ok(Storm::Registry),
            other => Err(format!(
                "unknown storm `{other}`: use `reconnect` or `registry`"
            )),
        }
    }
}

impl fmt::Display for Storm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Storm::Reconnect => "reconnect",
            Storm::Registry => "registry",
        })
    }
}

/// One storm run.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// Which storm.
    pub storm: Storm,
    /// Protocol flavour.
    pub mode: Mode,
    /// ADS streams (proxies), in the `mixed` layout.
    pub streams: usize,
    /// Streams per HTTP/2 connection.
    pub streams_per_conn: usize,
    /// Instances per service loaded into the registry.
    pub instances: usize,
    /// Where the client runs.
    pub placement: Placement,
    /// Sync: the initial sync and the restart; ACK: the storm settling.
    pub timeouts: Timeouts,
}

/// What a storm measured (instants in monotonic ns).
#[derive(Debug, Clone)]
pub struct StormResult {
    /// The run.
    pub config: StormConfig,
    /// Groups (the layout's).
    pub groups: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Time to connect and sync every stream before the storm.
    pub sync: Duration,
    /// Registry writes made (0 for the reconnect storm), and the time from the first sent
    /// to the last acknowledged.
    pub writes: (usize, u64),
    /// The storm's zero: the restarted server accepting, or the last write acknowledged.
    pub start: u64,
    /// Reconnect: when the restarted server had every stream on its status board and a
    /// snapshot for each one's group.
    pub server_ready: Option<u64>,
    /// What the fleet saw.
    pub report: StormReport,
    /// Server RSS once synced, before the storm, and its peak during the storm.
    pub rss: (u64, u64),
}

impl StormResult {
    /// When every proxy had the final state: the last response, every stream back and the
    /// server ready, whichever came last (ns after [`StormResult::start`]; a registry
    /// storm's proxies may be done before the last write is acknowledged: 0).
    pub fn final_state(&self) -> u64 {
        let reconnect = match self.config.storm {
            Storm::Reconnect => self.report.reconnected.1,
            Storm::Registry => 0,
        };
        [
            self.report.last_response,
            reconnect,
            self.server_ready.unwrap_or_default(),
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
        .saturating_sub(self.start)
    }
}

/// Runs one storm; the control plane and the client are stopped whatever happens.
pub async fn run_storm(config: StormConfig) -> anyhow::Result<StormResult> {
    raise_nofile_limit()?;
    let shutdown = CancellationToken::new();
    let started = crate::plane::start(
        crate::plane::PlaneRegistry::Embedded,
        Layout::Mixed,
        config.instances,
        config.timeouts.sync,
        &shutdown,
    )
    .await;
    let (mut plane, addr, serving) = started.inspect_err(|_| shutdown.cancel())?;
    let fleet = FleetConfig {
        addr,
        streams: config.streams,
        streams_per_conn: config.streams_per_conn,
        mode: config.mode,
        layout: Layout::Mixed,
        descriptors: true,
        track: true,
    };
    let mut serving = Some(serving);
    let result = measure(&config, &fleet, &mut plane, &mut serving, &shutdown).await;
    shutdown.cancel();
    if let Some(serving) = serving {
        match tokio::time::timeout(Duration::from_secs(30), serving).await {
            Ok(joined) => joined?.context("the control plane")?,
            Err(_) => tracing::warn!("the control plane did not stop within 30s"),
        }
    }
    result
}

async fn measure(
    config: &StormConfig,
    fleet: &FleetConfig,
    plane: &mut Plane,
    serving: &mut Option<JoinHandle<anyhow::Result<()>>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<StormResult> {
    let (mut client, mut sync) =
        ClientHandle::start(config.placement, fleet, &config.timeouts).await?;
    let outcome = async {
        for phase in Layout::Mixed.phases(config.streams).into_iter().skip(1) {
            sync += client.next_phase(phase, config.timeouts.sync).await?;
        }
        let rss_before = settled_rss().await?;
        client.storm_arm().await?;
        let peak = RssPeak::start();
        let (start, writes, server_ready) = match config.storm {
            Storm::Reconnect => {
                client.expect_restart().await?;
                let old = serving.take().context("no control plane serving")?;
                *serving = Some(plane.restart(old, shutdown).await?);
                let accepting = mono_ns();
                client
                    .reconnect(plane.xds_addr(), config.timeouts.sync)
                    .await?;
                let ready = server_ready(plane, config.streams, config.timeouts.sync).await?;
                (accepting, (0, 0), Some(ready))
            }
            Storm::Registry => {
                let first = mono_ns();
                registry_storm(plane).await?;
                let acknowledged = mono_ns();
                stored_storm(plane, config.timeouts.ack).await?;
                (acknowledged, (SHARED_SERVICES, acknowledged - first), None)
            }
        };
        let expected = plane.expected_endpoints();
        let reconnecting = config.storm == Storm::Reconnect;
        let report = client
            .settle(&expected, reconnecting, config.timeouts.ack)
            .await?;
        let rss_peak = peak.stop().await?;
        anyhow::Ok(StormResult {
            config: config.clone(),
            groups: Layout::Mixed.groups(config.streams),
            connections: fleet.connections(),
            sync,
            writes,
            start,
            server_ready,
            report,
            rss: (rss_before, rss_peak),
        })
    }
    .await;
    client.stop().await?;
    outcome
}

/// Fails the first instance of every service through the API, `WRITES_IN_FLIGHT` at a time.
async fn registry_storm(plane: &Plane) -> anyhow::Result<()> {
    let mut writes = futures::stream::iter(0..SHARED_SERVICES)
        .map(|s| plane.put(Plane::storm_change(s), None))
        .buffer_unordered(WRITES_IN_FLIGHT);
    while let Some(done) = writes.next().await {
        done?;
    }
    Ok(())
}

/// Waits until the control plane's store has every storm change (each service's first
/// instance critical), so the expected state is the final one.
async fn stored_storm(plane: &Plane, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snapshot = plane.store.snapshot();
        let failed = snapshot
            .services
            .values()
            .filter(|e| {
                e.instances
                    .iter()
                    .any(|i| i.id.as_str().ends_with("-0") && !i.health.is_routable())
            })
            .count();
        if failed == SHARED_SERVICES {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the store has {failed} of {SHARED_SERVICES} changes after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When (monotonic ns) the restarted server had every stream on its status board, each
/// with a snapshot for its group: from then on it has answered every reconnect.
async fn server_ready(plane: &Plane, streams: usize, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let proxies = plane.status.proxies();
        let ready = proxies
            .iter()
            .filter(|p| plane.cache.snapshot(&p.stream.group).is_some())
            .count();
        if ready >= streams {
            return Ok(mono_ns());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the restarted server has {ready} of {streams} streams ready after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's peak RSS, sampled until stopped.
struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RssPeak {
    fn start() -> RssPeak {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(rss_bytes()?, Ordering::SeqCst);
                    tokio::time::sleep(RSS_EVERY).await;
                }
                Ok(())
            }
        });
        RssPeak { stop, peak, task }
    }

    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await??;
        Ok(self.peak.load(Ordering::SeqCst).max(rss_bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_small(storm: Storm, mode: Mode) -> StormResult {
        let config = StormConfig {
            storm,
            mode,
            streams: 20,
            streams_per_conn: 8,
            instances: 2,
            placement: Placement::InProcess,
            timeouts: Timeouts {
                sync: Duration::from_secs(60),
                ack: Duration::from_secs(60),
            },
        };
        run_storm(config).await.expect("the storm runs")
    }

    /// Every proxy is back after a control-plane restart and holds exactly the registry's
    /// endpoints, and a delta proxy is sent nothing it already holds. (A SotW proxy is sent
    /// its endpoints once more, which the planner documents; and a proxy that reconnects
    /// before the restarted registry has loaded may briefly be sent a partial state, see
    /// BENCHMARKS.md "Storms", so only the final state is asserted for it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_proxy_resyncs_after_a_restart_and_gets_nothing_new() {
        for mode in [Mode::Delta, Mode::Sotw] {
            let result = run_small(Storm::Reconnect, mode).await;
            let r = &result.report;
            assert_eq!(r.reconnected.0, 20, "{mode}: every stream back");
            assert_eq!(
                r.exact, 20,
                "{mode}: every proxy holds the registry's endpoints"
            );
            assert!(result.server_ready.is_some(), "{mode}");
            let received: u64 = r.resources.iter().map(|(received, _)| received).sum();
            let held: u64 = r.resources.iter().map(|(_, held)| held).sum();
            if mode == Mode::Delta {
                // The registry did not change across the restart: a delta proxy reporting
                // what it holds gets nothing at all, and never a partial state (an empty
                // assignment, a wildcard proxy's clusters removed) while the registry reloads.
                assert_eq!(received, 0, "{mode}: sent something after a restart: {r:?}");
            } else {
                // SotW re-sends endpoints (one version cannot say which assignments a proxy
                // kept), but only what it holds: nothing partial while the registry reloads.
                assert_eq!(
                    received, held,
                    "{mode}: sent something it did not hold: {r:?}"
                );
            }
            let row = crate::report::storm_row(&result);
            assert!(
                row.starts_with(&format!("| reconnect | {mode} | 20 |")),
                "{row}"
            );
        }
    }

    /// After every service changes at once, every proxy holds exactly the registry's final
    /// routable endpoints for the services it sees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_proxy_ends_a_registry_storm_with_the_final_state() {
        for mode in [Mode::Delta, Mode::Sotw] {
            let result = run_small(Storm::Registry, mode).await;
            let r = &result.report;
            assert_eq!(
                r.exact, 20,
                "{mode}: every proxy holds the final state: {r:?}"
            );
            assert_eq!(result.writes.0, SHARED_SERVICES, "{mode}");
            // Every proxy sees a changed service, so every one got endpoints.
            assert!(r.responses[1].0 >= 20, "{mode}: {r:?}");
            let row = crate::report::storm_row(&result);
            assert!(row.contains("| 20/20 |"), "{row}");
        }
    }
}
