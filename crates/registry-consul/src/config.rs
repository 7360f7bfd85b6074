use std::{path::PathBuf, time::Duration};

/// How to reach and follow Consul. `Default` matches Consul's own defaults where one exists.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// Base URL, e.g. `http://127.0.0.1:8500` or `https://consul.service:8501`.
    pub address: String,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// Datacenter to query (`?dc=`); `None` means the agent's own.
    pub datacenter: Option<String>,
    /// PEM file with the CA that signed Consul's certificate (HTTPS only). Without it the
    /// Mozilla root set is trusted.
    pub ca_file: Option<PathBuf>,
    /// Allow any server to answer (`?stale`), Consul's recommendation for watches: spreads load
    /// over followers and keeps answering without a leader. Default `true`.
    pub stale: bool,
    /// Blocking wait per query (Consul's default: 5m, max 10m).
    pub wait: Duration,
    /// Most TCP connections the source ever holds to Consul (see [`ConnectionPlan`]). Default
    /// 100, half of Consul's default `http_max_conns_per_client` of 200.
    pub max_connections: usize,
    /// With more services than health slots (see `ConsulSource`), changes are found through
    /// `/v1/health/state/any` and the catalog; as a safety net every service is also re-read
    /// this often. Default 5m.
    pub resync: Duration,
    /// Minimum time between two requests of the same watch, so a flapping index cannot cause
    /// a hot loop. Default 50ms.
    pub min_request_interval: Duration,
    /// First retry delay after an error; doubles up to `max_retry` (with jitter).
    pub min_retry: Duration,
    /// Longest retry delay.
    pub max_retry: Duration,
    /// How often the source asks Consul whether it answers at all (`GET /v1/status/leader`,
    /// one short request at a time, within the spare connections). A Consul that hangs
    /// (connections open, nothing answers: a paused process, a partition) fails no blocking
    /// query until its timeout (`wait` + 1/16 + 5 s, over 5 minutes by default); the probe
    /// reports the source stale within `probe_interval + probe_timeout` instead. Default 2s.
    pub probe_interval: Duration,
    /// How long a probe may take before Consul counts as not answering. Default 5s: a slow
    /// Consul (seconds per answer) is still followed, and not reported stale.
    pub probe_timeout: Duration,
    /// Source id the events carry (default `consul`).
    pub source_id: String,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The address is not an http(s) URL.
    #[error("invalid Consul address {0:?}: use a URL such as http://127.0.0.1:8500")]
    Address(String),
    /// The budget leaves no slot for health watches.
    #[error(
        "max_connections must be at least 4 (catalog watch, one health watch, two spare); got {0}"
    )]
    Budget(usize),
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {reason}; give a PEM file with the CA certificate")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the Consul HTTP client: {0}")]
    Client(String),
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8500".into(),
            token: None,
            datacenter: None,
            ca_file: None,
            stale: true,
            wait: Duration::from_secs(5 * 60),
            max_connections: 100,
            resync: Duration::from_secs(5 * 60),
            min_request_interval: Duration::from_millis(50),
            min_retry: Duration::from_millis(250),
            max_retry: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(5),
            source_id: "consul".into(),
        }
    }
}

impl ConsulConfig {
    /// Checks the configuration before anything connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.address.starts_with("http://") || self.address.starts_with("https://")) {
            return Err(ConfigError::Address(self.address.clone()));
        }
        if self.max_connections < 4 {
            return Err(ConfigError::Budget(self.max_connections));
        }
        Ok(())
    }
}

/// How `max_connections` is spent. HTTP/1.1 carries one request per connection. Requests in
/// flight are capped at `1 + health_slots` (the catalog watch has its own); finished connections
/// stay in the idle pool and are reused, never churned. A connection that just finished is
/// briefly neither in use nor back in the pool, so a request starting at that instant opens
/// another one, which then joins the pool: the `spare` connections absorb those.
/// 100 → 1 + 89 in flight, 10 spare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Concurrent health-watch requests.
    pub health_slots: usize,
    /// Connections kept free for the transitions described above.
    pub spare: usize,
}

impl ConnectionPlan {
    /// The plan for a budget (at least 4, see [`ConsulConfig::validate`]).
    pub fn for_budget(max_connections: usize) -> Self {
        let spare = (max_connections / 10).max(2);
        Self {
            health_slots: max_connections.saturating_sub(1 + spare).max(1),
            spare,
        }
    }
}
