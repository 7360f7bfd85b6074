//! The service's identity, served to its Envoy through SDS on a local Unix socket.
//!
//! Envoy fetches two secrets from its sidecar: [`IDENTITY_SECRET`] (certificate chain and
//! private key) and [`TRUST_SECRET`] (the CA bundle peers are verified against). The key is
//! either a file the deployment put on the host or one generated here for a CSR signed by the
//! control plane's CA; either way it never crosses the network, and Envoy picks up a new
//! certificate from the SDS stream without a restart.
//!
//! Start reading at [`start`]. `material` checks a certificate, key and CA bundle and turns
//! them into `Secret`s; `sds` owns the socket and the server; `host_files` and `ca_client`
//! keep the secrets fresh (file polling, renewal before expiry); `cache` keeps the last
//! CA-issued certificate on disk, so a sidecar restarted while the CA is unavailable keeps
//! serving (see [`IdentityConfig::cache_dir`]).
//!
//! A proxyless gRPC client has no SDS: [`enrol_files`] writes the certificate from the
//! control plane's CA as files its gRPC library reads (`files`), and
//! [`FilesIdentity::keep_renewed`] replaces them before expiry, the same renewal as a
//! sidecar's going to the files instead of the SDS server.
//!
//! [`IDENTITY_SECRET`]: meshplane_model::identity::IDENTITY_SECRET
//! [`TRUST_SECRET`]: meshplane_model::identity::TRUST_SECRET

mod ca_client;
mod cache;
mod error;
mod files;
mod host_files;
mod material;
mod sds;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use meshplane_model::ServiceName;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use error::IdentityError;
pub use files::CertPaths;

/// How often host files are checked for a replacement, by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Fraction of a certificate's lifetime after which it is renewed, by default.
pub const DEFAULT_RENEW_FRACTION: f64 = 0.5;
/// First retry delay after a failed renewal, by default.
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay after failed renewals, by default.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Where the certificate comes from.
#[derive(Clone)]
pub enum IdentitySource {
    /// Files the deployment put on the host (`--cert-file`/`--key-file`/`--ca-file`);
    /// watched: replaced files are picked up.
    HostFiles {
        /// PEM certificate chain, leaf first.
        cert: PathBuf,
        /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1; not encrypted).
        key: PathBuf,
        /// PEM CA bundle peers are verified against.
        ca: PathBuf,
    },
    /// The control plane's CA: a key generated here, a CSR POSTed to
    /// `<admin_url>/api/ca/sign` with `Authorization: Bearer <token>` when a token is set.
    ControlPlaneCa {
        /// The admin API of each control-plane instance sharing the CA, e.g.
        /// `http://10.0.0.1:18080`, tried in order (an unavailable one is passed over).
        admin_urls: Vec<String>,
        /// Bearer token for the admin API. Never logged.
        token: Option<String>,
        /// This sidecar's service.
        service: ServiceName,
        /// Trust domain of the SPIFFE id requested.
        trust_domain: String,
        /// CA bundle (PEM file) the admin API's certificate must chain to when `admin_url`
        /// is `https://`; `None`: the system's roots.
        ca_bundle: Option<PathBuf>,
    },
}

/// What [`start`] needs.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Where the certificate comes from.
    pub source: IdentitySource,
    /// The Unix socket Envoy's `meshplane_sds` cluster connects to (created with mode 0600).
    pub socket: PathBuf,
    /// How often host files are checked for a replacement.
    pub poll_interval: Duration,
    /// A CA-issued certificate is renewed after this fraction of its lifetime (0 < f ≤ 1).
    pub renew_fraction: f64,
    /// First retry delay after a failed renewal.
    pub retry_min: Duration,
    /// Longest retry delay after failed renewals (the delay doubles up to this).
    pub retry_max: Duration,
    /// Where CA-issued certificates are cached (`identity.pem`: chain, private key and CA
    /// bundle, under a header naming the trust domain and the CA URL; mode 0600, the
    /// directory created 0700). With a cache, a start while the CA is unreachable or
    /// answering 5xx serves the cached certificate if it is still valid, belongs to this
    /// mesh (trust domain and CA URL) and names this service, and renews it as soon as the
    /// CA answers. A cached certificate of another mesh is discarded (logged) at start.
    /// A directory private to this sidecar and kept across restarts, e.g.
    /// `<work dir>/identity`. `None`: no cache, such a start fails. Ignored for host files.
    pub cache_dir: Option<PathBuf>,
}

