//! What the sidecar is doing, published on a watch channel (for tests, logs and callers that
//! embed the sidecar), and how it ended.

use std::net::SocketAddr;

use crate::envoy::{EnvoyExit, EnvoyProcess};

/// A snapshot of the sidecar's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SidecarStatus {
    /// The instance id (registry id and `node.id`).
    pub instance_id: String,
    /// Envoy's admin address.
    pub admin: Option<SocketAddr>,
    /// Hot-restart base id shared by every epoch.
    pub base_id: u32,
    /// The Envoy serving now.
    pub current: Option<EnvoyProcess>,
    /// Older epochs still draining after a hot restart.
    pub draining: Vec<EnvoyProcess>,
    /// Restarts after crashes so far.
    pub crash_restarts: u32,
    /// Whether the registry accepted the latest registration.
    pub registered: bool,
}

/// How the sidecar ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request (SIGTERM/SIGINT): deregistered, Envoy stopped.
    Stopped,
    /// Envoy kept crashing; the sidecar deregistered and gave up.
    EnvoyFailed(EnvoyExit),
}

impl Outcome {
    /// The process exit code: 0 when stopped, Envoy's own code when it gave up.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Stopped => 0,
            // A crash that looked like success must not read as success.
            Outcome::EnvoyFailed(exit) => exit.exit_code().max(1),
        }
    }
}
