//! The catalog reads: `GET /v1/catalog/services` and `GET /v1/catalog/service/:name`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{agent::Weights, null};

/// `GET /v1/catalog/services`: service name → the union of its instances' tags. Some Consul
/// versions write a service without tags as `null`.
pub type CatalogServices = BTreeMap<String, Option<Vec<String>>>;

/// One entry of `GET /v1/catalog/service/:name`: the node's fields and the instance's,
/// flattened into one object (`Service`-prefixed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    /// Node id.
    #[serde(rename = "ID", default, deserialize_with = "null::as_default")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Node address.
    #[serde(default, deserialize_with = "null::as_default")]
    pub address: String,
    /// Datacenter.
    #[serde(default, deserialize_with = "null::as_default")]
    pub datacenter: String,
    /// The node's addresses by network.
    #[serde(default, deserialize_with = "null::as_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Node metadata.
    #[serde(default, deserialize_with = "null::as_default")]
    pub node_meta: BTreeMap<String, String>,
    /// Service kind (empty for a plain service).
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_kind: String,
    /// Instance id.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Tags.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_tags: Vec<String>,
    /// Instance address; empty means the node's.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_address: String,
    /// Weights.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_weights: Weights,
    /// Instance metadata.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_meta: BTreeMap<String, String>,
    /// Port.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_port: u16,
    /// Whether anti-entropy keeps catalog tag changes.
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_enable_tag_override: bool,
    /// Connect proxy settings (empty for a plain service).
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_proxy: ServiceProxy,
    /// Connect settings (empty for a plain service).
    #[serde(default, deserialize_with = "null::as_default")]
    pub service_connect: ServiceConnect,
    /// Raft index at which the instance was registered.
    #[serde(default)]
    pub create_index: u64,
    /// Raft index of its last change.
    #[serde(default)]
    pub modify_index: u64,
}

/// `ServiceProxy` of a catalog entry. Meshplane registers no Connect proxies: written with
/// only its (empty) `Expose`, as Consul writes it for a plain service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceProxy {
    /// Paths exposed through the proxy.
    #[serde(default, deserialize_with = "null::as_default")]
    pub expose: Expose,
}

/// `ServiceProxy.Expose`; Meshplane reads none of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expose {}

/// `ServiceConnect` of a catalog entry; Meshplane reads none of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConnect {}
