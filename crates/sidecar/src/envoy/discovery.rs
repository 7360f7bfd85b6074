//! Finding the Envoy binary: `--envoy`, `MESHPLANE_ENVOY`, `PATH`, then the project's own
//! install folder (`.tools/envoy/envoy/_bin/envoy`, from `scripts/install-envoy.sh`) next to
//! the working directory or the running executable, or any of their parents.

use std::path::{Path, PathBuf};

const LOCAL_INSTALL: &str = ".tools/envoy/envoy/_bin/envoy";

/// No Envoy binary was found.
#[derive(Debug, thiserror::Error)]
#[error(
    "no Envoy binary found (looked at: {looked_at}); pass --envoy PATH, set MESHPLANE_ENVOY, \
     put `envoy` on PATH, or run scripts/install-envoy.sh"
)]
pub struct EnvoyNotFound {
    looked_at: String,
}

/// Finds Envoy. `explicit` is `--envoy` (clap already folds `MESHPLANE_ENVOY` into it for
/// the CLI; library callers get the environment variable checked here too).
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf, EnvoyNotFound> {
    let mut looked_at = Vec::new();
    let from_env = std::env::var_os("MESHPLANE_ENVOY").map(PathBuf::from);
    if let Some(candidate) = explicit.map(Path::to_path_buf).or(from_env) {
        // An explicit choice is final: a typo must not silently pick another Envoy.
        return if is_executable(&candidate) {
            Ok(candidate)
        } else {
            let looked_at = format!("{} (not an executable file)", candidate.display());
            Err(EnvoyNotFound { looked_at })
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("envoy");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    looked_at.push("`envoy` on PATH".to_owned());
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(LOCAL_INSTALL);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        looked_at.push(format!(
            "{LOCAL_INSTALL} in {} and its parents",
            start.display()
        ));
    }
    Err(EnvoyNotFound {
        looked_at: looked_at.join(", "),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
