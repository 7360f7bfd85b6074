//! The sidecar's settings as plain values (the CLI flags in `args` fill them in), and the
//! small types they use: control-plane addresses and the xDS flavour.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything `meshplane sidecar` needs. Build one with [`SidecarConfig::new`] and adjust
/// fields; `args::SidecarArgs` does that for the command line.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Path of the service descriptor (`meshplane.yaml`).
    pub descriptor: PathBuf,
    /// Control-plane xDS addresses, in failover order.
    pub control_plane: Vec<ControlPlaneAddr>,
    /// Consul-compatible registry base URLs (agents of one cluster), tried in order.
    pub registry: Vec<String>,
    /// Registry ACL token (`X-Consul-Token`).
    pub token: Option<String>,
    /// Address advertised in the registry (and used by the health check).
    pub address: String,
    /// Instance id; `None` means `<service>-<hostname>-<ingress port>`.
    pub instance_id: Option<String>,
    /// This proxy's datacenter (`node.locality.zone`).
    pub datacenter: String,
    /// Envoy binary; `None` means discovery (`MESHPLANE_ENVOY`, `PATH`, `.tools/envoy`).
    pub envoy: Option<PathBuf>,
    /// Envoy's admin port on 127.0.0.1; 0 picks a free port once at start (kept across
    /// Envoy restarts, so the advertised metadata stays true).
    pub admin_port: u16,
    /// Delta xDS instead of state-of-the-world.
    pub xds: XdsFlavour,
    /// Address Envoy's ingress listener binds; `None` lets the control plane choose (all
    /// interfaces).
    pub listen_address: Option<std::net::IpAddr>,
    /// Hot-restart base id; `None` derives it from the instance id.
    pub base_id: Option<u32>,
    /// Where the admin relay listens (see `relay`); `None` disables it. Port 0 picks one.
    pub admin_relay: Option<std::net::SocketAddr>,
    /// Host certificate files: the proxy's mTLS identity (and, with `xds_tls`, what Envoy
    /// presents to the control plane). `None`: a certificate from the control plane's CA.
    pub host_certs: Option<XdsClientTls>,
    /// TLS on the xDS connection, Envoy presenting the proxy's identity: the host
    /// certificate files, or else the CA-issued certificate the sidecar serves over SDS.
    pub xds_tls: bool,
    /// CA bundle (PEM) the control plane's own certificates (xDS with `xds_tls`) are checked
    /// against; `None`: the host `--ca-file`, else the mesh's trust bundle.
    pub control_plane_ca_file: Option<PathBuf>,
    /// The control plane's admin URLs (its CA), one per instance sharing the CA, tried in
    /// order; empty means port 18080 on each control-plane host.
    pub ca_url: Vec<String>,
    /// SPIFFE trust domain of the identity requested from the CA.
    pub trust_domain: String,
    /// Bearer token for the CA; `None` sends `token`.
    pub ca_token: Option<String>,
    /// Where the bootstrap, the SDS socket and the certificate cache live; `None` means
    /// [`default_work_dir`] for the instance.
    pub work_dir: Option<PathBuf>,
    /// Envoy's `--log-level`.
    pub envoy_log_level: String,
    /// Envoy's `--concurrency` (worker threads); `None` leaves Envoy's default.
    pub envoy_concurrency: Option<u32>,
    /// Hot restart and shutdown timings.
    pub drain: DrainTimes,
    /// Registry health check settings.
    pub check: CheckTimes,
    /// When to give up on a crashing Envoy.
    pub crash: CrashPolicy,
    /// How long to wait for Envoy's `/ready` before warning (polling goes on).
    pub ready_timeout: Duration,
    /// Where Envoy's access-log lines (its stdout) are written.
    pub access_log: crate::access_log::AccessLogDestination,
    /// How often the app's calls are reported to the control planes (with an egress port).
    pub traffic_report_interval: Duration,
}

/// Hot restart and stop timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTimes {
    /// Envoy `--drain-time-s`: how long an old epoch drains its listeners.
    pub drain_time: Duration,
    /// Envoy `--parent-shutdown-time-s`: when the old epoch exits.
    pub parent_shutdown_time: Duration,
    /// After SIGTERM, how long Envoy may take before it gets SIGKILL.
    pub stop_timeout: Duration,
}

/// The registry health check (Consul `Check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTimes {
    /// How often the registry calls the health path through Envoy.
    pub interval: Duration,
    /// Per-call timeout.
    pub timeout: Duration,
    /// The registry drops the instance after the check has been critical this long.
    pub deregister_critical_after: Duration,
}

/// Restarting a crashed Envoy: exponential backoff, and a limit after which the sidecar
/// exits with Envoy's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPolicy {
    /// Crashes tolerated within `window`; one more and the sidecar gives up.
    pub max_crashes: u32,
    /// The window crashes are counted in.
    pub window: Duration,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
}

/// One control-plane address (`HOST:PORT`, IPv6 as `[::1]:18000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAddr {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Which ADS variant Envoy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdsFlavour {
    /// State of the world (`GRPC`).
    #[default]
    StateOfTheWorld,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

