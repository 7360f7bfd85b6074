//! Service identity vocabulary shared by the control plane, the built-in CA and the sidecar:
//! SPIFFE ids, the names of the secrets Envoy is given, and the wire shapes of a
//! certificate signing request to the control plane's CA.

use serde::{Deserialize, Serialize};

use crate::ServiceName;

/// Default trust domain (`--trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "meshplane.local";

/// SDS secret holding the proxy's own certificate and key (`TlsCertificate`). Served to
/// Envoy by its sidecar over a local socket; the key never leaves the host.
pub const IDENTITY_SECRET: &str = "meshplane_identity";

/// SDS secret holding the CA bundle peers are verified against (`CertificateValidationContext`).
pub const TRUST_SECRET: &str = "meshplane_trust";

/// Static bootstrap cluster through which Envoy fetches [`IDENTITY_SECRET`] and
/// [`TRUST_SECRET`] from its sidecar (a Unix socket).
pub const SDS_CLUSTER: &str = "meshplane_sds";

/// Registry metadata key carrying an instance's mTLS mode (`permissive`, `strict`,
/// `disabled`); absent means the instance accepts plaintext only.
pub const MTLS_META_KEY: &str = "mtls";

/// Admin API path of the CA: `POST` a [`SignRequest`], get a [`SignResponse`].
pub const SIGN_PATH: &str = "/api/ca/sign";

/// `spiffe://<trust-domain>/service/<name>`.
pub fn spiffe_id(trust_domain: &str, service: &ServiceName) -> String {
    format!("spiffe://{trust_domain}/service/{service}")
}

/// A sidecar asks the CA to sign the CSR of a key it generated locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignRequest {
    /// The service whose identity is requested.
    pub service: String,
    /// PEM `CERTIFICATE REQUEST` whose only SAN is the service's SPIFFE id.
    pub csr: String,
}

/// The CA's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResponse {
    /// The SPIFFE id in the certificate.
    pub identity: String,
    /// PEM leaf certificate (followed by intermediates, if any).
    pub certificate_chain: String,
    /// PEM CA bundle that peers' certificates chain to.
    pub ca_bundle: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after_unix: u64,
    /// Issue time, seconds since the Unix epoch.
    pub not_before_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_name_the_service_in_the_trust_domain() {
        let orders = ServiceName::new("orders").expect("name");
        assert_eq!(
            spiffe_id("example.org", &orders),
            "spiffe://example.org/service/orders"
        );
    }
}
