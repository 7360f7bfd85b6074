//! Meshplane's default registry: durable, embedded, and spoken to through Consul's HTTP API.
//!
//! This crate owns the registry database (redb under `--data-dir`), the Consul-compatible HTTP
//! API on `--registry-addr`, the registry's own health checking (TTL, HTTP, reaping), and
//! [`EmbeddedSource`], which feeds the catalog into the shared store.
//!
//! Start reading at [`EmbeddedRegistry::bind`] and [`EmbeddedRegistry::serve`]. Then `writer`
//! (the single writer thread with group commit: nothing is acknowledged before it is fsynced),
//! `catalog` (in-memory indexes), `http` (routes, and the catalog rendered in Consul's JSON
//! shapes) and `decode` (Consul's lenient, case-insensitive request decoding with strict
//! validation). The JSON shapes themselves, for requests and answers, are
//! `meshplane-consul-api`'s.

mod catalog;
mod checks;
mod db;
mod decode;
mod http;
mod kv;
mod registration;
mod source;
mod writer;

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
};

use axum::serve::ListenerExt;
use parking_lot::RwLock;
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_util::sync::CancellationToken;

pub use db::DbError;
pub use http::MAX_BODY_BYTES;
pub use source::{EmbeddedSource, SOURCE_ID};

use crate::{
    catalog::Catalog,
    db::Db,
    http::ApiState,
    registration::Node,
    writer::{Command, WriterThread},
};

/// Configuration of the embedded registry (the control plane's `--registry-addr`,
/// `--data-dir`, `--datacenter`, `--token`).
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Where the Consul-compatible API listens (default `127.0.0.1:8500`).
    pub listen_addr: SocketAddr,
    /// Directory holding `registry.redb` (default `./meshplane-data`).
    pub data_dir: PathBuf,
    /// Datacenter name reported by the API and given to every instance (default `dc1`).
    pub datacenter: String,
    /// When set, write routes require it (`X-Consul-Token` or `Authorization: Bearer`).
    pub token: Option<String>,
    /// Node name reported for every registration (default `meshplane`).
    pub node_name: String,
    /// HTTPS: the server configuration (`meshplane_https::TlsFiles::load`); `None` serves
    /// plain HTTP.
    pub tls: Option<std::sync::Arc<meshplane_https::ServerConfig>>,
}

/// Why the embedded registry could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// Opening or loading the database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}; pick a free --registry-addr")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("registry API server failed: {0}")]
    Serve(std::io::Error),
    /// The writer thread could not be started or panicked.
    #[error("registry writer thread failed: {0}")]
    Writer(String),
}

/// A bound, loaded, not-yet-serving embedded registry.
#[derive(Debug)]
pub struct EmbeddedRegistry {
    listener: TcpListener,
    catalog: Arc<RwLock<Catalog>>,
    index_rx: watch::Receiver<u64>,
    commands: mpsc::Sender<Command>,
    writer: std::thread::JoinHandle<()>,
    config: EmbeddedConfig,
}

// === impl EmbeddedConfig ===

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8500)),
            data_dir: PathBuf::from("./meshplane-data"),
            datacenter: "dc1".into(),
            token: None,
            node_name: "meshplane".into(),
            tls: None,
        }
    }
}

// === impl EmbeddedRegistry ===

impl EmbeddedRegistry {
    /// Opens the database, loads every registration, starts the writer thread and binds the
    /// listener. Nothing is served until [`EmbeddedRegistry::serve`].
    pub async fn bind(config: EmbeddedConfig) -> Result<Self, EmbeddedError> {
        let dir = config.data_dir.clone();
        let (db, (index, regs, kv)) = tokio::task::spawn_blocking(move || {
            let mut db = Db::open(&dir)?;
            let stored = db.load()?;
            Ok::<_, DbError>((db, stored))
        })
        .await
        .map_err(|e| EmbeddedError::Writer(e.to_string()))??;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| EmbeddedError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let local = listener.local_addr().map_err(EmbeddedError::Serve)?;
        let catalog = Arc::new(RwLock::new(Catalog::new(
            node(&config, local),
            index,
            regs,
            kv,
        )));
        let start_index = catalog.read().index();
        tracing::info!(
            services = catalog.read().registrations().count(),
            index = start_index,
            "embedded registry loaded"
        );
        let (index_tx, index_rx) = watch::channel(start_index);
        let (commands, commands_rx) = mpsc::channel(4 * writer::MAX_BATCH);
        let thread = WriterThread {
            db,
            catalog: catalog.clone(),
            index_tx,
            commands: commands_rx,
        };
        let writer = std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || thread.run())
            .map_err(|e| EmbeddedError::Writer(e.to_string()))?;
        Ok(Self {
            listener,
            catalog,
            index_rx,
            commands,
            writer,
            config,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // The listener is bound; `local_addr` only fails for unbound sockets.
        self.listener
            .local_addr()
            .unwrap_or(self.config.listen_addr)
    }

    /// A store source fed by this registry; run it with the store's event sink.
    pub fn source(&self) -> EmbeddedSource {
        EmbeddedSource {
            catalog: self.catalog.clone(),
            index_rx: self.index_rx.clone(),
        }
    }

    /// Serves the API and runs health checks until `shutdown` is cancelled, then waits for the
    /// writer to finish every queued commit.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), EmbeddedError> {
        let local = self.local_addr();
        let state = ApiState {
            catalog: self.catalog.clone(),
            index_rx: self.index_rx.clone(),
            commands: self.commands.clone(),
            token: self.config.token.as_deref().map(Arc::from),
            datacenter: Arc::from(self.config.datacenter.as_str()),
            leader: Arc::from(local.to_string().as_str()),
            shutdown: shutdown.clone(),
        };
        let checks = tokio::spawn(checks::run(
            self.catalog.clone(),
            self.commands.clone(),
            shutdown.clone(),
        ));
        drop(self.commands);
        tracing::info!(addr = %local, "embedded registry serving Consul-compatible API");
        let router = http::router(state);
        let served = match self.config.tls.clone() {
            Some(tls) => meshplane_https::serve(self.listener, router, tls, shutdown.clone()).await,
            None => {
                // Without TCP_NODELAY a response written in two parts waits for the
                // client's delayed ACK (40 ms on Linux) before its second part.
                let listener = self.listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                    .await
            }
        }
        .map_err(EmbeddedError::Serve);
        shutdown.cancel();
        let _ = checks.await;
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| EmbeddedError::Writer(e.to_string()))?
            .map_err(|_| EmbeddedError::Writer("the writer thread panicked".into()))?;
        served
    }
}

fn node(config: &EmbeddedConfig, local: SocketAddr) -> Node {
    let ip = local.ip();
    let address = if ip.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        ip.to_string()
    };
    // A stable UUID-formatted id derived from the node name and datacenter.
    let mut h1 = DefaultHasher::new();
    (&config.node_name, &config.datacenter, 1u8).hash(&mut h1);
    let mut h2 = DefaultHasher::new();
    (&config.node_name, &config.datacenter, 2u8).hash(&mut h2);
    let (a, b) = (h1.finish(), h2.finish());
    let id = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    );
    Node {
        name: config.node_name.clone(),
        id,
        address,
        datacenter: config.datacenter.clone(),
    }
}
