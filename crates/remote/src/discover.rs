//! Finding the other datacenters and their control planes through Consul, for a control
//! plane on `--registry consul` without `--remote-datacenters`:
//!
//! - the datacenters are Consul's `GET /v1/catalog/datacenters`, without this one and without
//!   the deny list;
//! - each one's control planes are its passing instances of `meshplane-control-plane`
//!   (`GET /v1/health/service/meshplane-control-plane?dc=<dc>&passing`), each naming its admin
//!   API in `Meta.admin_url`.
//!
//! [`follow`] asks again every [`DiscoveryConfig::interval`]: a new datacenter gets its
//! [`RemoteSource`], a datacenter's control planes that moved are followed where they are now.
//! It uses one connection to Consul (short requests, one at a time), which the control plane
//! takes out of the Consul source's connection budget.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meshplane_consul_api::health::ServiceEntry;
use meshplane_registry::{EventSink, RegistrySource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::source::{ControlPlanes, RemoteConfig, RemoteError, RemoteSource};
use crate::status::Followed;

pub use meshplane_model::registration::CONTROL_PLANE_SERVICE;

/// Where and how to discover.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Consul's HTTP API, e.g. `http://127.0.0.1:8500`.
    pub consul: String,
    /// ACL token (`X-Consul-Token`).
    pub token: Option<String>,
    /// CA bundle (PEM) verifying an `https://` Consul.
    pub ca_pem: Option<Vec<u8>>,
    /// This control plane's datacenter (never followed).
    pub datacenter: String,
    /// Datacenters never followed.
    pub deny: BTreeSet<String>,
    /// How often the datacenters and their control planes are looked up again.
    pub interval: Duration,
}

/// Why a lookup failed (retried at the next interval).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Consul did not answer, or answered an error.
    #[error("Consul: {0}")]
    Http(#[from] reqwest::Error),
}

/// Looks up the datacenters to follow and their control planes' admin URLs.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    http: reqwest::Client,
}

impl Discovery {
    /// A discovery for `config`.
    pub fn new(config: DiscoveryConfig) -> Result<Self, RemoteError> {
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(1);
        if let Some(pem) = &config.ca_pem {
            http = http.tls_certs_only(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        Ok(Discovery {
            config,
            http: http.build()?,
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, DiscoveryError> {
        let mut request = self.http.get(format!(
            "{}{path}",
            self.config.consul.trim_end_matches('/')
        ));
        if let Some(token) = &self.config.token {
            request = request.header("x-consul-token", token);
        }
        Ok(request.send().await?.error_for_status()?.json().await?)
    }

    /// Every datacenter to follow, with its control planes' admin URLs (sorted; possibly none).
    pub async fn lookup(&self) -> Result<BTreeMap<String, Vec<String>>, DiscoveryError> {
        let datacenters: Vec<String> = self.get("/v1/catalog/datacenters").await?;
        let mut out = BTreeMap::new();
        for dc in datacenters {
            if dc == self.config.datacenter || self.config.deny.contains(&dc) {
                continue;
            }
            let entries: Vec<ServiceEntry> = self
                .get(&format!(
                    "/v1/health/service/{CONTROL_PLANE_SERVICE}?dc={dc}&passing"
                ))
                .await?;
            let urls: BTreeSet<String> = entries
                .iter()
                .filter_map(|e| {
                    e.service
                        .meta
                        .get(meshplane_model::registration::ADMIN_URL_META_KEY)
                })
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .collect();
            out.insert(dc, urls.into_iter().collect());
        }
        Ok(out)
    }
}

/// Follows every datacenter `discovery` finds, each with a [`RemoteSource`] made from
/// `template` (its datacenter and URLs filled in), until `shutdown`.
pub async fn follow(
    discovery: Discovery,
    template: RemoteConfig,
    sink: EventSink,
    followed: Followed,
    shutdown: CancellationToken,
) -> Result<(), RemoteError> {
    let mut following: BTreeMap<String, ControlPlanes> = BTreeMap::new();
    let mut sources = JoinSet::new();
    loop {
        match discovery.lookup().await {
            Ok(found) => {
                for (dc, urls) in found {
                    if let Some(control_planes) = following.get(&dc) {
                        if !urls.is_empty() && control_planes.get() != urls {
                            tracing::info!(datacenter = %dc, ?urls, "remote datacenter's control planes moved");
                            followed.set_urls(&dc, &urls);
                            control_planes.set(urls);
                        }
                        continue;
                    }
                    if urls.is_empty() {
                        tracing::info!(datacenter = %dc,
                            "no control plane registered in this datacenter (service {CONTROL_PLANE_SERVICE} with Meta.admin_url); not followed yet");
                        continue;
                    }
                    tracing::info!(datacenter = %dc, ?urls, "following remote datacenter");
                    let source = RemoteSource::new(RemoteConfig {
                        datacenter: dc.clone(),
                        urls,
                        ..template.clone()
                    })?
                    .with_status(followed.clone());
                    following.insert(dc, source.control_planes());
                    sources.spawn(source.run(sink.clone(), shutdown.clone()));
                }
            }
            Err(e) => {
                tracing::warn!(consul = %discovery.config.consul, error = %e,
                    "cannot look up the other datacenters; following the ones known, retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(discovery.config.interval) => {}
            Some(ended) = sources.join_next() => {
                // A source ends only when the store is gone or on shutdown.
                if let Ok(Err(e)) = ended {
                    return Err(e);
                }
            }
        }
    }
    while sources.join_next().await.is_some() {}
    Ok(())
}
