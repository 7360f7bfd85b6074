//! The server a scenario measures, behind one interface: Meshplane's [`XdsServer`] with its
//! [`SnapshotCache`] (a change is `set_snapshot` on the groups it changes), or the [`Floor`]
//! (a change is prepared frames written to the groups' streams), or the whole control plane
//! ([`Plane`]: a change is a write to its registry's HTTP API).

use std::sync::Arc;
use std::time::Duration;

use meshplane_telemetry::XdsMetrics;
use meshplane_xds::{
    GroupKey, ResourceType, ServerConfig, Snapshot, SnapshotCache, StatusBoard, XdsServer,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bench::ServerKind;
use crate::client::Mode;
use crate::floor::{Floor, PreparedChange};
use crate::plane::Plane;
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
    ControlPlane(Box<Plane>),
}

/// A change ready to publish.
pub(crate) enum Pending {
    Meshplane(Vec<(GroupKey, Snapshot)>, JoinHandle<u64>),
    Floor(PreparedChange),
    ControlPlane(Box<PendingWrite>),
}

/// A write to the control plane's registry API, and what times its way through.
pub(crate) struct PendingWrite {
    round: u64,
    path: String,
    body: Option<serde_json::Value>,
    /// When the control plane had emitted EDS to every affected stream.
    emitted: JoinHandle<u64>,
    /// When its store had the change.
    stored: JoinHandle<Option<u64>>,
    /// Its translation histogram before the change.
    translation: (f64, f64),
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
    ) -> anyhow::Result<(Target, JoinHandle<anyhow::Result<()>>)> {
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
                let serving = {
                    let server = server.clone();
                    tokio::spawn(async move { Ok(server.serve(listener).await?) })
                };
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
                let serving = {
                    let (floor, shutdown) = (floor.clone(), shutdown.clone());
                    tokio::spawn(async move { Ok(floor.serve(listener, shutdown).await?) })
                };
                Ok((Target::Floor(floor), serving))
            }
            ServerKind::ControlPlane(_) => {
                anyhow::bail!("the control plane is started by `plane::start`")
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
            Target::ControlPlane(plane) => {
                let target = plane.metrics.responses(ResourceType::Endpoint) + affected as u64;
                let watcher = tokio::spawn(wait_emitted(plane.metrics.clone(), target, timeout));
                let (path, body) = plane.change(round)?;
                Pending::ControlPlane(Box::new(PendingWrite {
                    round,
                    path,
                    body,
                    emitted: watcher,
                    stored: plane.store_changed(timeout),
                    translation: plane.translation_totals(),
                }))
            }
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
            (Target::ControlPlane(plane), Pending::ControlPlane(write)) => {
                let start = mono_ns();
                plane.put(write.path, write.body).await?;
                let acknowledged = mono_ns();
                let emitted = write.emitted.await?;
                let stored = write.stored.await?;
                let (sum, count) = plane.translation_totals();
                let (sum0, count0) = write.translation;
                // Where the time went, on stderr (the scenario's rows stay on stdout).
                let ms = |t: u64| t.saturating_sub(start) as f64 / 1e6;
                eprintln!(
                    "STAGES round {} {:?}: API acknowledged {:.1} ms, store {} ms, \
                     translation histogram +{:.1} ms over {} observation(s), all affected emitted {:.1} ms",
                    write.round,
                    crate::plane::ChangeKind::of_round(write.round),
                    ms(acknowledged),
                    stored.map_or("—".to_owned(), |t| format!("{:.1}", ms(t))),
                    (sum - sum0) * 1e3,
                    count - count0,
                    ms(emitted),
                );
                Ok(emitted)
            }
            _ => anyhow::bail!("a change prepared for another server"),
        }
    }

    /// Streams the server's status shows as having ACKed their last EDS response.
    pub(crate) async fn status_acked(&self, streams: usize) -> Option<usize> {
        match self {
            Target::Meshplane { server, .. } => {
                Some(settled_eds_acked(&server.status(), streams).await)
            }
            Target::ControlPlane(plane) => Some(settled_eds_acked(&plane.status, streams).await),
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
async fn settled_eds_acked(status: &StatusBoard, streams: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let acked = eds_acked(status);
        if acked >= streams || tokio::time::Instant::now() >= deadline {
            return acked;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Streams whose status board entry shows their last EDS response ACKed and no NACK.
pub(crate) fn eds_acked(status: &StatusBoard) -> usize {
    status
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
