//! Immutable, encoded-once xDS resources.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

const TYPE_PREFIX: &str = "type.googleapis.com/";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The xDS resource types Meshplane serves, in the order a push sends them
/// (make-before-break: clusters, then their endpoints, then listeners and routes that use
/// them; secrets last, since Envoy asks for them by name once a cluster or listener needs one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    Secret,
}

impl ResourceType {
    /// All types, in push order.
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Secret,
    ];

    /// The type URL Envoy uses for this type.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
        }
    }

    /// Parses a type URL; `None` for types Meshplane does not serve.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name used in logs, metrics and the admin API (`CDS`, `EDS`, ...).
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "CDS",
            ResourceType::Endpoint => "EDS",
            ResourceType::Listener => "LDS",
            ResourceType::Route => "RDS",
            ResourceType::Secret => "SDS",
        }
    }

    /// Whether a state-of-the-world response for this type is the complete set
    /// (absence means deletion). True for CDS and LDS.
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Index into per-type arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A resource that names another: a cluster naming its EDS resource, a listener naming
/// its route configuration. The snapshot consistency check follows these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// Type of the resource named.
    pub kind: ResourceType,
    /// Name of the resource named (shared, like [`Resource::shared_name`]).
    pub name: Arc<str>,
}

/// One xDS resource: its name, a version derived from its content, and its encoded bytes.
///
/// Built once by the translator and shared (`Arc`) between every group and every proxy
/// that receives it: the bytes sent on the wire are these bytes, never re-encoded per proxy.
pub struct Resource {
    kind: ResourceType,
    /// Shared with every stream that holds or subscribes to the resource (see
    /// [`Resource::shared_name`]), so per-stream state keeps no copy of the name.
    name: Arc<str>,
    version: String,
    /// The encoded `google.protobuf.Any` wrapping the resource.
    any: Bytes,
    references: Vec<Reference>,
}

impl Resource {
    /// A cluster. An EDS cluster references its EDS resource (the `service_name`, or the
    /// cluster's name when that is empty).
    pub fn cluster(cluster: &Cluster) -> Arc<Self> {
        let mut references = Vec::new();
        if cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(
                envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Eds as i32,
            ))
        {
            let service_name = cluster
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&cluster.name);
            references.push(Reference {
                kind: ResourceType::Endpoint,
                name: service_name.into(),
            });
        }
        Self::build(ResourceType::Cluster, &cluster.name, cluster, references)
    }

    /// Endpoints of a cluster.
    pub fn endpoints(cla: &ClusterLoadAssignment) -> Arc<Self> {
        let mut resource = Self::encode(ResourceType::Endpoint, &cla.cluster_name, cla, Vec::new());
        if let Some(version) = canonical_endpoints_version(cla) {
            resource.version = version;
        }
        Arc::new(resource)
    }

    /// An empty `ClusterLoadAssignment`: what a proxy gets for a cluster whose service
    /// has no instances or does not exist, so the cluster never stays warming.
    pub fn empty_endpoints(cluster_name: &str) -> Arc<Self> {
        Self::endpoints(&ClusterLoadAssignment {
            cluster_name: cluster_name.to_owned(),
            ..Default::default()
        })
    }

    /// A listener. Every HTTP connection manager that uses RDS references its route
    /// configuration.
    pub fn listener(listener: &Listener) -> Arc<Self> {
        let references = listener_route_names(listener)
            .into_iter()
            .map(|name| Reference {
                kind: ResourceType::Route,
                name: name.into(),
            })
            .collect();
        Self::build(ResourceType::Listener, &listener.name, listener, references)
    }

    /// A route configuration.
    pub fn route(route: &RouteConfiguration) -> Arc<Self> {
        Self::build(ResourceType::Route, &route.name, route, Vec::new())
    }

    /// A route configuration named `name`, already encoded: when `encoded` is what prost
    /// encodes for a `RouteConfiguration`, the same resource, bytes and version included, as
    /// [`Resource::route`] of it. For a caller that keeps a large route configuration in
    /// encoded parts and patches one of them (the version is a hash of the bytes, so parts
    /// must concatenate to exactly prost's encoding).
    pub fn route_encoded(name: &str, encoded: Vec<u8>) -> Arc<Self> {
        Arc::new(Self::wrap(ResourceType::Route, name, encoded, Vec::new()))
    }

    /// A secret (certificate, key or validation context).
    pub fn secret(secret: &Secret) -> Arc<Self> {
        Self::build(ResourceType::Secret, &secret.name, secret, Vec::new())
    }

    fn build<M: Message>(
        kind: ResourceType,
        name: &str,
        msg: &M,
        references: Vec<Reference>,
    ) -> Arc<Self> {
        Arc::new(Self::encode(kind, name, msg, references))
    }

    fn encode<M: Message>(
        kind: ResourceType,
        name: &str,
        msg: &M,
        references: Vec<Reference>,
    ) -> Self {
        Self::wrap(kind, name, msg.encode_to_vec(), references)
    }

    /// Wraps an encoded message in its `Any`.
    fn wrap(kind: ResourceType, name: &str, value: Vec<u8>, references: Vec<Reference>) -> Self {
        let any = Any {
            type_url: kind.type_url().to_owned(),
            value,
        };
        let any = Bytes::from(any.encode_to_vec());
        // The version is a hash of the encoded content, so the same content gets the same
        // version in every group and across control-plane restarts. Caveat: protobuf map
        // fields are encoded in hash-map order, so a resource with multi-entry maps may get a
        // new version after a restart (a harmless re-send, never a missed change).
        let version = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&any));
        Resource {
            kind,
            name: name.into(),
            version,
            any,
            references,
        }
    }

    /// The resource type.
    pub fn kind(&self) -> ResourceType {
        self.kind
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource name, to share rather than copy.
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The content-derived version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The encoded `google.protobuf.Any`.
    pub fn encoded_any(&self) -> &Bytes {
        &self.any
    }

    /// The resources this one names (see [`Reference`]).
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Decodes the resource back to its `Any` (for admin views and tests; never on the
    /// serving path).
    pub fn to_any(&self) -> Any {
        Any::decode(self.any.clone()).unwrap_or_default()
    }
}

/// Endpoint metadata with several namespaces (subset tags and the mTLS transport-socket
/// match) encodes in a per-process order; its version is then computed over a canonical
/// form (namespaces sorted) so equal content has equal versions in every control plane.
/// `None` when every metadata map has at most one entry (the encoding is canonical).
fn canonical_endpoints_version(cla: &ClusterLoadAssignment) -> Option<String> {
    let multi = cla.endpoints.iter().flat_map(|l| &l.lb_endpoints).any(|e| {
        e.metadata
            .as_ref()
            .is_some_and(|m| m.filter_metadata.len() > 1)
    });
    if !multi {
        return None;
    }
    let mut stripped = cla.clone();
    let mut canonical = Vec::new();
    for (l, locality) in stripped.endpoints.iter_mut().enumerate() {
        for (e, endpoint) in locality.lb_endpoints.iter_mut().enumerate() {
            let Some(metadata) = endpoint.metadata.take() else {
                continue;
            };
            let mut namespaces: Vec<_> = metadata.filter_metadata.into_iter().collect();
            namespaces.sort_by(|a, b| a.0.cmp(&b.0));
            for (namespace, value) in namespaces {
                canonical.extend_from_slice(format!("{l}/{e}/{namespace}/").as_bytes());
                // Each namespace's struct holds one key (see the translator).
                canonical.extend_from_slice(&value.encode_to_vec());
            }
        }
    }
    canonical.extend_from_slice(&stripped.encode_to_vec());
    Some(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&canonical)))
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.any.len())
            .finish()
    }
}

