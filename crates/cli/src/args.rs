//! Command-line arguments. Each control-plane flag can also come from `MESHPLANE_<FLAG>`
//! or the `--config` YAML file (flag > environment > file > default).

use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Services YAML file, for --registry file.
    #[arg(long, env = "MESHPLANE_SERVICES_FILE")]
    services_file: Option<PathBuf>,
    /// Directory for durable state [default: ./meshplane-data].
    #[arg(long, env = "MESHPLANE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This control plane's datacenter [default: dc1].
    #[arg(long, env = "MESHPLANE_DATACENTER")]
    datacenter: Option<String>,
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
        if self.services_file.is_some() {
            c.services_file = self.services_file;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.datacenter {
            c.datacenter = v;
        }
        Ok(c)
    }
}

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::ControlPlane(args) => {
                let config = args.into_config()?;
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                meshplane_runtime::control_plane::run(config, shutdown).await
            }
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
