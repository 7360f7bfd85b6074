//! Maps a connecting proxy to its group: parses the descriptor from node metadata, checks
//! it against the node and the mesh policy, and records the group for the translator.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use meshplane_model::Descriptor;
use meshplane_model::node_metadata::{
    ADMIN_KEY, ADMIN_RELAY_KEY, CERTIFICATE_PROVIDER_KEY, GRPC_CERTIFICATE_PROVIDER,
    LISTEN_ADDRESS_KEY, PROXYLESS_GRPC, PROXYLESS_KEY,
};
use meshplane_translate::{MeshOptions, ProxyGroup, check_policy};
use meshplane_xds::server::node::check_node_identity;
use meshplane_xds::{GroupError, GroupKey, MetadataGrouper, NodeGrouper, PeerInfo};
use parking_lot::RwLock;

use super::metadata::to_json;

/// Groups known to the control plane, by key. Written by the grouper when a proxy connects,
/// read by the translator.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    inner: Arc<RwLock<HashMap<GroupKey, Arc<ProxyGroup>>>>,
}

impl Groups {
    /// The group behind a key.
    pub fn get(&self, key: &GroupKey) -> Option<Arc<ProxyGroup>> {
        self.inner.read().get(key).cloned()
    }

    /// Records a group (the grouper does, when a proxy connects; benchmarks and tests too).
    pub fn insert(&self, key: GroupKey, group: ProxyGroup) {
        let mut map = self.inner.write();
        map.entry(key).or_insert_with(|| Arc::new(group));
    }

    /// The groups of one service, by key.
    pub fn of_service(&self, service: &str) -> Vec<(GroupKey, Arc<ProxyGroup>)> {
        let map = self.inner.read();
        let mut groups: Vec<_> = map
            .iter()
            .filter(|(_, g)| g.descriptor.service.as_str() == service)
            .map(|(k, g)| (k.clone(), g.clone()))
            .collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        groups
    }

    /// Forgets groups (their proxies are gone).
    pub fn remove(&self, keys: &[GroupKey]) {
        let mut map = self.inner.write();
        for k in keys {
            map.remove(k);
        }
    }
}

/// Where each proxy's admin relay listens, by node id (from node metadata).
#[derive(Debug, Clone, Default)]
pub struct RelayDirectory {
    inner: Arc<RwLock<HashMap<String, std::net::SocketAddr>>>,
}

impl RelayDirectory {
    fn record(&self, node_id: &str, addr: std::net::SocketAddr) {
        self.inner.write().insert(node_id.to_owned(), addr);
    }

    /// Forgets proxies not in `connected`.
    pub fn retain(&self, connected: &std::collections::HashSet<String>) {
        self.inner.write().retain(|id, _| connected.contains(id));
    }
}

impl meshplane_admin::relay::ProxyDirectory for RelayDirectory {
    fn relay_addr(&self, node_id: &str) -> Option<std::net::SocketAddr> {
        self.inner.read().get(node_id).copied()
    }
}

/// The control plane's grouper.
pub struct DescriptorGrouper {
    /// With client certificates on the xDS port: the trust domain whose SPIFFE id must name
    /// the proxy's service (`spiffe://<trust-domain>/service/<name>`).
    identity: Option<String>,
    relays: RelayDirectory,
    groups: Groups,
    options: Arc<MeshOptions>,
    limits: MetadataGrouper,
}

impl DescriptorGrouper {
    /// A grouper recording into `groups`, enforcing `options`.
    pub fn new(groups: Groups, options: Arc<MeshOptions>) -> Self {
        DescriptorGrouper {
            identity: None,
            relays: RelayDirectory::default(),
            groups,
            options,
            limits: MetadataGrouper::default(),
        }
    }

    /// Requires every proxy's client certificate to prove the service its descriptor names.
    pub fn with_identity(mut self, trust_domain: &str) -> Self {
        self.identity = Some(trust_domain.to_owned());
        self
    }

    /// Records advertised admin relays into `relays`.
    pub fn with_relays(mut self, relays: RelayDirectory) -> Self {
        self.relays = relays;
        self
    }

