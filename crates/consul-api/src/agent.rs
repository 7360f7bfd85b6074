//! The agent endpoints: `PUT /v1/agent/service/register` (a service and its checks),
//! `PUT /v1/agent/check/update/:check_id`, and the values of `GET /v1/agent/services`, which
//! are also the `Service` of every health entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::null;

/// The body of `PUT /v1/agent/service/register`: one service instance and its checks.
///
/// Consul fills in what is left out: `ID` defaults to `Name`, `Port` to 0, `Weights` to 1/1,
/// an empty `Address` means the node's address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Instance id, unique on the agent (Consul's default: the name).
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Service name (required by Consul; absent reads as empty so the receiver can say so).
    #[serde(default, deserialize_with = "null::as_default")]
    pub name: String,
    /// Tags.
    #[serde(default, deserialize_with = "null::as_default")]
    pub tags: Vec<String>,
    /// Address; empty means the node's.
    #[serde(default, deserialize_with = "null::as_default")]
    pub address: String,
    /// Port.
    #[serde(default, deserialize_with = "null::as_default")]
    pub port: u16,
    /// Free-form metadata (Consul: at most 64 pairs, keys of letters, digits, `_` and `-`).
    #[serde(default, deserialize_with = "null::as_default")]
    pub meta: BTreeMap<String, String>,
    /// Load-balancing weights (Consul's default: 1/1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// Let anti-entropy keep tags changed in the catalog.
    #[serde(
        default,
        deserialize_with = "null::as_default",
        skip_serializing_if = "is_false"
    )]
    pub enable_tag_override: bool,
    /// Service kind: empty for a plain service (`connect-proxy`, `mesh-gateway`, … otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// One check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
    /// More checks (Consul registers `Check` first, then these).
    #[serde(
        default,
        deserialize_with = "null::as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub checks: Vec<CheckDefinition>,
}

/// A check in a registration (`Check`, `Checks[]`): exactly one of the kinds (`TTL`, `HTTP`,
/// `TCP`, `GRPC`, `Args`, …) is set. Durations are Go duration text ([`crate::duration`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// Check id (Consul's default: `service:<service id>`, then `:<n>` with several checks).
    #[serde(rename = "CheckID", default, skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    /// The spelling of `CheckID` that Consul also accepts.
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Display name (Consul's default: `Service '<name>' check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// TTL check: the client must report within this period.
    #[serde(rename = "TTL", default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// HTTP check: the URL the agent polls (2xx passing, 429 warning, else critical).
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// HTTP check: the method (Consul's default: `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP check: extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<BTreeMap<String, Vec<String>>>,
    /// How often the agent runs the check (required for HTTP, TCP, gRPC and script checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Per-run timeout (Consul's default: 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Deregister the service once this check has been critical for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
    /// Initial status (Consul's default: `critical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Free-form notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// TCP check: `host:port` to connect to.
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// gRPC health check: `host:port[/service]`.
    #[serde(rename = "GRPC", default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// Script check: the command and its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Script check, the pre-1.0 spelling of `Args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_args: Option<Vec<String>>,
    /// Docker check: the container the script runs in.
    #[serde(
        rename = "DockerContainerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub docker_container_id: Option<String>,
    /// HTTP/2 ping check: `host:port`.
    #[serde(rename = "H2PING", default, skip_serializing_if = "Option::is_none")]
    pub h2ping: Option<String>,
    /// UDP check: `host:port`.
    #[serde(rename = "UDP", default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<String>,
    /// Windows service check: the service name.
    #[serde(rename = "OSService", default, skip_serializing_if = "Option::is_none")]
    pub os_service: Option<String>,
    /// Alias check: the service whose health this check mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_service: Option<String>,
}

/// The body of `PUT /v1/agent/check/update/:check_id`, the body form of
/// `/v1/agent/check/{pass,warn,fail}/:check_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckUpdate {
    /// `passing`, `warning` or `critical` (required by Consul).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The check's new output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Consul's `Weights`: the instance's load-balancing weight while its checks pass, and while
/// some check warns. Either one left out (or `null`) is 1, Consul's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    /// Weight while every check passes.
    #[serde(default = "one", deserialize_with = "null::as_one")]
    pub passing: u32,
    /// Weight while some check warns.
    #[serde(default = "one", deserialize_with = "null::as_one")]
    pub warning: u32,
}

/// A registered service instance: the values of `GET /v1/agent/services` (keyed by id) and the
/// `Service` of each `GET /v1/health/service/:name` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(default, deserialize_with = "null::as_default")]
    pub tags: Vec<String>,
    /// Address; empty means the node's.
    #[serde(default, deserialize_with = "null::as_default")]
    pub address: String,
    /// Metadata.
    #[serde(default, deserialize_with = "null::as_default")]
    pub meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default, deserialize_with = "null::as_default")]
    pub port: u16,
    /// Weights (absent before Consul 1.2.3: 1/1).
    #[serde(default, deserialize_with = "null::as_default")]
    pub weights: Weights,
    /// Whether anti-entropy keeps catalog tag changes.
    #[serde(default, deserialize_with = "null::as_default")]
    pub enable_tag_override: bool,
    /// The agent's datacenter.
    #[serde(default, deserialize_with = "null::as_default")]
    pub datacenter: String,
    /// Raft index at which the instance was registered.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

// === impl ServiceRegistration ===

impl ServiceRegistration {
    /// The id Consul gives the instance: `ID`, or the name when `ID` is left out or empty.
    pub fn instance_id(&self) -> &str {
        self.id
            .as_deref()
            .filter(|id| !id.is_empty())
            .unwrap_or(&self.name)
    }

    /// Every field name, as Consul spells it (for receivers that match names loosely, as
    /// Consul does).
    pub const FIELDS: &[&str] = &[
        "ID",
        "Name",
        "Tags",
        "Address",
        "Port",
        "Meta",
        "Weights",
        "EnableTagOverride",
        "Kind",
        "Check",
        "Checks",
    ];
}

// === impl CheckDefinition ===

impl CheckDefinition {
    /// Every field name, as Consul spells it.
    pub const FIELDS: &[&str] = &[
        "CheckID",
        "ID",
        "Name",
        "TTL",
        "HTTP",
        "Method",
        "Header",
        "Interval",
        "Timeout",
        "DeregisterCriticalServiceAfter",
        "Status",
        "Notes",
        "TCP",
        "GRPC",
        "Args",
        "ScriptArgs",
        "DockerContainerID",
        "H2PING",
        "UDP",
        "OSService",
        "AliasService",
    ];
}

// === impl CheckUpdate ===

impl CheckUpdate {
    /// Every field name, as Consul spells it.
    pub const FIELDS: &[&str] = &["Status", "Output"];
}

// === impl Weights ===

impl Weights {
    /// Every field name, as Consul spells it.
    pub const FIELDS: &[&str] = &["Passing", "Warning"];
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

fn one() -> u32 {
    1
}

fn is_false(b: &bool) -> bool {
    !b
}
