//! `meshplane-xds-bench`: see the crate docs for what it measures and how.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHPLANE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match meshplane_xds_bench::run(meshplane_xds_bench::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshplane-xds-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
