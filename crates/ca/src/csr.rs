//! Reading a CSR from the network: PEM and DER shape, key type, proof of possession, and
//! what it asks for. Nothing the CSR requests is copied into the certificate; the CA decides
//! every field itself and only takes the public key.
//!
//! rcgen's `CertificateSigningRequestParams::from_der` also parses and verifies CSRs, but it
//! derives the key's algorithm from the *signature* algorithm (a P-256 key signed with
//! ECDSA-SHA384 would be certified as a P-384 key) and refuses any extension it does not
//! know, so the CSR is read with x509-parser here.

use x509_parser::{
    certification_request::{X509CertificationRequest, X509CertificationRequestInfo},
    cri_attributes::ParsedCriAttribute,
    error::X509Error,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
        OID_SIG_ED25519, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_SUBJECT_ALT_NAME,
    },
    prelude::FromDer,
    public_key::PublicKey,
    x509::SubjectPublicKeyInfo,
};

use crate::{SignError, armor};

/// Smallest and largest RSA modulus accepted, in bits.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// A CSR whose shape, key and signature have been checked, but not yet what it asks for.
#[derive(Debug)]
pub(crate) struct Csr {
    /// The requester's public key, to be certified as is.
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
    /// Every SAN requested, over all extension requests.
    pub(crate) names: Vec<RequestedName>,
    /// Whether any extension request asks for `basicConstraints CA:TRUE`.
    pub(crate) requests_ca: bool,
}

/// A subject alternative name requested by a CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestedName {
    /// A URI SAN.
    Uri(String),
    /// Any other kind of name, described for error messages (`DNSName(example.org)`).
    Other(String),
}

// === impl Csr ===

impl Csr {
    /// Parses `pem_text`, checks the key is of an accepted type and that the CSR is signed by
    /// it.
    pub(crate) fn parse(pem_text: &str) -> Result<Self, SignError> {
        let der = armor::strict_block(pem_text, "CERTIFICATE REQUEST").map_err(malformed)?;
        let (rest, csr) = X509CertificationRequest::from_der(&der)
            .map_err(|e| malformed(format!("invalid DER: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed(format!(
                "{} unexpected bytes after the DER request",
                rest.len()
            )));
        }
        let info = &csr.certification_request_info;
        // Key first: an unsupported key would otherwise surface as a confusing signature
        // failure.
        let public_key = accepted_key(&info.subject_pki)?;
        csr.verify_signature().map_err(|e| match e {
            X509Error::SignatureUnsupportedAlgorithm => malformed(format!(
                "signature algorithm {} is not supported; sign with SHA-256 or SHA-384 \
                 (or Ed25519)",
                csr.signature_algorithm.algorithm
            )),
            _ => SignError::BadSignature,
        })?;

        let (names, requests_ca) = requested_extensions(info)?;
        Ok(Self {
            public_key,
            names,
            requests_ca,
        })
    }

    /// Checks the CSR asks for exactly one name, the URI `expected`.
    pub(crate) fn check_identity(&self, expected: &str) -> Result<(), SignError> {
        let uris: Vec<&str> = self
            .names
            .iter()
            .filter_map(|name| match name {
                RequestedName::Uri(uri) => Some(uri.as_str()),
                RequestedName::Other(_) => None,
            })
            .collect();
        if uris.is_empty() {
            return Err(SignError::MissingIdentity {
                expected: expected.to_string(),
            });
        }
        if let Some(found) = uris.iter().find(|u| **u != expected) {
            return Err(SignError::WrongIdentity {
                expected: expected.to_string(),
                found: (*found).to_string(),
            });
        }
        if self.names.len() > 1 {
            // All URIs equal `expected`; everything past the first of them is extra.
            let mut seen_expected = false;
            let extra = self
                .names
                .iter()
                .filter(|name| {
                    let is_first_expected = !seen_expected && matches!(name, RequestedName::Uri(_));
                    seen_expected |= is_first_expected;
                    !is_first_expected
                })
                .map(RequestedName::describe)
                .collect();
            return Err(SignError::ExtraNames {
                expected: expected.to_string(),
                extra,
            });
        }
        Ok(())
    }
}

// === impl RequestedName ===

impl RequestedName {
    fn describe(&self) -> String {
        match self {
            Self::Uri(uri) => format!("URI({uri})"),
            Self::Other(other) => other.clone(),
        }
    }
}

