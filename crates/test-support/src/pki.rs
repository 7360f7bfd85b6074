//! A private CA and a server certificate signed by it, for tests of HTTPS clients (a Consul
//! with TLS, say): PEM text, and the files a server or a client configuration points at.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA and one server certificate, as PEM.
pub struct TestPki {
    /// The CA certificate: what a client trusts.
    pub ca_pem: String,
    /// The server's certificate (signed by the CA).
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

/// Where [`TestPki::write`] put the PEM files.
pub struct PkiFiles {
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `tls.crt`.
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
}

impl TestPki {
    /// A fresh CA and a certificate for `hosts` (names or IP addresses, e.g. `127.0.0.1`).
    pub fn new(hosts: &[&str]) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshplane test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA");
        let key = KeyPair::generate().expect("server key");
        let hosts = hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let cert = CertificateParams::new(hosts)
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `tls.crt` and `tls.key` into `dir`.
    pub fn write(&self, dir: &Path) -> PkiFiles {
        let files = PkiFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        for (path, pem) in [
            (&files.ca, &self.ca_pem),
            (&files.cert, &self.cert_pem),
            (&files.key, &self.key_pem),
        ] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        files
    }
}