    /// Parses and checks a node's descriptor (public for tests and the admin API).
    pub fn proxy_group(&self, node: &Node) -> Result<ProxyGroup, GroupError> {
        check_node_identity(node)?;
        let invalid = |m: String| GroupError::InvalidArgument(m);
        let metadata = node.metadata.as_ref().ok_or_else(|| {
            invalid(format!(
                "node `{}` has no metadata: put the service descriptor (meshplane.yaml) in node.metadata, or start Envoy with `meshplane sidecar`",
                node.id
            ))
        })?;
        let mut json = to_json(metadata);
        let mut proxyless = false;
        let mut proxyless_mtls = false;
        let listen_address = match json.as_object_mut() {
            Some(map) => {
                map.remove(ADMIN_KEY);
                if let Some(kind) = map.remove(PROXYLESS_KEY) {
                    if kind.as_str() != Some(PROXYLESS_GRPC) {
                        return Err(invalid(format!(
                            "node.metadata.{PROXYLESS_KEY} is {kind}: the only proxyless client is \"{PROXYLESS_GRPC}\" (write the bootstrap with `meshplane bootstrap --grpc`)"
                        )));
                    }
                    proxyless = true;
                }
                if let Some(provider) = map.remove(CERTIFICATE_PROVIDER_KEY) {
                    // Clusters name the provider instance; one gRPC does not define would
                    // make it NACK every cluster.
                    if !proxyless || provider.as_str() != Some(GRPC_CERTIFICATE_PROVIDER) {
                        return Err(invalid(format!(
                            "node.metadata.{CERTIFICATE_PROVIDER_KEY} is {provider}: only a proxyless gRPC client (`{PROXYLESS_KEY}: {PROXYLESS_GRPC}`) has one, and it is \"{GRPC_CERTIFICATE_PROVIDER}\" (write the bootstrap with `meshplane bootstrap --grpc --certs-dir DIR`)"
                        )));
                    }
                    proxyless_mtls = true;
                }
                if let Some(relay) = map.remove(ADMIN_RELAY_KEY)
                    && let Some(addr) = relay_addr(&relay)
                {
                    self.relays.record(&node.id, addr);
                }
                map.remove(LISTEN_ADDRESS_KEY)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "0.0.0.0".to_owned())
            }
            None => String::new(),
        };
        if listen_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "node.metadata.{LISTEN_ADDRESS_KEY} `{listen_address}` is not an IP address"
            )));
        }
        let mut descriptor = Descriptor::from_json(json)
            .map_err(|e| invalid(format!("invalid service descriptor in node.metadata: {e}")))?;
        // Statistics are the sidecar's bootstrap business: proxies that differ only there get
        // the same configuration, so they must share a group.
        descriptor.stats = meshplane_model::Stats::default();
        if descriptor.service.as_str() != node.cluster {
            return Err(invalid(format!(
                "node.cluster `{}` differs from the descriptor's service `{}`; they must name the same service",
                node.cluster, descriptor.service
            )));
        }
        check_policy(&descriptor, &self.options).map_err(|e| invalid(e.to_string()))?;
        Ok(ProxyGroup {
            descriptor,
            listen_address,
            datacenter: self.datacenter_of(node)?,
            proxyless,
            proxyless_mtls,
        })
    }

    /// The proxy's datacenter: its node locality zone (the sidecar's `--datacenter`), or the
    /// control plane's for a proxy that sends none.
    fn datacenter_of(&self, node: &Node) -> Result<String, GroupError> {
        let zone = node.locality.as_ref().map_or("", |l| l.zone.as_str());
        if zone.is_empty() {
            return Ok(self.options.datacenter.clone());
        }
        let valid = zone.len() <= 64
            && zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(GroupError::InvalidArgument(format!(
                "node.locality.zone `{zone}` is not a datacenter name (letters, digits, `-`, `_`, `.`; at most 64): start the sidecar with --datacenter NAME"
            )));
        }
        Ok(zone.to_owned())
    }
}

fn relay_addr(v: &serde_json::Value) -> Option<std::net::SocketAddr> {
    let ip: std::net::IpAddr = v.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some((ip, port).into())
}

impl NodeGrouper for DescriptorGrouper {
    fn group(&self, node: &Node, peer: &PeerInfo) -> Result<GroupKey, GroupError> {
        // Size and depth limits first: hostile metadata must not reach the parser.
        self.limits.group(node, peer)?;
        let group = self.proxy_group(node)?;
        if let Some(trust_domain) = &self.identity {
            let expected =
                meshplane_model::identity::spiffe_id(trust_domain, &group.descriptor.service);
            if !peer.uri_sans.contains(&expected) {
                tracing::warn!(node = %node.id, claimed = %group.descriptor.service, proven = ?peer.uri_sans, peer = ?peer.remote_addr,
                    "refusing a proxy whose certificate does not prove the service it claims");
                return Err(GroupError::PermissionDenied(format!(
                    "the client certificate proves {:?}, not `{expected}`: a proxy only gets configuration for its own service",
                    peer.uri_sans
                )));
            }
        }
        // Proxies of one service in two datacenters get different endpoint priorities, so
        // the datacenter is part of the group.
        let canonical =
            serde_json::to_string(&(&group.descriptor, &group.listen_address, &group.datacenter))
                .map_err(|e| GroupError::InvalidArgument(e.to_string()))?;
        let hash = xxhash_rust::xxh3::xxh3_64(canonical.as_bytes());
        // A proxyless client gets other resources than an Envoy with the same descriptor, and
        // one with a certificate other clusters than one without.
        let kind = match (group.proxyless, group.proxyless_mtls) {
            (false, _) => "",
            (true, false) => "grpc-",
            (true, true) => "grpc-mtls-",
        };
        let key = GroupKey::new(format!("{}-{kind}{hash:016x}", group.descriptor.service));
        self.groups.insert(key.clone(), group);
        Ok(key)
    }
}
