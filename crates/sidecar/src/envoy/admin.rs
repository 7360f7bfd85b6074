//! Envoy's admin API, as far as the sidecar needs it: is *this* Envoy live?
//!
//! Envoy is live (`/ready` answers 200, `/server_info` says `LIVE`) only once it has
//! initialised, which includes its first CDS and LDS responses from the control plane: a
//! proxy that cannot reach the control plane is not registered. The sidecar reads
//! `/server_info` rather than `/ready` because during a hot restart both epochs share the
//! admin port, and only `/server_info` tells which epoch answered.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
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

/// Ports handed out by [`free_loopback_port`]: below Linux's default ephemeral range
/// (32768–60999), which the kernel uses for outgoing connections and `bind(0)`.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that is free now, never handed out twice by this process. It is
/// taken below the ephemeral range, so no outgoing connection (Envoy's own, a test's) can be
/// given it before Envoy binds it; processes start at different offsets (by pid). Another
/// process binding it explicitly in between still makes Envoy fail to bind, loudly (pass
/// `--admin-port` to rule that out).
pub fn free_loopback_port() -> std::io::Result<u16> {
    free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free now on `ip` (`0.0.0.0`: on every interface), chosen as
/// [`free_loopback_port`] chooses, from the same sequence.
pub fn free_port(ip: IpAddr) -> std::io::Result<u16> {
    static NEXT: parking_lot::Mutex<Option<u16>> = parking_lot::Mutex::new(None);
    let span = PORTS.end - PORTS.start;
    let mut next = NEXT.lock();
    let start = next.unwrap_or_else(|| {
        // 120 slots of 100 ports: concurrent processes rarely start near each other.
        PORTS.start + (std::process::id() % 120) as u16 * 100
    });
    for i in 0..span {
        let port = PORTS.start + (start - PORTS.start + i) % span;
        if TcpListener::bind((ip, port)).is_ok() {
            *next = Some(PORTS.start + (port - PORTS.start + 1) % span);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {ip}:{}..{}", PORTS.start, PORTS.end),
    ))
}
