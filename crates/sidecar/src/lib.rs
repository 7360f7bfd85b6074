//! `meshplane sidecar` and `meshplane bootstrap`: from a service descriptor to a running,
//! registered, supervised Envoy.
//!
//! This crate owns the sidecar's side of the mesh: validating `meshplane.yaml` before Envoy
//! starts, the Envoy bootstrap (node identity and the descriptor as node metadata, ADS to the
//! control plane with failover, admin on 127.0.0.1), finding and launching Envoy, restarting
//! it after crashes, hot-restarting it on SIGHUP (same base id, next epoch), and
//! registering the **Envoy ingress port** in a Consul-compatible registry once Envoy is live
//! (deregistering on SIGTERM/SIGINT).
//!
//! Start reading at [`Sidecar::run`], then `setup` (what is decided before Envoy starts),
//! `supervisor` (the loop), [`bootstrap`] (the pure bootstrap), `announce` and
//! [`registration`]. [`access_log`] collects Envoy's access-log lines (its stdout) to stdout
//! or a file. [`args`] holds the command-line flags the `meshplane` binary embeds.
//! [`grpc_bootstrap`] is a proxyless gRPC client's bootstrap, and [`enrol_grpc`] its
//! certificate from the control plane's CA as files (`--certs-dir`, `--follow`).

pub mod access_log;
pub mod args;
pub mod bootstrap;
pub mod config;
pub mod descriptor;
pub mod dry_run;
pub mod egress_flags;
pub mod envoy;
pub mod grpc_bootstrap;
mod grpc_enrolment;
pub mod identity;
pub mod registration;
pub mod restart_policy;
pub mod stats;
pub mod traffic_report;

mod announce;
mod error;
mod relay;
mod setup;
mod signals;
mod status;
mod supervisor;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use args::{BootstrapArgs, IdentityArgs, SidecarArgs};
pub use config::{ControlPlaneAddr, SidecarConfig, XdsFlavour};
pub use dry_run::{DiffArgs, run_diff};
pub use error::SidecarError;
pub use grpc_enrolment::{GrpcEnrolment, enrol_grpc};
pub use status::{Outcome, SidecarStatus};

/// A sidecar: configured, not yet running. [`Sidecar::status`] can be watched while it runs.
#[derive(Debug)]
pub struct Sidecar {
    config: SidecarConfig,
    status_tx: watch::Sender<SidecarStatus>,
}

impl Sidecar {
    /// A sidecar for `config`.
    pub fn new(config: SidecarConfig) -> Self {
        let (status_tx, _) = watch::channel(SidecarStatus::default());
        Sidecar { config, status_tx }
    }

    /// Follows what the sidecar is doing (current Envoy, draining epochs, registration).
    pub fn status(&self) -> watch::Receiver<SidecarStatus> {
        self.status_tx.subscribe()
    }

    /// Validates the descriptor, starts Envoy, registers it once ready and supervises it
    /// until `shutdown` is cancelled (then deregisters and stops Envoy: [`Outcome::Stopped`])
    /// or Envoy keeps crashing ([`Outcome::EnvoyFailed`], also after deregistering). Each
    /// message on `hot_restart_rx` hot-restarts Envoy. A bad descriptor is an error
    /// returned before Envoy is started.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        hot_restart_rx: mpsc::Receiver<()>,
    ) -> Result<Outcome, SidecarError> {
        let mut prepared = setup::Prepared::new(self.config)?;
        if let Some((listener, addr)) = prepared.relay.as_mut()
            && let Some(listener) = listener.take()
        {
            listener
                .set_nonblocking(true)
                .map_err(SidecarError::io("cannot set up the admin relay"))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(SidecarError::io("cannot set up the admin relay"))?;
            tracing::info!(relay = %addr, "admin relay listening");
            tokio::spawn(relay::serve(
                listener,
                prepared.admin,
                prepared.config.token.clone(),
                shutdown.clone(),
            ));
        }
        if let Some((listener, addr)) = prepared.egress_flags.as_mut()
            && let Some(listener) = listener.take()
        {
            let what = "cannot set up the egress flags server";
            listener
                .set_nonblocking(true)
                .map_err(SidecarError::io(what))?;
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(SidecarError::io(what))?;
            tracing::info!(egress_flags = %addr, "egress flags server listening");
            let cache = prepared.work_dir().join(egress_flags::CACHE_FILE);
            let (known_tx, known_rx) = watch::channel(egress_flags::load_cache(&cache));
            let stale = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
            let direct = traffic_report::DirectCalls::default();
            tokio::spawn(egress_flags::serve(
                listener,
                known_rx,
                stale.clone(),
                direct.clone(),
                shutdown.clone(),
            ));
            let report = traffic_report::ReportSpec {
                admin_urls: prepared.config.ca_admin_urls(),
                token: prepared
                    .config
                    .ca_token
                    .clone()
                    .or_else(|| prepared.config.token.clone()),
                http: prepared.control_plane_client()?,
                envoy_admin: prepared.admin,
                service: prepared.loaded.descriptor.service.clone(),
                instance: prepared.instance_id.clone(),
                datacenter: prepared.config.datacenter.clone(),
                interval: prepared.config.traffic_report_interval,
                direct,
                status: self.status_tx.subscribe(),
            };
            tokio::spawn(traffic_report::run(report, shutdown.clone()));
            let spec = egress_flags::FollowSpec {
                admin_urls: prepared.config.ca_admin_urls(),
                query: prepared.egress_flags_query.subscribe(),
                cache,
                http: prepared.control_plane_client()?,
                stale,
            };
            tokio::spawn(egress_flags::follow(spec, known_tx, shutdown.clone()));
        }
        // Kept until the sidecar stops: it serves Envoy's certificate.
        let _identity = identity::start(prepared.identity_config(), shutdown.clone())
            .await
            .map_err(SidecarError::Identity)?;
        tracing::info!(
            instance_id = %prepared.instance_id,
            service = %prepared.loaded.descriptor.service,
            admin = %prepared.admin,
            base_id = prepared.base_id,
            envoy = %prepared.envoy.display(),
            bootstrap = %prepared.bootstrap_path.display(),
            "starting sidecar"
        );
        self.status_tx.send_modify(|s| {
            s.instance_id = prepared.instance_id.clone();
            s.admin = Some(prepared.admin);
            s.base_id = prepared.base_id;
        });
        supervisor::Supervisor::new(prepared, self.status_tx)
            .run(shutdown, hot_restart_rx)
            .await
    }
}

