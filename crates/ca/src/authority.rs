//! The CA itself: its certificate and key, and the one thing it does, turn a checked CSR into
//! a workload certificate.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use meshplane_model::{
    ServiceName,
    identity::{SignRequest, SignResponse, spiffe_id},
};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    string::Ia5String,
};

use crate::{CLOCK_SKEW, CaError, MAX_CERT_TTL, SignError, armor, certificate, csr::Csr};

/// The control plane's certificate authority: signs workload CSRs whose only name is the
/// SPIFFE id of the service they are requested for.
///
/// Cheap to share behind an `Arc`; [`Authority::sign`] takes `&self`.
pub struct Authority {
    /// The CA certificate, normalised to one PEM block.
    ca_pem: String,
    /// The CA certificate's subject, for logs.
    ca_subject: String,
    /// The CA's name, key identifier and signing key.
    issuer: Issuer<'static, KeyPair>,
    trust_domain: String,
    cert_ttl: Duration,
}

// === impl Authority ===

impl Authority {
    /// An authority from an operator-supplied CA certificate and key (`--ca-cert`,
    /// `--ca-key`). The certificate must be a CA (`basicConstraints CA:TRUE`, and
    /// `keyCertSign` if it has a key usage) and the key must be its private key (unencrypted
    /// PKCS#8, SEC1 or PKCS#1). Issued certificates live for `cert_ttl`.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        trust_domain: &str,
        cert_ttl: Duration,
    ) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)?;
        check_ttl(cert_ttl)?;

        let ders = armor::blocks_labelled(cert_pem, "CERTIFICATE").map_err(bad_ca_cert)?;
        let der = match ders.as_slice() {
            [der] => der,
            [] => {
                return Err(bad_ca_cert(
                    "no `-----BEGIN CERTIFICATE-----` block found".into(),
                ));
            }
            many => {
                return Err(bad_ca_cert(format!(
                    "found {} certificates; give only the CA's own certificate",
                    many.len()
                )));
            }
        };
        let cert = certificate::parse(der, "CA certificate")?;
        let ca_subject = cert.subject().to_string();
        let basic = cert
            .basic_constraints()
            .map_err(|e| bad_ca_cert(format!("unreadable basicConstraints: {e}")))?;
        if !basic.is_some_and(|bc| bc.value.ca) {
            return Err(CaError::NotCa {
                subject: ca_subject,
                reason: "basicConstraints CA:TRUE is missing",
            });
        }
        let usage = cert
            .key_usage()
            .map_err(|e| bad_ca_cert(format!("unreadable keyUsage: {e}")))?;
        if usage.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(CaError::NotCa {
                subject: ca_subject,
                reason: "its key usage lacks keyCertSign",
            });
        }

        let key = read_key(key_pem)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                subject: ca_subject,
            });
        }
        let ca_pem = armor::encode("CERTIFICATE", der);
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
            .map_err(|e| bad_ca_cert(format!("rcgen cannot sign with it: {e}")))?;
        Ok(Self {
            ca_pem,
            ca_subject,
            issuer,
            trust_domain: trust_domain.to_string(),
            cert_ttl,
        })
    }

    /// The SPIFFE trust domain whose identities this CA issues.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The CA certificate (PEM): the bundle peers verify workload certificates against.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How long issued certificates live.
    pub fn cert_ttl(&self) -> Duration {
        self.cert_ttl
    }

    /// Signs `req.csr` for `req.service` at time `now`: checks the CSR's shape, key and
    /// signature, that its only name is the service's SPIFFE id and that it does not ask to
    /// be a CA, then issues a leaf for the CSR's key valid from `now` −
    /// [`CLOCK_SKEW`] to `now` + [`Authority::cert_ttl`].
    pub fn sign(&self, req: &SignRequest, now: SystemTime) -> Result<SignResponse, SignError> {
        let service = requested_service(&req.service)?;
        let identity = spiffe_id(&self.trust_domain, &service);
        let csr = Csr::parse(&req.csr)?;
        csr.check_identity(&identity)?;
        if csr.requests_ca {
            return Err(SignError::RequestsCa);
        }

        let (not_before, not_after) =
            certificate::validity(now, CLOCK_SKEW, self.cert_ttl).map_err(SignError::Issue)?;
        let uri = Ia5String::try_from(identity.as_str())
            .map_err(|e| SignError::Issue(format!("SPIFFE id is not IA5: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = certificate::subject(service.as_str());
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(certificate::random_serial().map_err(SignError::Issue)?);
        params.not_before = not_before;
        params.not_after = not_after;
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| SignError::Issue(format!("signing failed: {e}")))?;

        Ok(SignResponse {
            identity,
            certificate_chain: armor::encode("CERTIFICATE", leaf.der()),
            ca_bundle: self.ca_pem.clone(),
            not_after_unix: unix_secs(not_after),
            not_before_unix: unix_secs(not_before),
        })
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signing key is deliberately left out.
        f.debug_struct("Authority")
            .field("trust_domain", &self.trust_domain)
            .field("ca_subject", &self.ca_subject)
            .field("cert_ttl", &self.cert_ttl)
            .finish_non_exhaustive()
    }
}

/// Checks `trust_domain` is a SPIFFE trust domain name: lowercase letters, digits, `.`, `-`
/// and `_`. Anything else could change the meaning of the SPIFFE ids built from it.
pub(crate) fn check_trust_domain(trust_domain: &str) -> Result<(), CaError> {
    let valid = (1..=255).contains(&trust_domain.len())
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(CaError::InvalidTrustDomain(trust_domain.to_string()))
    }
}

