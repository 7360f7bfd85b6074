//! Registering the instance in a Consul-compatible registry (Consul itself or Meshplane's
//! embedded registry): the **Envoy ingress port** is advertised, not the app's port (the
//! "registration trick" that moves ingress traffic onto Envoy), with an HTTP check that goes
//! through Envoy to the app's health path, so it fails when either is down.

use std::collections::BTreeMap;
use std::time::Duration;

use meshplane_model::Descriptor;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::CheckTimes;
use crate::restart_policy::Backoff;

/// Consul's `PUT /v1/agent/service/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Advertised address.
    pub address: String,
    /// Envoy's ingress port.
    pub port: u16,
    /// Descriptor tags.
    pub tags: Vec<String>,
    /// Load-balancing weights.
    pub weights: Weights,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// The health check.
    pub check: HttpCheck,
}

/// Consul `Weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while healthy: the descriptor's `weight`.
    pub passing: u32,
    /// Weight while warning.
    pub warning: u32,
}

/// A Consul HTTP check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpCheck {
    /// Check id.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Display name.
    pub name: String,
    /// URL polled by the registry.
    #[serde(rename = "HTTP")]
    pub http: String,
    /// HTTP method.
    pub method: String,
    /// Poll period (Go duration).
    pub interval: String,
    /// Per-poll timeout (Go duration).
    pub timeout: String,
    /// Drop the instance after being critical this long (Go duration).
    pub deregister_critical_service_after: String,
}

/// A registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer (connection refused, timeout...).
    #[error("registry {url} unreachable: {error}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The transport error.
        error: reqwest::Error,
    },
    /// The registry refused the call.
    #[error("registry {url} answered {status}: {body}")]
    Refused {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response body (the registry's explanation).
        body: String,
    },
}

/// A client for the agent endpoints of a Consul-compatible registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

// === impl ServiceRegistration ===

impl ServiceRegistration {
    /// The registration for `descriptor`'s instance `id`, advertised at `address`.
    pub fn new(descriptor: &Descriptor, id: &str, address: &str, check: CheckTimes) -> Self {
        let ingress = descriptor.ingress.port;
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.to_owned()
        };
        let meta = BTreeMap::from([
            ("meshplane_sidecar".to_owned(), "true".to_owned()),
            (
                meshplane_model::identity::MTLS_META_KEY.to_owned(),
                mtls_name(descriptor),
            ),
        ]);
        ServiceRegistration {
            id: id.to_owned(),
            name: descriptor.service.to_string(),
            address: address.to_owned(),
            port: ingress,
            tags: descriptor.tags.clone(),
            weights: Weights {
                passing: descriptor.weight,
                warning: 1,
            },
            meta,
            check: HttpCheck {
                check_id: format!("service:{id}"),
                name: format!("{} via Envoy ingress", descriptor.service),
                http: format!("http://{host}:{ingress}{}", descriptor.ingress.health_path),
                method: "GET".to_owned(),
                interval: go_duration(check.interval),
                timeout: go_duration(check.timeout),
                deregister_critical_service_after: go_duration(check.deregister_critical_after),
            },
        }
    }
}

fn mtls_name(descriptor: &Descriptor) -> String {
    serde_json::to_value(descriptor.mtls)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A duration as Go (and so Consul) writes it: `10s`, `1500ms`.
pub fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

// === impl RegistryClient ===

impl RegistryClient {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:8500`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self::with_roots(base, token, None)
    }

    /// [`RegistryClient::new`] for an `https://` registry whose certificate chains to
    /// `roots` (`None`: the system's roots).
    pub fn with_roots(
        base: &str,
        token: Option<String>,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> Self {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(roots) = roots {
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().unwrap_or_default();
        RegistryClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        }
    }

    /// `PUT /v1/agent/service/register` (idempotent: a re-registration replaces).
    pub async fn register(&self, registration: &ServiceRegistration) -> Result<(), RegistryError> {
        let url = format!("{}/v1/agent/service/register", self.base);
        self.put(url, Some(registration)).await
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let url = format!("{}/v1/agent/service/deregister/{id}", self.base);
        self.put(url, None).await
    }

    /// Registers, retrying with backoff while the registry is unreachable or refuses,
    /// until it succeeds (`true`) or `cancel` fires (`false`).
    pub async fn register_until_done(
        &self,
        registration: &ServiceRegistration,
        cancel: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(15));
        loop {
            let attempt = tokio::select! {
                r = self.register(registration) => r,
                _ = cancel.cancelled() => return false,
            };
            match attempt {
                Ok(()) => return true,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "registration failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => return false,
                    }
                }
            }
        }
    }

    async fn put(
        &self,
        url: String,
        body: Option<&ServiceRegistration>,
    ) -> Result<(), RegistryError> {
        let mut request = self.http.put(&url);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        request = match body {
            Some(b) => request.json(b),
            None => request.header(reqwest::header::CONTENT_LENGTH, "0"),
        };
        let response = request
            .send()
            .await
            .map_err(|error| RegistryError::Unreachable {
                url: url.clone(),
                error,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(RegistryError::Refused {
            url,
            status: status.as_u16(),
            body,
        })
    }
}
