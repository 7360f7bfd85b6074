//! Consul's health and catalog responses ([`meshplane_consul_api`]) into domain
//! [`Instance`]s. Lenient where Consul is inconsistent (the wire types read `null` lists and
//! maps as empty), strict where a wrong value would misroute traffic.

use std::collections::BTreeMap;

use meshplane_consul_api::{CatalogServices, ServiceEntry, health::status};
use meshplane_model::{Health, Instance, InstanceId, Locality, ServiceName};

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

/// Service names from `/v1/catalog/services`. Invalid names are skipped with a warning rather
/// than failing the whole catalog.
/// Service names and tags from `/v1/catalog/services`, skipping (and logging) names Meshplane
/// cannot use.
pub fn service_tags(catalog: &CatalogServices) -> BTreeMap<ServiceName, Vec<String>> {
    service_names(catalog)
        .into_iter()
        .map(|name| {
            let tags = catalog
                .get(name.as_str())
                .cloned()
                .flatten()
                .unwrap_or_default();
            (name, tags)
        })
        .collect()
}

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
pub fn instances(entries: Vec<ServiceEntry>, default_dc: &str) -> Result<Vec<Instance>, WireError> {
    entries
        .into_iter()
        .map(|e| instance(e, default_dc))
        .collect()
}

fn instance(entry: ServiceEntry, default_dc: &str) -> Result<Instance, WireError> {
    let ServiceEntry {
        node,
        service,
        checks,
    } = entry;
    let name = ServiceName::new(service.service.as_str()).map_err(|e| WireError::Name {
        name: service.service.clone(),
        reason: e.to_string(),
    })?;
    let health = checks
        .iter()
        .filter(|c| c.service_id.is_empty() || c.service_id == service.id)
        .map(|c| status(&c.status))
        .fold(Health::Passing, Health::worst);
    let weights = service.weights;
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
        tags: service.tags,
        meta: service.meta,
        weight: if health == Health::Warning {
            weights.warning
        } else {
            weights.passing
        },
        health,
        locality: Locality {
            datacenter: if node.datacenter.is_empty() {
                default_dc.to_string()
            } else {
                node.datacenter
            },
            zone: None,
        },
    })
}

/// Consul's status strings; anything unknown (including `maintenance`) is not routable.
fn status(s: &str) -> Health {
    match s {
        status::PASSING => Health::Passing,
        status::WARNING => Health::Warning,
        _ => Health::Critical,
    }
}
