//! Certificates from the control plane's CA: a key generated here, a CSR naming the
//! service's SPIFFE id, and renewal with a new key well before expiry.
//!
//! Only the CSR (public key and requested name) is sent; the private key stays in this
//! process, in Envoy, which gets it over the local socket, and in the optional on-disk
//! cache (`cache`), which lets a restart during a CA outage serve the last certificate.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use meshplane_model::ServiceName;
use meshplane_model::identity::{SIGN_PATH, SignRequest, SignResponse, spiffe_id};
use tokio_util::sync::CancellationToken;

use super::Sink;
use super::cache::{CertCache, MeshBinding, Sweep};
use super::error::{IdentityError, chain};
use super::material::{Leaf, Material, Origins, display_time};

/// One signing request, end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest CA error body quoted in an error.
const MAX_BODY_CHARS: usize = 1024;

/// Talks to the control plane's CA for one service.
pub(super) struct CaClient {
    http: reqwest::Client,
    /// The signing URL of each control plane (several instances sharing one CA), tried in
    /// order; the first names the mesh in the cache.
    urls: Vec<String>,
    /// Index in `urls` of the instance that answered last.
    current: AtomicUsize,
    token: Option<String>,
    service: ServiceName,
    trust_domain: String,
    identity: String,
    origins: Origins,
    cache: Option<CertCache>,
}

/// The certificate served first, and whether it must be replaced at once.
#[derive(Debug)]
pub(super) struct FirstCertificate {
    pub(super) material: Material,
    pub(super) leaf: Leaf,
    /// It came from the cache because the CA was unavailable: renew now (with backoff),
    /// not after a fraction of its lifetime.
    pub(super) renew_now: bool,
}

/// When to renew and how to retry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Renewal {
    pub(super) renew_fraction: f64,
    pub(super) retry_min: Duration,
    pub(super) retry_max: Duration,
}

// === impl CaClient ===

