use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::{NameError, ServiceName};

/// A unique id for one instance of a service (Consul's service `ID`), unique per source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

/// The health of an instance, worst of its checks. Ordered from best to worst.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// All checks pass (or there are none).
    #[default]
    Passing,
    /// At least one check warns and none is critical: still routable, with the warning weight.
    Warning,
    /// At least one check is critical: not routable.
    Critical,
}

/// Where an instance runs. The datacenter drives locality-aware routing: local first, others
/// as failover priorities.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Locality {
    /// The datacenter name, e.g. `dc1`.
    pub datacenter: String,
    /// An optional zone inside the datacenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// One reachable endpoint of a service, as a registry reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique id of this instance within its source.
    pub id: InstanceId,
    /// The service this instance belongs to.
    pub service: ServiceName,
    /// The node (host/agent) that registered the instance.
    pub node: String,
    /// IP address or host name to connect to.
    pub address: String,
    /// Port to connect to (the sidecar's ingress port for meshed services).
    pub port: u16,
    /// Registry tags, e.g. `canary`.
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Load-balancing weight that applies at the current `health` (Consul's `Weights.Passing`
    /// or `Weights.Warning`).
    pub weight: u32,
    /// Aggregated health of the instance's checks.
    pub health: Health,
    /// Datacenter (and zone) of the instance.
    pub locality: Locality,
}

// === impl InstanceId ===

impl InstanceId {
    /// Wraps a non-empty id.
    pub fn new(id: impl Into<String>) -> Result<Self, NameError> {
        let id = id.into();
        if id.is_empty() {
            return Err(NameError::EmptyInstanceId);
        }
        Ok(Self(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Health ===

impl Health {
    /// The worse of two health values (a critical check makes the instance critical).
    pub fn worst(self, other: Health) -> Health {
        self.max(other)
    }

    /// Whether traffic may be sent to an instance in this state.
    pub fn is_routable(self) -> bool {
        self != Health::Critical
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_health_wins() {
        assert_eq!(Health::Passing.worst(Health::Warning), Health::Warning);
        assert_eq!(Health::Critical.worst(Health::Warning), Health::Critical);
        assert_eq!(Health::Passing.worst(Health::Passing), Health::Passing);
        assert!(!Health::Critical.is_routable());
        assert!(Health::Warning.is_routable());
    }

    #[test]
    fn empty_instance_id_is_rejected() {
        assert_eq!(InstanceId::new(""), Err(NameError::EmptyInstanceId));
        assert_eq!(
            InstanceId::new("a-1").map(|i| i.to_string()),
            Ok("a-1".into())
        );
    }
}
