//! The `meshplane sidecar` and `meshplane bootstrap` flags (clap), turned into a
//! [`SidecarConfig`]. Each flag can also come from a `MESHPLANE_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use meshplane_model::descriptor::parse_duration;

use crate::access_log::AccessLogDestination;
use crate::config::{ControlPlaneAddr, SidecarConfig, XdsFlavour};
use crate::error::SidecarError;

/// Admin port `meshplane bootstrap` writes when none is given (Envoy's customary one).
pub const BOOTSTRAP_ADMIN_PORT: u16 = 9901;

/// Flags shared by `sidecar` and `bootstrap`: who the proxy is and where its control plane is.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The service descriptor.
    #[arg(long, env = "MESHPLANE_DESCRIPTOR", default_value = "meshplane.yaml")]
    pub descriptor: PathBuf,
    /// Control-plane xDS addresses, HOST:PORT[,HOST:PORT…], in failover order.
    #[arg(
        long,
        env = "MESHPLANE_CONTROL_PLANE",
        default_value = "127.0.0.1:18000"
    )]
    pub control_plane: String,
    /// This proxy's datacenter (node.locality.zone).
    #[arg(long, env = "MESHPLANE_DATACENTER", default_value = "dc1")]
    pub datacenter: String,
    /// Instance id (registry id and node.id) [default: <service>-<hostname>-<ingress port>].
    #[arg(long, env = "MESHPLANE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Envoy admin port on 127.0.0.1 [sidecar default: a free port; bootstrap: 9901].
    #[arg(long, env = "MESHPLANE_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Address Envoy's ingress listener binds [sidecar default: the --address IP, the one
    /// registered; bootstrap default: all interfaces]. Use 0.0.0.0 for every interface.
    #[arg(long, env = "MESHPLANE_LISTEN_ADDRESS")]
    pub listen_address: Option<std::net::IpAddr>,
    /// Host certificate (PEM) with the service's SPIFFE id: the proxy's mTLS identity
    /// (watched: a replaced file is picked up without a restart); with --key-file and
    /// --ca-file. Without them the sidecar gets a certificate from the control plane's CA.
    #[arg(long, env = "MESHPLANE_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file. Never sent anywhere.
    #[arg(long, env = "MESHPLANE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM) peers' (and, with --xds-tls, the control plane's) certificates chain to.
    #[arg(long, env = "MESHPLANE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connect to the control plane's xDS port over TLS, presenting the proxy's identity:
    /// the host certificate (--cert-file), or else the certificate from the control plane's
    /// CA (served over SDS and renewed without dropping the xDS stream). The control plane's
    /// certificate is checked against --control-plane-ca-file, else --ca-file, else the
    /// mesh's trust bundle (then it must also name the --control-plane host).
    #[arg(long, env = "MESHPLANE_XDS_TLS")]
    pub xds_tls: bool,
    /// CA bundle (PEM) that signs the control plane's own certificates: its xDS port (with
    /// --xds-tls) and its https:// admin API (--ca-url).
    #[arg(long, env = "MESHPLANE_CONTROL_PLANE_CA_FILE")]
    pub control_plane_ca_file: Option<PathBuf>,
    /// The control plane's admin URL, where its CA signs certificates; repeat it (or
    /// separate with commas) for several instances sharing one CA, tried in order
    /// [default: http://<each --control-plane host>:18080].
    #[arg(long, env = "MESHPLANE_CA_URL", value_delimiter = ',')]
    pub ca_url: Vec<String>,
    /// Token sent to the control plane's CA: this service's enrolment token when the control
    /// plane has --enrolment-tokens [default: --token].
    #[arg(long, env = "MESHPLANE_CA_TOKEN", hide_env_values = true)]
    pub ca_token: Option<String>,
    /// SPIFFE trust domain of service identities [default: meshplane.local].
    #[arg(long, env = "MESHPLANE_TRUST_DOMAIN", default_value = meshplane_model::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Use delta (incremental) xDS instead of state-of-the-world.
    #[arg(long, env = "MESHPLANE_XDS_DELTA")]
    pub xds_delta: bool,
}