/// The certificate currently served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The leaf's first URI SAN (the SPIFFE id), if it has one.
    pub identity: Option<String>,
    /// The leaf's expiry.
    pub not_after: SystemTime,
    /// The leaf's serial number, lowercase hex.
    pub serial_hex: String,
    /// 1 for the first certificate served, incremented on every replacement.
    pub generation: u64,
}

/// Follows the certificate served; the serving itself runs in the background until the
/// shutdown token given to [`start`] is cancelled.
#[derive(Debug, Clone)]
pub struct IdentityHandle {
    info_rx: watch::Receiver<CertInfo>,
}

/// Loads or obtains the first certificate (failing clearly and early: missing or unreadable
/// file, key not matching the certificate, expired certificate, CA refusing, CA unavailable
/// without a usable cached certificate), binds the socket, serves SDS until `shutdown`, and
/// keeps the secrets fresh in the background.
pub async fn start(
    config: IdentityConfig,
    shutdown: CancellationToken,
) -> Result<IdentityHandle, IdentityError> {
    config.check()?;
    // Everything that can fail is done before the socket exists, so a sidecar that cannot
    // serve an identity never offers Envoy an empty SDS socket.
    let (material, leaf, refresher) = match &config.source {
        IdentitySource::HostFiles { cert, key, ca } => {
            let files = host_files::HostFiles::new(cert.clone(), key.clone(), ca.clone());
            let (material, leaf) = files.load().await?;
            let digest = material.digest();
            (material, leaf, Refresher::HostFiles(files, digest))
        }
        IdentitySource::ControlPlaneCa {
            admin_urls,
            token,
            service,
            trust_domain,
            ca_bundle,
        } => {
            let client = ca_client::CaClient::new(
                admin_urls,
                token.clone(),
                service,
                trust_domain,
                ca_bundle.as_deref(),
                config.cache_dir.as_deref(),
            )?;
            let first = client.first().await?;
            let leaf = first.leaf.clone();
            (
                first.material,
                leaf,
                Refresher::Ca(Box::new(client), first.leaf, first.renew_now),
            )
        }
    };
    if leaf.identity.is_none() {
        tracing::warn!(
            "the service certificate has no URI SAN (SPIFFE id): peers that authorize callers will refuse it"
        );
    }
    let publisher = sds::Publisher::new(&material, &leaf)?;
    drop(material);
    let socket = sds::bind(&config.socket)?;
    sds::spawn_server(socket, &publisher, shutdown.clone());
    match refresher {
        Refresher::HostFiles(files, digest) => {
            tokio::spawn(files.watch(digest, config.poll_interval, publisher.clone(), shutdown));
        }
        Refresher::Ca(client, first, renew_now) => {
            let renewal = ca_client::Renewal {
                renew_fraction: config.renew_fraction,
                retry_min: config.retry_min,
                retry_max: config.retry_max,
            };
            tokio::spawn((*client).keep_renewed(
                first,
                renew_now,
                renewal,
                publisher.clone(),
                shutdown,
            ));
        }
    }
    tracing::info!(
        socket = %config.socket.display(),
        identity = leaf.identity.as_deref().unwrap_or("-"),
        serial = %leaf.serial_hex,
        not_after = %material::display_time(leaf.not_after),
        "serving the service identity over SDS"
    );
    Ok(IdentityHandle {
        info_rx: publisher.subscribe(),
    })
}

/// Where a checked certificate goes: the SDS server, or a proxyless client's files.
trait Sink: Send + Sync + 'static {
    /// Serves `material` from now on; returns its generation (1 for the first).
    fn publish(
        &self,
        material: &material::Material,
        leaf: &material::Leaf,
    ) -> Result<u64, IdentityError>;
}

/// The service's certificate from the control plane's CA, written as files for a
/// proxyless gRPC client: obtained by [`enrol_files`], renewed by
/// [`FilesIdentity::keep_renewed`].
#[derive(Debug)]
pub struct FilesIdentity {
    files: files::CertFiles,
    paths: CertPaths,
    client: ca_client::CaClient,
    leaf: material::Leaf,
    renew_now: bool,
}

