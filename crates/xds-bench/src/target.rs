//! The server a scenario measures, behind one interface: Meshplane's [`XdsServer`] with its
//! [`SnapshotCache`] (a change is `set_snapshot` on the groups it changes), or the [`Floor`]
//! (a change is prepared frames written to the groups' streams).

use std::sync::Arc;
use std::time::Duration;

use meshplane_telemetry::XdsMetrics;
use meshplane_xds::{GroupKey, ResourceType, ServerConfig, Snapshot, SnapshotCache, XdsServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bench::ServerKind;
use crate::client::Mode;
use crate::floor::{Floor, PreparedChange};
use crate::probe::mono_ns;
use crate::scenario::ServiceGrouper;

/// The server under measurement.
pub(crate) enum Target {
    Meshplane {
        cache: SnapshotCache,
        server: XdsServer,
        metrics: XdsMetrics,
    },
    Floor(Floor),
}

/// A change ready to publish.
pub(crate) enum Pending {
    Meshplane(Vec<(GroupKey, Snapshot)>, JoinHandle<u64>),
    Floor(PreparedChange),
}

// === impl Target ===

impl Target {
    /// Starts `kind` serving `initial` on `listener`.
    pub(crate) fn start(
        kind: ServerKind,
        mode: Mode,
        initial: Vec<(GroupKey, Snapshot)>,
        listener: TcpListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(Target, JoinHandle<Result<(), tonic::transport::Error>>)> {
        match kind {
            ServerKind::Meshplane => {
                let cache = SnapshotCache::new();
                for (group, snapshot) in initial {
                    cache.set_snapshot(&group, snapshot)?;
                }
                // The control plane's own metrics observer: the bench measures the server as
                // deployed, and reads the responses emitted from it.
                let metrics = XdsMetrics::default();
                let server = XdsServer::new(
                    cache.clone(),
                    Arc::new(ServiceGrouper),
                    ServerConfig::default(),
                    shutdown.clone(),
                )
                .with_observer(Arc::new(metrics.clone()));
                let serving = tokio::spawn(server.clone().serve(listener));
                Ok((
                    Target::Meshplane {
                        cache,
                        server,
                        metrics,
                    },
                    serving,
                ))
            }
            ServerKind::Floor => {
                let floor = Floor::new(mode, initial);
                let serving = tokio::spawn(floor.clone().serve(listener, shutdown.clone()));
                Ok((Target::Floor(floor), serving))
            }
        }
    }

    /// Everything a change needs before the clock starts; `affected` streams will get it.
    pub(crate) fn prepare(
        &self,
        round: u64,
        changed: Vec<(GroupKey, Snapshot)>,
        affected: usize,
        timeout: Duration,
    ) -> anyhow::Result<Pending> {
        Ok(match self {
            Target::Meshplane { metrics, .. } => {
                // The baseline is read before publishing, so the watcher cannot miss responses.
                let target = metrics.responses(ResourceType::Endpoint) + affected as u64;
                let watcher = tokio::spawn(wait_emitted(metrics.clone(), target, timeout));
                Pending::Meshplane(changed, watcher)
            }
            Target::Floor(floor) => Pending::Floor(floor.prepare(round, changed)?),
        })
    }

    /// Publishes the change; returns when every affected stream was handed its response.
    pub(crate) async fn publish(&self, pending: Pending) -> anyhow::Result<u64> {
        match (self, pending) {
            (Target::Meshplane { cache, .. }, Pending::Meshplane(changed, watcher)) => {
                for (group, snapshot) in changed {
                    cache.set_snapshot(&group, snapshot)?;
                }
                Ok(watcher.await?)
            }
            (Target::Floor(floor), Pending::Floor(change)) => Ok(floor.publish(change)),
            _ => anyhow::bail!("a change prepared for another server"),
        }
    }

    /// Streams the server's status shows as having ACKed their last EDS response.
    pub(crate) async fn status_acked(&self, streams: usize) -> Option<usize> {
        match self {
            Target::Meshplane { server, .. } => Some(settled_eds_acked(server, streams).await),
            Target::Floor(_) => None,
        }
    }

    pub(crate) fn stop(&self) {
        if let Target::Floor(floor) = self {
            floor.close();
        }
    }
}

/// When (monotonic ns) the server's EDS response counter has reached `target`: every
/// affected stream has been handed its response. Polled every millisecond, for at most
/// `timeout`.
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
