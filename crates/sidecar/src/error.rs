//! Why the sidecar could not run.

use std::path::PathBuf;

use crate::config::BadControlPlaneAddr;
use crate::descriptor::LoadError;
use crate::envoy::EnvoyNotFound;

/// A sidecar failure before or outside Envoy's own exit (which is an
/// [`Outcome`](crate::Outcome), not an error).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The descriptor is unreadable or invalid (names the field); Envoy was not started.
    #[error(transparent)]
    Descriptor(#[from] LoadError),
    /// No usable control-plane address.
    #[error("--control-plane: {0}")]
    ControlPlane(#[from] BadControlPlaneAddr),
    /// No control-plane address at all.
    #[error("--control-plane: give at least one HOST:PORT")]
    NoControlPlane,
    /// The proxy's certificate could not be loaded or obtained; Envoy was not started.
    #[error("identity: {0}")]
    Identity(crate::identity::IdentityError),
    /// A flag has a bad value.
    #[error("--{flag}: {message}")]
    Flag {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Envoy could not be found.
    #[error(transparent)]
    EnvoyNotFound(#[from] EnvoyNotFound),
    /// Envoy could not be started.
    #[error("cannot start Envoy {binary}: {error}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A file or socket operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
}

impl SidecarError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |error| SidecarError::Io { what, error }
    }
}
