//! `meshplane control-plane`: binds the xDS port and serves every connecting proxy.

use std::sync::Arc;

use anyhow::Context;
use meshplane_xds::{GroupKey, MetadataGrouper, ServerConfig, Snapshot, SnapshotCache, XdsServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ControlPlaneConfig;

/// Runs the control plane until `shutdown` is cancelled, then drains xDS streams.
pub async fn run(config: ControlPlaneConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let listener = TcpListener::bind(config.xds_addr)
        .await
        .with_context(|| format!("cannot bind the xDS address {}", config.xds_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "xDS server listening");
    let (cache, demand_rx) = SnapshotCache::with_demand();
    let server = XdsServer::new(
        cache.clone(),
        Arc::new(MetadataGrouper::default()),
        ServerConfig::default(),
        shutdown.clone(),
    );
    let groups = tokio::spawn(serve_demanded_groups(cache, demand_rx, shutdown.clone()));
    server.serve(listener).await.context("xDS server failed")?;
    groups.abort();
    Ok(())
}

/// Until translation is wired in, a proxy's group gets the configuration the control plane
/// has for it: an empty snapshot, so the proxy starts, reports healthy and waits.
async fn serve_demanded_groups(
    cache: SnapshotCache,
    mut demand_rx: mpsc::UnboundedReceiver<GroupKey>,
    shutdown: CancellationToken,
) {
    loop {
        let group = tokio::select! {
            g = demand_rx.recv() => match g { Some(g) => g, None => return },
            _ = shutdown.cancelled() => return,
        };
        match Snapshot::new([]) {
            Ok(snapshot) => {
                if let Err(e) = cache.set_snapshot(&group, snapshot) {
                    tracing::error!(%group, error = %e, "cannot publish snapshot");
                }
            }
            Err(e) => tracing::error!(%group, error = %e, "cannot build snapshot"),
        }
    }
}