impl CaClient {
    pub(super) fn new(
        admin_urls: &[String],
        token: Option<String>,
        service: &ServiceName,
        trust_domain: &str,
        ca_bundle: Option<&std::path::Path>,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Self, IdentityError> {
        let urls = admin_urls
            .iter()
            .map(|admin_url| {
                let url = format!("{}{SIGN_PATH}", admin_url.trim_end_matches('/'));
                reqwest::Url::parse(&url).map(|_| url).map_err(|e| {
                    IdentityError::Config(format!(
                        "the control plane's admin URL `{admin_url}` is not a URL ({e}); give e.g. http://10.0.0.1:18080"
                    ))
                })
            })
            .collect::<Result<Vec<String>, IdentityError>>()?;
        // Every URL is an instance of the same control plane (one CA): the first stands for
        // the mesh, so a certificate from any of them is cached as this mesh's, and a single
        // URL names the mesh as it always did.
        let Some(url) = urls.first().cloned() else {
            return Err(IdentityError::Config(
                "no control-plane admin URL for the CA: give --ca-url".to_owned(),
            ));
        };
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(path) = ca_bundle {
            builder = builder.tls_certs_only(
                crate::config::read_ca_bundle(path)
                    .map_err(|e| IdentityError::Config(e.to_string()))?,
            );
        }
        let http = builder.build().map_err(|e| IdentityError::CaUnreachable {
            url: url.clone(),
            reason: chain(&e),
        })?;
        let origins = Origins {
            cert: format!("the certificate from {url}"),
            key: "the key generated for the CSR".to_owned(),
            ca: format!("the CA bundle from {url}"),
        };
        let cache = cache_dir.map(|dir| {
            CertCache::new(
                dir,
                MeshBinding {
                    trust_domain: trust_domain.to_owned(),
                    ca_url: url.clone(),
                },
            )
            .with_instances(&urls)
        });
        Ok(CaClient {
            http,
            urls,
            current: AtomicUsize::new(0),
            token,
            service: service.clone(),
            trust_domain: trust_domain.to_owned(),
            identity: spiffe_id(trust_domain, service),
            origins,
            cache,
        })
    }

    /// The certificate to start with: a new one from the CA (cached), or, when the CA is
    /// unavailable (unreachable or 5xx), a usable cached one of this mesh. A refusal (4xx)
    /// fails even with a cache: the control plane decided this sidecar gets no certificate.
    /// A cached certificate of another mesh is discarded first, whatever the CA answers.
    pub(super) async fn first(&self) -> Result<FirstCertificate, IdentityError> {
        let sweep = match &self.cache {
            Some(cache) => cache.discard_foreign().await,
            None => Sweep::Nothing,
        };
        let error = match self.obtain().await {
            Ok((material, leaf)) => {
                if matches!(&sweep, Sweep::Ours { ca_bundle } if ca_bundle != material.parts().2) {
                    tracing::warn!(
                        ca = %self.urls[0],
                        "the CA's bundle is not the one of the cached certificate (a new CA behind the same URL?); the cached certificate is replaced"
                    );
                }
                self.store_in_cache(&material).await;
                return Ok(FirstCertificate {
                    material,
                    leaf,
                    renew_now: false,
                });
            }
            Err(e) => e,
        };
        let Some(cache) = self.cache.as_ref().filter(|_| error.is_ca_outage()) else {
            return Err(error);
        };
        let loaded = match sweep {
            Sweep::Discarded { reason } => {
                Err(format!("the cached certificate was discarded: {reason}"))
            }
            _ => cache.load(&self.identity, SystemTime::now()).await,
        };
        let (material, leaf) = match loaded {
            Ok(cached) => cached,
            Err(reason) => {
                return Err(IdentityError::NoUsableCache {
                    ca: Box::new(error),
                    cache: cache.path().to_owned(),
                    reason,
                });
            }
        };
        tracing::warn!(
            error = %error,
            cache = %cache.path().display(),
            serial = %leaf.serial_hex,
            not_after = %display_time(leaf.not_after),
            "the control plane's CA is unavailable; serving the cached certificate and renewing as soon as the CA answers"
        );
        Ok(FirstCertificate {
            material,
            leaf,
            renew_now: true,
        })
    }

    async fn store_in_cache(&self, material: &Material) {
        if let Some(cache) = &self.cache {
            cache.store(material).await;
        }
    }

    /// A new key and a certificate for it, checked: the key matches, the certificate names
    /// this service's SPIFFE id and has not expired.
    pub(super) async fn obtain(&self) -> Result<(Material, Leaf), IdentityError> {
        // The CA's own requester side, so what is sent is what the CA accepts.
        let (key, csr) = meshplane_ca::key_and_csr(&self.trust_domain, &self.service)
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        let signed = self.sign(csr).await?;
        let material = Material::new(
            signed.certificate_chain.into_bytes(),
            key.into_bytes(),
            signed.ca_bundle.into_bytes(),
        );
        let leaf = material.check(&self.origins, SystemTime::now())?;
        if leaf.identity.as_deref() != Some(self.identity.as_str()) {
            return Err(IdentityError::CaResponse {
                url: self.urls[0].clone(),
                reason: format!(
                    "the certificate names {}, not the requested {}",
                    leaf.identity.as_deref().unwrap_or("no URI SAN"),
                    self.identity
                ),
            });
        }
        Ok((material, leaf))
    }

    /// Asks each instance in turn, from the one that answered last, until one signs or
    /// refuses: an instance that is unavailable (unreachable, 5xx) is passed over, a refusal
    /// is the control plane's decision, which its other instances would repeat.
    async fn sign(&self, csr: String) -> Result<SignResponse, IdentityError> {
        let request = SignRequest {
            service: self.service.to_string(),
            csr,
        };
        let first = self.current.load(Ordering::Relaxed);
        let count = self.urls.len();
        let mut outage = None;
        for offset in 0..count {
            let index = (first + offset) % count;
            match self.sign_at(&self.urls[index], &request).await {
                Err(e) if e.is_ca_outage() => {
                    if count > 1 {
                        tracing::warn!(error = %e, "the CA instance is unavailable; trying the next");
                    }
                    outage = Some(e);
                }
                answered => {
                    self.current.store(index, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        Err(outage.unwrap_or_else(|| {
            IdentityError::Config("no control-plane admin URL for the CA".to_owned())
        }))
    }

    async fn sign_at(
        &self,
        url: &str,
        request: &SignRequest,
    ) -> Result<SignResponse, IdentityError> {
        let mut post = self.http.post(url).json(request);
        if let Some(token) = &self.token {
            post = post.bearer_auth(token);
        }
        let response = post.send().await.map_err(|e| {
            let reason = chain(&e.without_url());
            if reason.contains("invalid peer certificate") {
                IdentityError::CaCertificate {
                    url: url.to_owned(),
                    reason,
                }
            } else {
                IdentityError::CaUnreachable {
                    url: url.to_owned(),
                    reason,
                }
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(IdentityError::CaRefused {
                url: url.to_owned(),
                status,
                body: body.trim().chars().take(MAX_BODY_CHARS).collect(),
            });
        }
        response
            .json::<SignResponse>()
            .await
            .map_err(|e| IdentityError::CaResponse {
                url: url.to_owned(),
                reason: format!("not a signing response: {}", chain(&e.without_url())),
            })
    }

    /// Renews the certificate described by `leaf` after `renew_fraction` of its lifetime
    /// (the first time at once when `renew_now`), with a new key each time, until
    /// `shutdown`. Each new certificate is cached before it is served. Failures are retried
    /// with exponential backoff while the current certificate stays served.
    pub(super) async fn keep_renewed(
        self,
        mut leaf: Leaf,
        renew_now: bool,
        renewal: Renewal,
        publisher: impl Sink,
        shutdown: CancellationToken,
    ) {
        let mut wait = if renew_now {
            Duration::ZERO
        } else {
            renewal.delay(&leaf, SystemTime::now())
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let Some((material, next)) = self.renew(&renewal, &leaf, &shutdown).await else {
                return;
            };
            // Cached first: once a certificate is served, a restart finds it (or a newer one).
            self.store_in_cache(&material).await;
            // Serving can fail for ordinary reasons when it means writing files (a full
            // disk): retried with backoff, the current certificate served meanwhile.
            let mut delay = renewal.retry_min;
            loop {
                match publisher.publish(&material, &next) {
                    Ok(generation) => {
                        tracing::info!(
                            identity = %self.identity,
                            serial = %next.serial_hex,
                            not_after = %display_time(next.not_after),
                            generation,
                            "renewed the service certificate"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?delay, "cannot serve the renewed certificate")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = delay.saturating_mul(2).min(renewal.retry_max);
            }
            leaf = next;
            wait = renewal.delay(&leaf, SystemTime::now());
        }
    }

    /// Obtains a new certificate, retrying until it works; `None` on shutdown.
    async fn renew(
        &self,
        renewal: &Renewal,
        current: &Leaf,
        shutdown: &CancellationToken,
    ) -> Option<(Material, Leaf)> {
        let mut delay = renewal.retry_min;
        loop {
            let obtained = tokio::select! {
                _ = shutdown.cancelled() => return None,
                obtained = self.obtain() => obtained,
            };
            match obtained {
                Ok(next) => return Some(next),
                Err(e) => tracing::warn!(
                    error = %e,
                    retry_in = ?delay,
                    current_not_after = %display_time(current.not_after),
                    "certificate renewal failed; still serving the current certificate"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = delay.saturating_mul(2).min(renewal.retry_max);
        }
    }
}

impl fmt::Debug for CaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaClient")
            .field("urls", &self.urls)
            .field("token_set", &self.token.is_some())
            .field("identity", &self.identity)
            .field("cache", &self.cache.as_ref().map(CertCache::path))
            .finish_non_exhaustive()
    }
}

// === impl Renewal ===

impl Renewal {
    /// How long to wait before renewing `leaf`, asked when it arrives: `renew_fraction` of
    /// the validity it has left from now (the CA backdates `not_before` for clock skew, so
    /// a fraction of the nominal lifetime would renew a short-lived certificate at once),
    /// but at least `retry_min` (a CA handing out certificates with no lifetime must not
    /// be asked in a tight loop).
    pub(super) fn delay(&self, leaf: &Leaf, now: SystemTime) -> Duration {
        let from = leaf.not_before.max(now);
        let left = leaf
            .not_after
            .duration_since(from)
            .unwrap_or(Duration::ZERO);
        left.mul_f64(self.renew_fraction).max(self.retry_min)
    }
}