/// `meshplane sidecar`: runs the sidecar with process signals wired in (SIGTERM/SIGINT stop,
/// SIGHUP hot-restarts). The exit code to use is [`Outcome::exit_code`].
pub async fn run_sidecar(args: SidecarArgs) -> Result<Outcome, SidecarError> {
    let config = args.into_config()?;
    let shutdown = CancellationToken::new();
    let hot_restart_rx = signals::install(shutdown.clone())
        .map_err(SidecarError::io("cannot listen for signals"))?;
    let outcome = Sidecar::new(config)
        .run(shutdown.clone(), hot_restart_rx)
        .await;
    shutdown.cancel();
    outcome
}

/// `meshplane identity`: serves the certificate of the descriptor's service over SDS at
/// `<work dir>/sds.sock` (the socket `meshplane bootstrap` points Envoy to) until SIGTERM or
/// SIGINT, for hosts that run Envoy themselves. Host files or the control plane's CA, as for
/// `meshplane sidecar`.
pub async fn run_identity(args: IdentityArgs) -> Result<(), SidecarError> {
    let config = args.into_config()?;
    let loaded = descriptor::load(&config.descriptor)?;
    let work_dir = config.work_dir_for(&config.instance_id_for(&loaded.descriptor));
    let shutdown = CancellationToken::new();
    let _hot_restart = signals::install(shutdown.clone())
        .map_err(SidecarError::io("cannot listen for signals"))?;
    let identity_config = config.identity_config(loaded.descriptor.service.clone(), &work_dir);
    let _identity = identity::start(identity_config, shutdown.clone())
        .await
        .map_err(SidecarError::Identity)?;
    shutdown.cancelled().await;
    Ok(())
}

/// `meshplane bootstrap`: the bootstrap JSON the sidecar would write, for hosts that run
/// Envoy themselves, or with `--grpc` a proxyless gRPC client's. Envoy is neither found nor
/// started; the descriptor is validated. With `--certs-dir` (which obtains a certificate),
/// use [`enrol_grpc`].
pub fn render_bootstrap(args: BootstrapArgs) -> Result<String, SidecarError> {
    let grpc = args.grpc;
    if args.certs_dir.is_some() {
        return Err(SidecarError::Flag {
            flag: "certs-dir",
            message: "obtaining a certificate is `enrol_grpc`'s job".into(),
        });
    }
    let config = args.into_config()?;
    let loaded = descriptor::load(&config.descriptor)?;
    if config.control_plane.is_empty() {
        return Err(SidecarError::NoControlPlane);
    }
    let d = &loaded.descriptor;
    let instance_id = config.instance_id_for(d);
    if grpc {
        return grpc_enrolment::render(&config, &loaded, &instance_id, None);
    }
    let sds_socket = config::sds_socket(&config.work_dir_for(&instance_id));
    let value = bootstrap::bootstrap(&bootstrap::BootstrapSpec {
        descriptor: &loaded.written,
        instance_id: &instance_id,
        service: d.service.as_ref(),
        datacenter: &config.datacenter,
        admin: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, config.admin_port)),
        control_plane: &config.control_plane,
        xds: config.xds,
        listen_address: config.listen_address,
        admin_relay: None,
        xds_tls: config.xds_tls_mode(),
        sds_socket: &sds_socket,
        stats: &d.stats,
        // Without a sidecar nothing registers a picked port: only the descriptor's.
        metrics_port: d.metrics.port,
        // No sidecar process: nothing serves the egress flags.
        egress_flags: None,
    });
    serde_json::to_string_pretty(&value)
        .map_err(|e| SidecarError::io("cannot encode the bootstrap")(std::io::Error::other(e)))
}

/// Writes `text` to `path` through a temporary file beside it and a rename, so a reader
/// (a gRPC client reading `GRPC_XDS_BOOTSTRAP`) never sees half a file.
pub fn write_file_atomically(path: &std::path::Path, text: &str) -> Result<(), SidecarError> {
    let what = format!("cannot write {}", path.display());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(SidecarError::io(what.clone()))?;
    std::fs::rename(&tmp, path).map_err(SidecarError::io(what))
}
