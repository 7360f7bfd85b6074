//! Registering the instance in a Consul-compatible registry (Consul itself or Meshplane's
//! embedded registry): the **Envoy ingress port** is advertised, not the app's port (the
//! "registration trick" that moves ingress traffic onto Envoy), with an HTTP check that goes
//! through Envoy to the app's health path, so it fails when either is down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshplane_consul_api::{CheckDefinition, Weights};
use meshplane_model::{Descriptor, descriptor::format_duration};
use tokio_util::sync::CancellationToken;

use crate::config::CheckTimes;
use crate::restart_policy::Backoff;

pub use meshplane_consul_api::ServiceRegistration;

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
    /// No registry address was configured.
    #[error("no registry address: give --registry URL")]
    NoAddress,
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

/// A client for the agent endpoints of a Consul-compatible registry, reached at one or
/// more addresses (Consul agents or servers of one cluster): each call goes to the address
/// that answered last, and moves on to the next when it gets no answer.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    bases: Arc<[String]>,
    /// Index in `bases` of the address that answered last; shared by clones, so a
    /// deregistration goes where the registration went.
    current: Arc<AtomicUsize>,
    token: Option<String>,
    http: reqwest::Client,
}

/// The registration for `descriptor`'s instance `id`, advertised at `address`, scraped by
/// Prometheus at `metrics_port`.
pub fn service_registration(
    descriptor: &Descriptor,
    id: &str,
    address: &str,
    metrics_port: u16,
    check: CheckTimes,
) -> ServiceRegistration {
    let ingress = descriptor.ingress.port;
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_owned()
    };
    let meta = BTreeMap::from([
        (
            meshplane_model::registration::SIDECAR_META_KEY.to_owned(),
            "true".to_owned(),
        ),
        (
            meshplane_model::identity::MTLS_META_KEY.to_owned(),
            mtls_name(descriptor),
        ),
        (
            meshplane_model::registration::METRICS_PORT_META_KEY.to_owned(),
            metrics_port.to_string(),
        ),
        (
            meshplane_model::registration::PROTOCOL_META_KEY.to_owned(),
            descriptor.protocol.as_str().to_owned(),
        ),
    ]);
    let mut tags = descriptor.tags.clone();
    tags.push(meshplane_model::registration::METRICS_TAG.to_owned());
    ServiceRegistration {
        id: Some(id.to_owned()),
        name: descriptor.service.to_string(),
        address: address.to_owned(),
        port: ingress,
        tags,
        weights: Some(Weights {
            passing: descriptor.weight,
            warning: 1,
        }),
        meta,
        check: Some(CheckDefinition {
            check_id: Some(format!("service:{id}")),
            name: Some(format!("{} via Envoy ingress", descriptor.service)),
            http: Some(format!(
                "http://{host}:{ingress}{}",
                descriptor.ingress.health_path
            )),
            method: Some("GET".to_owned()),
            // Meshplane's duration text (`10s`, `1500ms`) is also Go's, which Consul reads.
            interval: Some(format_duration(check.interval)),
            timeout: Some(format_duration(check.timeout)),
            deregister_critical_service_after: Some(format_duration(
                check.deregister_critical_after,
            )),
            ..CheckDefinition::default()
        }),
        ..ServiceRegistration::default()
    }
}

fn mtls_name(descriptor: &Descriptor) -> String {
    serde_json::to_value(descriptor.mtls)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

// === impl RegistryClient ===

impl RegistryClient {
    /// A client for the registry at `base` (e.g. `http://127.0.0.1:8500`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self::with_roots(&[base.to_owned()], token, None)
    }

    /// A client for the registry at `bases`, tried in order (at least one; e.g.
    /// `http://127.0.0.1:8500`); `https://` addresses' certificates must chain to `roots`
    /// (`None`: the system's roots).
    pub fn with_roots(
        bases: &[String],
        token: Option<String>,
        roots: Option<Vec<reqwest::Certificate>>,
    ) -> Self {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(roots) = roots {
            builder = builder.tls_certs_only(roots);
        }
        let http = builder.build().unwrap_or_default();
        RegistryClient {
            bases: bases
                .iter()
                .map(|b| b.trim_end_matches('/').to_owned())
                .collect(),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            http,
        }
    }

    /// `PUT /v1/agent/service/register` (idempotent: a re-registration replaces).
    pub async fn register(&self, registration: &ServiceRegistration) -> Result<(), RegistryError> {
        self.put_any("/v1/agent/service/register", Some(registration))
            .await
    }

    /// `PUT /v1/agent/service/deregister/<id>` where the last registration went, then, best
    /// effort, at every other address: a Consul agent keeps what was registered with it, so
    /// a registration that moved on from an agent that was down for a while may still be
    /// there.
    pub async fn deregister(&self, id: &str) -> Result<(), RegistryError> {
        let path = format!("/v1/agent/service/deregister/{id}");
        let result = self.put_any(&path, None).await;
        let current = self.current.load(Ordering::Relaxed);
        for (index, base) in self.bases.iter().enumerate() {
            if index != current
                && let Err(e) = self.put(format!("{base}{path}"), None).await
            {
                tracing::debug!(error = %e, "no deregistration at another registry address");
            }
        }
        result
    }

    /// The call at each address in turn, from the one that answered last, until one
    /// answers. A refusal is an answer (the cluster's decision, which another address of
    /// the same cluster would repeat), so only an unreachable address moves on.
    async fn put_any(
        &self,
        path: &str,
        body: Option<&ServiceRegistration>,
    ) -> Result<(), RegistryError> {
        let first = self.current.load(Ordering::Relaxed);
        let count = self.bases.len();
        let mut last = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            let url = format!("{}{path}", self.bases[index]);
            match self.put(url, body).await {
                Err(e @ RegistryError::Unreachable { .. }) => {
                    if count > 1 {
                        tracing::warn!(error = %e, "registry address unreachable; trying the next");
                    }
                    last = Some(e);
                }
                answered => {
                    self.current.store(index, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        match last {
            Some(e) => Err(e),
            None => Err(RegistryError::NoAddress),
        }
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
