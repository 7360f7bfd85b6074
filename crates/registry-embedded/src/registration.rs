//! What the embedded registry stores: a service registration and its checks, in the shape
//! the catalog, the database and the HTTP API share.

use std::{collections::BTreeMap, time::Duration};

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use serde::{Deserialize, Serialize};

/// One registered service instance (Consul's agent "service definition").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// Unique id (Consul `ID`, defaults to the name).
    pub id: InstanceId,
    /// Service name (Consul `Name`/`Service`).
    pub name: ServiceName,
    /// Tags, in registration order.
    pub tags: Vec<String>,
    /// Address; empty means "the node's address", as in Consul.
    pub address: String,
    /// Port (0 allowed, as in Consul).
    pub port: u16,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Weight while all checks pass.
    pub weight_passing: u32,
    /// Weight while some check warns.
    pub weight_warning: u32,
    /// Consul's `EnableTagOverride`, stored and echoed.
    pub enable_tag_override: bool,
}

/// How a check gets its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// The client must report pass/warn/fail within every `ttl`, or the check turns critical.
    Ttl {
        /// Time-to-live of each report.
        ttl: Duration,
    },
    /// The registry polls `url` every `interval`: 2xx passing, 429 warning, anything else
    /// (or no answer within `timeout`) critical.
    Http {
        /// URL to poll.
        url: String,
        /// Poll period.
        interval: Duration,
        /// Request timeout (Consul's default: 10s).
        timeout: Duration,
        /// HTTP method (default `GET`).
        method: String,
        /// Extra request headers.
        header: BTreeMap<String, Vec<String>>,
    },
}

/// A check definition plus its current status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Unique check id (`service:<id>` by default).
    pub id: String,
    /// Display name.
    pub name: String,
    /// How the status is obtained.
    pub kind: CheckKind,
    /// Deregister the service once this check has been critical for this long.
    pub deregister_after: Option<Duration>,
    /// Free-form notes from the definition.
    pub notes: String,
    /// Current status.
    pub status: Health,
    /// Output of the last run or the note of the last TTL update.
    pub output: String,
    /// Index at which the check was created.
    pub create_index: u64,
    /// Index of the last status/output change.
    pub modify_index: u64,
}

/// A service and its checks, as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The service definition.
    pub service: ServiceDef,
    /// Its checks.
    pub checks: Vec<Check>,
    /// Index at which the service was first registered.
    pub create_index: u64,
    /// Index of the last change to the definition.
    pub modify_index: u64,
}

/// The node every registration of this embedded registry lives on (it is a single agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Node id, UUID-formatted.
    pub id: String,
    /// Node address (used when a service has no address of its own).
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
}

// === impl CheckKind ===

impl CheckKind {
    /// Consul's `Type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Http { .. } => "http",
        }
    }
}

// === impl Registration ===

impl Registration {
    /// Worst status over the service's checks (passing with no checks).
    pub fn health(&self) -> Health {
        self.checks
            .iter()
            .fold(Health::Passing, |h, c| h.worst(c.status))
    }

    /// The service as a domain [`Instance`] on `node`.
    pub fn to_instance(&self, node: &Node) -> Instance {
        let health = self.health();
        let s = &self.service;
        Instance {
            id: s.id.clone(),
            service: s.name.clone(),
            node: node.name.clone(),
            address: if s.address.is_empty() {
                node.address.clone()
            } else {
                s.address.clone()
            },
            port: s.port,
            tags: s.tags.clone(),
            meta: s.meta.clone(),
            weight: match health {
                Health::Warning => s.weight_warning,
                _ => s.weight_passing,
            },
            health,
            locality: Locality {
                datacenter: node.datacenter.clone(),
                zone: None,
            },
        }
    }
}
