//! `GET /v1/health/service/:name`: every instance of a service with its node and checks.
//! The checks are also the values of `GET /v1/agent/checks`.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

use crate::{agent::AgentService, null};

/// A check's status as Consul writes it.
pub mod status {
    /// The check passes.
    pub const PASSING: &str = "passing";
    /// The check warns: the instance still serves, at its warning weight.
    pub const WARNING: &str = "warning";
    /// The check fails.
    pub const CRITICAL: &str = "critical";
    /// The node or service is in maintenance mode.
    pub const MAINTENANCE: &str = "maintenance";
}

/// One entry of `GET /v1/health/service/:name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node the instance runs on.
    pub node: Node,
    /// The instance.
    pub service: AgentService,
    /// The node's checks (empty `ServiceID`, such as `serfHealth`) and the instance's own.
    #[serde(default, deserialize_with = "null::as_default")]
    pub checks: Vec<HealthCheck>,
}

/// The `Node` of a health entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node id (a UUID).
    #[serde(rename = "ID", default, deserialize_with = "null::as_default")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address: the instance's address when it has none of its own.
    #[serde(default, deserialize_with = "null::as_default")]
    pub address: String,
    /// Datacenter (empty when Consul leaves it out).
    #[serde(default, deserialize_with = "null::as_default")]
    pub datacenter: String,
    /// Addresses by network (`lan`, `wan`, `lan_ipv4`, …).
    #[serde(default, deserialize_with = "null::as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "null::as_default")]
    pub meta: BTreeMap<String, String>,
    /// Raft index at which the node was registered.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// One check: in a health entry's `Checks`, and the values of `GET /v1/agent/checks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// The node the check runs on.
    #[serde(default, deserialize_with = "null::as_default")]
    pub node: String,
    /// Check id.
    #[serde(rename = "CheckID", default, deserialize_with = "null::as_default")]
    pub check_id: String,
    /// Display name.
    #[serde(default, deserialize_with = "null::as_default")]
    pub name: String,
    /// One of [`status`].
    pub status: String,
    /// Notes from the definition.
    #[serde(default, deserialize_with = "null::as_default")]
    pub notes: String,
    /// Output of the last run (or the note of the last TTL update).
    #[serde(default, deserialize_with = "null::as_default")]
    pub output: String,
    /// The instance the check belongs to; empty for node checks, which count for every
    /// instance on the node.
    #[serde(rename = "ServiceID", default, deserialize_with = "null::as_default")]
    pub service_id: String,
    /// The service's name; empty for node checks.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_name: String,
    /// The service's tags.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_tags: Vec<String>,
    /// Check type (`ttl`, `http`, …; empty for `serfHealth`).
    #[serde(default, deserialize_with = "null::as_default")]
    pub r#type: String,
    /// Run period as Go duration text (empty for TTL checks).
    #[serde(default, deserialize_with = "null::as_default")]
    pub interval: String,
    /// Per-run timeout as Go duration text (empty for TTL checks).
    #[serde(default, deserialize_with = "null::as_default")]
    pub timeout: String,
    /// Port exposed through a Connect proxy for this check (0: none).
    #[serde(default, deserialize_with = "null::as_default")]
    pub exposed_port: u16,
    /// The check's definition as Consul echoes it.
    #[serde(default, deserialize_with = "null::as_default")]
    pub definition: HealthCheckDefinition,
    /// Raft index at which the check was registered.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last status or output change.
    #[serde(default)]
    pub modify_index: u64,
}

/// A check's `Definition`. Meshplane reads none of its fields and writes it empty, as an
/// object, so clients that look into it find one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckDefinition {}

/// What a change detector needs of one element of `GET /v1/health/state/:state` (whose
/// elements are [`HealthCheck`]s): which check of which instance on which node, its status
/// and the index of its last change. Reading only these, borrowed from the response body
/// where JSON allows (strings without escapes), keeps an answer with tens of thousands of
/// checks cheap to parse; every other field is skipped.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckState<'a> {
    /// The node the check runs on.
    #[serde(borrow, default, deserialize_with = "null::cow_str")]
    pub node: Cow<'a, str>,
    /// Check id.
    #[serde(
        rename = "CheckID",
        borrow,
        default,
        deserialize_with = "null::cow_str"
    )]
    pub check_id: Cow<'a, str>,
    /// The instance; empty for node checks (which count for every instance on the node).
    #[serde(
        rename = "ServiceID",
        borrow,
        default,
        deserialize_with = "null::cow_str"
    )]
    pub service_id: Cow<'a, str>,
    /// The service; empty for node checks.
    #[serde(borrow, default, deserialize_with = "null::cow_str")]
    pub service_name: Cow<'a, str>,
    /// One of [`status`].
    #[serde(borrow, default, deserialize_with = "null::cow_str")]
    pub status: Cow<'a, str>,
    /// Raft index of the check's last change (status or output).
    #[serde(default)]
    pub modify_index: u64,
}
