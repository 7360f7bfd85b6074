//! A certificate chain, its private key and a CA bundle: checked together, and turned into
//! the two SDS secrets Envoy asks for.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use meshplane_model::identity::{IDENTITY_SECRET, TRUST_SECRET};
use x509_parser::pem::Pem;
use x509_parser::prelude::{ASN1Time, FromDer, X509Certificate};

use super::error::IdentityError;

/// PEM certificate chain (leaf first), private key and CA bundle.
///
/// Holds a private key: `Debug` shows sizes only.
#[derive(Clone)]
pub(super) struct Material {
    chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

/// Where each part came from, for error messages (paths, or the CA's URL).
#[derive(Debug, Clone)]
pub(super) struct Origins {
    pub(super) cert: String,
    pub(super) key: String,
    pub(super) ca: String,
}

/// What the sidecar needs to know about a checked leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leaf {
    /// First URI SAN.
    pub(super) identity: Option<String>,
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
    /// Serial number, lowercase hex.
    pub(super) serial_hex: String,
    /// The subject public key (the BIT STRING of its SubjectPublicKeyInfo).
    pub(super) public_key: Vec<u8>,
}

// === impl Material ===

impl Material {
    pub(super) fn new(chain_pem: Vec<u8>, key_pem: Vec<u8>, ca_pem: Vec<u8>) -> Self {
        Material {
            chain_pem,
            key_pem,
            ca_pem,
        }
    }

    /// Checks that the chain starts with a certificate valid at `now`, that the key is that
    /// certificate's key, and that the CA bundle holds certificates.
    pub(super) fn check(&self, origins: &Origins, now: SystemTime) -> Result<Leaf, IdentityError> {
        let leaf = parse_leaf(&self.chain_pem, &origins.cert)?;
        let key_public = public_key_of(&self.key_pem, &origins.key)?;
        if key_public != leaf.public_key {
            return Err(IdentityError::KeyMismatch {
                key: origins.key.clone(),
                cert: origins.cert.clone(),
            });
        }
        if leaf.not_after <= now {
            return Err(IdentityError::Certificate {
                origin: origins.cert.clone(),
                reason: format!(
                    "the certificate (serial {}) expired at {}; replace it",
                    leaf.serial_hex,
                    display_time(leaf.not_after)
                ),
            });
        }
        check_bundle(&self.ca_pem, &origins.ca)?;
        Ok(leaf)
    }

    /// The chain, key and CA bundle PEM, for the on-disk cache (never for logs).
    pub(super) fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        (&self.chain_pem, &self.key_pem, &self.ca_pem)
    }

    /// A digest of all three parts, to notice replaced files.
    pub(super) fn digest(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [&self.chain_pem, &self.key_pem, &self.ca_pem] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.digest()
    }

    /// [`IDENTITY_SECRET`]: `TlsCertificate` with the chain and key inline.
    pub(super) fn identity_secret(&self) -> Secret {
        Secret {
            name: IDENTITY_SECRET.to_owned(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&self.chain_pem)),
                private_key: Some(inline(&self.key_pem)),
                ..Default::default()
            })),
        }
    }

    /// [`TRUST_SECRET`]: `CertificateValidationContext` with the CA bundle inline.
    pub(super) fn trust_secret(&self) -> Secret {
        Secret {
            name: TRUST_SECRET.to_owned(),
            r#type: Some(secret::Type::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(inline(&self.ca_pem)),
                    ..Default::default()
                },
            )),
        }
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("chain_bytes", &self.chain_pem.len())
            .field("ca_bytes", &self.ca_pem.len())
            .finish_non_exhaustive()
    }
}

fn inline(bytes: &[u8]) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
        ..Default::default()
    }
}

// === certificates ===

/// The PEM blocks of a buffer, or a description of the first broken one.
fn pem_blocks(pem: &[u8]) -> Result<Vec<Pem>, String> {
    Pem::iter_from_buffer(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e})"))
}

fn parse_leaf(chain_pem: &[u8], origin: &str) -> Result<Leaf, IdentityError> {
    let bad = |reason: String| IdentityError::Certificate {
        origin: origin.to_owned(),
        reason,
    };
    let blocks = pem_blocks(chain_pem).map_err(bad)?;
    let first = blocks
        .iter()
        .find(|b| b.label == "CERTIFICATE")
        .ok_or_else(|| bad("holds no PEM CERTIFICATE".into()))?;
    let (_, cert) = X509Certificate::from_der(&first.contents)
        .map_err(|e| bad(format!("the first certificate cannot be parsed: {e}")))?;
    let validity = cert.validity();
    Ok(Leaf {
        identity: meshplane_xds::server::node::uri_sans(&first.contents)
            .into_iter()
            .next(),
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
        serial_hex: format!("{:x}", cert.serial),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

fn check_bundle(ca_pem: &[u8], origin: &str) -> Result<(), IdentityError> {
    let bad = |reason: String| IdentityError::Certificate {
        origin: origin.to_owned(),
        reason,
    };
    let blocks = pem_blocks(ca_pem).map_err(bad)?;
    let mut count = 0;
    for (i, block) in blocks
        .iter()
        .filter(|b| b.label == "CERTIFICATE")
        .enumerate()
    {
        X509Certificate::from_der(&block.contents)
            .map_err(|e| bad(format!("CA certificate #{} cannot be parsed: {e}", i + 1)))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("the CA bundle holds no PEM CERTIFICATE".into()));
    }
    Ok(())
}

// === keys ===

/// The public key of a PEM private key. Errors describe the file, never its content.
fn public_key_of(key_pem: &[u8], origin: &str) -> Result<Vec<u8>, IdentityError> {
    let bad = |reason: &str| IdentityError::Key {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let blocks = pem_blocks(key_pem).map_err(|_| bad("the private key is not valid PEM"))?;
    if blocks.iter().any(|b| b.label == "ENCRYPTED PRIVATE KEY") {
        return Err(bad(
            "the private key is encrypted; Envoy needs it unencrypted (protect the file instead)",
        ));
    }
    let block = blocks
        .iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| bad("holds no PEM PRIVATE KEY"))?;
    let key = rcgen::KeyPair::try_from(block.contents.as_slice()).map_err(|_| {
        bad("the private key cannot be read (expected an unencrypted PKCS#8, SEC1 or PKCS#1 key: ECDSA P-256/P-384, Ed25519 or RSA)")
    })?;
    Ok(key.public_key_raw().to_vec())
}

// === time ===

fn system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// A time for people: `Jan 31 12:00:00 2025 +00:00`.
pub(super) fn display_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    match ASN1Time::from_timestamp(secs) {
        Ok(time) => time.to_string(),
        Err(_) => format!("{secs} (Unix time)"),
    }
}