/// `meshplane bootstrap`: print the Envoy bootstrap for hosts that run Envoy themselves.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Directory whose `sds.sock` Envoy fetches its certificate from (where
    /// `meshplane identity --work-dir` serves it) [default: <state dir>/<instance id>, see
    /// `meshplane sidecar --help`].
    #[arg(long, env = "MESHPLANE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Write the bootstrap of a proxyless gRPC client (the file `GRPC_XDS_BOOTSTRAP` names)
    /// instead of Envoy's: its channels to `xds:///<service>` reach the descriptor's
    /// dependencies. With --xds-tls it needs --cert-file, --key-file and --ca-file, or
    /// --certs-dir (gRPC reads the files itself).
    #[arg(long)]
    pub grpc: bool,
    /// With --grpc: obtain the service's certificate from the control plane's CA (as
    /// `meshplane sidecar` does; --ca-url, --ca-token), write it into this directory
    /// (`current/cert.pem`, `current/key.pem`, `current/ca.pem`; 0700, replaced atomically)
    /// and name it in the bootstrap (gRPC's `certificate_providers`), so the client calls
    /// callees behind sidecars over mTLS with its service's identity (and, with --xds-tls
    /// and no --cert-file, authenticates its xDS connection with it). The certificate is
    /// short-lived: keep it renewed with --follow.
    #[arg(long, env = "MESHPLANE_CERTS_DIR", requires = "grpc")]
    pub certs_dir: Option<PathBuf>,
    /// With --certs-dir: after writing the files and the bootstrap, keep running and renew
    /// the certificate (after half its remaining lifetime, retrying with backoff) until
    /// SIGTERM or SIGINT. Run it next to the app, e.g. as a service.
    #[arg(long, requires = "certs_dir")]
    pub follow: bool,
    /// With --certs-dir: how often gRPC re-reads the certificate files (the
    /// `refresh_interval` of its `file_watcher` provider).
    #[arg(long, value_parser = parse_duration, default_value = "10s", requires = "certs_dir")]
    pub certs_refresh_interval: Duration,
    /// Write the bootstrap to this file (replaced atomically) instead of printing it.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// `meshplane identity`: serve a self-run Envoy its certificate (what `meshplane sidecar`
/// does for the Envoy it runs), at the socket `meshplane bootstrap` points Envoy to.
#[derive(Debug, Clone, clap::Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Directory of the SDS socket (`sds.sock`) and the certificate cache; the same as
    /// `meshplane bootstrap --work-dir` [default: <state dir>/<instance id>].
    #[arg(long, env = "MESHPLANE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Token for the control plane's CA (Bearer).
    #[arg(long, env = "MESHPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `meshplane sidecar`: run Envoy for a service, register it, supervise it.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Consul-compatible registry URL; repeat it (or separate with commas) to give several
    /// agents of one registry cluster, tried in order: the sidecar registers with the first
    /// that answers and moves on when it stops answering.
    #[arg(
        long,
        env = "MESHPLANE_REGISTRY_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8500"
    )]
    pub registry: Vec<String>,
    /// Where the admin relay listens: the control plane reads this Envoy's config dump and
    /// stats and sets its log level through it (with --token). `off` disables it
    /// [default: <--address>:0].
    #[arg(long, env = "MESHPLANE_ADMIN_RELAY_ADDR")]
    pub admin_relay_addr: Option<String>,
    /// Registry ACL token (sent as X-Consul-Token).
    #[arg(long, env = "MESHPLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Address advertised in the registry and used by its health check.
    #[arg(long, env = "MESHPLANE_ADDRESS", default_value = "127.0.0.1")]
    pub address: String,
    /// Envoy binary [default: MESHPLANE_ENVOY, PATH, then .tools/envoy from install-envoy.sh].
    #[arg(long, env = "MESHPLANE_ENVOY")]
    pub envoy: Option<PathBuf>,
    /// Hot-restart base id [default: derived from the instance id].
    #[arg(long, env = "MESHPLANE_BASE_ID")]
    pub base_id: Option<u32>,
    /// Directory (0700) of the bootstrap, the SDS socket and the last certificate from the CA;
    /// keep it across restarts [default: <state dir>/<instance id>, the state dir being
    /// /var/lib/meshplane/sidecars for root, else $XDG_STATE_HOME/meshplane/sidecars or
    /// ~/.local/state/meshplane/sidecars].
    #[arg(long, env = "MESHPLANE_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Envoy's log level.
    #[arg(long, env = "MESHPLANE_ENVOY_LOG_LEVEL", default_value = "info")]
    pub envoy_log_level: String,
    /// Envoy worker threads [default: Envoy's, one per core].
    #[arg(long, env = "MESHPLANE_ENVOY_CONCURRENCY")]
    pub envoy_concurrency: Option<u32>,
    /// How long an old Envoy drains after a hot restart.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub drain_time: Duration,
    /// When an old Envoy exits after a hot restart.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub parent_shutdown_time: Duration,
    /// How long Envoy may take to stop after SIGTERM before SIGKILL.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub stop_timeout: Duration,
    /// Registry health-check interval.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub check_interval: Duration,
    /// Registry health-check timeout.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub check_timeout: Duration,
    /// The registry drops the instance after its check is critical this long.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub deregister_critical_after: Duration,
    /// Envoy crashes tolerated within --crash-window before the sidecar gives up.
    #[arg(long, default_value_t = 5)]
    pub max_crashes: u32,
    /// Window in which crashes are counted.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub crash_window: Duration,
    /// Warn when Envoy is not ready (has no config from the control plane) after this long.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub ready_timeout: Duration,
    /// Where the access-log lines (one JSON object per line; which requests is the
    /// descriptor's `access_log`) go: `stdout`, or a file appended to (created 0640) and
    /// reopened when moved or removed (checked every second) or on SIGHUP, so logrotate needs
    /// no postrotate script. The sidecar's own logs go to stderr.
    #[arg(long, env = "MESHPLANE_ACCESS_LOG", default_value = "stdout")]
    pub access_log: AccessLogDestination,
    /// How often the app's calls (through Envoy, and those its interceptor reports sending
    /// direct) are reported to the control planes, for the migration view and dry runs.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub traffic_report_interval: Duration,
}

