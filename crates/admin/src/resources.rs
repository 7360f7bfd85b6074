//! A group's translated resources for people: name, version and the message in Envoy's own
//! JSON form (as in its `/config_dump`), so both compare field by field. Secrets are never
//! shown: only their names and versions.

use meshplane_xds::{ResourceType, Snapshot};
use serde::Serialize;

/// One resource.
#[derive(Debug, Serialize)]
pub struct ResourceView {
    /// CDS, EDS, LDS, RDS or SDS.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// Content version.
    pub version: String,
    /// Encoded size in bytes.
    pub bytes: usize,
    /// The message as Envoy's JSON (with `@type`); `null` for secrets.
    pub config: Option<serde_json::Value>,
}

fn decoded(kind: ResourceType, type_url: &str, value: &[u8]) -> Option<serde_json::Value> {
    match kind {
        // Private keys must never leave the control plane through the admin API.
        ResourceType::Secret => None,
        _ => Some(meshplane_envoy_json::to_json(type_url, value)),
    }
}

/// Every resource of a snapshot, in push order.
pub fn describe(snapshot: &Snapshot) -> Vec<ResourceView> {
    ResourceType::ALL
        .iter()
        .flat_map(|kind| {
            snapshot.resources(*kind).values().map(move |r| {
                let any = r.to_any();
                ResourceView {
                    kind: kind.short_name(),
                    name: r.name().to_owned(),
                    version: r.version().to_owned(),
                    bytes: r.encoded_any().len(),
                    config: decoded(*kind, &any.type_url, &any.value),
                }
            })
        })
        .collect()
}
