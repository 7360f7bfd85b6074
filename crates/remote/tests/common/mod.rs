//! What the remote crate's integration tests share: instances and serving a router on
//! 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meshplane_model::{Health, Instance, InstanceId, Locality};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An instance of `service` in `dc`.
pub fn instance(service: &str, id: &str, dc: &str, health: Health) -> Instance {
    Instance {
        id: InstanceId::new(id).expect("id"),
        service: service.parse().expect("service"),
        node: "node-1".into(),
        address: "10.0.0.5".into(),
        port: 31001,
        tags: Vec::new(),
        meta: BTreeMap::new(),
        weight: 100,
        health,
        locality: Locality {
            datacenter: dc.into(),
            zone: None,
        },
    }
}

/// Serves `router` on 127.0.0.1 (an ephemeral port) until `shutdown`.
pub async fn serve(router: axum::Router, shutdown: &CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
    });
    addr
}
