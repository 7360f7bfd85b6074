//! Everything decided before Envoy starts, in order: validate the descriptor (a bad one
//! stops here, Envoy never started), fix the instance id, admin port and base id, find
//! Envoy, write the bootstrap.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::access_log::AccessLogSink;
use crate::bootstrap::{BootstrapSpec, bootstrap};
use crate::config::SidecarConfig;
use crate::descriptor::{self, LoadError, LoadedDescriptor};
use crate::envoy::{EnvoyCommand, base_id_for, find_envoy, free_loopback_port, free_port};
use crate::error::SidecarError;
use crate::registration::{ServiceRegistration, service_registration};

/// The sidecar's fixed decisions plus the current descriptor.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub config: SidecarConfig,
    pub loaded: LoadedDescriptor,
    pub instance_id: String,
    pub admin: SocketAddr,
    /// The scrape listener's port: the descriptor's `metrics.port`, or one picked once
    /// (kept across Envoy restarts, so hot restarts hand the socket over).
    pub metrics_port: u16,
    pub base_id: u32,
    pub envoy: PathBuf,
    pub bootstrap_path: PathBuf,
    /// The admin relay's bound socket (taken by `Sidecar::run`) and its address.
    pub relay: Option<(Option<std::net::TcpListener>, SocketAddr)>,
    /// The egress flags server's bound socket (taken by `Sidecar::run`) and its address, on
    /// 127.0.0.1, when the descriptor has an egress listener.
    pub egress_flags: Option<(Option<std::net::TcpListener>, SocketAddr)>,
    /// The decisions query for this instance (`egress_flags::decisions_query`; empty while
    /// the descriptor has no egress port: nothing to follow), updated when
    /// a reload changes the descriptor's tags or dependencies.
    pub egress_flags_query: tokio::sync::watch::Sender<String>,
    /// `--control-plane-ca-file`'s certificates, for the https:// registry.
    pub control_plane_roots: Option<Vec<reqwest::Certificate>>,
    /// Where Envoy's access-log lines go (opened before Envoy starts).
    pub access_log: Arc<AccessLogSink>,
}

