//! Registry sources' failed requests, by source and kind.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    source: String,
    kind: String,
}

/// What registry sources record.
#[derive(Clone, Debug, Default)]
pub struct RegistryMetrics {
    errors: Family<ErrorLabels, Counter>,
}

impl RegistryMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = RegistryMetrics::default();
        registry.register(
            "meshplane_registry_errors",
            "Failed requests of a registry source to its registry, by kind (transport, status, missing_index, body); the source keeps its last state meanwhile",
            m.errors.clone(),
        );
        m
    }

    /// A request of `source` failed with an error of `kind`.
    pub fn error(&self, source: &str, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                source: source.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }
}
