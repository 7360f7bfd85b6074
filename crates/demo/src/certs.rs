//! The demo's own CA and a server certificate for its external-looking domain.

use std::path::Path;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files written for the demo.
pub struct DemoPki {
    /// CA certificate (what Envoy trusts for the domain).
    pub ca_file: std::path::PathBuf,
    /// Server certificate chain (PEM).
    pub cert_pem: String,
    /// Server private key (PEM). Stays in the demo's temp dir; never logged.
    pub key_pem: String,
}

/// Creates a CA and a certificate for `host` signed by it; writes the CA to `dir`.
pub fn generate(dir: &Path, host: &str) -> anyhow::Result<DemoPki> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meshplane demo CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec![host.to_owned()])?;
    let cert = params.signed_by(&key, &issuer)?;

    let ca_file = dir.join("demo-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem())
        .with_context(|| format!("cannot write {}", ca_file.display()))?;
    Ok(DemoPki {
        ca_file,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
