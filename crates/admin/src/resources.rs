//! A group's translated resources for people: name, version and the decoded message.
//! Secrets are never shown: only their names and versions.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use meshplane_xds::{ResourceType, Snapshot};
use prost::Message;
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
    /// The decoded message (protobuf text as Rust debug output); absent for secrets.
    pub config: Option<String>,
}

fn decoded(kind: ResourceType, value: &[u8]) -> Option<String> {
    match kind {
        ResourceType::Cluster => Cluster::decode(value).ok().map(|m| format!("{m:#?}")),
        ResourceType::Endpoint => ClusterLoadAssignment::decode(value)
            .ok()
            .map(|m| format!("{m:#?}")),
        ResourceType::Listener => Listener::decode(value).ok().map(|m| format!("{m:#?}")),
        ResourceType::Route => RouteConfiguration::decode(value)
            .ok()
            .map(|m| format!("{m:#?}")),
        // Private keys must never leave the control plane through the admin API.
        ResourceType::Secret => None,
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
                    config: decoded(*kind, &any.value),
                }
            })
        })
        .collect()
}
