//! What can go wrong loading the CA and signing a CSR. No variant ever carries key material.

use std::{io, path::PathBuf};

/// Why the CA could not be set up, or a certificate or key could not be generated or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The trust domain is not a valid SPIFFE trust domain name.
    #[error(
        "trust domain `{0}` is invalid: use 1 to 255 lowercase letters, digits, `.`, `-` or `_`, \
         such as `meshplane.local`"
    )]
    InvalidTrustDomain(String),

    /// The certificate TTL is zero or longer than [`crate::MAX_CERT_TTL`].
    #[error(
        "certificate TTL of {ttl_secs}s is out of range: use more than 0s and at most {max_secs}s"
    )]
    InvalidTtl {
        /// The rejected TTL in seconds.
        ttl_secs: u64,
        /// The longest TTL allowed, in seconds.
        max_secs: u64,
    },

    /// A PEM certificate could not be read.
    #[error("{what} is not a usable PEM `CERTIFICATE`: {reason}")]
    BadCertificate {
        /// Which certificate (`CA certificate`, `certificate`).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The CA certificate may not issue certificates: it lacks `basicConstraints CA:TRUE`, or
    /// its key usage lacks `keyCertSign`.
    #[error(
        "CA certificate `{subject}` cannot issue certificates ({reason}); give the certificate \
         of a CA, not of a leaf"
    )]
    NotCa {
        /// The certificate's subject.
        subject: String,
        /// What it lacks.
        reason: &'static str,
    },

    /// The CA key could not be read.
    #[error(
        "CA key is not a usable PEM private key ({reason}); give an unencrypted PKCS#8 \
         `PRIVATE KEY` (ECDSA P-256/P-384, Ed25519 or RSA)"
    )]
    BadKey {
        /// What the parser said (never the key itself).
        reason: String,
    },

    /// The CA key is not the private half of the CA certificate's public key.
    #[error(
        "CA key does not match the public key of CA certificate `{subject}`; check that the \
         certificate and key files belong together"
    )]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },

    /// One of `ca.crt`/`ca.key` exists without the other.
    #[error(
        "`{}` is missing but `{}` exists; restore the missing file, or remove `{}` to generate \
         a new CA (every workload will then need a new certificate)",
        missing.display(),
        present.display(),
        present.display()
    )]
    MissingFile {
        /// The file that is absent.
        missing: PathBuf,
        /// The file that is present.
        present: PathBuf,
    },

    /// Reading or writing a CA file failed.
    #[error("could not {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done (`read`, `create`, ...).
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A certificate has no URI SAN, or more than one.
    #[error("certificate has {found} URI SANs; a workload certificate has exactly one SPIFFE id")]
    NoSingleIdentity {
        /// How many URI SANs the certificate has.
        found: usize,
    },

    /// Generating a key, CSR or certificate failed.
    #[error("could not generate {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Why a CSR was refused. Every variant but [`SignError::Issue`] is the requester's fault
/// (HTTP 400); `Issue` is the CA's (HTTP 500).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The requested service is not a valid service name.
    #[error("requested service `{service}` is not a valid service name: {reason}")]
    InvalidService {
        /// The requested service, as sent.
        service: String,
        /// Why it is invalid.
        reason: String,
    },

    /// The CSR is not a single well-formed PEM `CERTIFICATE REQUEST`.
    #[error("CSR is not a single PEM `CERTIFICATE REQUEST`: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },

    /// The CSR's signature does not verify with the public key it carries, so the requester
    /// has not shown that it holds the private key.
    #[error(
        "CSR signature does not verify against its own public key; sign the CSR with the \
         private key whose public key it carries"
    )]
    BadSignature,

    /// The CSR's key type or size is not accepted.
    #[error(
        "CSR key ({key}) is not supported; use ECDSA P-256 or P-384, Ed25519, or RSA of at \
         least 2048 bits"
    )]
    UnsupportedKey {
        /// The key's algorithm and size, as far as known.
        key: String,
    },

    /// The CSR has no URI SAN.
    #[error("CSR has no URI SAN; request exactly one: `{expected}`")]
    MissingIdentity {
        /// The SPIFFE id the CSR must request.
        expected: String,
    },

    /// The CSR requests a SPIFFE id other than the requested service's.
    #[error("CSR requests identity `{found}` but the service's identity is `{expected}`")]
    WrongIdentity {
        /// The SPIFFE id the CSR must request.
        expected: String,
        /// The URI SAN the CSR requests.
        found: String,
    },

    /// The CSR requests names besides the service's SPIFFE id.
    #[error(
        "CSR requests names besides `{expected}`: {}; request exactly one SAN, the URI `{expected}`",
        extra.join(", ")
    )]
    ExtraNames {
        /// The SPIFFE id the CSR must request.
        expected: String,
        /// The other names, such as `DNSName(example.org)`.
        extra: Vec<String>,
    },

    /// The CSR requests `basicConstraints CA:TRUE`.
    #[error(
        "CSR requests a CA certificate (basicConstraints CA:TRUE); workloads get leaf certificates only"
    )]
    RequestsCa,

    /// The CA could not issue the certificate (its own fault, not the requester's).
    #[error("the CA could not issue the certificate: {0}")]
    Issue(String),
}
