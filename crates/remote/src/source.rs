//! Following a remote datacenter: a [`RegistrySource`] that long-polls the local-state export
//! of that datacenter's control planes and feeds their instances to the store.
//!
//! - It asks one URL at a time with `If-None-Match` and `?wait=`, so an unchanged remote
//!   costs one held request per wait and a change arrives as it happens, as the services that
//!   changed (the full state the first time, or when the remote no longer remembers the
//!   version held here); on any failure it moves to the next URL (another control plane of
//!   that datacenter) after a backoff.
//! - An answer that is not a valid state of that datacenter (garbage, another datacenter's,
//!   instances placed elsewhere, larger than the limit) is refused with a logged error; the
//!   previous state is kept.
//! - While no control plane of the datacenter answers, its last good state is kept and the
//!   source reports itself stale; after [`RemoteConfig::keep_stale`] without an answer its
//!   instances are dropped (it stays stale) until one answers again.
//! - It never reports itself "syncing": a remote datacenter that is down at start-up must not
//!   hold back readiness or translation of the local one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshplane_model::ServiceName;

use meshplane_registry::{EventSink, RegistryEvent, RegistrySource, SourceId, SourceStatus};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_NONE_MATCH};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::export::PATH;
use crate::status::Followed;
use crate::wire::{self, Held, Update, WireError};

/// Prefix of a remote datacenter's source id (`datacenter/dc2`).
pub const SOURCE_PREFIX: &str = "datacenter/";

/// How one remote datacenter is followed.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Its name; every instance it exports must be in it.
    pub datacenter: String,
    /// Admin URLs of its control planes, tried in turn.
    pub urls: Vec<String>,
    /// How long its last good state is kept while none of them answers (default 2 minutes).
    pub keep_stale: Duration,
    /// How long one request waits for a change (default 20 s).
    pub wait: Duration,
    /// How much longer than `wait` a request may take before the peer counts as hung (default
    /// 10 s): a link that hangs without resetting anything (a partition) is noticed within
    /// `wait + hung_after`.
    pub hung_after: Duration,
    /// Largest answer accepted, inflated (default 256 MiB).
    pub max_body: usize,
    /// First retry delay after a failure; doubles up to [`RemoteConfig::max_backoff`].
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// CA bundle (PEM) that verifies `https://` URLs, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            datacenter: String::new(),
            urls: Vec::new(),
            keep_stale: Duration::from_secs(120),
            wait: Duration::from_secs(20),
            hung_after: Duration::from_secs(10),
            max_body: 256 << 20,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            ca_pem: None,
        }
    }
}

/// Why a remote datacenter cannot be followed at all.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No URL to follow.
    #[error("remote datacenter `{0}` has no control-plane URL")]
    NoUrl(String),
    /// The HTTP client could not be built (or the CA bundle is not PEM).
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The store is gone.
    #[error("the registry store closed")]
    SinkClosed,
}

/// Follows one remote datacenter; see the module docs.
#[derive(Debug)]
pub struct RemoteSource {
    config: RemoteConfig,
    http: reqwest::Client,
    followed: Followed,
    urls: ControlPlanes,
}

/// The admin URLs of a remote datacenter's control planes, replaceable while its source runs
/// (when they are discovered through the registry).
#[derive(Debug, Clone)]
pub struct ControlPlanes(Arc<tokio::sync::watch::Sender<Vec<String>>>);

impl ControlPlanes {
    fn new(urls: Vec<String>) -> Self {
        ControlPlanes(Arc::new(tokio::sync::watch::Sender::new(urls)))
    }

    /// Replaces the URLs; a request held by a control plane no longer listed is abandoned.
    pub fn set(&self, urls: Vec<String>) {
        self.0.send_replace(urls);
    }

    /// The URLs now.
    pub fn get(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
}

/// What one request brought.
enum Fetched {
    Update(Update),
    NotModified,
}

/// Why one request failed (retried on the next URL).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no control plane of this datacenter is known")]
    NoControlPlane,
    #[error("the control plane asked is no longer listed")]
    Moved,
}