/// Obtains the service's certificate from the control plane's CA (`source` must be
/// [`IdentitySource::ControlPlaneCa`]) and writes it into `dir` ([`CertPaths::under`]),
/// failing clearly as [`start`] does. The last certificate is also cached in `dir`, so a
/// start while the CA is unavailable writes the cached one if it is still valid (and
/// [`FilesIdentity::keep_renewed`] replaces it as soon as the CA answers).
pub async fn enrol_files(
    source: IdentitySource,
    dir: PathBuf,
) -> Result<FilesIdentity, IdentityError> {
    let IdentitySource::ControlPlaneCa {
        admin_urls,
        token,
        service,
        trust_domain,
        ca_bundle,
    } = source
    else {
        return Err(IdentityError::Config(
            "certificate files are obtained from the control plane's CA; with host files, point gRPC at them".to_owned(),
        ));
    };
    let client = ca_client::CaClient::new(
        &admin_urls,
        token,
        &service,
        &trust_domain,
        ca_bundle.as_deref(),
        Some(&dir),
    )?;
    let first = client.first().await?;
    let files = files::CertFiles::new(dir.clone());
    files.publish(&first.material, &first.leaf)?;
    tracing::info!(
        dir = %dir.display(),
        identity = first.leaf.identity.as_deref().unwrap_or("-"),
        serial = %first.leaf.serial_hex,
        not_after = %material::display_time(first.leaf.not_after),
        "wrote the service certificate"
    );
    Ok(FilesIdentity {
        files,
        paths: CertPaths::under(&dir),
        client,
        leaf: first.leaf,
        renew_now: first.renew_now,
    })
}

// === impl FilesIdentity ===

impl FilesIdentity {
    /// Where the files are.
    pub fn paths(&self) -> &CertPaths {
        &self.paths
    }

    /// The certificate written.
    pub fn current(&self) -> CertInfo {
        files::info(&self.leaf, 1)
    }

    /// Renews the certificate after half its remaining lifetime (at once if it came from
    /// the cache), with a new key each time, rewriting the files, until `shutdown`;
    /// failures are retried with backoff while the files keep the current certificate.
    pub async fn keep_renewed(self, shutdown: CancellationToken) {
        let renewal = ca_client::Renewal {
            renew_fraction: DEFAULT_RENEW_FRACTION,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
        };
        self.client
            .keep_renewed(self.leaf, self.renew_now, renewal, self.files, shutdown)
            .await;
    }
}

/// What keeps the secrets fresh after the first certificate.
enum Refresher {
    /// The files and the digest of the content served.
    HostFiles(host_files::HostFiles, u64),
    /// The client, the certificate served and whether to renew it at once.
    Ca(Box<ca_client::CaClient>, material::Leaf, bool),
}

// === impl IdentityConfig ===

impl IdentityConfig {
    /// A configuration with the default intervals.
    pub fn new(source: IdentitySource, socket: PathBuf) -> Self {
        IdentityConfig {
            source,
            socket,
            poll_interval: DEFAULT_POLL_INTERVAL,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
            cache_dir: None,
        }
    }

    fn check(&self) -> Result<(), IdentityError> {
        let bad = |message: &str| Err(IdentityError::Config(message.to_owned()));
        if !(self.renew_fraction > 0.0 && self.renew_fraction <= 1.0) {
            return bad("renew_fraction must be greater than 0 and at most 1");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must be greater than zero");
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return bad("retry_min must be greater than zero and at most retry_max");
        }
        Ok(())
    }
}

// === impl IdentitySource ===

impl fmt::Debug for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentitySource::HostFiles { cert, key, ca } => f
                .debug_struct("HostFiles")
                .field("cert", cert)
                .field("key", key)
                .field("ca", ca)
                .finish(),
            IdentitySource::ControlPlaneCa {
                admin_urls,
                token,
                service,
                trust_domain,
                ca_bundle,
            } => f
                .debug_struct("ControlPlaneCa")
                .field("admin_urls", admin_urls)
                .field("token_set", &token.is_some())
                .field("service", service)
                .field("trust_domain", trust_domain)
                .field("ca_bundle", ca_bundle)
                .finish(),
        }
    }
}

// === impl IdentityHandle ===

impl IdentityHandle {
    /// The certificate served now.
    pub fn current(&self) -> CertInfo {
        self.info_rx.borrow().clone()
    }

    /// Follows certificate replacements.
    pub fn subscribe(&self) -> watch::Receiver<CertInfo> {
        self.info_rx.clone()
    }
}

#[cfg(test)]
mod tests;