/// A control-plane address that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not HOST:PORT (e.g. 127.0.0.1:18000 or [::1]:18000)")]
pub struct BadControlPlaneAddr(String);

/// Files of the host certificate the deployment put on the host: Envoy presents the
/// certificate to the control plane, which serves only the service it proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsClientTls {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM); read by Envoy only, never by the sidecar.
    pub key_file: PathBuf,
    /// CA bundle (PEM) that signs the control plane's certificate.
    pub ca_file: PathBuf,
}

// === impl SidecarConfig ===

impl SidecarConfig {
    /// Defaults for everything but the descriptor and the control plane.
    pub fn new(descriptor: impl Into<PathBuf>, control_plane: Vec<ControlPlaneAddr>) -> Self {
        SidecarConfig {
            descriptor: descriptor.into(),
            control_plane,
            registry: vec!["http://127.0.0.1:8500".to_owned()],
            token: None,
            address: "127.0.0.1".to_owned(),
            instance_id: None,
            datacenter: "dc1".to_owned(),
            envoy: None,
            admin_port: 0,
            xds: XdsFlavour::default(),
            listen_address: None,
            base_id: None,
            admin_relay: None,
            host_certs: None,
            xds_tls: false,
            control_plane_ca_file: None,
            ca_url: Vec::new(),
            trust_domain: meshplane_model::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            ca_token: None,
            work_dir: None,
            envoy_log_level: "info".to_owned(),
            envoy_concurrency: None,
            drain: DrainTimes {
                drain_time: Duration::from_secs(10),
                parent_shutdown_time: Duration::from_secs(15),
                stop_timeout: Duration::from_secs(10),
            },
            check: CheckTimes {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
                deregister_critical_after: Duration::from_secs(600),
            },
            crash: CrashPolicy {
                max_crashes: 5,
                window: Duration::from_secs(300),
                backoff_initial: Duration::from_millis(200),
                backoff_max: Duration::from_secs(30),
            },
            ready_timeout: Duration::from_secs(60),
            traffic_report_interval: meshplane_model::traffic::REPORT_INTERVAL,
            access_log: crate::access_log::AccessLogDestination::Stdout,
        }
    }
}

impl SidecarConfig {
    /// The instance id: `instance_id`, or `<service>-<hostname>-<ingress port>`.
    pub fn instance_id_for(&self, d: &meshplane_model::Descriptor) -> String {
        self.instance_id
            .clone()
            .unwrap_or_else(|| default_instance_id(d.service.as_ref(), d.ingress.port))
    }

    /// The work directory (bootstrap, SDS socket, certificate cache): `work_dir`, or
    /// [`default_work_dir`] for the instance.
    pub fn work_dir_for(&self, instance_id: &str) -> PathBuf {
        self.work_dir
            .clone()
            .unwrap_or_else(|| default_work_dir(instance_id))
    }

    /// How Envoy authenticates on the xDS connection, if it does (`xds_tls`).
    pub fn xds_tls_mode(&self) -> Option<crate::bootstrap::XdsTlsMode<'_>> {
        if !self.xds_tls {
            return None;
        }
        Some(match &self.host_certs {
            Some(files) => crate::bootstrap::XdsTlsMode::HostFiles {
                cert_file: &files.cert_file,
                key_file: &files.key_file,
                ca_file: self
                    .control_plane_ca_file
                    .as_deref()
                    .unwrap_or(&files.ca_file),
            },
            None => crate::bootstrap::XdsTlsMode::Sds {
                ca_file: self.control_plane_ca_file.as_deref(),
            },
        })
    }

    /// The identity server for `service` in `work_dir`: the host files, else the control
    /// plane's CA (with the last certificate cached in `work_dir/identity`, so a restart
    /// during a control-plane outage still serves).
    pub fn identity_config(
        &self,
        service: meshplane_model::ServiceName,
        work_dir: &std::path::Path,
    ) -> crate::identity::IdentityConfig {
        let source = match &self.host_certs {
            Some(files) => crate::identity::IdentitySource::HostFiles {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
                ca: files.ca_file.clone(),
            },
            None => self.ca_source(service),
        };
        let mut config = crate::identity::IdentityConfig::new(source, sds_socket(work_dir));
        config.cache_dir = Some(work_dir.join(IDENTITY_CACHE));
        config
    }

    /// The control plane's CA as the source of `service`'s certificate.
    pub fn ca_source(
        &self,
        service: meshplane_model::ServiceName,
    ) -> crate::identity::IdentitySource {
        crate::identity::IdentitySource::ControlPlaneCa {
            admin_urls: self.ca_admin_urls(),
            token: self.ca_token.clone().or_else(|| self.token.clone()),
            service,
            trust_domain: self.trust_domain.clone(),
            ca_bundle: self.control_plane_ca_file.clone(),
        }
    }

    /// The CA's admin URLs: `ca_url`, or port 18080 (the control plane's default admin
    /// port) on each control-plane host, in the order given.
    pub fn ca_admin_urls(&self) -> Vec<String> {
        if !self.ca_url.is_empty() {
            return self
                .ca_url
                .iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect();
        }
        let mut hosts: Vec<&str> = Vec::new();
        for addr in &self.control_plane {
            if !hosts.contains(&addr.host.as_str()) {
                hosts.push(&addr.host);
            }
        }
        if hosts.is_empty() {
            hosts.push("127.0.0.1");
        }
        hosts
            .into_iter()
            .map(|host| {
                if host.contains(':') {
                    format!("http://[{host}]:18080")
                } else {
                    format!("http://{host}:18080")
                }
            })
            .collect()
    }
}