impl Prepared {
    pub(crate) fn new(config: SidecarConfig) -> Result<Self, SidecarError> {
        let loaded = descriptor::load(&config.descriptor)?;
        if config.control_plane.is_empty() {
            return Err(SidecarError::NoControlPlane);
        }
        let d = &loaded.descriptor;
        let instance_id = config.instance_id_for(d);
        let admin_port = match config.admin_port {
            0 => free_loopback_port().map_err(SidecarError::io("cannot pick a free admin port"))?,
            p => p,
        };
        let metrics_port = match d.metrics.port {
            Some(p) => p,
            None => free_port(config.listen_address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
                .map_err(SidecarError::io("cannot pick a free port for the metrics listener; set metrics.port in the descriptor"))?,
        };
        let base_id = config.base_id.unwrap_or_else(|| base_id_for(&instance_id));
        let envoy = find_envoy(config.envoy.as_deref())?;
        let control_plane_roots = config
            .control_plane_ca_file
            .as_deref()
            .map(crate::config::read_ca_bundle)
            .transpose()
            .map_err(|e| SidecarError::Flag {
                flag: "control-plane-ca-file",
                message: e.to_string(),
            })?;
        let dir = config.work_dir_for(&instance_id);
        crate::config::create_work_dir(&dir).map_err(SidecarError::io(format!(
            "cannot create the work directory {} (mode 0700); give a writable --work-dir",
            dir.display()
        )))?;
        let access_log =
            AccessLogSink::open(&config.access_log).map_err(|error| SidecarError::Flag {
                flag: "access-log",
                message: format!(
                    "cannot open {} for appending: {error}; give a writable file or `stdout`",
                    config.access_log
                ),
            })?;
        let relay = match config.admin_relay {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr).map_err(SidecarError::io(format!(
                    "cannot bind the admin relay on {addr}; pick another --admin-relay-addr or `off`"
                )))?;
                let bound = listener
                    .local_addr()
                    .map_err(SidecarError::io("cannot read the admin relay address"))?;
                Some((Some(listener), bound))
            }
            None => None,
        };
        // Bound even without an egress port: a reload (SIGHUP) adding one finds it there.
        let egress_flags = {
            let what = "cannot bind the egress flags server on 127.0.0.1";
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(SidecarError::io(what))?;
            let bound = listener.local_addr().map_err(SidecarError::io(what))?;
            Some((Some(listener), bound))
        };
        let query = egress_flags_query(d, &instance_id, &config.datacenter);
        let prepared = Prepared {
            relay,
            egress_flags,
            egress_flags_query: tokio::sync::watch::Sender::new(query),
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
            metrics_port,
            bootstrap_path: dir.join("envoy-bootstrap.json"),
            config,
            loaded,
            instance_id,
            base_id,
            envoy,
            control_plane_roots,
            access_log,
        };
        prepared.write_bootstrap()?;
        Ok(prepared)
    }

    /// Re-reads the descriptor (SIGHUP) and rewrites the bootstrap. The service may not
    /// change: the instance id, registration and base id belong to it.
    pub(crate) fn reload(&mut self) -> Result<(), SidecarError> {
        let loaded = descriptor::load(&self.config.descriptor)?;
        if loaded.descriptor.service != self.loaded.descriptor.service {
            return Err(SidecarError::Descriptor(LoadError::ServiceChanged {
                path: self.config.descriptor.clone(),
                was: self.loaded.descriptor.service.to_string(),
                now: loaded.descriptor.service.to_string(),
            }));
        }
        if let Some(port) = loaded.descriptor.metrics.port {
            self.metrics_port = port;
        }
        self.loaded = loaded;
        self.egress_flags_query.send_replace(egress_flags_query(
            &self.loaded.descriptor,
            &self.instance_id,
            &self.config.datacenter,
        ));
        self.write_bootstrap()
    }

    pub(crate) fn bootstrap(&self) -> serde_json::Value {
        bootstrap(&BootstrapSpec {
            descriptor: &self.loaded.written,
            instance_id: &self.instance_id,
            service: self.loaded.descriptor.service.as_ref(),
            datacenter: &self.config.datacenter,
            admin: self.admin,
            control_plane: &self.config.control_plane,
            xds: self.config.xds,
            listen_address: self.config.listen_address,
            admin_relay: self.relay.as_ref().map(|(_, addr)| *addr),
            xds_tls: self.config.xds_tls_mode(),
            sds_socket: &crate::config::sds_socket(self.work_dir()),
            stats: &self.loaded.descriptor.stats,
            metrics_port: Some(self.metrics_port),
            egress_flags: self.egress_flags.as_ref().map(|(_, addr)| *addr),
        })
    }

    fn write_bootstrap(&self) -> Result<(), SidecarError> {
        let text = serde_json::to_string_pretty(&self.bootstrap()).map_err(|e| {
            SidecarError::io("cannot encode the bootstrap")(std::io::Error::other(e))
        })?;
        // Write-then-rename: an Envoy starting concurrently never reads half a file.
        let tmp = self.bootstrap_path.with_extension("json.tmp");
        let what = format!(
            "cannot write the bootstrap {}",
            self.bootstrap_path.display()
        );
        std::fs::write(&tmp, text).map_err(SidecarError::io(what.clone()))?;
        std::fs::rename(&tmp, &self.bootstrap_path).map_err(SidecarError::io(what))
    }

    /// A client for the control plane's admin API (trusting `--control-plane-ca-file`).
    pub(crate) fn control_plane_client(&self) -> Result<reqwest::Client, SidecarError> {
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(roots) = &self.control_plane_roots {
            builder = builder.tls_certs_only(roots.clone());
        }
        builder.build().map_err(|e| {
            SidecarError::io("cannot build the control-plane client")(std::io::Error::other(e))
        })
    }

    /// The directory of the bootstrap, the SDS socket, the certificate cache and the last
    /// egress flags.
    pub(crate) fn work_dir(&self) -> &std::path::Path {
        self.bootstrap_path
            .parent()
            .unwrap_or(std::path::Path::new("."))
    }

    /// The identity server for this proxy (see [`SidecarConfig::identity_config`]).
    pub(crate) fn identity_config(&self) -> crate::identity::IdentityConfig {
        self.config
            .identity_config(self.loaded.descriptor.service.clone(), self.work_dir())
    }

    pub(crate) fn envoy_command(&self) -> EnvoyCommand {
        EnvoyCommand {
            binary: self.envoy.clone(),
            config_path: self.bootstrap_path.clone(),
            base_id: self.base_id,
            log_level: self.config.envoy_log_level.clone(),
            concurrency: self.config.envoy_concurrency,
            drain: self.config.drain,
            access_log: self.access_log.clone(),
        }
    }

    pub(crate) fn registration(&self) -> ServiceRegistration {
        service_registration(
            &self.loaded.descriptor,
            &self.instance_id,
            &self.config.address,
            self.metrics_port,
            self.config.check,
        )
    }

    /// Removes the bootstrap and the SDS socket. The directory stays: it keeps the
    /// certificate cache for the next start.
    pub(crate) fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.bootstrap_path);
        let _ = std::fs::remove_file(crate::config::sds_socket(self.work_dir()));
    }
}

/// What the egress flags follower asks the control plane: nothing without an egress port.
fn egress_flags_query(
    d: &meshplane_model::Descriptor,
    instance_id: &str,
    datacenter: &str,
) -> String {
    match d.egress {
        Some(_) => crate::egress_flags::decisions_query(d, instance_id, datacenter),
        None => String::new(),
    }
}
