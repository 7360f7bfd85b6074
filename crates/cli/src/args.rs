//! Command-line arguments. Each control-plane flag can also come from `MESHPLANE_<FLAG>`
//! or the `--config` YAML file (flag > environment > file > default).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshplane_runtime::{ControlPlaneConfig, RegistryKind};
use tokio_util::sync::CancellationToken;

/// Meshplane: a service-mesh control plane for Envoy.
#[derive(Debug, Parser)]
#[command(name = "meshplane", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: xDS server, registry and admin API.
    ControlPlane(ControlPlaneArgs),
    /// Run Envoy for a service: bootstrap, register, supervise, hot-restart on SIGHUP.
    Sidecar(meshplane_sidecar::SidecarArgs),
    /// Print the Envoy bootstrap for a descriptor (for hosts that run Envoy themselves).
    Bootstrap(meshplane_sidecar::BootstrapArgs),
    /// Serve a self-run Envoy its certificate over SDS (next to `meshplane bootstrap`).
    Identity(meshplane_sidecar::IdentityArgs),
    /// Run the demo: control plane, three services with Envoy sidecars, traffic, a summary.
    Demo(DemoArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Run one round of traffic, print the summary and exit (0 when traffic behaved).
    #[arg(long)]
    once: bool,
    /// Requests per route per round.
    #[arg(long, default_value_t = 200)]
    requests: usize,
}

#[derive(Debug, clap::Args)]
struct ControlPlaneArgs {
    /// YAML file whose keys are these flags' names.
    #[arg(long, env = "MESHPLANE_CONFIG")]
    config: Option<PathBuf>,
    /// xDS (ADS) gRPC address [default: 127.0.0.1:18000].
    #[arg(long, env = "MESHPLANE_XDS_ADDR")]
    xds_addr: Option<SocketAddr>,
    /// Admin API and web panel address [default: 127.0.0.1:18080].
    #[arg(long, env = "MESHPLANE_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Registry: embedded, consul or file [default: embedded].
    #[arg(long, env = "MESHPLANE_REGISTRY")]
    registry: Option<RegistryKind>,
    /// Embedded registry's Consul-compatible API address [default: 127.0.0.1:8500].
    #[arg(long, env = "MESHPLANE_REGISTRY_ADDR")]
    registry_addr: Option<SocketAddr>,
    /// Consul HTTP address, for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_ADDR")]
    consul_addr: Option<String>,
    /// Consul ACL token, for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_TOKEN", hide_env_values = true)]
    consul_token: Option<String>,
    /// CA of Consul's HTTPS certificate, for --registry consul.
    #[arg(long, env = "MESHPLANE_CONSUL_CA_FILE")]
    consul_ca_file: Option<PathBuf>,
    /// Services YAML file, for --registry file.
    #[arg(long, env = "MESHPLANE_SERVICES_FILE")]
    services_file: Option<PathBuf>,
    /// Directory for durable state [default: ./meshplane-data].
    #[arg(long, env = "MESHPLANE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This control plane's datacenter [default: dc1].
    #[arg(long, env = "MESHPLANE_DATACENTER")]
    datacenter: Option<String>,
    /// Admin URLs of the other control-plane instances (for /api/consistency), comma-separated.
    #[arg(long, env = "MESHPLANE_PEERS", value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Token required on admin and registry write routes.
    #[arg(long, env = "MESHPLANE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// SPIFFE trust domain of service identities [default: meshplane.local].
    #[arg(long, env = "MESHPLANE_TRUST_DOMAIN")]
    trust_domain: Option<String>,
    /// Certificate (PEM) of the xDS server; with --xds-tls-key the xDS port speaks TLS.
    #[arg(long, env = "MESHPLANE_XDS_TLS_CERT")]
    xds_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the xDS server.
    #[arg(long, env = "MESHPLANE_XDS_TLS_KEY")]
    xds_tls_key: Option<PathBuf>,
    /// CA (PEM) of proxies' client certificates: each proxy must then prove, with
    /// spiffe://<trust-domain>/service/<name>, the service it asks configuration for.
    #[arg(long, env = "MESHPLANE_XDS_CLIENT_CA")]
    xds_client_ca: Option<PathBuf>,
    /// Operator CA certificate (PEM) of the built-in CA [default: one generated and kept
    /// under --data-dir].
    #[arg(long, env = "MESHPLANE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Operator CA private key (PEM).
    #[arg(long, env = "MESHPLANE_CA_KEY")]
    ca_key: Option<PathBuf>,
    /// YAML file of per-service enrolment tokens (`orders: <token>`): the CA then signs a
    /// service's identity only for its own token (or --token).
    #[arg(long, env = "MESHPLANE_ENROLMENT_TOKENS")]
    enrolment_tokens: Option<PathBuf>,
    /// Lifetime of certificates the built-in CA signs; sidecars renew at half of it
    /// [default: 24h].
    #[arg(long, env = "MESHPLANE_CERT_TTL")]
    cert_ttl: Option<String>,
    /// Services allowed to depend on every service (`service: "*"`), comma-separated.
    #[arg(
        long,
        env = "MESHPLANE_ALLOW_WILDCARD_DEPENDENCIES",
        value_delimiter = ','
    )]
    allow_wildcard_dependencies: Option<Vec<meshplane_model::ServiceName>>,
    /// CA bundle verifying external https:// domains [default: the system bundle].
    #[arg(long, env = "MESHPLANE_DOMAIN_CA_FILE")]
    domain_ca_file: Option<String>,
}

