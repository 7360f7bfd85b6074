//! The requester's side: a fresh key and a CSR the CA will accept. The one CSR builder of
//! the project: the sidecar's CA client (`sidecar/src/identity/ca_client.rs`) sends what it
//! builds, so the CA's tests, which sign it, are the tests of both sides.

use meshplane_model::{ServiceName, identity::spiffe_id};
use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

use crate::{CaError, authority::check_trust_domain, certificate};

/// Generates an ECDSA P-256 key and a CSR for `service` in `trust_domain` whose only SAN is
/// the service's SPIFFE id: (PKCS#8 key PEM, CSR PEM). The key never needs to leave the
/// caller.
pub fn key_and_csr(trust_domain: &str, service: &ServiceName) -> Result<(String, String), CaError> {
    check_trust_domain(trust_domain)?;
    let failed = |reason: String| CaError::Generate {
        what: "a key and CSR",
        reason,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| failed(format!("key generation failed: {e}")))?;
    let uri = Ia5String::try_from(spiffe_id(trust_domain, service))
        .map_err(|e| failed(format!("SPIFFE id is not IA5: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = certificate::subject(service.as_str());
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| failed(format!("CSR encoding failed: {e}")))?;
    Ok((key.serialize_pem(), csr))
}
