//! The control plane's metrics: every Prometheus family Meshplane exports, in one registry,
//! and its text exposition.
//!
//! Start at [`Metrics`]. Recorders get typed handles from it: the xDS server registers
//! [`XdsMetrics`] as one of its stream observers, the translator task records into
//! [`TranslationMetrics`], the CA routes into [`CaMetrics`]; registry and snapshot-cache gauges
//! are read from the store and the cache at scrape time ([`state`]). The admin API only serves
//! [`Metrics::encode`]. Family names, labels and meanings are a public interface (dashboards
//! and alerts use them): change one only with a README note.

mod ca;
mod registry;
mod state;
mod translation;
mod xds;

use std::sync::Arc;

use meshplane_registry::Store;
use meshplane_xds::SnapshotCache;
use prometheus_client::registry::Registry;

pub use ca::CaMetrics;
pub use registry::RegistryMetrics;
pub use translation::TranslationMetrics;
pub use xds::XdsMetrics;

/// The `Content-Type` of [`Metrics::encode`]'s output: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric of one control plane. Cheap to clone: clones share the same families.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    xds: XdsMetrics,
    translation: TranslationMetrics,
    ca: CaMetrics,
    registry_sources: RegistryMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a control plane serving `cache`, translated from `store`.
    pub fn new(store: Store, cache: SnapshotCache) -> Self {
        let mut registry = Registry::default();
        let xds = XdsMetrics::register(&mut registry);
        let translation = TranslationMetrics::register(&mut registry);
        let ca = CaMetrics::register(&mut registry);
        let registry_sources = RegistryMetrics::register(&mut registry);
        registry.register_collector(Box::new(state::StateCollector::new(
            store,
            cache,
            translation.translated_index(),
        )));
        Metrics {
            registry: Arc::new(registry),
            xds,
            translation,
            ca,
            registry_sources,
        }
    }

    /// The xDS stream observer; register it with `XdsServer::with_observer`.
    pub fn xds(&self) -> &XdsMetrics {
        &self.xds
    }

    /// What the translator task records.
    pub fn translation(&self) -> &TranslationMetrics {
        &self.translation
    }

    /// What the built-in CA's routes record.
    pub fn ca(&self) -> &CaMetrics {
        &self.ca
    }

    /// What registry sources record (their failed requests).
    pub fn registry(&self) -> &RegistryMetrics {
        &self.registry_sources
    }

    /// The exposition of every family, as of now ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Writing into a String only fails if a value refuses to format: never expected,
            // and a partial scrape is still better than none.
            tracing::error!(error = %e, "encoding metrics failed; the scrape is partial");
        }
        out
    }
}

#[cfg(test)]
mod tests;
