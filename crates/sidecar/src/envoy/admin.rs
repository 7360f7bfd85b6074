//! Envoy's admin API, as far as the sidecar needs it: is *this* Envoy live?
//!
//! Envoy is live (`/ready` answers 200, `/server_info` says `LIVE`) only once it has
//! initialised, which includes its first CDS and LDS responses from the control plane: a
//! proxy that cannot reach the control plane is not registered. The sidecar reads
//! `/server_info` rather than `/ready` because during a hot restart both epochs share the
//! admin port, and only `/server_info` tells which epoch answered.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

/// Talks to one Envoy admin address (which stays the same across hot restarts).
#[derive(Debug, Clone)]
pub struct AdminClient {
    server_info_url: String,
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
            server_info_url: format!("http://{addr}/server_info"),
            http,
        }
    }

    /// Whether the Envoy started at restart `epoch` answers and is live.
    pub async fn is_live(&self, epoch: u32) -> bool {
        let Ok(response) = self.http.get(&self.server_info_url).send().await else {
            return false;
        };
        let Ok(info) = response.json::<serde_json::Value>().await else {
            return false;
        };
        info["state"] == "LIVE"
            && info["command_line_options"]["restart_epoch"].as_u64() == Some(u64::from(epoch))
    }
}

/// A port on 127.0.0.1 that is free now. Envoy binds it moments later; another process
/// could take it in between, in which case Envoy fails to start and is restarted by the
/// supervisor (pass `--admin-port` to avoid the race).
pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
