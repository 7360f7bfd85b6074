//! Meshplane's built-in certificate authority. It owns the CA certificate and key (loaded
//! from the operator's files or generated once into a directory) and decides which workload
//! certificates to issue: a CSR gets a short-lived leaf only if it proves possession of its
//! key, uses an accepted key type and asks for exactly one name, the SPIFFE id
//! (`spiffe://<trust-domain>/service/<name>`) of the service it is requested for.
//!
//! Start reading at [`Authority`]: [`Authority::load_or_generate`] / [`Authority::from_pem`]
//! build it, [`Authority::sign`] is the whole policy. `csr` is the untrusted-input side
//! (parsing and checking a CSR), `certificate` the fields the CA writes. The wire types
//! ([`SignRequest`], [`SignResponse`]) and SPIFFE id vocabulary live in
//! `meshplane_model::identity`; the HTTP endpoint that calls [`Authority::sign`] lives in the
//! admin API. Apart from [`Authority::load_or_generate`] the crate does no I/O.
//!
//! [`SignRequest`]: meshplane_model::identity::SignRequest
//! [`SignResponse`]: meshplane_model::identity::SignResponse

use std::time::Duration;

mod armor;
mod authority;
mod certificate;
mod csr;
mod error;
mod persistence;
mod request;

pub use authority::Authority;
pub use certificate::certificate_identity;
pub use error::{CaError, SignError};
pub use request::key_and_csr;

/// Default lifetime of an issued workload certificate (`--cert-ttl`).
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest accepted certificate lifetime: that of the generated CA, [`CA_VALIDITY`].
pub const MAX_CERT_TTL: Duration = CA_VALIDITY;

/// Lifetime of a generated CA certificate: ten years (3,653 days).
pub const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600);

/// How far before "now" certificates become valid, so a peer whose clock is slightly behind
/// accepts a fresh certificate.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// File name of the CA certificate in the CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";

/// File name of the CA private key in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
