//! Why the service identity could not be loaded, obtained or served.
//!
//! Messages name the file or URL and what is wrong. They never contain key material or the
//! token: only paths, URLs, certificate facts and the CA's own answer.

use std::path::PathBuf;

/// An identity failure.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The configuration itself is inconsistent.
    #[error("identity configuration: {0}")]
    Config(String),
    /// A host file is missing or unreadable.
    #[error("cannot read `{}`: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A certificate or CA bundle is not usable (no PEM certificate, unparsable, expired).
    #[error("{origin}: {reason}")]
    Certificate {
        /// Where the certificate came from (a path or the CA's URL).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A private key is not usable (not PEM, encrypted, unsupported algorithm).
    #[error("{origin}: {reason}")]
    Key {
        /// Where the key came from.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The private key is not the key of the leaf certificate (often a half-done rotation:
    /// replace both files, the key first).
    #[error(
        "the private key in {key} does not match the certificate in {cert}: give the key of that certificate"
    )]
    KeyMismatch {
        /// Where the key came from.
        key: String,
        /// Where the certificate came from.
        cert: String,
    },
    /// A local key or CSR could not be generated.
    #[error("cannot generate a key and certificate request: {0}")]
    Csr(String),
    /// The control plane's CA could not be reached (or did not answer in time).
    #[error(
        "cannot reach the control plane's CA at {url}: {reason} (check the control plane's admin address)"
    )]
    CaUnreachable {
        /// The signing URL.
        url: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// The control plane's admin API presented a certificate this sidecar does not trust.
    /// Not an outage: a cached certificate does not stand in (the peer may not be the
    /// control plane at all).
    #[error(
        "the control plane's CA at {url} presented a certificate that is not trusted: {reason} (give the CA bundle that signed the admin API's certificate as --control-plane-ca-file)"
    )]
    CaCertificate {
        /// The signing URL.
        url: String,
        /// The TLS error, with its causes.
        reason: String,
    },
    /// The control plane's CA answered with an error status.
    #[error("the control plane's CA at {url} refused the request: {status}: {body}")]
    CaRefused {
        /// The signing URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The CA's explanation (its response body, truncated).
        body: String,
    },
    /// The control plane's CA answered with something that is not a usable certificate.
    #[error("the control plane's CA at {url} answered with an unusable certificate: {reason}")]
    CaResponse {
        /// The signing URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The control plane's CA is unavailable (unreachable or answering 5xx) at start, and
    /// the cache holds no certificate that could be served until it is back.
    ///
    /// `ca` is part of the message rather than a `source`, so printing the error with its
    /// causes does not repeat it.
    #[error("{ca}; no usable cached certificate in `{}` to serve meanwhile: {reason}", cache.display())]
    NoUsableCache {
        /// Why the CA could not issue a certificate.
        ca: Box<IdentityError>,
        /// The cache file.
        cache: PathBuf,
        /// Why the cached certificate cannot be used (missing, expired, another identity…).
        reason: String,
    },
    /// The SDS socket could not be created.
    #[error("cannot serve SDS on `{}`: {error}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The certificate files of a proxyless gRPC client could not be written.
    #[error("cannot write the certificate files in `{}`: {error}", dir.display())]
    Files {
        /// The directory (`--certs-dir`).
        dir: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The secrets could not be published (a bug: two secrets with one name).
    #[error("cannot publish the secrets: {0}")]
    Snapshot(#[from] meshplane_xds::SnapshotError),
}

// === impl IdentityError ===

impl IdentityError {
    /// Whether the CA is unavailable rather than refusing: unreachable, or a 5xx answer.
    /// Only then may a cached certificate stand in; a 4xx is a decision (wrong token,
    /// service not allowed) that a cache must not override.
    pub(super) fn is_ca_outage(&self) -> bool {
        match self {
            IdentityError::CaUnreachable { .. } => true,
            IdentityError::CaRefused { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// An error and its causes on one line (transport errors hide the useful part in causes).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}
