//! The key/value store (Consul's `/v1/kv`): entries kept in the same database, committed by
//! the same writer with the same durability as registrations (acknowledged = on disk), so the
//! control plane can keep its own small state (egress rollout flags, their audit log) with the
//! registry's guarantees, through the API it would use on Consul.

use serde::{Deserialize, Serialize};

/// Largest value accepted (Consul's default limit).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key (no leading `/`).
    pub key: String,
    /// The value, as written.
    pub value: Vec<u8>,
    /// Consul's opaque `flags`.
    pub flags: u64,
    /// Index at which the key was created.
    pub create_index: u64,
    /// Index of its last write.
    pub modify_index: u64,
}