impl RemoteSource {
    /// A source for `config` (at least one URL).
    pub fn new(config: RemoteConfig) -> Result<Self, RemoteError> {
        if config.urls.is_empty() {
            return Err(RemoteError::NoUrl(config.datacenter));
        }
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &config.ca_pem {
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        let http = http.build()?;
        let followed = Followed::default();
        followed.register(&config.datacenter, &config.urls, config.keep_stale);
        let urls = ControlPlanes::new(config.urls.clone());
        Ok(RemoteSource {
            config,
            http,
            followed,
            urls,
        })
    }

    /// The handle that replaces this source's URLs while it runs.
    pub fn control_planes(&self) -> ControlPlanes {
        self.urls.clone()
    }

    /// Reports this datacenter's status into `followed` (shown by `GET /api/datacenters`).
    pub fn with_status(mut self, followed: Followed) -> Self {
        followed.register(
            &self.config.datacenter,
            &self.config.urls,
            self.config.keep_stale,
        );
        self.followed = followed;
        self
    }

    async fn fetch(&self, url: &str, held: &Held) -> Result<Fetched, FetchError> {
        let known = Some(held.version.as_str()).filter(|v| !v.is_empty());
        let wait = self.config.wait;
        let base = url.trim_end_matches('/');
        let mut request = match known {
            Some(known) => self
                .http
                .get(format!("{base}{PATH}?wait={}ms", wait.as_millis()))
                .header(IF_NONE_MATCH, format!("\"{known}\"")),
            None => self.http.get(format!("{base}{PATH}")),
        };
        request = request.header(ACCEPT_ENCODING, "gzip");
        // The answer may be held for `wait`; a peer that holds it much longer is hung.
        let limit = wait + self.config.hung_after;
        let response = tokio::time::timeout(limit, request.send())
            .await
            .map_err(|_| FetchError::Timeout(limit))??;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            other => return Err(FetchError::Status(other)),
        }
        let gzip = response
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let etag = response.headers().get(ETAG).cloned();
        let body = read_limited(response, self.config.max_body, limit).await?;
        let json = if gzip {
            wire::inflate(&body, self.config.max_body)?
        } else {
            body
        };
        let update = wire::decode(&self.config.datacenter, held, &json)?;
        if etag.is_some_and(|e| e.to_str().ok() != Some(&format!("\"{}\"", update.held.version))) {
            tracing::debug!(datacenter = %self.config.datacenter, "ETag differs from the body's version; the body wins");
        }
        Ok(Fetched::Update(update))
    }
}

/// Reads a body, refusing more than `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(WireError::TooLarge { limit }.into());
    }
    let deadline = Instant::now() + timeout;
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| FetchError::Timeout(timeout))??;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(WireError::TooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
}

impl RegistrySource for RemoteSource {
    type Error = RemoteError;

    fn id(&self) -> SourceId {
        SourceId::new(&format!("{SOURCE_PREFIX}{}", self.config.datacenter))
    }

