//! Envoy's admin API, as far as the sidecar needs it: is Envoy live (`/ready`)?
//!
//! `/ready` answers 200 only once Envoy has initialised, which includes its first CDS and
//! LDS responses from the control plane: a proxy that cannot reach the control plane is not
//! registered.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

/// Talks to one Envoy admin address (which stays the same across hot restarts).
#[derive(Debug, Clone)]
pub struct AdminClient {
    ready_url: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the admin API on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_default();
        AdminClient {
            ready_url: format!("http://{addr}/ready"),
            http,
        }
    }

    /// Whether Envoy answers `/ready` with 200.
    pub async fn is_ready(&self) -> bool {
        match self.http.get(&self.ready_url).send().await {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }
}

/// A port on 127.0.0.1 that is free now. Envoy binds it moments later; another process
/// could take it in between, in which case Envoy fails to start and is restarted by the
/// supervisor (pass `--admin-port` to avoid the race).
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
