//! An in-process Meshplane xDS server on 127.0.0.1, as a test controls it: publish
//! snapshots, read per-proxy status, stop it and start a new one on the same port.

use std::net::SocketAddr;
use std::sync::Arc;

pub use meshplane_test_support::grouper::ServiceGrouper;
use meshplane_xds::{
    GroupKey, ProxyStatus, Resource, ServerConfig, Snapshot, SnapshotCache, StatusBoard, XdsServer,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, IoContext, Result};
use crate::poll::{CONVERGE, eventually};

/// A running xDS server. Dropping it cancels its shutdown token.
pub struct ControlPlane {
    addr: SocketAddr,
    cache: SnapshotCache,
    server: XdsServer,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl ControlPlane {
    /// Starts a server with an empty cache on an ephemeral port.
    pub async fn start() -> Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), SnapshotCache::new()).await
    }

    /// Starts a server over `cache` on `addr`. Binding the port of a server that has just
    /// stopped works: the listener sets `SO_REUSEADDR`.
    pub async fn start_on(addr: SocketAddr, cache: SnapshotCache) -> Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .io_context(|| format!("binding the xDS server to {addr}"))?;
        let addr = listener
            .local_addr()
            .io_context(|| "reading the xDS server's address".to_owned())?;
        let shutdown = CancellationToken::new();
        let server = XdsServer::new(
            cache.clone(),
            Arc::new(ServiceGrouper::default()),
            ServerConfig::default(),
            shutdown.clone(),
        );
        let serving = server.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener)
                .await
                .map_err(|e| format!("xDS server failed: {e}"))
        });
        Ok(ControlPlane {
            addr,
            cache,
            server,
            shutdown,
            task: Some(task),
        })
    }

    /// The address Envoy connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The snapshot cache served.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// Live per-proxy status.
    pub fn status(&self) -> StatusBoard {
        self.server.status()
    }

    /// Publishes `resources` as the snapshot of `service`'s group. Returns whether the
    /// content differed from the current snapshot.
    pub fn publish(
        &self,
        service: &str,
        resources: impl IntoIterator<Item = Arc<Resource>>,
    ) -> Result<bool> {
        let snapshot = Snapshot::new(resources).map_err(|e| Error::ControlPlane(e.to_string()))?;
        self.cache
            .set_snapshot(&GroupKey::new(service), snapshot)
            .map_err(|e| Error::ControlPlane(e.to_string()))
    }

    /// The status of the stream of proxy `node_id`, if it is connected.
    pub fn proxy(&self, node_id: &str) -> Option<ProxyStatus> {
        self.status()
            .proxies()
            .into_iter()
            .find(|p| p.stream.node_id == node_id)
    }

    /// Waits until proxy `node_id` is connected and `check` holds for its status.
    pub async fn wait_for_proxy<F>(
        &self,
        node_id: &str,
        what: &str,
        check: F,
    ) -> Result<ProxyStatus>
    where
        F: Fn(&ProxyStatus) -> Result<(), String>,
    {
        eventually(what, CONVERGE, || {
            let status = self.proxy(node_id);
            let outcome = match status {
                None => Err(format!("proxy `{node_id}` is not connected")),
                Some(s) => check(&s).map(|()| s),
            };
            async move { outcome }
        })
        .await
    }

    /// Cancels the shutdown token and waits for the server to drain and release its port.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(served) => served.map_err(Error::ControlPlane),
            Err(join) => Err(Error::ControlPlane(format!("server task failed: {join}"))),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("addr", &self.addr)
            .finish()
    }
}