/// Route configuration names used by the HTTP connection managers of a listener.
fn listener_route_names(listener: &Listener) -> Vec<String> {
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.iter());
    let mut names = Vec::new();
    for chain in chains {
        for filter in &chain.filters {
            let Some(
                envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any),
            ) = &filter.config_type
            else {
                continue;
            };
            if any.type_url != HCM_TYPE {
                continue;
            }
            let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) else {
                continue;
            };
            if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                && !names.contains(&rds.route_config_name)
            {
                names.push(rds.route_config_name);
            }
        }
    }
    names
}

/// The type URL prefix every resource type shares.
pub(crate) fn is_type_url(url: &str) -> bool {
    url.starts_with(TYPE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_version_and_bytes_shared() {
        let a = Resource::empty_endpoints("payments");
        let b = Resource::empty_endpoints("payments");
        let c = Resource::empty_endpoints("orders");
        assert_eq!(a.version(), b.version());
        assert_ne!(a.version(), c.version());
        assert_eq!(a.to_any().type_url, ResourceType::Endpoint.type_url());
    }

    #[test]
    fn a_route_from_its_bytes_is_the_route() {
        use envoy_types::pb::envoy::config::route::v3::VirtualHost;
        let route = RouteConfiguration {
            name: "egress".to_owned(),
            virtual_hosts: vec![VirtualHost {
                name: "payments".to_owned(),
                domains: vec!["payments".to_owned()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let built = Resource::route(&route);
        let wrapped = Resource::route_encoded("egress", route.encode_to_vec());
        assert_eq!(wrapped.kind(), ResourceType::Route);
        assert_eq!(wrapped.name(), built.name());
        assert_eq!(wrapped.version(), built.version());
        assert_eq!(wrapped.encoded_any(), built.encoded_any());
        assert!(wrapped.references().is_empty());
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(
            ResourceType::from_type_url("type.googleapis.com/foo.Bar"),
            None
        );
    }

    /// Endpoint metadata with two namespaces, each map built with its own random hasher (as
    /// two control-plane processes would): the encoded order differs, the version must not.
    #[test]
    fn endpoint_versions_ignore_metadata_map_order() {
        use envoy_types::pb::envoy::config::core::v3::Metadata;
        use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let build = |weight: u32| {
            let namespace = |key: &str, value: &str| {
                let mut fields = std::collections::HashMap::new();
                fields.insert(
                    key.to_owned(),
                    Value {
                        kind: Some(Kind::StringValue(value.to_owned())),
                    },
                );
                Struct { fields }
            };
            let mut filter_metadata = std::collections::HashMap::new();
            for ns in [
                "envoy.lb",
                "envoy.transport_socket_match",
                "zz.other",
                "aa.other",
            ] {
                filter_metadata.insert(ns.to_owned(), namespace("k", ns));
            }
            ClusterLoadAssignment {
                cluster_name: "payments".to_owned(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        metadata: Some(Metadata {
                            filter_metadata,
                            ..Default::default()
                        }),
                        load_balancing_weight: Some(
                            envoy_types::pb::google::protobuf::UInt32Value { value: weight },
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        };
        let first = Resource::endpoints(&build(1));
        let mut orders = std::collections::BTreeSet::new();
        for _ in 0..32 {
            let again = Resource::endpoints(&build(1));
            orders.insert(again.encoded_any().clone());
            assert_eq!(again.version(), first.version());
        }
        assert!(orders.len() > 1, "the maps did encode in different orders");
        assert_ne!(Resource::endpoints(&build(2)).version(), first.version());
    }
}
