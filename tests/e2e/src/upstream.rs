//! A test upstream: an HTTP server on 127.0.0.1 that answers every request with its own
//! name, so a test sees where Envoy sent the traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{IoContext, Result};

/// A running upstream. Stops serving when dropped.
#[derive(Debug)]
pub struct Upstream {
    name: String,
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl Upstream {
    /// Starts an upstream named `name` on an ephemeral port.
    pub async fn start(name: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .io_context(|| format!("binding upstream `{name}`"))?;
        let addr = listener
            .local_addr()
            .io_context(|| format!("reading upstream `{name}`'s address"))?;
        let served = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let app = {
            let (name, served) = (name.to_owned(), served.clone());
            Router::new().fallback(move || {
                served.fetch_add(1, Ordering::Relaxed);
                let name = name.clone();
                async move { name }
            })
        };
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Ok(Upstream {
            name: name.to_owned(),
            addr,
            served,
            shutdown,
        })
    }

    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