impl ControlPlaneArgs {
    fn into_config(self) -> anyhow::Result<ControlPlaneConfig> {
        let mut c = match &self.config {
            Some(path) => ControlPlaneConfig::from_file(path)?,
            None => ControlPlaneConfig::default(),
        };
        if let Some(v) = self.xds_addr {
            c.xds_addr = v;
        }
        if let Some(v) = self.admin_addr {
            c.admin_addr = v;
        }
        if let Some(v) = self.registry {
            c.registry = v;
        }
        if let Some(v) = self.registry_addr {
            c.registry_addr = v;
        }
        if self.consul_addr.is_some() {
            c.consul_addr = self.consul_addr;
        }
        if self.consul_token.is_some() {
            c.consul_token = self.consul_token;
        }
        if self.consul_ca_file.is_some() {
            c.consul_ca_file = self.consul_ca_file;
        }
        if self.services_file.is_some() {
            c.services_file = self.services_file;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.datacenter {
            c.datacenter = v;
        }
        if self.token.is_some() {
            c.token = self.token;
        }
        if let Some(v) = self.peers {
            c.peers = v;
        }
        if let Some(v) = self.trust_domain {
            c.trust_domain = v;
        }
        if self.xds_tls_cert.is_some() {
            c.xds_tls_cert = self.xds_tls_cert;
        }
        if self.xds_tls_key.is_some() {
            c.xds_tls_key = self.xds_tls_key;
        }
        if self.xds_client_ca.is_some() {
            c.xds_client_ca = self.xds_client_ca;
        }
        if self.ca_cert.is_some() {
            c.ca_cert = self.ca_cert;
        }
        if self.ca_key.is_some() {
            c.ca_key = self.ca_key;
        }
        if self.enrolment_tokens.is_some() {
            c.enrolment_tokens = self.enrolment_tokens;
        }
        if let Some(v) = self.cert_ttl {
            c.cert_ttl = v;
        }
        if let Some(v) = self.allow_wildcard_dependencies {
            c.allow_wildcard_dependencies = v;
        }
        if self.domain_ca_file.is_some() {
            c.domain_ca_file = self.domain_ca_file;
        }
        Ok(c)
    }
}

impl Cli {
    /// Whether the command is `demo`.
    pub fn is_demo(&self) -> bool {
        matches!(self.command, Command::Demo(_))
    }
}

/// Runs the chosen command; the result is the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bootstrap(args) = cli.command {
        let text = meshplane_sidecar::render_bootstrap(args)?;
        // `meshplane bootstrap | head` closing the pipe is not an error.
        return match writeln!(std::io::stdout(), "{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::ControlPlane(args) => {
                let config = args.into_config()?;
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                meshplane_runtime::control_plane::run(config, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Sidecar(args) => {
                let outcome = meshplane_sidecar::run_sidecar(args).await?;
                Ok(ExitCode::from(outcome.exit_code()))
            }
            Command::Identity(args) => {
                meshplane_sidecar::run_identity(args).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Demo(args) => {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                let options = meshplane_runtime::demo::DemoOptions {
                    once: args.once,
                    requests: args.requests,
                };
                meshplane_runtime::demo::run(options, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bootstrap(_) => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining xDS streams");
    shutdown.cancel();
}