/// Checks `0 < ttl <= MAX_CERT_TTL`.
pub(crate) fn check_ttl(ttl: Duration) -> Result<(), CaError> {
    if ttl.is_zero() || ttl > MAX_CERT_TTL {
        return Err(CaError::InvalidTtl {
            ttl_secs: ttl.as_secs(),
            max_secs: MAX_CERT_TTL.as_secs(),
        });
    }
    Ok(())
}

/// The service named by a sign request, if it is a valid service name and a valid SPIFFE
/// path segment.
fn requested_service(service: &str) -> Result<ServiceName, SignError> {
    let invalid = |reason: String| SignError::InvalidService {
        service: service.to_string(),
        reason,
    };
    // `ServiceName` allows these, but they are path traversals in a SPIFFE id.
    if service == "." || service == ".." {
        return Err(invalid(
            "`.` and `..` are not allowed in a SPIFFE id".to_string(),
        ));
    }
    ServiceName::new(service).map_err(|e| invalid(e.to_string()))
}

/// The one private key in `key_pem`.
fn read_key(key_pem: &str) -> Result<KeyPair, CaError> {
    let bad = |reason: String| CaError::BadKey { reason };
    if armor::labels(key_pem)
        .iter()
        .any(|l| l == "ENCRYPTED PRIVATE KEY")
    {
        return Err(bad("the key is encrypted; decrypt it first".to_string()));
    }
    let mut keys = Vec::new();
    for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
        keys.extend(armor::blocks_labelled(key_pem, label).map_err(bad)?);
    }
    let der = match keys.as_slice() {
        [der] => der,
        [] => {
            return Err(bad(
                "no `-----BEGIN PRIVATE KEY-----` block found".to_string()
            ));
        }
        many => return Err(bad(format!("found {} private keys; give one", many.len()))),
    };
    KeyPair::try_from(der.as_slice()).map_err(|e| bad(e.to_string()))
}

fn bad_ca_cert(reason: String) -> CaError {
    CaError::BadCertificate {
        what: "CA certificate",
        reason,
    }
}

/// Seconds since the Unix epoch; [`certificate::validity`] never yields earlier times.
fn unix_secs(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}
