//! The only crate that wires Meshplane together: configuration, the xDS server, registry
//! sources and translation, their tasks and their shutdown.
//!
//! Start at [`control_plane::run`]; [`config`] holds the settings it takes.

pub mod config;
pub mod control_plane;
pub mod mesh;

pub use config::{ConfigError, ControlPlaneConfig, RegistryKind, ServiceDatacenters};
