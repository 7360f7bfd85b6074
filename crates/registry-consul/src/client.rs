//! A thin Consul HTTP client for blocking reads: token, datacenter, stale reads, TLS, timeouts.

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::de::DeserializeOwned;

use crate::{ConfigError, ConsulConfig};

/// Extra time allowed beyond `wait + wait/16` before a blocking request is abandoned.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// Told of every failed request with its [`ConsulError::kind`], e.g. to count errors in the
/// control plane's metrics (this crate knows nothing of metrics).
#[derive(Clone, Default)]
pub struct ErrorObserver(Option<Arc<dyn Fn(&'static str) + Send + Sync>>);

impl ErrorObserver {
    /// An observer calling `f` with the kind of each error.
    pub fn new(f: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    fn observe(&self, error: &ConsulError) {
        if let Some(f) = &self.0 {
            f(error.kind());
        }
    }
}

impl std::fmt::Debug for ErrorObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ErrorObserver(set)"
        } else {
            "ErrorObserver(none)"
        })
    }
}

/// Issues blocking GETs against one Consul address.
#[derive(Clone, Debug)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    stale: bool,
    /// Whether the last answer came over HTTP/2 (Consul negotiates it on its HTTPS port).
    http2: Arc<AtomicBool>,
    errors: ErrorObserver,
}

/// A failed request. Every variant is transient from the source's point of view: it keeps the
/// last known state, reports itself stale and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// Connection refused, reset, timed out, TLS failure…
    #[error("cannot reach Consul at {url}: {source}")]
    Transport {
        /// The request URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Consul answered with an error status (429 rate limited, 5xx, 403 bad token, …).
    #[error("Consul answered {status} for {url}: {body}")]
    Status {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Body (Consul's plain-text message).
        body: String,
    },
    /// The response lacks `X-Consul-Index` (not a Consul API, or a proxy in the way).
    #[error("response from {url} has no X-Consul-Index header; is this a Consul HTTP API?")]
    MissingIndex {
        /// The request URL.
        url: String,
    },
    /// The body is not the JSON Consul documents.
    #[error("unexpected response body from {url}: {reason}")]
    Body {
        /// The request URL.
        url: String,
        /// The decode error.
        reason: String,
    },
}

impl ConsulError {
    /// What failed, as a metric label: `transport` (unreachable, reset, timed out), `status`
    /// (an error status such as 429 or 5xx), `missing_index` (not a Consul API) or `body`
    /// (truncated, malformed or wrongly shaped JSON).
    pub fn kind(&self) -> &'static str {
        match self {
            ConsulError::Transport { .. } => "transport",
            ConsulError::Status { .. } => "status",
            ConsulError::MissingIndex { .. } => "missing_index",
            ConsulError::Body { .. } => "body",
        }
    }
}

impl ConsulClient {
    /// Builds a client for `config` (validated here too).
    pub fn new(config: &ConsulConfig) -> Result<Self, ConfigError> {
        // Keep every finished connection for reuse: the request cap (ConnectionPlan) is what
        // bounds their number, and a small idle pool would churn connections instead.
        let builder = reqwest::Client::builder().pool_max_idle_per_host(config.max_connections);
        Self::build(config, builder)
    }

    /// A client whose requests all share one HTTP/2 connection of its own (no fallback to
    /// HTTP/1.1, which would open a connection per request in flight). For a Consul that
    /// answered over HTTP/2 (see [`ConsulClient::multiplexed`]): each such client carries a
    /// bounded number of blocking queries.
    pub fn new_multiplexed(config: &ConsulConfig) -> Result<Self, ConfigError> {
        let builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .pool_max_idle_per_host(1);
        Self::build(config, builder)
    }

    fn build(config: &ConsulConfig, builder: reqwest::ClientBuilder) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut builder = builder
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        // With a CA file, trust only that CA (Consul clusters use a private CA); otherwise the
        // platform's roots.
        if let Some(certs) = ca_certificates(config)? {
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            base: config.address.trim_end_matches('/').to_string(),
            token: config.token.clone(),
            datacenter: config.datacenter.clone(),
            stale: config.stale,
            http2: Arc::new(AtomicBool::new(false)),
            errors: ErrorObserver::default(),
        })
    }

    /// This client, telling `errors` of every failed request.
    pub fn with_errors(mut self, errors: ErrorObserver) -> Self {
        self.errors = errors;
        self
    }

    /// The observer this client tells of errors.
    pub fn errors(&self) -> &ErrorObserver {
        &self.errors
    }

    /// Whether Consul's last answer to this client (or a clone) came over HTTP/2: then blocking
    /// queries can share connections.
    pub fn multiplexed(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// A plain GET of `path` that must answer 2xx within `timeout`: whether Consul answers at
    /// all. The body is read (and dropped) so the connection goes back to the pool.
    pub async fn probe(&self, path: &str, timeout: Duration) -> Result<(), ConsulError> {
        let result = self.probe_once(path, timeout).await;
        if let Err(e) = &result {
            self.errors.observe(e);
        }
        result
    }

    async fn probe_once(&self, path: &str, timeout: Duration) -> Result<(), ConsulError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.get(&url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let transport = |source| ConsulError::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ConsulError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(512).collect(),
            });
        }
        Ok(())
    }

    /// GETs `path` as a blocking query: returns the body and `X-Consul-Index`. `index` 0 makes
    /// a plain (non-blocking) read.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(T, u64), ConsulError> {
        self.get_with(path, index, wait, |body| serde_json::from_slice(body))
            .await
    }

    /// [`ConsulClient::get`], the body read by `decode` (which may borrow from it, so a large
    /// answer can be reduced without owning every string in it).
    pub async fn get_with<T>(
        &self,
        path: &str,
        index: u64,
        wait: Duration,
        decode: fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<(T, u64), ConsulError> {
        let result = self.get_once(path, index, wait, decode).await;
        if let Err(e) = &result {
            self.errors.observe(e);
        }
        result
    }

    async fn get_once<T>(
        &self,
        path: &str,
        index: u64,
        wait: Duration,
        decode: fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<(T, u64), ConsulError> {
        let url = format!("{}{}", self.base, path);
        let mut query: Vec<(&str, String)> = Vec::new();
        if index > 0 {
            query.push(("index", index.to_string()));
            query.push(("wait", format!("{}ms", wait.as_millis())));
        }
        if self.stale {
            query.push(("stale", String::new()));
        }
        if let Some(dc) = &self.datacenter {
            query.push(("dc", dc.clone()));
        }
        let mut request = self
            .http
            .get(&url)
            .query(&query)
            // Consul may hold the request for wait + wait/16 (its jitter); never time out first.
            .timeout(wait + wait / 16 + TIMEOUT_MARGIN);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let transport = |source| ConsulError::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        self.http2.store(
            response.version() == reqwest::Version::HTTP_2,
            Ordering::Relaxed,
        );
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ConsulError::Status {
                url,
                status: status.as_u16(),
                body: body.chars().take(512).collect(),
            });
        }
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ConsulError::MissingIndex { url: url.clone() })?;
        let bytes = response.bytes().await.map_err(transport)?;
        let body = decode(&bytes).map_err(|e| ConsulError::Body {
            url,
            reason: e.to_string(),
        })?;
        Ok((body, index))
    }
}

fn ca_certificates(
    config: &ConsulConfig,
) -> Result<Option<Vec<reqwest::Certificate>>, ConfigError> {
    let Some(path) = &config.ca_file else {
        return Ok(None);
    };
    let ca_error = |reason: String| ConfigError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_error("no CERTIFICATE block found".into()));
    }
    Ok(Some(certs))
}
