//! `meshplane bootstrap --grpc`: a proxyless gRPC client's bootstrap from the flags, and
//! with `--certs-dir` its certificate from the control plane's CA, written as files gRPC
//! reads (`identity::enrol_files`) and kept renewed with `--follow`.
//!
//! A gRPC library cannot enrol at the CA itself; it only reads files (gRFC A29's
//! `file_watcher` plugin). So the enrolment is this command's: it writes the files before
//! the bootstrap that names them (a client started on the bootstrap finds them), and with
//! `--follow` stays running as the client's certificate keeper, as `meshplane identity` is
//! a self-run Envoy's.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::BootstrapArgs;
use crate::config::SidecarConfig;
use crate::descriptor::{self, LoadedDescriptor};
use crate::error::SidecarError;
use crate::grpc_bootstrap::{self, GrpcBootstrapSpec, GrpcCertificates, GrpcXdsTls};
use crate::identity::{self, CertPaths, FilesIdentity};

/// The enrolled client: its bootstrap, and with `--follow` what keeps its certificate
/// renewed.
#[derive(Debug)]
pub struct GrpcEnrolment {
    /// The bootstrap JSON, naming the certificate files.
    pub bootstrap: String,
    /// The certificate written (identity, serial, expiry).
    pub certificate: identity::CertInfo,
    renewal: Option<FilesIdentity>,
}

/// `meshplane bootstrap --grpc --certs-dir DIR [--follow]`: validates the descriptor,
/// obtains the service's certificate from the control plane's CA and writes it into `DIR`
/// (failing clearly, as `meshplane sidecar` does: CA unreachable without a usable cached
/// certificate, refused, wrong identity), then renders the bootstrap naming the files.
pub async fn enrol_grpc(args: BootstrapArgs) -> Result<GrpcEnrolment, SidecarError> {
    let follow = args.follow;
    let refresh_interval = args.certs_refresh_interval;
    let Some(dir) = args.certs_dir.clone() else {
        return Err(SidecarError::Flag {
            flag: "certs-dir",
            message: "give the directory the certificate files are written to".into(),
        });
    };
    if refresh_interval.is_zero() {
        return Err(SidecarError::Flag {
            flag: "certs-refresh-interval",
            message: "must be greater than zero".into(),
        });
    }
    let config = args.into_config()?;
    let loaded = descriptor::load(&config.descriptor)?;
    if config.control_plane.is_empty() {
        return Err(SidecarError::NoControlPlane);
    }
    let instance_id = config.instance_id_for(&loaded.descriptor);
    let source = config.ca_source(loaded.descriptor.service.clone());
    let enrolled = identity::enrol_files(source, dir)
        .await
        .map_err(SidecarError::Identity)?;
    let bootstrap = render(
        &config,
        &loaded,
        &instance_id,
        Some((enrolled.paths(), refresh_interval)),
    )?;
    Ok(GrpcEnrolment {
        bootstrap,
        certificate: enrolled.current(),
        renewal: follow.then_some(enrolled),
    })
}

// === impl GrpcEnrolment ===

impl GrpcEnrolment {
    /// Whether [`GrpcEnrolment::follow`] has anything to do (`--follow`).
    pub fn follows(&self) -> bool {
        self.renewal.is_some()
    }

    /// With `--follow`: renews the certificate files until `shutdown`. Otherwise returns
    /// at once.
    pub async fn follow(self, shutdown: CancellationToken) {
        if let Some(renewal) = self.renewal {
            renewal.keep_renewed(shutdown).await;
        }
    }
}

/// The bootstrap JSON of a proxyless gRPC client, with `certificates` (the files and how
/// often gRPC re-reads them) for mTLS to its callees.
pub(crate) fn render(
    config: &SidecarConfig,
    loaded: &LoadedDescriptor,
    instance_id: &str,
    certificates: Option<(&CertPaths, Duration)>,
) -> Result<String, SidecarError> {
    // The xDS connection's certificate: the host's, else the one from the CA (whose CA
    // bundle then also checks the control plane, unless --control-plane-ca-file says).
    let tls = match (config.xds_tls, &config.host_certs, certificates) {
        (false, _, _) => None,
        (true, Some(files), _) => Some(GrpcXdsTls {
            ca_file: config
                .control_plane_ca_file
                .as_deref()
                .unwrap_or(&files.ca_file),
            cert_file: &files.cert_file,
            key_file: &files.key_file,
            refresh_interval: None,
        }),
        (true, None, Some((paths, refresh_interval))) => Some(GrpcXdsTls {
            ca_file: config.control_plane_ca_file.as_deref().unwrap_or(&paths.ca),
            cert_file: &paths.cert,
            key_file: &paths.key,
            refresh_interval: Some(refresh_interval),
        }),
        (true, None, None) => {
            return Err(SidecarError::Flag {
                flag: "xds-tls",
                message: "a proxyless gRPC client reads its xDS certificate from files: give --cert-file, --key-file and --ca-file, or --certs-dir for a certificate from the control plane's CA".into(),
            });
        }
    };
    let value = grpc_bootstrap::grpc_bootstrap(&GrpcBootstrapSpec {
        descriptor: &loaded.written,
        instance_id,
        service: loaded.descriptor.service.as_ref(),
        datacenter: &config.datacenter,
        control_plane: &config.control_plane,
        tls,
        certificates: certificates.map(|(paths, refresh_interval)| GrpcCertificates {
            cert_file: &paths.cert,
            key_file: &paths.key,
            ca_file: &paths.ca,
            refresh_interval,
        }),
    });
    serde_json::to_string_pretty(&value)
        .map_err(|e| SidecarError::io("cannot encode the bootstrap")(std::io::Error::other(e)))
}
