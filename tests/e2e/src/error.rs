//! The harness's one error type.

/// Why a harness step failed. Test code `expect`s these, so each message says what was
/// being done and, where it helps, what to do about it; `Debug` prints that message too,
/// since it is what `expect` shows.
#[derive(thiserror::Error)]
pub enum Error {
    /// No Envoy binary was found, or `MESHPLANE_ENVOY` names none.
    #[error(transparent)]
    EnvoyNotFound(#[from] meshplane_test_support::envoy::EnvoyNotFound),
    /// Envoy exited while the test still needed it.
    #[error("Envoy exited early ({status}); its log:\n{log}")]
    EnvoyExited {
        /// The exit status.
        status: String,
        /// Envoy's log.
        log: String,
    },
    /// A condition did not hold before its deadline.
    #[error(transparent)]
    Timeout(#[from] meshplane_test_support::poll::Timeout),
    /// A local I/O operation failed (temp files, sockets, spawning a process).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request (Envoy admin API or traffic through Envoy) failed.
    #[error("{context}: {source}")]
    Http {
        /// What was being done.
        context: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The control plane refused a snapshot or failed to serve.
    #[error("control plane: {0}")]
    ControlPlane(String),
    /// Envoy's admin API answered something unexpected.
    #[error("unexpected admin API answer for {what}: {detail}")]
    Admin {
        /// The admin route.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Result with the harness's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to I/O errors.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
