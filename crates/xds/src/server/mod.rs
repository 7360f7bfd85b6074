//! The ADS server: state-of-the-world and delta ADS plus the per-type CDS, EDS, LDS, RDS
//! and SDS services, on one port.
//!
//! Each stream runs [`stream::drive`] with a [`sotw::SotwState`] or [`delta::DeltaState`];
//! both render the steps of one [`planner::Planner`], which owns make-before-break ordering.
//! The server owns protocol state (nonces, ACK/NACK, subscriptions, ordering); content comes
//! from the [`SnapshotCache`].

mod body;
mod delta;
#[cfg(test)]
mod footprint;
pub mod node;
mod planner;
mod service;
mod sotw;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::cache::SnapshotCache;
use crate::status::{StatusBoard, XdsObserver};
use node::NodeGrouper;
pub use service::{
    AdsSpec, CdsSpec, DiscoveryService, EdsSpec, LdsSpec, RdsSpec, SdsSpec, ServiceSpec,
};

/// TLS on the xDS port: the server's certificate and, to require client certificates, the
/// CA that signs the proxies' certificates (PEM).
#[derive(Clone)]
pub struct XdsTls {
    /// Server certificate chain.
    pub cert_pem: Vec<u8>,
    /// Server private key. Never logged.
    pub key_pem: Vec<u8>,
    /// CA bundle that client certificates must chain to; `None` accepts clients without one.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for XdsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsTls")
            .field(
                "client_certificates_required",
                &self.client_ca_pem.is_some(),
            )
            .finish_non_exhaustive()
    }
}

/// Server limits and buffers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request accepted. Delta reconnects carry every resource's version, so this
    /// must fit `initial_resource_versions` for the largest snapshot.
    pub max_request_bytes: usize,
    /// Largest response sent; a 1,000-cluster snapshot with endpoints is a few MiB.
    pub max_response_bytes: usize,
    /// Responses queued per stream before the stream waits for the proxy to read.
    pub stream_buffer: usize,
    /// HTTP/2 keepalive ping interval: detects dead proxies behind silent networks.
    pub keepalive_interval: Duration,
    /// TLS on the xDS port; `None` serves plaintext.
    pub tls: Option<XdsTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_request_bytes: 16 * 1024 * 1024,
            max_response_bytes: 128 * 1024 * 1024,
            stream_buffer: 8,
            keepalive_interval: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// State shared by every stream.
pub(crate) struct Shared {
    pub(crate) cache: SnapshotCache,
    pub(crate) status: StatusBoard,
    /// Every stream's events go to each, the status board first.
    pub(crate) observers: Vec<Arc<dyn XdsObserver>>,
    pub(crate) grouper: Arc<dyn NodeGrouper>,
    pub(crate) config: ServerConfig,
    pub(crate) shutdown: CancellationToken,
}

/// The xDS server.
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl XdsServer {
    /// A server over `cache`, grouping proxies with `grouper`. Streams end (with
    /// `UNAVAILABLE`, so proxies reconnect elsewhere) when `shutdown` is cancelled.
    pub fn new(
        cache: SnapshotCache,
        grouper: Arc<dyn NodeGrouper>,
        config: ServerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let status = StatusBoard::new();
        let shared = Shared {
            cache,
            observers: vec![Arc::new(status.clone())],
            status,
            grouper,
            config,
            shutdown,
        };
        XdsServer {
            shared: Arc::new(shared),
        }
    }

    /// Adds an observer of every stream's events (see [`XdsObserver`]). Call before serving:
    /// streams already open keep the observers they started with.
    pub fn with_observer(self, observer: Arc<dyn XdsObserver>) -> Self {
        let s = &self.shared;
        let mut observers = s.observers.clone();
        observers.push(observer);
        let shared = Shared {
            cache: s.cache.clone(),
            status: s.status.clone(),
            observers,
            grouper: s.grouper.clone(),
            config: s.config.clone(),
            shutdown: s.shutdown.clone(),
        };
        XdsServer {
            shared: Arc::new(shared),
        }
    }

    /// Live per-proxy status.
    pub fn status(&self) -> StatusBoard {
        self.shared.status.clone()
    }

    /// The snapshot cache served.
    pub fn cache(&self) -> &SnapshotCache {
        &self.shared.cache
    }

    /// A tonic router with every discovery service, for callers that add their own
    /// transport settings (TLS) or services.
    pub fn router(
        &self,
        builder: &mut tonic::transport::Server,
    ) -> tonic::transport::server::Router {
        builder
            .add_service(DiscoveryService::<AdsSpec>::new(self.shared.clone()))
            .add_service(DiscoveryService::<CdsSpec>::new(self.shared.clone()))
            .add_service(DiscoveryService::<EdsSpec>::new(self.shared.clone()))
            .add_service(DiscoveryService::<LdsSpec>::new(self.shared.clone()))
            .add_service(DiscoveryService::<RdsSpec>::new(self.shared.clone()))
            .add_service(DiscoveryService::<SdsSpec>::new(self.shared.clone()))
    }

    /// Serves on `listener` until the shutdown token is cancelled, then drains: streams are
    /// told to reconnect elsewhere and the call returns once connections have closed.
    pub async fn serve(self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.shared.config.keepalive_interval))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .tcp_nodelay(true);
        if let Some(tls) = &self.shared.config.tls {
            let mut config = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
            );
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config)?;
        }
        let router = self.router(&mut builder);
        let shutdown = self.shared.shutdown.clone();
        router
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }
}
