//! Command-line arguments. The control plane's flags are declared by
//! `meshplane_runtime::ControlPlaneConfig`, which also merges them with `MESHPLANE_<FLAG>`
//! variables and the `--config` YAML file (flag > environment > file > default).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use meshplane_runtime::ControlPlaneConfig;
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
    // The two large argument sets are boxed, so the parsed command stays small.
    ControlPlane(Box<ControlPlaneArgs>),
    /// Run Envoy for a service: bootstrap, register, supervise, hot-restart on SIGHUP.
    Sidecar(Box<meshplane_sidecar::SidecarArgs>),
    /// Print the Envoy bootstrap for a descriptor (for hosts that run Envoy themselves).
    Bootstrap(meshplane_sidecar::BootstrapArgs),
    /// Serve a self-run Envoy its certificate over SDS (next to `meshplane bootstrap`).
    Identity(meshplane_sidecar::IdentityArgs),
    /// Run the demo: control plane, three services with Envoy sidecars, traffic, a summary.
    Demo(DemoArgs),
    /// Show what a descriptor change would send the service's proxies, before deploying it
    /// (a dry run on the control plane: nothing changes).
    Diff(meshplane_sidecar::DiffArgs),
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Run one round of traffic, print the summary and exit (0 when traffic behaved).
    #[arg(long)]
    once: bool,
    /// Requests per route per round.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Trace every request to this OpenTelemetry collector (OTLP/gRPC, `HOST:PORT`), e.g. a
    /// local Jaeger or otel-collector on 127.0.0.1:4317.
    #[arg(long)]
    tracing_collector: Option<String>,
}

/// `meshplane control-plane`: the settings are [`ControlPlaneConfig`]'s own flags (its
/// module doc says how to add one); these two only say where they come from and what to do.
#[derive(Debug, clap::Args)]
struct ControlPlaneArgs {
    /// YAML file whose keys are these flags' names (flags and MESHPLANE_<FLAG> variables
    /// override it).
    #[arg(long, env = "MESHPLANE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, --config file, environment and flags
    /// merged) as a --config file, secrets left out, and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: ControlPlaneConfig,
}

impl Cli {
    /// Parses the process arguments (exiting with clap's message on error), keeping clap's
    /// record of where each value came from for the control plane's configuration layers.
    pub fn parse_with_sources() -> (Cli, ArgMatches) {
        let matches = Cli::command().get_matches();
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => (cli, matches),
            Err(e) => e.exit(),
        }
    }

    /// Whether the command is `demo`.
    pub fn is_demo(&self) -> bool {
        matches!(self.command, Command::Demo(_))
    }
}

/// Writes `text` to stdout; `meshplane … | head` closing the pipe is not an error.
fn print_stdout(text: &str) -> anyhow::Result<ExitCode> {
    match write!(std::io::stdout(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Runs the chosen command (`matches` is its parse); the result is the process exit code.
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::ControlPlane(args) => {
            let args = *args;
            let sources = matches
                .subcommand_matches("control-plane")
                .ok_or_else(|| anyhow::anyhow!("control-plane arguments were not parsed"))?;
            let config =
                ControlPlaneConfig::layered(args.settings, sources, args.config.as_deref())?;
            if args.print_config {
                return print_stdout(&config.to_yaml()?);
            }
            block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone(), "draining xDS streams"));
                meshplane_runtime::control_plane::run(config, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Sidecar(args) => block_on(async move {
            let outcome = meshplane_sidecar::run_sidecar(*args).await?;
            Ok(ExitCode::from(outcome.exit_code()))
        }),
        Command::Bootstrap(args) if args.certs_dir.is_some() => block_on(async move {
            let output = args.output.clone();
            let enrolled = meshplane_sidecar::enrol_grpc(args).await?;
            write_bootstrap(output.as_deref(), &enrolled.bootstrap)?;
            if enrolled.follows() {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(
                    shutdown.clone(),
                    "no more renewals; the certificate files stay until they expire",
                ));
                enrolled.follow(shutdown).await;
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Bootstrap(args) => {
            let output = args.output.clone();
            let text = meshplane_sidecar::render_bootstrap(args)?;
            write_bootstrap(output.as_deref(), &text)
        }
        Command::Identity(args) => block_on(async move {
            meshplane_sidecar::run_identity(args).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Diff(args) => block_on(async move {
            let text = meshplane_sidecar::run_diff(args).await?;
            print_stdout(&text)
        }),
        Command::Demo(args) => block_on(async move {
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone(), "stopping the demo"));
            let options = meshplane_demo::DemoOptions {
                once: args.once,
                requests: args.requests,
                tracing_collector: args.tracing_collector,
            };
            meshplane_demo::run(options, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// The bootstrap to `output` (replaced atomically) or stdout.
fn write_bootstrap(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<ExitCode> {
    match output {
        Some(path) => {
            meshplane_sidecar::write_file_atomically(path, &format!("{text}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        None => print_stdout(&format!("{text}\n")),
    }
}

fn block_on(
    command: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(command)
}

/// Cancels `shutdown` on SIGINT or SIGTERM, logging `what` happens next.
async fn cancel_on_signal(shutdown: CancellationToken, what: &'static str) {
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
    tracing::info!("shutting down: {what}");
    shutdown.cancel();
}
