//! End-to-end test harness: real Envoy processes against an in-process Meshplane xDS
//! server, all on 127.0.0.1 with ephemeral ports.
//!
//! A test starts a [`ControlPlane`], publishes a snapshot built with [`mesh::egress`],
//! starts test [`Upstream`]s and an [`Envoy`] (found by [`find_envoy`]), then drives
//! traffic with a [`Client`] or a [`Load`] and waits with [`eventually`] — never with a
//! bare sleep. Every process is killed and reaped on drop, and a failing test prints
//! Envoy's log. The tests themselves are in `tests/envoy/`.

mod bootstrap;
pub mod control_plane;
pub mod envoy;
pub mod error;
pub mod mesh;
pub mod poll;
pub mod traffic;
pub mod upstream;

pub use control_plane::{ControlPlane, ServiceGrouper};
pub use envoy::{DynamicClusters, Envoy, EnvoyConfig, Flavour, find_envoy};
pub use error::{Error, Result};
pub use mesh::{egress, free_port, rejected_eds_cluster, retimed_cluster};
pub use poll::{CONVERGE, eventually};
pub use traffic::{Client, Load, LoadReport, Reply};
pub use upstream::Upstream;
