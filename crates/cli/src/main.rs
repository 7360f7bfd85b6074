//! The `meshplane` binary: parses arguments and hands over to `meshplane-runtime`
//! (control plane) or `meshplane-sidecar` (sidecar, bootstrap).

mod args;

fn main() -> std::process::ExitCode {
    let (cli, matches) = args::Cli::parse_with_sources();
    // The demo prints its own progress and summary; keep the control plane's logs for problems.
    let default_level = if cli.is_demo() { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHPLANE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match args::run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
