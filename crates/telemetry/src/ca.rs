//! The built-in CA's counters.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// What the CA's sign route records.
#[derive(Clone, Debug, Default)]
pub struct CaMetrics {
    issued: Counter,
    refused: Counter,
}

impl CaMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = CaMetrics::default();
        registry.register(
            "meshplane_ca_certificates_issued",
            "Certificates the built-in CA signed",
            m.issued.clone(),
        );
        registry.register(
            "meshplane_ca_sign_refused",
            "Sign requests the built-in CA refused (malformed CSR, wrong identity, bad token not counted)",
            m.refused.clone(),
        );
        m
    }

    /// The CA signed a certificate.
    pub fn issued(&self) {
        self.issued.inc();
    }

    /// The CA refused a sign request it was allowed to consider.
    pub fn refused(&self) {
        self.refused.inc();
    }
}