impl From<&GeneralName<'_>> for RequestedName {
    fn from(name: &GeneralName<'_>) -> Self {
        match name {
            GeneralName::URI(uri) => Self::Uri((*uri).to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

/// The SANs and whether `CA:TRUE` is asked for, over every extension request in `info`.
fn requested_extensions(
    info: &X509CertificationRequestInfo<'_>,
) -> Result<(Vec<RequestedName>, bool), SignError> {
    let mut names = Vec::new();
    let mut requests_ca = false;
    let requested = info
        .iter_attributes()
        .filter_map(|attr| match attr.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(req) => Some(&req.extensions),
            _ => None,
        });
    for ext in requested.flatten() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                names.extend(san.general_names.iter().map(RequestedName::from));
            }
            ParsedExtension::BasicConstraints(bc) => requests_ca |= bc.ca,
            _ if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME => {
                return Err(malformed("unreadable subjectAltName extension"));
            }
            _ if ext.oid == OID_X509_EXT_BASIC_CONSTRAINTS => {
                return Err(malformed("unreadable basicConstraints extension"));
            }
            // Key usages and anything else requested are ignored: the CA sets its own.
            _ => {}
        }
    }
    Ok((names, requests_ca))
}

/// The CSR's key as rcgen wants it, if its type and size are accepted.
fn accepted_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<rcgen::SubjectPublicKeyInfo, SignError> {
    let alg = &spki.algorithm.algorithm;
    let refused = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => None,
            Some(c) => Some(format!("ECDSA on curve {c}")),
            None => Some("ECDSA without a named curve".to_string()),
        }
    } else if *alg == OID_SIG_ED25519 {
        None
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let bits = modulus_bits(rsa.modulus);
                (!RSA_BITS.contains(&bits)).then(|| format!("RSA of {bits} bits"))
            }
            _ => return Err(malformed("unreadable RSA public key")),
        }
    } else {
        Some(format!("key algorithm {alg}"))
    };
    if let Some(key) = refused {
        return Err(SignError::UnsupportedKey { key });
    }
    rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| SignError::UnsupportedKey {
        key: format!("key algorithm {alg} with these parameters"),
    })
}

/// Size of a big-endian modulus in bits. (x509-parser's `RSAPublicKey::key_size` assumes a
/// leading zero byte and under-counts otherwise.)
fn modulus_bits(modulus: &[u8]) -> usize {
    let significant: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(start) => &modulus[start..],
        None => &[],
    };
    match significant.first() {
        Some(first) => significant.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn malformed(reason: impl Into<String>) -> SignError {
    SignError::Malformed {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_csr(names: Vec<RequestedName>) -> Csr {
        let key = rcgen::KeyPair::generate().expect("key");
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        )
        .expect("spki");
        Csr {
            public_key,
            names,
            requests_ca: false,
        }
    }

    const ID: &str = "spiffe://td/service/a";

    #[test]
    fn identity_needs_exactly_the_expected_uri() {
        let uri = |u: &str| RequestedName::Uri(u.to_string());
        let dns = RequestedName::Other("DNSName(a.example)".to_string());

        assert_eq!(mk_csr(vec![uri(ID)]).check_identity(ID), Ok(()));
        assert!(matches!(
            mk_csr(vec![]).check_identity(ID),
            Err(SignError::MissingIdentity { .. })
        ));
        assert!(matches!(
            mk_csr(vec![dns.clone()]).check_identity(ID),
            Err(SignError::MissingIdentity { .. })
        ));
        assert_eq!(
            mk_csr(vec![uri(ID), uri("spiffe://td/service/b")]).check_identity(ID),
            Err(SignError::WrongIdentity {
                expected: ID.to_string(),
                found: "spiffe://td/service/b".to_string()
            })
        );
        assert_eq!(
            mk_csr(vec![dns.clone(), uri(ID), uri(ID)]).check_identity(ID),
            Err(SignError::ExtraNames {
                expected: ID.to_string(),
                extra: vec!["DNSName(a.example)".to_string(), format!("URI({ID})")]
            })
        );
    }

    #[test]
    fn modulus_bits_ignores_leading_zeros() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
        assert_eq!(modulus_bits(&[0xff; 256]), 2048);
    }
}