// === impl NodeArgs ===

impl NodeArgs {
    fn config(&self, default_admin_port: u16) -> Result<SidecarConfig, SidecarError> {
        let control_plane = ControlPlaneAddr::parse_list(&self.control_plane)?;
        let mut c = SidecarConfig::new(self.descriptor.clone(), control_plane);
        c.datacenter = self.datacenter.clone();
        c.instance_id = self.instance_id.clone();
        c.admin_port = self.admin_port.unwrap_or(default_admin_port);
        c.listen_address = self.listen_address;
        c.host_certs = match (&self.cert_file, &self.key_file, &self.ca_file) {
            (None, None, None) => None,
            (Some(cert), Some(key), Some(ca)) => Some(crate::config::XdsClientTls {
                cert_file: cert.clone(),
                key_file: key.clone(),
                ca_file: ca.clone(),
            }),
            _ => {
                return Err(SidecarError::Flag {
                    flag: "cert-file",
                    message: "--cert-file, --key-file and --ca-file go together".into(),
                });
            }
        };
        c.xds_tls = self.xds_tls;
        c.control_plane_ca_file = self.control_plane_ca_file.clone();
        c.ca_url = non_empty(self.ca_url.clone());
        c.ca_token = self.ca_token.clone().filter(|t| !t.is_empty());
        c.trust_domain = self.trust_domain.clone();
        if self.xds_delta {
            c.xds = XdsFlavour::Delta;
        }
        Ok(c)
    }
}

