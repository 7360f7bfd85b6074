//! Shared helpers: an in-process registry on 127.0.0.1:0 and an HTTP client for it.

#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, time::Duration};

use meshplane_registry_embedded::{EmbeddedConfig, EmbeddedRegistry, EmbeddedSource};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running in-process registry. Dropping it cancels the server.
pub struct Server {
    pub addr: SocketAddr,
    pub url: String,
    pub source: EmbeddedSource,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    /// Stops the server and waits for every queued commit.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

pub async fn start(dir: &Path) -> Server {
    start_with(dir, None, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

pub async fn start_with(dir: &Path, token: Option<&str>, listen_addr: SocketAddr) -> Server {
    let config = EmbeddedConfig {
        listen_addr,
        data_dir: dir.to_path_buf(),
        token: token.map(str::to_string),
        ..EmbeddedConfig::default()
    };
    let registry = EmbeddedRegistry::bind(config)
        .await
        .expect("registry binds");
    let addr = registry.local_addr();
    let source = registry.source();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { registry.serve(shutdown).await.expect("registry serves") }
    });
    Server {
        addr,
        url: format!("http://{addr}"),
        source,
        shutdown,
        task: Some(task),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("client")
}
