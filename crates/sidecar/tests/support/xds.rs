//! An in-process xDS server serving each service's group a listener on its ingress port
//! that routes to its app.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use meshplane_test_support::grouper::ServiceGrouper;
use meshplane_xds::fixtures::{mk_eds_cluster, mk_endpoints, mk_http_listener, mk_routes};
use meshplane_xds::{GroupKey, ServerConfig, Snapshot, SnapshotCache, XdsServer};
use tokio_util::sync::CancellationToken;

pub struct Xds {
    pub addr: SocketAddr,
    pub server: XdsServer,
    cache: SnapshotCache,
    shutdown: CancellationToken,
}

impl Xds {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let cache = SnapshotCache::new();
        let shutdown = CancellationToken::new();
        let server = XdsServer::new(
            cache.clone(),
            Arc::new(ServiceGrouper::default()),
            ServerConfig::default(),
            shutdown.clone(),
        );
        let serving = server.clone();
        tokio::spawn(async move { serving.serve(listener).await });
        Xds {
            addr,
            server,
            cache,
            shutdown,
        }
    }

    /// `service`'s Envoy gets a listener on `ingress_port` routing everything to the app.
    pub fn publish_ingress(&self, service: &str, ingress_port: u16, app_port: u16) {
        let snapshot = Snapshot::new([
            mk_eds_cluster("app"),
            mk_endpoints("app", &[("127.0.0.1", app_port, 1)]),
            mk_http_listener("ingress", ingress_port, "ingress"),
            mk_routes("ingress", &[("*", "app")]),
        ])
        .unwrap();
        self.cache
            .set_snapshot(&GroupKey::new(service), snapshot)
            .unwrap();
    }
}

impl Drop for Xds {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
