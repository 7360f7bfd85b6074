//! Envoy as a child process: finding the binary, the command line (hot-restart epoch and
//! base id), spawning and signalling, and its admin API's `/ready`.

mod admin;
mod discovery;
mod process;

pub use admin::{AdminClient, free_loopback_port, free_port};
pub use discovery::{EnvoyNotFound, find_envoy};
pub use process::{EnvoyCommand, EnvoyExit, EnvoyProcess, ExitReport};

/// The hot-restart base id for an instance: derived from the instance id, so several
/// Envoys on one host do not share Envoy's default (0), and the same on every hot restart
/// of this sidecar. Kept below 10^7 because Envoy multiplies it by 10 for its domain
/// sockets; never 0.
pub fn base_id_for(instance_id: &str) -> u32 {
    const RANGE: u64 = 9_999_999;
    let hash = xxhash_rust::xxh3::xxh3_64(instance_id.as_bytes());
    // `hash % RANGE` < 10^7 fits in u32.
    u32::try_from(hash % RANGE).map_or(1, |n| n + 1)
}