/// The state directory under which each instance's work directory lives by default:
/// `/var/lib/meshplane/sidecars` for root, else `$XDG_STATE_HOME/meshplane/sidecars`
/// (`~/.local/state/meshplane/sidecars`), and the root's path when there is no home either
/// (creating it then fails clearly unless permitted). Kept across restarts, because the
/// work directory holds the last certificate from the CA that a restart during a CA outage
/// serves.
pub fn default_state_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/meshplane/sidecars");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local").join("state"))
        })
        .map(|base| base.join("meshplane").join("sidecars"));
    state.unwrap_or_else(|| PathBuf::from("/var/lib/meshplane/sidecars"))
}

/// The default work directory of an instance: `<default_state_dir>/<instance id>`, the id
/// reduced to characters safe in one path component.
pub fn default_work_dir(instance_id: &str) -> PathBuf {
    default_state_dir().join(path_component(instance_id))
}

/// `id` with everything but ASCII letters, digits, `.`, `-` and `_` replaced by `_`, never
/// empty, `.` or `..`.
fn path_component(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        safe.replace('.', "_") + "_"
    } else {
        safe
    }
}

/// Creates the work directory (and its parents) and makes it private (0700): it holds the
/// SDS socket and the cached private key.
pub fn create_work_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// A CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
#[error("--control-plane-ca-file {}: {reason}", path.display())]
pub struct BadCaBundle {
    path: PathBuf,
    reason: String,
}

/// The certificates of a PEM CA bundle, for HTTPS clients of the control plane.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, BadCaBundle> {
    let bad = |reason: String| BadCaBundle {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM CA bundle: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM CERTIFICATE".to_owned()));
    }
    Ok(certs)
}

/// File name of the SDS socket in the work directory.
const SDS_SOCKET: &str = "sds.sock";
/// Directory (in the work directory) of the last certificate from the CA.
const IDENTITY_CACHE: &str = "identity";

/// Where the identity (SDS) server listens in `work_dir`, and where the bootstrap points Envoy.
pub fn sds_socket(work_dir: &std::path::Path) -> PathBuf {
    work_dir.join(SDS_SOCKET)
}

/// The default instance id: `<service>-<hostname>-<ingress port>`, unique per host and
/// listener, stable across restarts (so a restarted sidecar replaces its own registration).
pub fn default_instance_id(service: &str, ingress_port: u16) -> String {
    let host = rustix::system::uname();
    let host = host.nodename().to_string_lossy();
    let host = if host.is_empty() {
        "localhost".into()
    } else {
        host
    };
    format!("{service}-{host}-{ingress_port}")
}

// === impl ControlPlaneAddr ===

impl ControlPlaneAddr {
    /// Parses a comma-separated list (`a:1,b:2`).
    pub fn parse_list(list: &str) -> Result<Vec<Self>, BadControlPlaneAddr> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl FromStr for ControlPlaneAddr {
    type Err = BadControlPlaneAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(ControlPlaneAddr {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let bad = || BadControlPlaneAddr(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid_host || port == 0 {
            return Err(bad());
        }
        Ok(ControlPlaneAddr {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for ControlPlaneAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

// === impl XdsFlavour ===

impl XdsFlavour {
    /// Envoy's `ads_config.api_type`.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsFlavour::StateOfTheWorld => "GRPC",
            XdsFlavour::Delta => "DELTA_GRPC",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_default_work_dir_is_one_safe_component_per_instance_under_the_state_dir() {
        let state = default_state_dir();
        assert!(state.is_absolute(), "{}", state.display());
        assert_eq!(default_work_dir("orders-1"), state.join("orders-1"));
        assert_eq!(default_work_dir("a/../b c"), state.join("a_.._b_c"));
        for id in ["", ".", ".."] {
            let dir = default_work_dir(id);
            assert_eq!(dir.parent(), Some(state.as_path()), "{id:?}");
            let name = dir
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            assert!(
                !name.is_empty() && name != "." && name != "..",
                "{id:?}: {name}"
            );
        }
        let mut c = SidecarConfig::new("meshplane.yaml", Vec::new());
        assert_eq!(c.work_dir_for("orders-1"), state.join("orders-1"));
        c.work_dir = Some(PathBuf::from("/srv/orders"));
        assert_eq!(c.work_dir_for("orders-1"), PathBuf::from("/srv/orders"));
    }

    #[test]
    fn the_work_dir_is_created_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state").join("orders-1");
        create_work_dir(&dir).expect("created");
        let mode = std::fs::metadata(&dir)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        // An existing, too open directory is narrowed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_work_dir(&dir).expect("again");
        let mode = std::fs::metadata(&dir)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
}