    async fn run(self, sink: EventSink, shutdown: CancellationToken) -> Result<(), RemoteError> {
        let id = self.id();
        let dc = self.config.datacenter.clone();
        let send = |event: RegistryEvent| {
            let sink = sink.clone();
            async move { sink.send(event).await.map_err(|_| RemoteError::SinkClosed) }
        };
        let mut url = 0;
        // What the store holds from this datacenter, and whether it holds anything.
        let mut held = Held::default();
        let mut holding = false;
        // Instances held per service, for the status.
        let mut counts: BTreeMap<ServiceName, usize> = BTreeMap::new();
        let mut answered_at = Instant::now();
        let mut stale = false;
        let mut backoff = self.config.backoff;
        let mut moved = self.urls.0.subscribe();
        loop {
            let urls = moved.borrow_and_update().clone();
            let target = urls
                .get(url % urls.len().max(1))
                .cloned()
                .unwrap_or_default();
            let fetched = if urls.is_empty() {
                Err(FetchError::NoControlPlane)
            } else {
                let fetch = self.fetch(&target, &held);
                tokio::pin!(fetch);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        fetched = &mut fetch => break fetched,
                        Ok(()) = moved.changed() => {
                            // Its control planes moved: a request held by one no longer
                            // listed is abandoned, the next one asks where they are now.
                            if !moved.borrow().contains(&target) {
                                url = 0;
                                break Err(FetchError::Moved);
                            }
                        }
                    }
                }
            };
            if matches!(fetched, Err(FetchError::Moved)) {
                continue;
            }
            let target = &target;
            match fetched {
                Ok(fetched) => {
                    answered_at = Instant::now();
                    backoff = self.config.backoff;
                    self.followed.update(&dc, |s| s.answered(target));
                    if let Fetched::Update(update) = fetched {
                        if update.full {
                            counts.clear();
                        }
                        for (name, instances) in &update.services {
                            if instances.is_empty() {
                                counts.remove(name);
                            } else {
                                counts.insert(name.clone(), instances.len());
                            }
                        }
                        let (services, instances) = (counts.len(), counts.values().sum());
                        self.followed
                            .update(&dc, |s| s.holds(&update.held.version, services, instances));
                        tracing::debug!(datacenter = %dc, url = %target, version = %update.held.version,
                            full = update.full, services = update.services.len(), "remote datacenter state");
                        held = update.held;
                        holding = true;
                        if update.full {
                            let services = update
                                .services
                                .into_iter()
                                .filter(|(_, instances)| !instances.is_empty())
                                .collect();
                            send(RegistryEvent::Replace {
                                source: id.clone(),
                                services,
                            })
                            .await?;
                        } else {
                            for (name, instances) in update.services {
                                send(RegistryEvent::Service {
                                    source: id.clone(),
                                    name,
                                    instances,
                                })
                                .await?;
                            }
                        }
                    }
                    if stale {
                        tracing::info!(datacenter = %dc, url = %target, "remote datacenter answers again");
                        send(RegistryEvent::Status {
                            source: id.clone(),
                            status: SourceStatus::Synced,
                        })
                        .await?;
                        stale = false;
                    }
                }
                Err(e) => {
                    tracing::warn!(datacenter = %dc, url = %target, error = %e,
                        "remote datacenter: no usable answer; keeping its last state and trying its next control plane");
                    url = (url + 1) % urls.len().max(1);
                    let next = urls.get(url).map_or("", String::as_str);
                    self.followed
                        .update(&dc, |s| s.failed(format!("{target}: {e}"), next));
                    if matches!(
                        e,
                        FetchError::Wire(WireError::Version { .. } | WireError::WrongBase { .. })
                    ) {
                        // Changes that do not apply to what is held: ask for the full state.
                        held.version.clear();
                    }
                    let silent = answered_at.elapsed();
                    if holding && silent >= self.config.keep_stale {
                        tracing::warn!(datacenter = %dc, after = ?silent,
                            "remote datacenter dropped: no answer within the time its state is kept");
                        held = Held::default();
                        holding = false;
                        counts.clear();
                        self.followed.update(&dc, |s| s.dropped());
                        send(RegistryEvent::Replace {
                            source: id.clone(),
                            services: Default::default(),
                        })
                        .await?;
                        stale = false;
                    }
                    if !stale {
                        let reason = if holding || silent < self.config.keep_stale {
                            format!("{target}: {e}")
                        } else {
                            format!(
                                "dropped after {silent:?} without an answer; last error: {target}: {e}"
                            )
                        };
                        send(RegistryEvent::Status {
                            source: id.clone(),
                            status: SourceStatus::Stale { reason },
                        })
                        .await?;
                        stale = true;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
