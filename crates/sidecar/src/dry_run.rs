//! `meshplane diff`: asks a control plane what the proxies of a service would be sent if a
//! descriptor were deployed (`POST /api/dry-run`), and prints the difference. The
//! descriptor is checked here first, with the sidecar's own errors, so a broken file is
//! reported the same way it would stop a sidecar. Nothing changes anywhere.

use std::path::PathBuf;
use std::time::Duration;

use crate::descriptor;

/// `meshplane diff`: what a descriptor change would do, before it is deployed.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The proposed service descriptor (meshplane.yaml).
    #[arg(long, env = "MESHPLANE_DESCRIPTOR")]
    pub descriptor: PathBuf,
    /// The control plane's admin API (its `--admin-addr`), e.g. `http://10.0.0.1:18080`.
    #[arg(long, env = "MESHPLANE_ADMIN_URL")]
    pub control_plane: String,
    /// CA bundle an `https://` admin API's certificate chains to (default: the system's).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print the difference as JSON (the API's answer) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why `meshplane diff` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The descriptor cannot be read or is invalid (the error names the field).
    #[error(transparent)]
    Descriptor(#[from] descriptor::LoadError),
    /// The CA file cannot be used.
    #[error("--ca-file {path}: {error}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: String,
    },
    /// The control plane could not be asked.
    #[error("cannot reach the control plane at {url}: {error}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The error.
        error: reqwest::Error,
    },
    /// The control plane refused (an invalid descriptor for its policy, say).
    #[error("the control plane answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Its explanation.
        body: String,
    },
}

/// Runs the dry run; the text (or JSON) to print.
pub async fn run_diff(args: DiffArgs) -> Result<String, DiffError> {
    // Sent as written (in JSON), as node metadata carries it.
    let written = descriptor::load(&args.descriptor)?.written.to_string();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if let Some(path) = &args.ca_file {
        let ca_error = |error: String| DiffError::CaFile {
            path: path.clone(),
            error,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let roots =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
        builder = builder.tls_certs_only(roots);
    }
    let http = builder.build().map_err(|error| DiffError::Unreachable {
        url: args.control_plane.clone(),
        error,
    })?;
    let format = if args.json { "json" } else { "text" };
    let url = format!(
        "{}/api/dry-run?format={format}",
        args.control_plane.trim_end_matches('/')
    );
    let unreachable = |error| DiffError::Unreachable {
        url: url.clone(),
        error,
    };
    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body(written)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(DiffError::Refused {
            status,
            body: body.trim_end().to_owned(),
        });
    }
    Ok(body)
}
