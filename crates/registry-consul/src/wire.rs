//! Consul's JSON responses as documented (`/v1/catalog/services`, `/v1/health/service/:name`)
//! and their conversion into domain [`Instance`]s. Lenient where Consul is inconsistent
//! (`null` lists and maps), strict where a wrong value would misroute traffic.

use std::collections::BTreeMap;

use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};
use serde::Deserialize;

/// `/v1/catalog/services`: service name → tags.
pub type CatalogServices = BTreeMap<String, Option<Vec<String>>>;

/// One entry of `/v1/health/service/:name`.
#[derive(Clone, Debug, Deserialize)]
pub struct HealthEntry {
    /// The node the instance runs on.
    #[serde(rename = "Node")]
    pub node: HealthNode,
    /// The service instance.
    #[serde(rename = "Service")]
    pub service: HealthService,
    /// Node checks (empty `ServiceID`) and the instance's own checks.
    #[serde(rename = "Checks", default)]
    pub checks: Option<Vec<HealthCheck>>,
}

/// The `Node` object of a health entry.
#[derive(Clone, Debug, Deserialize)]
pub struct HealthNode {
    /// Node name.
    #[serde(rename = "Node")]
    pub node: String,
    /// Node address, used when the service has none.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// Datacenter.
    #[serde(rename = "Datacenter", default)]
    pub datacenter: Option<String>,
}

/// The `Service` object of a health entry.
#[derive(Clone, Debug, Deserialize)]
pub struct HealthService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    #[serde(rename = "Service")]
    pub service: String,
    /// Tags (may be `null`).
    #[serde(rename = "Tags", default)]
    pub tags: Option<Vec<String>>,
    /// Address (may be empty: use the node's).
    #[serde(rename = "Address", default)]
    pub address: String,
    /// Port.
    #[serde(rename = "Port", default)]
    pub port: u16,
    /// Metadata (may be `null`).
    #[serde(rename = "Meta", default)]
    pub meta: Option<BTreeMap<String, String>>,
    /// Weights (absent on old Consul versions: 1/1).
    #[serde(rename = "Weights", default)]
    pub weights: Option<Weights>,
}

/// Consul's `Weights`.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Weights {
    /// Weight while passing.
    #[serde(rename = "Passing", default = "one")]
    pub passing: u32,
    /// Weight while warning.
    #[serde(rename = "Warning", default = "one")]
    pub warning: u32,
}

/// One check of a health entry.
#[derive(Clone, Debug, Deserialize)]
pub struct HealthCheck {
    /// Check id.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// `passing`, `warning`, `critical` (or `maintenance`).
    #[serde(rename = "Status")]
    pub status: String,
    /// The service it belongs to; empty for node-level checks.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

/// Why a response could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A service name Consul returned is not a valid Meshplane service name.
    #[error("Consul returned service name {name:?} that Meshplane cannot route to: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
}

fn one() -> u32 {
    1
}

/// Service names from `/v1/catalog/services`. Invalid names are skipped with a warning rather
/// than failing the whole catalog.
pub fn service_names(catalog: &CatalogServices) -> Vec<ServiceName> {
    catalog
        .keys()
        .filter_map(|name| match ServiceName::new(name.as_str()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "skipping Consul service with an unusable name");
                None
            }
        })
        .collect()
}

/// Converts a health response into instances. `default_dc` is used when the node does not say.
pub fn instances(entries: Vec<HealthEntry>, default_dc: &str) -> Result<Vec<Instance>, WireError> {
    entries
        .into_iter()
        .map(|e| instance(e, default_dc))
        .collect()
}

fn instance(entry: HealthEntry, default_dc: &str) -> Result<Instance, WireError> {
    let HealthEntry {
        node,
        service,
        checks,
    } = entry;
    let name = ServiceName::new(service.service.as_str()).map_err(|e| WireError::Name {
        name: service.service.clone(),
        reason: e.to_string(),
    })?;
    let health = checks
        .unwrap_or_default()
        .iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == service.id)
        .map(|c| status(&c.status))
        .fold(Health::Passing, Health::worst);
    let weights = service.weights.unwrap_or(Weights {
        passing: 1,
        warning: 1,
    });
    let id = InstanceId::new(service.id.as_str()).map_err(|e| WireError::Name {
        name: service.service.clone(),
        reason: e.to_string(),
    })?;
    Ok(Instance {
        id,
        service: name,
        address: if service.address.is_empty() {
            node.address.clone()
        } else {
            service.address
        },
        node: node.node,
        port: service.port,
        tags: service.tags.unwrap_or_default(),
        meta: service.meta.unwrap_or_default(),
        weight: if health == Health::Warning {
            weights.warning
        } else {
            weights.passing
        },
        health,
        locality: Locality {
            datacenter: node
                .datacenter
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| default_dc.to_string()),
            zone: None,
        },
    })
}

/// Consul's status strings; anything unknown (including `maintenance`) is not routable.
fn status(s: &str) -> Health {
    match s {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        _ => Health::Critical,
    }
}
