//! Finding the Envoy the tests run, in the order the project documents for `meshplane
//! sidecar` (README, `crates/sidecar/src/envoy/discovery.rs`): `MESHPLANE_ENVOY` (which
//! `scripts/test.sh` sets), then `envoy` on `PATH`, then the project's own install
//! (`.tools/envoy/envoy/_bin/envoy` at the workspace root, from `scripts/install-envoy.sh`).
//! Unlike the sidecar's lookup, the install folder is found from this crate's location, so
//! it does not depend on the directory a test runs in.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where `scripts/install-envoy.sh` puts Envoy, relative to the workspace root.
pub const LOCAL_INSTALL: &str = ".tools/envoy/envoy/_bin/envoy";

/// The variable that names the Envoy binary.
pub const ENVOY_VAR: &str = "MESHPLANE_ENVOY";

/// Why no Envoy was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvoyNotFound {
    /// `MESHPLANE_ENVOY` names no executable file. An explicit choice is final: a typo must
    /// not silently test another Envoy.
    #[error(
        "MESHPLANE_ENVOY is {path}, which is not an executable file; point it at an Envoy \
         binary, or unset it to use `envoy` on PATH or the one `scripts/install-envoy.sh` installs"
    )]
    BadVariable {
        /// The value of `MESHPLANE_ENVOY`.
        path: PathBuf,
    },
    /// Nothing anywhere.
    #[error(
        "no Envoy binary found (looked at $MESHPLANE_ENVOY, `envoy` on PATH and {looked_at}); \
         run `scripts/install-envoy.sh` or set MESHPLANE_ENVOY to an Envoy binary"
    )]
    Missing {
        /// The project-local path checked last.
        looked_at: PathBuf,
    },
}

/// The Envoy binary for tests; panics with what to do when there is none.
pub fn envoy_binary() -> PathBuf {
    find_envoy().unwrap_or_else(|e| panic!("Envoy is needed for this test: {e}"))
}

/// Finds Envoy: `MESHPLANE_ENVOY`, `envoy` on `PATH`, then the workspace's install folder.
pub fn find_envoy() -> Result<PathBuf, EnvoyNotFound> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    find_envoy_in(
        std::env::var_os(ENVOY_VAR),
        std::env::var_os("PATH"),
        &workspace.join(LOCAL_INSTALL),
    )
}

/// [`find_envoy`] with the environment and the install path given.
pub fn find_envoy_in(
    variable: Option<OsString>,
    path: Option<OsString>,
    local: &Path,
) -> Result<PathBuf, EnvoyNotFound> {
    if let Some(explicit) = variable.filter(|v| !v.is_empty()).map(PathBuf::from) {
        return if is_executable(&explicit) {
            Ok(explicit)
        } else {
            Err(EnvoyNotFound::BadVariable { path: explicit })
        };
    }
    let on_path = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| is_executable(candidate))
    });
    if let Some(found) = on_path {
        return Ok(found);
    }
    if is_executable(local) {
        return Ok(local.to_owned());
    }
    Err(EnvoyNotFound::Missing {
        looked_at: local.to_owned(),
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn the_variable_wins_and_is_final() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chosen = executable(&dir.path().join("chosen"), "my-envoy");
        let on_path = executable(&dir.path().join("bin"), "envoy");
        let local = executable(&dir.path().join("local"), "envoy");
        let path = Some(dir.path().join("bin").into_os_string());
        assert_eq!(
            find_envoy_in(Some(chosen.clone().into()), path.clone(), &local),
            Ok(chosen)
        );
        let typo = dir.path().join("no-such-envoy");
        assert_eq!(
            find_envoy_in(Some(typo.clone().into()), path.clone(), &local),
            Err(EnvoyNotFound::BadVariable { path: typo })
        );
        // An empty variable counts as unset.
        assert_eq!(find_envoy_in(Some("".into()), path, &local), Ok(on_path));
    }

    #[test]
    fn path_comes_before_the_local_install_and_non_executables_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let local = executable(&dir.path().join("local"), "envoy");
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).expect("mkdir");
        std::fs::write(plain.join("envoy"), "not executable").expect("write");
        let on_path = executable(&dir.path().join("bin"), "envoy");
        let path = std::env::join_paths([&plain, &dir.path().join("bin")]).expect("PATH");
        assert_eq!(find_envoy_in(None, Some(path), &local), Ok(on_path));
        let only_plain = Some(plain.into_os_string());
        assert_eq!(find_envoy_in(None, only_plain.clone(), &local), Ok(local));
        let missing = dir.path().join("nowhere/envoy");
        let err = find_envoy_in(None, only_plain, &missing).expect_err("nothing found");
        assert!(
            err.to_string().contains("scripts/install-envoy.sh"),
            "{err}"
        );
    }
}