/// The values of a repeatable flag without empty ones (`--registry a,` or an empty
/// variable).
fn non_empty(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

// === impl BootstrapArgs ===

impl BootstrapArgs {
    /// The configuration `meshplane bootstrap` renders.
    pub fn into_config(self) -> Result<SidecarConfig, SidecarError> {
        let mut c = self.node.config(BOOTSTRAP_ADMIN_PORT)?;
        c.work_dir = self.work_dir;
        Ok(c)
    }
}

impl IdentityArgs {
    /// The configuration `meshplane identity` serves for.
    pub fn into_config(self) -> Result<SidecarConfig, SidecarError> {
        let mut c = self.node.config(BOOTSTRAP_ADMIN_PORT)?;
        c.work_dir = self.work_dir;
        c.token = self.token.filter(|t| !t.is_empty());
        Ok(c)
    }
}

// === impl SidecarArgs ===

impl SidecarArgs {
    /// The sidecar's configuration.
    pub fn into_config(self) -> Result<SidecarConfig, SidecarError> {
        let mut c = self.node.config(0)?;
        c.registry = non_empty(self.registry);
        if c.registry.is_empty() {
            return Err(SidecarError::Flag {
                flag: "registry",
                message: "give at least one registry URL".to_owned(),
            });
        }
        c.token = self.token.filter(|t| !t.is_empty());
        c.admin_relay = match self.admin_relay_addr.as_deref() {
            Some("off") => None,
            Some(addr) => Some(addr.parse().map_err(|_| SidecarError::Flag {
                flag: "admin-relay-addr",
                message: format!("`{addr}` is not IP:PORT or `off`"),
            })?),
            None => Some(std::net::SocketAddr::new(
                self.address
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
                0,
            )),
        };
        if c.listen_address.is_none() {
            // Listen where the registry sends callers, and nowhere else.
            c.listen_address = self.address.parse().ok();
        }
        c.address = self.address;
        c.envoy = self.envoy;
        c.base_id = self.base_id;
        c.work_dir = self.work_dir;
        c.envoy_log_level = self.envoy_log_level;
        c.envoy_concurrency = self.envoy_concurrency;
        c.drain.drain_time = self.drain_time;
        c.drain.parent_shutdown_time = self.parent_shutdown_time;
        c.drain.stop_timeout = self.stop_timeout;
        c.check.interval = self.check_interval;
        c.check.timeout = self.check_timeout;
        c.check.deregister_critical_after = self.deregister_critical_after;
        c.crash.max_crashes = self.max_crashes;
        c.crash.window = self.crash_window;
        c.ready_timeout = self.ready_timeout;
        if self.traffic_report_interval < std::time::Duration::from_millis(100) {
            return Err(SidecarError::Flag {
                flag: "traffic-report-interval",
                message: "at least 100ms".to_owned(),
            });
        }
        c.traffic_report_interval = self.traffic_report_interval;
        c.access_log = self.access_log;
        if c.drain.parent_shutdown_time <= c.drain.drain_time {
            return Err(SidecarError::Flag {
                flag: "parent-shutdown-time",
                message: "must be longer than --drain-time (Envoy requires it)".to_owned(),
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sidecar: SidecarArgs,
    }

    fn mk_config(args: &[&str]) -> SidecarConfig {
        let cli = Cli::try_parse_from(std::iter::once("sidecar").chain(args.iter().copied()))
            .expect("flags parse");
        cli.sidecar.into_config().expect("a configuration")
    }

    #[test]
    fn several_registries_and_cas_are_repeated_or_comma_separated_in_order() {
        let c = mk_config(&[
            "--control-plane",
            "10.0.0.1:18000,10.0.0.2:18000",
            "--registry",
            "http://10.0.0.1:8500",
            "--registry",
            "http://10.0.0.2:8500,http://10.0.0.3:8500",
            "--ca-url",
            "https://10.0.0.1:18080/,https://10.0.0.2:18080",
        ]);
        assert_eq!(c.control_plane.len(), 2);
        assert_eq!(
            c.registry,
            [
                "http://10.0.0.1:8500",
                "http://10.0.0.2:8500",
                "http://10.0.0.3:8500"
            ]
        );
        assert_eq!(
            c.ca_admin_urls(),
            ["https://10.0.0.1:18080", "https://10.0.0.2:18080"]
        );
    }

    #[test]
    fn single_values_and_defaults_work_as_before() {
        let c = mk_config(&["--control-plane", "10.0.0.1:18000"]);
        assert_eq!(c.registry, ["http://127.0.0.1:8500"]);
        assert_eq!(c.ca_admin_urls(), ["http://10.0.0.1:18080"]);
        // Without --ca-url, every control-plane host's default admin port, each once.
        let c = mk_config(&[
            "--control-plane",
            "10.0.0.1:18000,10.0.0.1:18001,[::1]:18000",
        ]);
        assert_eq!(
            c.ca_admin_urls(),
            ["http://10.0.0.1:18080", "http://[::1]:18080"]
        );
    }
}
